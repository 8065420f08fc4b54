"""``nvfp4_act_headroom``: hand-derived global scales, the swap around the weight algorithm and
its rollback, the checks before the model is touched.

Hand derivations use block amaxes that are powers of two. With 512 bins over [-40, 40] (width
0.15625) a block amax ``2^e`` falls in bin ``floor(6.4 (e + 40))`` and a percentile found in
bin ``b`` reads ``2^(-40 + (b + 0.5) * 0.15625)``:

=====  =====  =========================
``e``  bin    value read back (log2)
=====  =====  =========================
-30    64     (ignored below the floor)
-4     230    -3.984375
-1     249    -1.015625
0      256    0.078125
=====  =====  =========================
"""

import copy
import dataclasses
import warnings

import pytest
import qruntime
import torch
from qconfig import presets
from qconfig.algorithm_methods import MseCalibConfig, NVFP4ActHeadroomCalibConfig
from qconfig.algorithms import MaxCalibConfig
from qruntime.calibrate import (
    AlgorithmCapabilities,
    CalibrationContext,
    UnsupportedAlgorithmError,
    algorithm_for,
    register_algorithm,
    run_algorithms,
    unregister_algorithm,
)
from qruntime.calibrate.headroom_calibrator import NVFP4ActHeadroomCalibrator
from qruntime.calibrate.max import max_calibrate
from qruntime.calibrate.nvfp4_act_headroom import nvfp4_act_headroom_calibrate
from qruntime.calibrators import Calibrator, MaxCalibrator
from qruntime.quantize import compile_for
from torch import nn

# ------------------------------------------------------------------------- the calibrator


def _blocks(*amaxes, block=16):
    """One row of blocks; block ``i`` holds ``-amaxes[i]`` once and ``amaxes[i] / 2`` elsewhere
    (so its amax is ``amaxes[i]``, reached by a negative value)."""
    rows = []
    for a in amaxes:
        row = torch.full((block,), a / 2)
        row[3] = -a
        rows.append(row)
    return torch.cat(rows).unsqueeze(0)


#: 10 blocks at 2^-30, 89 at 2^-4, one at 1: with the upper at 1, the anchor floor 1e-6 (bin
#: 128) drops the tiny blocks, so 1 % of the remaining 90 lands in bin 230.
SPREAD = _blocks(*[2.0**-30] * 10, *[2.0**-4] * 89, 1.0)


def _amax(data, **kwargs):
    calibrator = NVFP4ActHeadroomCalibrator(**kwargs)
    for x in data:
        calibrator.collect(x)
    return calibrator.compute_amax()


def test_is_a_calibrator():
    assert isinstance(NVFP4ActHeadroomCalibrator(), Calibrator)
    assert NVFP4ActHeadroomCalibrator(axis=0).axis == 0


def test_anchor_ignores_blocks_far_below_the_upper_end():
    amax = _amax([SPREAD], upper_percentile=100.0)  # anchor 1 %, rho 16384 = 2^14
    assert amax.dtype == torch.float32 and amax.shape == ()
    assert amax.item() == pytest.approx(2.0 ** (14 - 3.984375), rel=1e-7)
    assert torch.equal(amax, torch.tensor(16384.0 * 2.0**-3.984375))


def test_upper_percentile_and_no_headroom_warning():
    # 99 % of all 100 blocks: bin 230; rho 1 leaves nothing above it → upper, with a warning
    with pytest.warns(UserWarning, match="no headroom"):
        amax = _amax([SPREAD], upper_percentile=99.0, rho=1.0)
    assert torch.equal(amax, torch.tensor(2.0**-3.984375))


def test_high_anchor_percentile():
    # 99.5 % of the 90 counted blocks is 89.55: bin 256 (the block at 1)
    amax = _amax([SPREAD], upper_percentile=100.0, anchor_percentile=99.5, rho=2.0)
    assert torch.equal(amax, torch.tensor(2.0 * 2.0**0.078125))


def test_ragged_last_dim_is_zero_padded_and_batches_accumulate():
    x = torch.cat([torch.full((16,), 0.5), torch.full((4,), -3.0)]).unsqueeze(0)  # 20 = 16 + 4
    zeros = torch.zeros(3, 20)
    amax = _amax([zeros, x], upper_percentile=100.0)  # blocks 0.5 and 3: anchor bin 249
    assert torch.equal(amax, torch.tensor(16384.0 * 2.0**-1.015625))
    with pytest.warns(UserWarning, match="no headroom"):  # upper = the running max, 3.0
        assert torch.equal(_amax([zeros, x], upper_percentile=100.0, rho=1.0), torch.tensor(3.0))


def test_only_zeros_or_nothing_gives_no_amax():
    assert _amax([]) is None
    assert _amax([torch.zeros(2, 32), torch.zeros(1, 5)]) is None


