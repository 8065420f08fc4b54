"""awq_lite calibration: the statistics, the alpha grid and the scale against hand-derived
values; registration; what a layer gets; a failing loop leaves the model as it was.
(Bit-exactness with Model Optimizer: tests/conformance/test_awq_lite_conformance.py.)"""

import copy
import warnings

import pytest
import qruntime
import torch
from calibration_cases import assert_same_state, loop_failing_on_pass
from qconfig.algorithm_methods import AWQLiteCalibConfig
from qruntime.calibrate import UnsupportedAlgorithmError, algorithm_for, awq_candidates
from qruntime.calibrate.awq_candidates import (
    WeightBudget,
    is_plain_linear,
    plain_linear_output,
    quantize_scaled_weight,
)
from qruntime.calibrate.awq_lite import alpha_grid, awq_scale, weight_scale
from qruntime.calibrate.smoothquant import smoothable_linears
from torch import nn

W = torch.tensor([[1.0, -2.0, 4.0, 8.0], [2.0, 2.0, -1.0, 1.0]])


def test_registered_with_its_capabilities():
    algorithm = algorithm_for(AWQLiteCalibConfig())
    assert algorithm.capabilities.writes_weights and algorithm.capabilities.needs_forward_data


@pytest.mark.parametrize(
    ("options", "message"),
    [({"moe_calib_experts_ratio": 0.5}, "moe_calib_experts")],
)
def test_options_not_honoured_yet_are_refused_before_the_model_is_touched(options, message):
    model = nn.Sequential(nn.Linear(8, 8))
    config = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 4, "axis": 0}},
        ],
        "algorithm": {"method": "awq_lite", **options},
    }
    with pytest.raises(UnsupportedAlgorithmError, match=message):
        qruntime.quantize(model, config, lambda m: m(torch.randn(2, 8)))
    assert type(model[0]) is nn.Linear


def test_alpha_grid():
    assert alpha_grid(0.5) == [0.0, 0.5, 1.0]
    assert alpha_grid(1.0) == [0.0, 1.0]
    grid = alpha_grid(0.1)
    assert len(grid) == 11 and grid[1] == float(torch.tensor(0.1, dtype=torch.float32))


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (None, [9 / 16, 10 / 16, 0.5, 0.75]),  # relative to the row max 8, then 2
        (2, [0.75, 1.0, 0.75, 1.0]),  # blocks [1,-2] [4,8] | [2,2] [-1,1]
        (3, [0.625, 0.75, 0.75, 1.0]),  # [1,-2,4] [8,0,0] | [2,2,-1] [1,0,0]: zero padding
    ],
)
def test_weight_scale(block, expected):
    got = weight_scale(W, block)
    assert got.dtype == torch.float32
    assert torch.equal(got, torch.tensor(expected))


def test_scale_is_geometrically_centred_and_clamped():
    act = torch.tensor([1.0, 4.0, 16.0])
    w = torch.tensor([1.0, 0.25, 0.0625])
    assert torch.equal(awq_scale(act, w, 1.0), torch.tensor([0.25, 1.0, 4.0]))
    assert torch.equal(awq_scale(act, w, 0.0), torch.tensor([0.25, 1.0, 4.0]))
    clamped = awq_scale(torch.tensor([1e-6, 1.0]), torch.ones(2), 1.0)  # 1e-6 -> 1e-4
    assert torch.allclose(clamped, torch.tensor([0.01, 100.0]), rtol=1e-6)


def _config(input_cfg=None):
    return {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {
                "quantizer_name": "*weight_quantizer",
                "cfg": {"num_bits": 4, "block_sizes": {-1: 2, "type": "static"}},
            },
            {
                "quantizer_name": "*input_quantizer",
                "cfg": input_cfg or {},
                "enable": bool(input_cfg),
            },
        ],
        "algorithm": {"method": "awq_lite", "alpha_step": 0.5},
    }


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2))


X = [torch.randn(5, 4, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]


def _loop(m):
    for x in X:
        m(x)


def test_weight_only_layer_gets_the_inverse_scale_and_scaled_weight():
    model = _model()
    before = [model[0].weight.clone(), model[2].weight.clone()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qmodel = qruntime.quantize(model, _config(), _loop)
    for linear, w0 in zip((qmodel[0], qmodel[2]), before, strict=True):
        pqs = linear.input_quantizer.pre_quant_scale
        assert pqs is not None and pqs.shape == (w0.shape[1],)
        assert not linear.input_quantizer.is_enabled  # weight-only: the input stays off
        # W = W0 * 1/(1/s): the weight carries the inverse of the input's scale
        assert torch.allclose(linear.weight * pqs[None, :], w0, rtol=1e-6)
        assert linear.weight_quantizer.amax is not None


def test_quantized_input_amax_is_that_of_the_scaled_input():
    model = _model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qmodel = qruntime.quantize(model, _config({"num_bits": 8}), _loop)
    q = qmodel[0].input_quantizer
    assert q.is_enabled and q.axis is None
    expected = max(float((x.abs().amax(0) * q.pre_quant_scale).amax()) for x in X)
    assert float(q.amax) == pytest.approx(expected, rel=1e-6)


def test_a_failing_loop_leaves_the_model_unchanged():
    model = _model()
    original = copy.deepcopy(model.state_dict())
    with pytest.raises(RuntimeError, match="went away"):
        qruntime.quantize(model, _config(), loop_failing_on_pass(2, _loop))
    assert_same_state(model, original)


def test_no_forward_loop_is_refused_before_the_model_is_touched():
    model = _model()
    original = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsupportedAlgorithmError, match="forward_loop"):
        qruntime.quantize(model, _config(), None)
    assert list(model.state_dict()) == list(original)


def test_a_layer_the_data_never_reaches_gets_ones_and_a_warning():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(4, 3))

    def loop(m):
        for x in X:
            m[0](x)

    with pytest.warns(UserWarning, match="pre_quant_scale of 1"):
        qmodel = qruntime.quantize(model, _config(), loop)
    assert torch.equal(qmodel[1].input_quantizer.pre_quant_scale, torch.ones(4))
    assert qmodel[1].weight_quantizer.amax is not None
    assert not torch.equal(qmodel[0].input_quantizer.pre_quant_scale, torch.ones(4))


