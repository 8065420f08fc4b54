"""The calibration seams: algorithms registered from outside the package by their config class,
declared capabilities, the context an algorithm receives, the phases, calibrators given as a
class or ``(class, args, kwargs)``, and forward loops without an argument."""

import copy
import dataclasses
from typing import Literal

import pytest
import qruntime
import torch
from calibration_cases import BUILTIN_METHODS
from calibration_cases import batch as _data
from calibration_cases import two_batches as _loop
from calibration_cases import weight_input_config as _config
from qconfig.algorithms import (
    AWQLiteCalibConfig,
    MaxCalibConfig,
    QuantizeAlgorithmConfig,
    SmoothQuantCalibConfig,
)
from qruntime import (
    AlgorithmCapabilities,
    CalibrationContext,
    Calibrator,
    UnsupportedAlgorithmError,
    register_algorithm,
    unregister_algorithm,
)
from qruntime.calibrate import algorithm_for, phases
from qruntime.calibrate.context import LayerDriver, as_forward_loop
from qruntime.calibrators import BiasCalibrator, MaxCalibrator, build_calibrator
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(40, 16)
        self.fc2 = nn.Linear(16, 8)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _buffers(model):
    return {k: v for k, v in model.state_dict().items() if "_quantizer." in k}


def _assert_same_buffers(a, b):
    ours, theirs = _buffers(a), _buffers(b)
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key


# ------------------------------------------------------------------ an algorithm from outside


class ScaledWeightsConfig(QuantizeAlgorithmConfig):
    """A toy calibration: weight amax = ``factor`` * max |w|, activations by max afterwards."""

    mutates_weights = False
    method: Literal["scaled_weights"] = "scaled_weights"
    factor: float = 2.0


TOY_CAPABILITIES = AlgorithmCapabilities(needs_forward_data=True, sync_points=("amax",))
SEEN: list[CalibrationContext] = []


def scaled_weights(ctx: CalibrationContext) -> None:
    SEEN.append(ctx)
    quantizers = ctx.quantizers()
    phases.enable_stats_collection(quantizers)
    ctx.run_forward_loop()
    phases.finish_stats_collection(quantizers)
    phases.sync(ctx, "amax")
    for pair in ctx.weight_pairs():
        pair.quantizer.amax = pair.weight.detach().abs().max() * ctx.config.factor


@pytest.fixture
def toy():
    SEEN.clear()
    algorithm = register_algorithm(
        ScaledWeightsConfig, scaled_weights, capabilities=TOY_CAPABILITIES
    )
    yield algorithm
    unregister_algorithm(ScaledWeightsConfig)


def test_toy_algorithm_runs_through_quantize(toy):
    assert "scaled_weights" in qruntime.registered_methods()
    config = _config({"num_bits": 8}, {"num_bits": 8}, ScaledWeightsConfig(factor=3.0))
    model = qruntime.quantize(Net(), config, _loop)
    assert torch.equal(model.fc1.weight_quantizer.amax, model.fc1.weight.abs().max() * 3.0)
    assert torch.equal(
        model.fc1.input_quantizer.amax, torch.maximum(_data(0).abs().max(), _data(1).abs().max())
    )
    (ctx,) = SEEN
    assert ctx.model is model and isinstance(ctx.config, ScaledWeightsConfig)
    assert ctx.config.factor == 3.0
    assert ctx.plan is qruntime.applied_plan(model)
    assert ctx.parallel is None and ctx.layer_driver is None


def test_toy_algorithm_runs_through_apply_plan_after_max(toy):
    model = Net()
    plan = qruntime.compile_for(model, _config({"num_bits": 8}, {"num_bits": 8}))
    plan = dataclasses.replace(plan, algorithm=(MaxCalibConfig(), ScaledWeightsConfig()))
    qruntime.apply_plan(model, plan, _loop)
    assert len(SEEN) == 1 and SEEN[0].plan is plan
    assert torch.equal(model.fc2.weight_quantizer.amax, model.fc2.weight.abs().max() * 2.0)


def test_unregistered_toy_is_refused_with_the_implemented_methods():
    model = Net()
    config = _config({"num_bits": 8}, None, ScaledWeightsConfig())
    with pytest.raises(
        UnsupportedAlgorithmError, match=r"'scaled_weights' is not implemented.*max"
    ):
        qruntime.quantize(model, config, _loop)
    assert type(model.fc1) is nn.Linear
    assert qruntime.registered_methods() == BUILTIN_METHODS