def test_block_size_and_reset():
    x = torch.cat([torch.full((8,), 2.0**-4), torch.full((8,), 1.0)]).unsqueeze(0)
    # block 8: amaxes 2^-4 and 1 → anchor bin 230; block 16: one block at 1 → bin 256
    assert torch.equal(_amax([x], block_size=8, upper_percentile=100.0, rho=2.0**5),
                       torch.tensor(2.0**5 * 2.0**-3.984375))  # fmt: skip
    calibrator = NVFP4ActHeadroomCalibrator(block_size=16, upper_percentile=100.0, rho=2.0)
    calibrator.collect(x * 8)
    calibrator.reset()
    calibrator.collect(x)
    assert torch.equal(calibrator.compute_amax(), torch.tensor(2.0 * 2.0**0.078125))


@pytest.mark.parametrize(
    "bad", [{"rho": 0.0}, {"rho": 28672.0}, {"anchor_percentile": 0}, {"upper_percentile": 101}]
)
def test_arguments_out_of_range_are_refused(bad):
    with pytest.raises(ValueError):
        NVFP4ActHeadroomCalibrator(**bad)


# ------------------------------------------------------------------------- the algorithm


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(32, 32)
        self.fc2 = nn.Linear(32, 16)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


#: fc1 sees blocks at 2^-4, 2^-4, 2^-4 and 1: anchor 1 % → bin 230, upper (100 %) → 1.
X = _blocks(2.0**-4, 2.0**-4, 2.0**-4, 1.0).reshape(2, 32)


def loop(model):
    model(X)


def _config(algorithm, preset="NVFP4_DEFAULT_CFG"):
    cfg = presets.get(preset)
    cfg["algorithm"] = algorithm
    return cfg


HEADROOM = {"method": "nvfp4_act_headroom", "upper_percentile": 100.0}


def test_nvfp4_inputs_get_headroom_and_weights_get_max():
    model = qruntime.quantize(Net(), _config(HEADROOM), loop)
    plain = qruntime.quantize(Net(), _config("max"), loop)
    assert torch.equal(model.fc1.input_quantizer.amax, torch.tensor(16384.0 * 2.0**-3.984375))
    assert model.fc1.input_quantizer.amax.item() > 1000 * plain.fc1.input_quantizer.amax.item()
    for layer in ("fc1", "fc2"):
        ours, theirs = getattr(model, layer), getattr(plain, layer)
        assert torch.equal(ours.weight_quantizer.amax, theirs.weight_quantizer.amax)
        assert type(ours.input_quantizer.calibrator) is MaxCalibrator  # put back


def test_calibrators_are_put_back_on_success_and_on_failure():
    model = qruntime.quantize(Net(), _config(None))
    originals = {n: q.calibrator for n, q in model.named_modules() if n.endswith("_quantizer")}
    config = NVFP4ActHeadroomCalibConfig(upper_percentile=100.0)

    def failing(m):
        m(X)
        raise RuntimeError("the data loader broke")

    seen = []

    def spying(m):
        seen.append(type(m.fc1.input_quantizer.calibrator))
        m(X)

    for forward_loop in (failing, spying):
        context = CalibrationContext(model=model, config=config, forward_loop=forward_loop)
        if forward_loop is failing:
            with pytest.raises(RuntimeError, match="data loader"):
                nvfp4_act_headroom_calibrate(context)
        else:
            nvfp4_act_headroom_calibrate(context)
        for name, q in model.named_modules():
            if name.endswith("_quantizer"):
                assert q.calibrator is originals[name], name
    assert seen == [NVFP4ActHeadroomCalibrator]


def test_failing_forward_loop_rolls_the_model_back():
    model = Net()
    before = copy.deepcopy(model.state_dict())

    def failing(m):
        m(X)
        raise RuntimeError("the data loader broke")

    with pytest.raises(RuntimeError, match="data loader"):
        qruntime.quantize(model, _config(HEADROOM), failing)
    assert type(model.fc1) is nn.Linear
    assert list(model.state_dict()) == list(before)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_nothing_eligible_warns_and_equals_max():
    with pytest.warns(UserWarning, match="no enabled NVFP4 dynamic-block input quantizer"):
        model = qruntime.quantize(Net(), _config(HEADROOM, "FP8_DEFAULT_CFG"), loop)
    plain = qruntime.quantize(Net(), _config("max", "FP8_DEFAULT_CFG"), loop)
    ours, theirs = model.state_dict(), plain.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(v, theirs[k]) for k, v in ours.items())


MXFP4_BLOCKS = {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}


@pytest.mark.parametrize(
    "entry",
    [
        {"cfg": {"type": "dynamic"}},  # a dynamic quantizer is never calibrated
        {"enable": False},
        {"cfg": {"block_sizes": MXFP4_BLOCKS}},  # E2M1 in dynamic blocks, but an E8M0 scale
    ],
)
def test_ineligible_nvfp4_like_inputs_are_left_to_max(entry):
    cfg = _config(HEADROOM)
    nvfp4 = next(e["cfg"] for e in cfg["quant_cfg"] if e["quantizer_name"] == "*input_quantizer")
    if "cfg" in entry:
        entry = {"cfg": {**nvfp4, **entry["cfg"]}}
    cfg["quant_cfg"].append({"quantizer_name": "*input_quantizer", **entry})
    with pytest.warns(UserWarning, match="no enabled NVFP4"):
        model = qruntime.quantize(Net(), cfg, loop)
    assert type(model.fc1.input_quantizer.calibrator) is MaxCalibrator


