"""smoothquant calibration: the scale, the rescaled weights and the amaxes against hand-derived
values, which layers are smoothed and what the others get, refusals before the model is touched,
rollback, and save/restore of a smoothed model. (Bit-exactness with Model Optimizer:
tests/conformance/test_smoothquant_conformance.py.)"""

import warnings

import pytest
import qruntime
import torch
from qconfig.algorithms import SmoothQuantCalibConfig
from qruntime.calibrate import UnsupportedAlgorithmError, algorithm_for
from qruntime.calibrate.smoothquant import SCALE_RANGE, ZERO_CHANNEL, smoothing_scale
from torch import nn

# Powers of two throughout, so that every value below is exact in float32.
W = torch.tensor([[1.0, -16.0, 2.0, 4.0], [-0.5, 4.0, 4.0, -2.0]])  # column max 1, 16, 4, 4
X = torch.tensor([[4.0, -1.0, 0.5, 16.0], [-2.0, 0.5, -1.0, 3.0]])  # column max 4, 1, 1, 16


def _config(weight_cfg=None, input_cfg=None, alpha=0.5, extra=()):
    return {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {
                "quantizer_name": "*weight_quantizer",
                "cfg": weight_cfg or {"num_bits": 8, "axis": 0},
            },
            {"quantizer_name": "*input_quantizer", "cfg": input_cfg or {"num_bits": 8}},
            *extra,
        ],
        "algorithm": {"method": "smoothquant", "alpha": alpha},
    }


def _single_linear():
    linear = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        linear.weight.copy_(W)
    return nn.Sequential(linear)


def _quiet_quantize(model, config, loop):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return qruntime.quantize(model, config, loop)