@pytest.mark.parametrize("method", ["max", "smoothquant", "mse"])
def test_layerwise_without_blocks_is_refused_before_the_model_is_touched(method):
    """A model without repeated blocks cannot be calibrated layer by layer; running the whole
    model instead would calibrate what layerwise leaves out."""
    model = Net()
    algorithm = {"method": method, "layerwise": {"enable": True}}
    with pytest.raises(UnsupportedAlgorithmError, match="no decoder layers"):
        qruntime.quantize(model, _config({"num_bits": 8}, {"num_bits": 8}, algorithm), _loop)
    assert type(model.fc1) is nn.Linear


def test_a_nested_algorithm_that_needs_data_is_refused_before_the_model_is_touched():
    """nvfp4_act_headroom runs its weight_scale_algorithm; local_hessian needs data."""
    model = Net()
    algorithm = {
        "method": "nvfp4_act_headroom",
        "weight_scale_algorithm": {"method": "local_hessian"},
    }
    with pytest.raises(
        UnsupportedAlgorithmError,
        match=r"'local_hessian' \(inside 'nvfp4_act_headroom'\) needs calibration data",
    ):
        qruntime.quantize(model, _config({"num_bits": 8}, None, algorithm))
    assert type(model.fc1) is nn.Linear


def test_needs_forward_data_is_refused_without_a_loop_before_the_model_is_touched(toy):
    model = Net()
    with pytest.raises(UnsupportedAlgorithmError, match="needs calibration data"):
        qruntime.quantize(model, _config({"num_bits": 8}, None, ScaledWeightsConfig()))
    assert type(model.fc1) is nn.Linear and not SEEN


def test_layer_by_layer_needs_a_driver():
    class LayerConfig(QuantizeAlgorithmConfig):
        method: Literal["per_layer"] = "per_layer"

    register_algorithm(
        LayerConfig, scaled_weights, capabilities=AlgorithmCapabilities(layer_by_layer=True)
    )
    try:
        model = Net()
        with pytest.raises(UnsupportedAlgorithmError, match="layer by layer"):
            qruntime.quantize(model, _config({"num_bits": 8}, None, LayerConfig()), _loop)
        assert type(model.fc1) is nn.Linear
    finally:
        unregister_algorithm(LayerConfig)


def test_registering_a_class_twice_is_an_error(toy):
    with pytest.raises(ValueError, match="already registered"):
        register_algorithm(ScaledWeightsConfig, scaled_weights, capabilities=TOY_CAPABILITIES)
    with pytest.raises(TypeError):
        register_algorithm(dict, scaled_weights, capabilities=TOY_CAPABILITIES)
    with pytest.raises(ValueError, match="unknown sync points"):
        AlgorithmCapabilities(sync_points=("everything",))


# ------------------------------------------------------------------ selection and capabilities


def test_capabilities_are_declared_and_visible(toy):
    assert algorithm_for(ScaledWeightsConfig()).capabilities is TOY_CAPABILITIES
    assert toy.method == "scaled_weights" and toy.config_class is ScaledWeightsConfig
    caps = algorithm_for(MaxCalibConfig()).capabilities
    assert caps == AlgorithmCapabilities(sync_points=("amax", "global_amax"))
    assert not (caps.needs_forward_data or caps.writes_weights or caps.adds_modules)
    assert not caps.layer_by_layer
    with pytest.raises(dataclasses.FrozenInstanceError):
        caps.writes_weights = True  # type: ignore[misc]


def test_a_subclass_with_the_same_method_runs_its_parents_algorithm():
    class NotedMax(MaxCalibConfig):
        note: str = ""

    assert algorithm_for(NotedMax(note="x")) is algorithm_for(MaxCalibConfig())
    config = _config({"num_bits": 8, "axis": 0}, {"num_bits": 8})
    expected = qruntime.quantize(Net(), copy.deepcopy(config), _loop)
    ours = qruntime.quantize(Net(), {**config, "algorithm": NotedMax(note="x")}, _loop)
    _assert_same_buffers(ours, expected)


