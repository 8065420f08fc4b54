"""awq_clip and awq_full: the ratio grid, the loss tables and the choice per block against
hand-derived values and an unchunked evaluation of the formula; registration and refusals; a
failure leaves the model as it was. (Bit-exactness with Model Optimizer:
tests/conformance/test_awq_clip_conformance.py.)"""

import copy
import warnings

import pytest
import qruntime
import torch
from calibration_cases import assert_same_state, loop_failing_on_pass
from hypothesis import given, settings
from hypothesis import strategies as st
from qconfig.algorithm_methods import AWQClipCalibConfig, AWQFullCalibConfig
from qruntime.calibrate import UnsupportedAlgorithmError, algorithm_for
from qruntime.calibrate.awq_clip import best_amax, block_losses, clip_ratios
from torch import nn


def test_clip_ratios():
    assert clip_ratios(0.5, 0.05) == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0]
    assert clip_ratios(0.3, 0.1) == [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert clip_ratios(0.9, 0.5) == [0.9, 1.0]


def test_block_losses_by_hand():
    """One row, two blocks of two: x = [[1, 2, 3, 4]], W = 1, Q = W + [1, 0, 0, -1]; the
    partial products differ by x.dQ per block: 1 and -4, squared 1 and 16."""
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    w = torch.ones(1, 4)
    q = w + torch.tensor([[1.0, 0.0, 0.0, -1.0]])
    (loss,) = block_losses(x, w, [q], block_size=2, max_rows=8)
    assert torch.equal(loss, torch.tensor([[1.0, 16.0]]))


def test_block_losses_pad_the_last_block():
    x = torch.tensor([[1.0, 2.0, 3.0]])
    w = torch.ones(1, 3)
    q = w + torch.tensor([[0.0, 0.0, 2.0]])
    (loss,) = block_losses(x, w, [q], block_size=2, max_rows=8)
    assert torch.equal(loss, torch.tensor([[0.0, 36.0]]))


def _unchunked(x, w, q, block):
    """The formula over all rows at once, as Model Optimizer evaluates it (cin a multiple of
    the block here)."""
    cout, cin = w.shape
    xs = x.reshape(1, x.shape[0], cin // block, block)
    ref = (xs * w.reshape(cout, 1, cin // block, block)).sum(-1)
    out = (xs * q.reshape(cout, 1, cin // block, block)).sum(-1)
    return (out - ref).float().pow(2).mean(dim=1)


@settings(max_examples=40, deadline=None)
@given(
    cout=st.integers(1, 40),
    blocks=st.integers(1, 5),
    block=st.sampled_from([1, 2, 4, 8, 16]),
    tokens=st.integers(1, 70),
    max_rows=st.integers(1, 64),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_block_losses_do_not_depend_on_the_chunking(
    cout, blocks, block, tokens, max_rows, dtype, seed
):
    g = torch.Generator().manual_seed(seed)
    cin = blocks * block
    x = torch.randn(tokens, cin, generator=g).to(dtype)
    w = torch.randn(cout, cin, generator=g).to(dtype)
    q = (w * 4).round().div(4).to(dtype)
    (loss,) = block_losses(x, w, [q], block, max_rows)
    assert torch.equal(loss, _unchunked(x, w, q, block))


def test_best_amax_takes_the_smallest_loss_and_the_smaller_ratio_on_a_tie():
    w_amax = torch.tensor([[2.0], [4.0], [8.0]])
    losses = [
        torch.tensor([3.0, 1.0, 5.0]),
        torch.tensor([2.0, 1.0, 5.0]),
        torch.tensor([4.0, 0.5, 5.0]),
    ]
    best = best_amax(w_amax, [0.5, 0.75, 1.0], losses)
    assert torch.equal(best, torch.tensor([[1.5], [4.0], [4.0]]))


def test_registered_with_their_capabilities():
    for config in (AWQClipCalibConfig(), AWQFullCalibConfig()):
        caps = algorithm_for(config).capabilities
        assert caps.needs_forward_data and caps.writes_weights


def _config(method="awq_clip", **options):
    return {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {
                "quantizer_name": "*weight_quantizer",
                "cfg": {"num_bits": 4, "block_sizes": {-1: 4, "type": "static"}},
            },
        ],
        "algorithm": {"method": method, **options},
    }


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))


X = [torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]


def _loop(m):
    for x in X:
        m(x)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"moe_calib_experts_ratio": 0.5}, "moe_calib_experts_ratio"),
        ({"max_co_batch_size": None}, "max_co_batch_size is null"),
        ({"max_tokens_per_batch": 0}, "at least 1"),
    ],
)
@pytest.mark.parametrize("method", ["awq_clip", "awq_full"])
def test_refused_before_the_model_is_touched(method, options, message):
    model = _model()
    with pytest.raises(UnsupportedAlgorithmError, match=message):
        qruntime.quantize(model, _config(method, **options), _loop)
    assert type(model[0]) is nn.Linear


def test_null_alpha_step_is_refused():
    model = _model()
    with pytest.raises(UnsupportedAlgorithmError, match="alpha_step is null"):
        qruntime.quantize(model, _config("awq_full", alpha_step=None), _loop)
    assert type(model[0]) is nn.Linear


def test_clipped_amax_is_a_ratio_of_the_max_and_never_worse_on_the_calibration_data():
    """Each block's amax is max|W_block| times a searched ratio, and the layer's output error
    on the (subsampled) calibration tokens is at most that of plain max calibration."""
    model = _model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clipped = qruntime.quantize(copy.deepcopy(model), _config(max_tokens_per_batch=1000), _loop)
        plain = qruntime.quantize(copy.deepcopy(model), {**_config(), "algorithm": "max"}, _loop)
    w = model[0].weight.detach().reshape(-1, 4)
    ratios = clipped[0].weight_quantizer.amax.reshape(-1) / w.abs().amax(1)
    grid = torch.tensor(clip_ratios(0.5, 0.05))
    assert all(bool(torch.isclose(r, grid, rtol=1e-6).any()) for r in ratios)
    assert bool((ratios < 1).any()), "nothing was clipped"

    def error(qmodel):
        x = torch.cat(X).reshape(-1, 8)
        with torch.no_grad():
            return (qmodel[0](x) - model[0](x)).pow(2).sum().item()

    assert error(clipped) <= error(plain)


@pytest.mark.parametrize("method", ["awq_clip", "awq_full"])
def test_a_failing_loop_leaves_the_model_unchanged(method):
    model = _model()
    original = copy.deepcopy(model.state_dict())
    loop = loop_failing_on_pass(1 if method == "awq_clip" else 3, _loop)
    with pytest.raises(RuntimeError, match="went away"):
        qruntime.quantize(model, _config(method), loop)
    assert type(model[0]) is nn.Linear
    assert list(model.state_dict()) == list(original)
    assert_same_state(model, original)


@pytest.mark.parametrize("method", ["awq_clip", "awq_full"])
def test_data_that_is_not_a_number_stops_the_run_and_leaves_the_model_unchanged(method):
    model = _model()
    original = copy.deepcopy(model.state_dict())
    bad = X[1].clone()
    bad[0, 0, 0] = float("nan")

    def loop(m):
        m(X[0])
        m(bad)

    with pytest.raises(RuntimeError, match="the clipping loss is not a number"):
        qruntime.quantize(model, _config(method), loop)
    assert type(model[0]) is nn.Linear
    for key, value in model.state_dict().items():
        assert torch.equal(value, original[key]), key
