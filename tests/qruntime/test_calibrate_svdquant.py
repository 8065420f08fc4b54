"""svdquant: the SVD factors against hand-derived values, the branch in the forward, the
refusals, rollback of a failed run, and the state-file round trip. (Bit-exactness with Model
Optimizer: tests/conformance/test_svdquant_conformance.py.)"""

import copy
import math
import warnings

import pytest
import qruntime
import torch
import torch.nn.functional as F
from calibration_cases import loop_failing_on_pass
from qconfig.errors import DocumentError
from qruntime.calibrate import UnsupportedAlgorithmError
from qruntime.calibrate.svdquant import svd_factors
from torch import nn


# ------------------------------------------------------------------------------ the factors
def test_rank_one_factors_of_a_rank_one_weight():
    """W = u v^T with u = (1, 2, 2) (norm 3), v = (2, 1) (norm sqrt 5): one singular value
    3 sqrt 5; B = U S is +-u sqrt 5, A = V^T is +-v / sqrt 5, and B @ A = W."""
    u, v = torch.tensor([1.0, 2.0, 2.0]), torch.tensor([2.0, 1.0])
    weight = torch.outer(u, v)
    lora_b, lora_a = svd_factors(weight, 1)
    assert lora_b.shape == (3, 1) and lora_a.shape == (1, 2)
    assert lora_b.dtype == lora_a.dtype == torch.float32
    sign = torch.sign(lora_a[0, 0])
    expected_b = (u * math.sqrt(5)).to(torch.float64)
    expected_a = (v / math.sqrt(5)).to(torch.float64)
    assert torch.allclose(lora_b[:, 0].double() * sign, expected_b, atol=1e-6)
    assert torch.allclose(lora_a[0].double() * sign, expected_a, atol=1e-7)
    assert torch.allclose(lora_b @ lora_a, weight, atol=1e-6)


def test_truncation_keeps_the_largest_singular_values():
    """diag(5, 3, 1) with rank 2: B @ A = diag(5, 3, 0), and the residual is diag(0, 0, 1)."""
    weight = torch.diag(torch.tensor([3.0, 5.0, 1.0]))
    lora_b, lora_a = svd_factors(weight, 2)
    assert torch.equal((lora_b @ lora_a).abs(), torch.diag(torch.tensor([3.0, 5.0, 0.0])))
    assert torch.equal(weight - lora_b @ lora_a, torch.diag(torch.tensor([0.0, 0.0, 1.0])))


def test_rank_above_the_weight_is_zero_padded_with_a_warning():
    weight = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]])
    with pytest.warns(UserWarning, match="has only 2 singular values; the rank-4 branch"):
        lora_b, lora_a = svd_factors(weight, 4)
    assert lora_b.shape == (3, 4) and lora_a.shape == (4, 2)
    assert not lora_b[:, 2:].any() and not lora_a[2:].any()
    assert torch.allclose(lora_b @ lora_a, weight, atol=1e-5)


def test_factors_take_the_weight_dtype_and_come_from_float64():
    weight = torch.randn(6, 5, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    lora_b, lora_a = svd_factors(weight, 3)
    assert lora_b.dtype == lora_a.dtype == torch.bfloat16
    u, s, vt = torch.linalg.svd(weight.double(), full_matrices=False)
    assert torch.equal(lora_b, (u[:, :3] * s[:3]).to(torch.bfloat16))
    assert torch.equal(lora_a, vt[:3].to(torch.bfloat16))


def test_a_weight_that_is_not_a_number_has_no_svd():
    with pytest.raises(ValueError, match="NaN or infinite"):
        svd_factors(torch.tensor([[1.0, float("nan")]]), 1)


# ------------------------------------------------------------------------------ the model
def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))


X = [torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]


def _loop(m):
    for x in X:
        m(x)


def _config(weights=None, inputs=None, **options):
    entries = [
        {"quantizer_name": "*", "enable": False},
        {
            "quantizer_name": "*weight_quantizer",
            "cfg": weights or {"num_bits": 4, "block_sizes": {-1: 2, "type": "static"}},
        },
    ]
    if inputs is not None:
        entries.append({"quantizer_name": "*input_quantizer", "cfg": inputs})
    return {"quant_cfg": entries, "algorithm": {"method": "svdquant", "lowrank": 2, **options}}


def _quantize(model, cfg, loop=_loop):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return qruntime.quantize(model, cfg, loop)


def test_branch_forward_by_hand():
    """y = QLinear(x * pqs) with the residual weight + (x * pqs) A^T B^T, and the residual is
    the smoothed weight minus B @ A (the smoothed weight is W * (1 / pqs) per column)."""
    model = _model()
    original = model[0].weight.detach().clone()
    quantized = _quantize(model, _config())
    layer = quantized[0]
    wq, iq = layer.weight_quantizer, layer.input_quantizer
    a, b, pqs = wq._svdquant_lora_a, wq._svdquant_lora_b, iq.pre_quant_scale
    assert a.shape == (2, 8) and b.shape == (6, 2)
    smoothed = (original * (1.0 / pqs)[None, :]).to(original.dtype)
    assert torch.equal(layer.weight.detach(), smoothed - b @ a)
    x = X[0]
    xs = x * pqs
    expected = F.linear(xs, wq(layer.weight.detach()), layer.bias) + F.linear(F.linear(xs, a), b)
    with torch.no_grad():
        assert torch.equal(layer(x), expected)
    w = layer.weight.detach().reshape(-1, 2)  # the residual's amax, by max calibration
    assert torch.equal(wq.amax.reshape(-1), w.abs().amax(1))