def test_the_most_specific_registration_wins():
    class FastMax(MaxCalibConfig):
        pass

    calls = []
    register_algorithm(FastMax, calls.append, capabilities=AlgorithmCapabilities())
    try:
        assert algorithm_for(FastMax()).config_class is FastMax
        assert algorithm_for(MaxCalibConfig()).config_class is MaxCalibConfig
        qruntime.quantize(Net(), _config({"num_bits": 8}, None, FastMax()), _loop)
        assert len(calls) == 1 and isinstance(calls[0].config, FastMax)
    finally:
        unregister_algorithm(FastMax)


def test_a_subclass_with_its_own_method_never_runs_its_parents_algorithm():
    """``awq_full``'s config subclasses the ``awq_lite`` config: registering lite is not enough."""
    from qconfig.algorithms import AWQFullCalibConfig

    assert algorithm_for(AWQLiteCalibConfig()).config_class is AWQLiteCalibConfig
    full = algorithm_for(AWQFullCalibConfig())
    assert full.config_class is AWQFullCalibConfig
    unregister_algorithm(AWQFullCalibConfig)
    try:
        with pytest.raises(UnsupportedAlgorithmError, match="'awq_full' is not implemented"):
            algorithm_for(AWQFullCalibConfig())
    finally:
        register_algorithm(
            AWQFullCalibConfig, full.run, capabilities=full.capabilities, check=full.check
        )
    assert algorithm_for(SmoothQuantCalibConfig()).config_class is SmoothQuantCalibConfig


# ------------------------------------------------------------------ context and phases


def test_context_lists_quantizers_and_weight_pairs():
    model = qruntime.quantize(Net(), _config({"num_bits": 8}, {"num_bits": 8}, algorithm=None))
    ctx = CalibrationContext(model=model, config=MaxCalibConfig())
    names = {id(m): n for n, m in model.named_modules()}
    assert [names[id(q)] for q in ctx.quantizers()] == [
        "fc1.input_quantizer",
        "fc1.output_quantizer",
        "fc1.weight_quantizer",
        "fc2.input_quantizer",
        "fc2.output_quantizer",
        "fc2.weight_quantizer",
    ]
    pairs = ctx.weight_pairs()
    assert [(p.name, p.weight is p.module.weight) for p in pairs] == [
        ("fc1", True),
        ("fc2", True),
    ]
    assert pairs[0].quantizer is model.fc1.weight_quantizer
    assert ctx.run_forward_loop() is False  # no loop


def test_sync_has_nothing_to_do_in_one_process():
    model = Net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    phases.sync(CalibrationContext(model=model, config=MaxCalibConfig()), "amax")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="unknown sync point"):
        phases.sync(CalibrationContext(model=model, config=MaxCalibConfig()), "weights")


def test_layer_driver_protocol():
    class Driver:
        def run(self, model, forward_loop, calibrate_layer):
            for layer in model.children():
                calibrate_layer(layer, forward_loop)

    assert isinstance(Driver(), LayerDriver)
    assert not isinstance(object(), LayerDriver)


# ------------------------------------------------------------------ calibrators


class RecordingMax(MaxCalibrator):
    """The max calibrator, counting its calls (no __slots__: instances get a __dict__)."""

    instances: list["RecordingMax"] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.args, self.kwargs = args, kwargs
        self.collected: list[tuple[int, ...]] = []
        RecordingMax.instances.append(self)

    def collect(self, x):
        self.collected.append(tuple(x.shape))
        super().collect(x)


def test_build_calibrator_forms():
    assert isinstance(build_calibrator("max", 0), MaxCalibrator)
    assert build_calibrator("max", (0,)).axis == (0,)
    assert build_calibrator("histogram", None) is None
    built = build_calibrator(RecordingMax, 0)
    assert type(built) is RecordingMax and built.args == () and built.axis is None
    built = build_calibrator((RecordingMax,), None)
    assert type(built) is RecordingMax
    built = build_calibrator((RecordingMax, (8, 0)), None)
    assert built.args == (8, 0) and built.axis == 0  # Model Optimizer's (num_bits, axis, ...)
    built = build_calibrator((RecordingMax, (), {"axis": 1, "track_amax": True}), None)
    assert built.axis == 1 and built.kwargs == {"axis": 1, "track_amax": True}
    for bad in [("my.Calibrator", (), {}), (RecordingMax, 0, {}), (RecordingMax, (), [])]:
        with pytest.raises(TypeError):
            build_calibrator(bad, None)