def test_without_data_only_weights_are_calibrated():
    model = qruntime.quantize(Net(), _config(HEADROOM))
    assert model.fc1.input_quantizer.amax is None
    assert model.fc1.weight_quantizer.amax is not None


def test_sequential_nvfp4_input_is_refused_before_the_model_is_touched():
    cfg = _config(HEADROOM)
    nvfp4 = next(e["cfg"] for e in cfg["quant_cfg"] if e["quantizer_name"] == "*input_quantizer")
    cfg["quant_cfg"].append({"quantizer_name": "*fc2.input_quantizer", "cfg": [nvfp4, nvfp4]})
    model = Net()
    with pytest.raises(UnsupportedAlgorithmError, match=r"fc2\.input_quantizer: .*sequential"):
        qruntime.quantize(model, cfg, loop)
    assert type(model.fc2) is nn.Linear


def test_sequential_nvfp4_input_is_refused_also_when_run_without_a_plan():
    cfg = _config(None)
    nvfp4 = next(e["cfg"] for e in cfg["quant_cfg"] if e["quantizer_name"] == "*input_quantizer")
    cfg["quant_cfg"].append(
        {"quantizer_name": "*fc2.input_quantizer", "cfg": [nvfp4, {"num_bits": 8}]}
    )
    model = qruntime.quantize(Net(), cfg)
    calibrator = model.fc1.input_quantizer.calibrator
    with pytest.raises(UnsupportedAlgorithmError, match="sequential"):
        run_algorithms(model, [NVFP4ActHeadroomCalibConfig()], loop)
    assert model.fc1.input_quantizer.calibrator is calibrator
    assert model.fc1.input_quantizer.amax is None
    model.fc2.input_quantizer[0].disable()  # with its NVFP4 element off, it is not refused
    run_algorithms(model, [NVFP4ActHeadroomCalibConfig(upper_percentile=100.0)], loop)
    assert torch.equal(model.fc1.input_quantizer.amax, torch.tensor(16384.0 * 2.0**-3.984375))


def test_the_weight_algorithms_own_check_runs():
    cfg = _config(HEADROOM)
    cfg["quant_cfg"].append({"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8}})
    cfg["quant_cfg"][-1]["cfg"]["calibrator"] = "histogram"  # max refuses it
    with pytest.raises(UnsupportedAlgorithmError, match="histogram"):
        qruntime.quantize(Net(), cfg, loop)


@pytest.mark.parametrize(
    "option", [{"moe_calib_experts_ratio": 0.5}, {"layerwise": {"enable": True}}]
)
def test_whole_model_options_in_the_weight_algorithm_are_refused(option):
    algorithm = {**HEADROOM, "weight_scale_algorithm": {"method": "max", **option}}
    model = Net()
    with pytest.raises(UnsupportedAlgorithmError, match=f"{next(iter(option))} in weight_scale"):
        qruntime.quantize(model, _config(algorithm), loop)
    assert type(model.fc1) is nn.Linear


def _plan_with(weight_config):
    plan = compile_for(Net(), _config("max"))
    algorithm = NVFP4ActHeadroomCalibConfig(weight_scale_algorithm=weight_config)
    return dataclasses.replace(plan, algorithm=(algorithm,))


def test_an_unregistered_weight_algorithm_is_refused_before_the_model_is_touched():
    registered = None
    try:
        registered = algorithm_for(MseCalibConfig())
        unregister_algorithm(MseCalibConfig)
    except UnsupportedAlgorithmError:
        pass
    try:
        model = Net()
        with pytest.raises(UnsupportedAlgorithmError, match=r"weight_scale_algorithm: .*'mse'"):
            qruntime.apply_plan(model, _plan_with(MseCalibConfig()), loop)
        assert type(model.fc1) is nn.Linear
    finally:
        if registered is not None:
            register_algorithm(
                MseCalibConfig,
                registered.run,
                capabilities=registered.capabilities,
                check=registered.check,
            )


class DataMaxConfig(MaxCalibConfig):
    """``max`` that declares it needs data: a stand-in for a data-driven weight algorithm."""


def test_a_weight_algorithm_that_needs_data_is_refused_without_a_loop():
    register_algorithm(
        DataMaxConfig, max_calibrate, capabilities=AlgorithmCapabilities(needs_forward_data=True)
    )
    try:
        model = Net()
        with pytest.raises(UnsupportedAlgorithmError, match="needs calibration data"):
            qruntime.apply_plan(model, _plan_with(DataMaxConfig()))
        assert type(model.fc1) is nn.Linear  # refused before the model is touched
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            qruntime.apply_plan(model, _plan_with(DataMaxConfig()), loop)
        assert torch.equal(model.fc1.input_quantizer.amax, torch.tensor(16384.0 * 2.0**-3.984375))
    finally:
        unregister_algorithm(DataMaxConfig)