class Net(nn.Module):
    """Two linears on the data path (input channel 0 an outlier) and one the data never reaches."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(8, 6)
        self.fc2 = nn.Linear(6, 4)
        self.dead = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _batch(seed):
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(seed))
    x[..., 0] *= 30
    return x


def _loop(model):
    for seed in (0, 1):
        model(_batch(seed))


# ------------------------------------------------------------------------------ hand-derived


@pytest.mark.parametrize(
    ("alpha", "scale"),
    [
        (0.5, [0.5, 4.0, 2.0, 0.5]),  # sqrt(w) / sqrt(a)
        (1.0, [0.25, 1.0, 1.0, 0.0625]),  # 1 / a
        (0.0, [1.0, 16.0, 4.0, 4.0]),  # w
    ],
)
def test_scale_weights_and_amaxes_are_the_hand_derived_values(alpha, scale):
    model = _quiet_quantize(_single_linear(), _config(alpha=alpha), lambda m: m(X))
    linear, s = model[0], torch.tensor(scale)
    q = linear.input_quantizer
    assert torch.equal(q.pre_quant_scale, s) and q.pre_quant_scale.dtype == torch.float32
    assert torch.equal(linear.weight, W / s)  # column j divided by s_j
    assert q.axis is None and q.amax.shape == ()  # per tensor again
    assert torch.equal(q.amax, (X.abs().amax(0) * s).max())
    expected_weight_amax = (W / s).abs().amax(1, keepdim=True)  # re-calibrated, axis 0
    assert torch.equal(linear.weight_quantizer.amax, expected_weight_amax)
    # the float function is unchanged: (x * s) (W / s)^T == x W^T (exact with powers of two)
    assert torch.equal((X * s) @ linear.weight.T, X @ W.T)


def test_alpha_one_makes_the_smoothed_input_amax_exactly_one():
    model = _quiet_quantize(Net(), _config(alpha=1.0), _loop)
    for linear in (model.fc1, model.fc2):
        assert torch.equal(linear.input_quantizer.amax, torch.tensor(1.0))


def test_smoothing_scale_zero_channels_and_clamp():
    weight = torch.tensor([[0.0, 1.0, 1e-12, 2.0]])
    act = torch.tensor([[[0.0, 4.0, 1.0, 1e-12]]])  # channel 0: no activation at all
    # alpha 0: s = w; the smallest (0) triggers the zero-channel rule: channels 0 and 3
    # (a <= 2^-31) get 1, channel 2 (a > 0) keeps its tiny scale, clamped up to 1e-4
    assert torch.equal(smoothing_scale(act, weight, 0.0), torch.tensor([1.0, 1.0, 1e-4, 1.0]))
    # alpha 1: s = 1/a; channel 0 is 1/0 = inf, channel 3 huge: both clamped to 1e4, and no
    # scale is small enough to trigger the rule
    s = smoothing_scale(act, weight, 1.0)
    assert torch.equal(s, torch.tensor([1e4, 0.25, 1.0, 1e4]))
    # alpha 0.5 with an all-zero column over a zero channel is 0/0 before the rule
    assert torch.equal(smoothing_scale(act, weight, 0.5)[0], torch.tensor(1.0))
    assert SCALE_RANGE == (1e-4, 1e4) and ZERO_CHANNEL == 2.0**-31


def test_bfloat16_weights_keep_their_dtype_and_so_do_scale_and_input_amax():
    model = Net().to(torch.bfloat16)
    _quiet_quantize(model, _config(), lambda m: [m(_batch(s).bfloat16()) for s in (0, 1)])
    q = model.fc1.input_quantizer
    assert model.fc1.weight.dtype == torch.bfloat16
    assert q.pre_quant_scale.dtype == torch.bfloat16 and q.amax.dtype == torch.bfloat16


# ------------------------------------------------------------------------------ which layers


def test_only_int8_linears_reached_by_data_are_smoothed_the_rest_get_plain_max():
    int4 = {"quantizer_name": "*fc2.weight_quantizer", "cfg": {"num_bits": 4, "axis": 0}}
    with pytest.warns(UserWarning) as record:
        model = qruntime.quantize(Net(), _config(extra=[int4]), _loop, lint="off")
    messages = [str(w.message) for w in record if "smoothquant" in str(w.message)]
    assert len(messages) == 2
    assert "fc2" in messages[0] and "INT8" in messages[0]
    assert "dead" in messages[1] and "no calibration data" in messages[1]
    assert model.fc1.input_quantizer.pre_quant_scale is not None
    reference = qruntime.quantize(Net(), {**_config(extra=[int4]), "algorithm": "max"}, _loop)
    for name in ("fc2", "dead"):
        ours, plain = getattr(model, name), getattr(reference, name)
        assert ours.input_quantizer.pre_quant_scale is None
        assert ours.input_quantizer.axis is None  # back to per tensor
        assert torch.equal(ours.weight, plain.weight)
        for attr in ("input_quantizer", "weight_quantizer"):
            a, b = getattr(ours, attr).amax, getattr(plain, attr).amax
            assert (a is None and b is None) or torch.equal(a, b), (name, attr)
    assert model.dead.input_quantizer.amax is None  # dynamic, per tensor
    x = _batch(5)
    assert torch.equal(model.dead(x[..., :4]), reference.dead(x[..., :4]))


def test_a_configured_per_channel_input_is_smoothed_and_ends_per_tensor():
    model = _quiet_quantize(Net(), _config(input_cfg={"num_bits": 8, "axis": -1}), _loop)
    q = model.fc1.input_quantizer
    assert q.pre_quant_scale is not None and q.axis is None and q.amax.shape == ()


def test_registration_and_capabilities():
    algorithm = algorithm_for(SmoothQuantCalibConfig())
    caps = algorithm.capabilities
    assert caps.needs_forward_data and caps.writes_weights and caps.sync_points == ("amax",)
    assert not caps.adds_modules and not caps.layer_by_layer


# ------------------------------------------------------------------------------ refusals


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_untouched(model, before):
    assert all(type(m).__module__.startswith("torch.nn") for m in model.modules() if m is not model)
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert after[key].dtype == value.dtype and torch.equal(after[key], value), key


@pytest.mark.parametrize(
    ("algorithm", "loop", "words"),
    [
        ({"method": "smoothquant"}, None, "needs calibration data"),
        ({"method": "smoothquant", "alpha": None}, _loop, "alpha is null"),
        ({"method": "smoothquant", "layerwise": {"enable": True}}, _loop, "layerwise"),
    ],
)
def test_refused_before_the_model_is_touched(algorithm, loop, words):
    model = Net()
    before = _state(model)
    with pytest.raises(UnsupportedAlgorithmError, match=words):
        qruntime.quantize(model, {**_config(), "algorithm": algorithm}, loop)
    _assert_untouched(model, before)


def test_a_failing_forward_loop_leaves_the_model_bit_identical():
    model = Net()
    before = _state(model)
    calls = []

    def loop(m):
        for seed in (0, 1):
            calls.append(seed)
            if len(calls) == 2:
                raise RuntimeError("batch two is broken")
            m(_batch(seed))

    with pytest.raises(RuntimeError, match="batch two"):
        qruntime.quantize(model, _config(), loop)
    _assert_untouched(model, before)


def test_a_failure_after_the_weights_were_rescaled_restores_them():
    """[smoothquant, max]: the forward loop fails in max's pass, after smoothquant wrote the
    weights in place; the rollback must put the original bytes back."""
    model = Net()
    before = _state(model)
    weight = model.fc1.weight
    calls = []

    def loop(m):
        calls.append(1)
        if len(calls) == 2:
            assert not torch.equal(m.fc1.weight, before["fc1.weight"])  # already rescaled
            raise RuntimeError("second pass is broken")
        _loop(m)

    config = {**_config(), "algorithm": [{"method": "smoothquant", "alpha": 0.5}, "max"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="second pass"):
            qruntime.quantize(model, config, loop)
    _assert_untouched(model, before)
    assert model.fc1.weight is weight  # the same parameter object, its bytes restored


def test_smoothing_a_smoothed_model_again_is_refused_and_rolled_back():
    model = _quiet_quantize(Net(), _config(), _loop)
    before = _state(model)
    plan = qruntime.applied_plan(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="already has a pre_quant_scale"):
            qruntime.apply_plan(model, plan, _loop)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


# ------------------------------------------------------------------------------ save / restore


def _attributes(model):
    states = qruntime.quantizer_states(model)
    return {name: (s["enable"], s["attributes"]) for name, s in states.items()}


@pytest.mark.parametrize("input_cfg", [{"num_bits": 8}, {"num_bits": 8, "axis": -1}])
def test_save_restore_round_trip_is_bit_identical(tmp_path, input_cfg):
    """The state file holds the quantizer buffers (``_pre_quant_scale`` included) and, since
    smoothquant rewrote them, the weights: a fresh float model comes back smoothed. An input
    configured per channel is per tensor after smoothing, in the saved plan too."""
    model = _quiet_quantize(Net(), _config(input_cfg=input_cfg), _loop)
    path = tmp_path / "state.safetensors"
    qruntime.save_state(model, path)
    fresh = Net()  # its own float weights: the state file carries the smoothed ones
    assert not torch.equal(fresh.fc1.weight, model.fc1.weight)
    restored = qruntime.restore_state(fresh, path)
    expected = model.state_dict()
    assert list(restored.state_dict()) == list(expected)
    for key, value in restored.state_dict().items():
        assert value.dtype == expected[key].dtype and torch.equal(value, expected[key]), key
    assert restored.fc1.input_quantizer.pre_quant_scale is not None
    assert _attributes(restored) == _attributes(model)
    x = _batch(7)
    with torch.no_grad():
        assert torch.equal(restored(x), model(x))