# ------------------------------------------------------------------ the plain-linear search path
def _max_quantized(input_cfg=None, output_enabled=False):
    config = _config(input_cfg)
    config["algorithm"] = "max"
    if output_enabled:
        config["quant_cfg"].append({"quantizer_name": "*output_quantizer", "cfg": {"num_bits": 8}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return qruntime.quantize(_model(), config, _loop)


def test_plain_linear_output_is_the_modules_own_forward_bit_for_bit():
    """The direct computation the search uses equals the module's forward with the candidate
    scales on its quantizers (weight quantizer dynamic, as during the search)."""
    qmodel = _max_quantized()
    for linear in smoothable_linears(qmodel):
        assert is_plain_linear(linear)
        wq, q = linear.weight_quantizer, linear.input_quantizer
        wq.reset_amax()
        x = torch.randn(7, linear.weight.shape[1], generator=torch.Generator().manual_seed(3))
        scale = torch.rand(linear.weight.shape[1], generator=torch.Generator().manual_seed(4)) + 0.5
        quantized = quantize_scaled_weight(linear, scale)
        assert not torch.equal(quantized, linear.weight)  # really quantized, and scaled
        direct = plain_linear_output(linear, x, 1 / scale, quantized)
        q.pre_quant_scale, wq.pre_quant_scale = 1 / scale, scale
        try:
            expected = linear.module(x)
        finally:
            q.pre_quant_scale = wq.pre_quant_scale = None
        assert torch.equal(direct, expected)


def test_a_linear_with_an_enabled_output_quantizer_is_not_plain():
    qmodel = _max_quantized(output_enabled=True)
    assert not any(is_plain_linear(linear) for linear in smoothable_linears(qmodel))


class _Net(nn.Module):
    """_model()'s layers, called with the input as keyword (the search then runs each module's
    own forward) or positionally (the direct path)."""

    def __init__(self, keyword: bool):
        super().__init__()
        self.net, self.keyword = _model(), keyword

    def forward(self, x):
        a, relu, b = self.net
        if self.keyword:
            return b(input=relu(a(input=x)))
        return b(relu(a(x)))


def _counting_loop(calls: list[int]):
    """_loop, counting the weight quantizers' calls (hooks added at the first pass)."""

    def loop(m):
        if not calls:
            calls.append(0)
            for name, module in m.named_modules():
                if name.endswith("weight_quantizer"):
                    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        _loop(m)

    return loop


@pytest.mark.parametrize("input_cfg", [None, {"num_bits": 8}])
def test_direct_path_cached_or_not_gives_the_modules_result(monkeypatch, input_cfg):
    """The same search through each module's own forward (keyword input), the direct path with
    the candidate weights cached, and the direct path without a cache budget: identical state;
    the cache quantizes each candidate weight once instead of once per batch."""
    states, counts = {}, {}
    for variant, keyword, budget in [
        ("module", True, awq_candidates.CACHE_BUDGET_BYTES),
        ("cached", False, awq_candidates.CACHE_BUDGET_BYTES),
        ("no budget", False, 0),
    ]:
        monkeypatch.setattr(awq_candidates, "CACHE_BUDGET_BYTES", budget)
        calls: list[int] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qmodel = qruntime.quantize(_Net(keyword), _config(input_cfg), _counting_loop(calls))
        states[variant], counts[variant] = qmodel.state_dict(), calls[0]
    for variant in ("cached", "no budget"):
        assert list(states[variant]) == list(states["module"])
        for key, value in states["module"].items():
            assert torch.equal(states[variant][key], value), (variant, key)
    alphas, batches, layers = 3, len(X), 2
    assert counts["no budget"] == counts["module"]
    assert counts["module"] - counts["cached"] == alphas * (batches - 1) * layers


def test_weight_budget_reserves_only_what_fits():
    budget = WeightBudget(100)
    assert budget.take(60) and budget.bytes_left == 40
    assert not budget.take(41) and budget.bytes_left == 40
    assert budget.take(40) and budget.bytes_left == 0