def test_summary_names_the_branch():
    quantized = _quantize(_model(), _config())
    assert "rank-2 low-rank branch" in qruntime.summary(quantized)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lowrank": 0}, "lowrank is 0"),
        ({"lowrank": None}, "lowrank is None"),
        ({"moe_calib_experts_ratio": 0.5}, "moe_calib_experts_ratio"),
        ({"layerwise": {"enable": True}}, "layerwise"),
    ],
)
def test_refused_before_the_model_is_touched(options, message):
    model = _model()
    with pytest.raises(UnsupportedAlgorithmError, match=message):
        qruntime.quantize(model, _config(**options), _loop)
    assert type(model[0]) is nn.Linear


def test_a_forward_loop_is_required():
    model = _model()
    with pytest.raises(UnsupportedAlgorithmError, match="'svdquant' needs calibration data"):
        qruntime.quantize(model, _config(), None)
    assert type(model[0]) is nn.Linear


def _assert_unchanged(model, original):
    assert type(model[0]) is nn.Linear and type(model[2]) is nn.Linear
    assert list(model.state_dict()) == list(original)
    for key, value in model.state_dict().items():
        assert torch.equal(value, original[key]) or torch.allclose(
            value, original[key], rtol=0, atol=0, equal_nan=True
        ), key
    assert not any("svdquant" in name for name, _ in model.named_buffers())


def test_a_failure_in_the_third_pass_leaves_the_model_unchanged():
    """The third pass runs after the SVD step rewrote the weights and added the factors."""
    model = _model()
    original = copy.deepcopy(model.state_dict())

    def has_factors(m):
        assert any("svdquant" in name for name, _ in m.named_buffers())

    loop = loop_failing_on_pass(3, _loop, before_failing=has_factors)
    with pytest.raises(RuntimeError, match="went away"):
        qruntime.quantize(model, _config(), loop)
    assert loop.calls == 3
    _assert_unchanged(model, original)


def test_a_weight_that_is_not_a_number_stops_the_run_and_leaves_the_model_unchanged():
    """The first layer's weight is already smoothed when the second one's amax (max
    calibration inside the AWQ step) turns out not to be a number."""
    model = _model()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    original = copy.deepcopy(model.state_dict())
    with pytest.raises(AssertionError, match="nan values in amax"):
        _quantize(model, _config())
    _assert_unchanged(model, original)


# ------------------------------------------------------------------------------ state files
@pytest.mark.parametrize(
    ("weights", "in_state_dict", "lowrank"),
    [
        ({"num_bits": 4, "block_sizes": {-1: 2, "type": "static"}}, False, 2),
        ({"num_bits": 8, "axis": 0}, True, 2),
        ({"num_bits": 8, "axis": 0}, True, 7),
    ],
    ids=["int4-static-blocks", "int8-per-channel", "zero-padded"],
)
def test_state_round_trip_is_bit_identical(tmp_path, weights, in_state_dict, lowrank):
    """The factors are in state_dict only where Model Optimizer keeps them there; the state
    file carries them either way, with the rewritten weights and the pre_quant_scales. (The
    buffers come back in qruntime's buffer order, not necessarily the calibration's.)"""
    cfg = _config(weights, inputs={"num_bits": 8}, lowrank=lowrank)
    quantized = _quantize(_model(), cfg)
    keys = list(quantized.state_dict())
    assert ("0.weight_quantizer._svdquant_lora_a" in keys) is in_state_dict
    path = tmp_path / "svd.safetensors"
    qruntime.save_state(quantized, path)
    restored = qruntime.restore_state(_model(), path)
    assert sorted(restored.state_dict()) == sorted(keys)  # a state file keeps no order
    for key, value in quantized.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value), key
    for layer in (0, 2):
        ours, theirs = restored[layer].weight_quantizer, quantized[layer].weight_quantizer
        assert torch.equal(ours._svdquant_lora_a, theirs._svdquant_lora_a)
        assert torch.equal(ours._svdquant_lora_b, theirs._svdquant_lora_b)
    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert torch.equal(restored(x), quantized(x))
    states = qruntime.quantizer_states(restored)
    assert states["0.input_quantizer"]["pre_quant_scale"] is not None


def _file(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t.pop("0.weight_quantizer._svdquant_lora_b"),
            r"_svdquant_lora_b'\]: is missing: low-rank factors come in pairs",
        ),
        (
            lambda t: t.__setitem__(
                "0.weight_quantizer._svdquant_lora_a", torch.zeros(2, 6, dtype=torch.float32)
            ),
            r"needs \[r, 8\] and \[6, r\]",
        ),
        (
            lambda t: t.__setitem__("0.input_quantizer._svdquant_lora_a", torch.zeros(2, 8)),
            "quantizes no 2-D weight",
        ),
    ],
    ids=["unpaired", "wrong-shape", "not-a-weight"],
)
def test_factors_in_a_state_file_are_checked_before_the_model_is_touched(tmp_path, edit, message):
    from safetensors.torch import save_file

    path = tmp_path / "svd.safetensors"
    qruntime.save_state(_quantize(_model(), _config()), path)
    metadata, tensors = _file(path)
    edit(tensors)
    weights = [k for k in tensors if k.endswith(".weight")]
    metadata["tensors"] = (
        "[" + ",".join(f'"{k}"' for k in sorted(set(tensors) - set(weights))) + "]"
    )
    save_file(tensors, str(path), metadata=metadata)
    fresh = _model()
    before = copy.deepcopy(fresh.state_dict())
    with pytest.raises(DocumentError, match=message):
        qruntime.restore_state(fresh, path)
    _assert_unchanged(fresh, before)