def test_calibrator_protocol():
    assert isinstance(MaxCalibrator(), Calibrator)
    assert isinstance(RecordingMax(), Calibrator)
    assert not isinstance(BiasCalibrator({-1: None}), Calibrator)  # no amax: a bias collector


def test_track_amax_keeps_every_batch():
    calibrator = MaxCalibrator(track_amax=True)
    for scale in (1.0, 3.0, 2.0):
        calibrator.collect(torch.full((2, 2), -scale))
    assert [float(a) for a in calibrator.amaxs] == [1.0, 3.0, 2.0]
    assert float(calibrator.compute_amax()) == 3.0


@pytest.mark.parametrize(
    "calibrator",
    [RecordingMax, (RecordingMax, (), {}), (RecordingMax, (8, None, False), {})],
    ids=["class", "tuple", "positional"],
)
def test_custom_calibrator_is_built_and_used(calibrator):
    RecordingMax.instances.clear()
    config = _config({"num_bits": 8, "calibrator": calibrator}, {"num_bits": 8})
    model = qruntime.quantize(Net(), config, _loop)
    q = model.fc1.weight_quantizer
    assert type(q.calibrator) is RecordingMax and q.calibrator in RecordingMax.instances
    # fed the weight once, then again by each of the two batches (as in Model Optimizer)
    assert q.calibrator.collected == [(16, 40)] * 3
    expected = qruntime.quantize(Net(), _config({"num_bits": 8}, {"num_bits": 8}), _loop)
    _assert_same_buffers(model, expected)


def test_custom_calibrator_with_its_axis_gives_per_channel_amax():
    calibrator = (RecordingMax, (), {"axis": 0})
    config = _config({"num_bits": 8, "axis": 0, "calibrator": calibrator}, {"num_bits": 8})
    model = qruntime.quantize(Net(), config, _loop)
    expected = qruntime.quantize(Net(), _config({"num_bits": 8, "axis": 0}, {"num_bits": 8}), _loop)
    assert model.fc1.weight_quantizer.amax.shape == (16, 1)
    _assert_same_buffers(model, expected)


def test_malformed_calibrator_constructor_is_refused_untouched():
    bad = ("my.Calibrator", (), {})  # an import path where the class itself belongs
    with pytest.raises(ValueError, match="calibrator"):  # the config refuses it up front
        qruntime.quantize(Net(), _config({"num_bits": 8, "calibrator": bad}, None, None))
    # a plan built around validation is refused by the runtime, before the model is touched
    model = Net()
    plan = qruntime.compile_for(model, _config({"num_bits": 8}, None, None))
    name = "fc1.weight_quantizer"
    q = plan.quantizers[name]
    attrs = q.attributes.model_copy(update={"calibrator": bad})
    plan.quantizers[name] = dataclasses.replace(q, attributes=attrs)
    with pytest.raises(UnsupportedAlgorithmError, match=r"fc1\.weight_quantizer.*not a class"):
        qruntime.apply_plan(model, plan, _loop)
    assert type(model.fc1) is nn.Linear


# ------------------------------------------------------------------ forward loops


def test_forward_loop_without_argument_is_accepted_with_a_deprecation_warning():
    batches = [_data(0), _data(1)]
    holder: dict[str, nn.Module] = {}

    def loop():
        for batch in batches:
            holder["model"](batch)

    model = Net()
    holder["model"] = model
    config = _config({"num_bits": 8}, {"num_bits": 8})
    with pytest.deprecated_call(match="forward_loop takes no argument"):
        qruntime.quantize(model, config, loop)
    expected = qruntime.quantize(Net(), config, _loop)
    _assert_same_buffers(model, expected)


def test_forward_loop_without_argument_warns_even_without_calibration():
    with pytest.deprecated_call():
        qruntime.quantize(Net(), _config({"num_bits": 8}, None, None), lambda: None)


def test_as_forward_loop():
    assert as_forward_loop(None) is None
    assert as_forward_loop(_loop) is _loop
    assert as_forward_loop(print) is print  # signature unreadable or with parameters: as given
    with pytest.deprecated_call():
        wrapped = as_forward_loop(lambda: "ran")
    assert wrapped(Net()) == "ran"
