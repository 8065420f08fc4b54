"""gptq: the Hessian, the update and the one-column quantization against hand-derived values
and a textbook GPTQ in float64; the result lies on the quantization grid; registration,
refusals and rollback. (Bit-exactness with Model Optimizer:
tests/conformance/test_gptq_conformance.py.)"""

import copy
import warnings

import pytest
import qruntime
import torch
from calibration_cases import assert_same_state, loop_failing_on_pass
from qconfig.algorithm_methods import GPTQCalibConfig
from qruntime.calibrate import UnsupportedAlgorithmError, algorithm_for, gptq_update
from qruntime.calibrate import gptq as gptq_module
from qruntime.calibrate.gptq_update import (
    column_quantizer,
    fused_nvfp4_qdq,
    fused_nvfp4_update,
    hessian_inverse,
    update_hessian,
)
from torch import nn

CIN, COUT = 16, 5


def _config(weight=None, **options):
    weight = weight or {"num_bits": 8, "axis": 0}
    return {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*weight_quantizer", "cfg": weight},
        ],
        "algorithm": {"method": "gptq", **options},
    }


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(CIN, COUT), nn.ReLU(), nn.Linear(COUT, 3))


def _inputs():
    """Correlated inputs (a random mixing of fewer sources), so GPTQ has errors to cancel."""
    g = torch.Generator().manual_seed(1)
    mix = torch.randn(6, CIN, generator=g)
    return [torch.randn(4, 7, 6, generator=g) @ mix for _ in range(2)]


X = _inputs()


def _loop(m):
    for x in X:
        m(x)


def _quantize(model, cfg, loop=_loop):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return qruntime.quantize(copy.deepcopy(model), cfg, loop)


# ------------------------------------------------------------------------------ the Hessian
def test_update_hessian_is_twice_the_mean_outer_product():
    """Over batches of different sizes (and an empty one): H = 2/N sum x x^T."""
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(3, 4, 6, generator=g), torch.randn(0, 6), torch.randn(5, 6, generator=g)]
    h, n = torch.zeros(6, 6), 0
    for x in batches:
        n = update_hessian(x, h, n)
    flat = torch.cat([x.reshape(-1, 6) for x in batches]).double()
    assert n == 17
    torch.testing.assert_close(h.double(), 2 * flat.T @ flat / 17, rtol=1e-5, atol=1e-6)


def test_hessian_inverse_by_hand():
    """H = diag(2, 4): damp 0.1 * mean(3) = 0.3; U = chol(inv(diag(2.3, 4.3)), upper)."""
    u = hessian_inverse(torch.diag(torch.tensor([2.0, 4.0])), torch.ones(3, 2), 0.1)
    expected = torch.diag(torch.tensor([2.3, 4.3]).rsqrt())
    torch.testing.assert_close(u, expected)


def test_dead_weight_columns_get_a_unit_diagonal_and_a_zero_hessian_an_identity():
    h = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
    w = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    u = hessian_inverse(h, w, 0.5)  # column 1 dead: H = diag(2, 1) + 0.75 I
    torch.testing.assert_close(u, torch.diag(torch.tensor([2.75, 1.75]).rsqrt()))
    with pytest.warns(UserWarning, match="lin is not positive definite"):
        u = hessian_inverse(torch.zeros(3, 3), torch.ones(2, 3), 0.01, "lin")
    assert torch.equal(u, torch.eye(3))


# ------------------------------------------------------------------------------ one column
WEIGHT_FORMATS = {
    "int8 channel": {"num_bits": 8, "axis": 0},
    "int8 tensor": {"num_bits": 8, "axis": None},
    "int4 block 4": {"num_bits": 4, "block_sizes": {-1: 4, "type": "static"}},
    "int4 block 5 padded": {"num_bits": 4, "block_sizes": {-1: 5, "type": "static"}},
    "int4 block 4 untyped": {"num_bits": 4, "block_sizes": {-1: 4}},
    "fp8": {"num_bits": (4, 3), "axis": None},
    "fp8 channel": {"num_bits": (4, 3), "axis": 0},
    "nvfp4 static": {
        "num_bits": (2, 1),
        "block_sizes": {-1: 4, "type": "static", "scale_bits": (4, 3)},
    },
}


@pytest.mark.parametrize("fmt", list(WEIGHT_FORMATS))
def test_one_column_is_the_column_of_the_whole_matrix(fmt):
    """The column path against the quantizer on the whole (perturbed) weight."""
    model = _quantize(_model(), {**_config(WEIGHT_FORMATS[fmt]), "algorithm": "max"})
    q = model[0].weight_quantizer
    w = model[0].weight.detach() * 1.3 + 0.01  # values off the grid, some beyond the amax
    column = column_quantizer(q, w.shape)
    assert column is not None
    whole = q(w)
    for j in range(CIN):
        assert torch.equal(column(w[:, j : j + 1], j), whole[:, j : j + 1]), j


@pytest.mark.parametrize(
    "weight",
    [
        {"num_bits": (2, 1), "block_sizes": {-1: 8, "type": "dynamic", "scale_bits": (4, 3)}},
        {"num_bits": (4, 3), "block_sizes": {-1: 8, "type": "dynamic", "scale_bits": (8, 0)}},
    ],
    ids=["nvfp4 dynamic", "mxfp8"],
)
def test_value_dependent_scales_take_the_whole_matrix(weight):
    model = _quantize(_model(), {**_config(weight), "algorithm": "max"})
    assert column_quantizer(model[0].weight_quantizer, model[0].weight.shape) is None


def test_a_pre_quant_scale_or_no_amax_takes_the_whole_matrix():
    model = _quantize(_model(), {**_config(), "algorithm": "max"})
    q = model[0].weight_quantizer
    assert column_quantizer(q, model[0].weight.shape) is not None
    q.pre_quant_scale = torch.full((CIN,), 2.0)
    assert column_quantizer(q, model[0].weight.shape) is None
    q.pre_quant_scale = None
    q.reset_amax()
    assert column_quantizer(q, model[0].weight.shape) is None


# ------------------------------------------------------------------------------ the result
def _textbook(w, x, amax, perc_damp):
    """Textbook GPTQ in float64 with an INT8 per-row quantizer of the given amax: one column at
    a time, the error spread with the upper Cholesky factor of the damped inverse Hessian."""
    w, x = w.double().clone(), x.double()
    h = 2 * x.T @ x / x.shape[0]
    h += perc_damp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    u = torch.linalg.cholesky(torch.linalg.inv(h), upper=True)
    scale = 127 / amax.double().reshape(-1)
    for j in range(w.shape[1]):
        q = torch.clamp(torch.round(w[:, j] * scale), -128, 127) / scale
        err = (w[:, j] - q) / u[j, j]
        w[:, j:] -= torch.outer(err, u[j, j:])
        w[:, j] = q
    return w


def test_result_is_textbook_gptq_and_beats_rounding_to_nearest():
    model = _model()
    ours = _quantize(model, _config(block_size=5))
    rtn = _quantize(model, {**_config(), "algorithm": "max"})
    rtn_weight = rtn[0].weight_quantizer(rtn[0].weight)
    x = torch.cat(X).reshape(-1, CIN)
    amax = ours[0].weight_quantizer.amax
    expected = _textbook(model[0].weight.detach(), x, amax, 0.01)
    got = ours[0].weight.detach().double()
    step = (amax.double() / 127).reshape(-1, 1)
    # The same grid point almost everywhere; a rounding tie decided differently in float32
    # moves a weight by one step at most.
    assert ((got - expected).abs() <= step * 1.001).all()
    assert (torch.isclose(got, expected, rtol=0, atol=1e-6)).float().mean() > 0.95
    assert not torch.equal(ours[0].weight, rtn_weight)

    def hessian_error(q):
        d = q.detach().double() - model[0].weight.detach().double()
        return (d @ x.double().T).pow(2).sum()

    assert hessian_error(ours[0].weight) < 0.8 * hessian_error(rtn_weight)


@pytest.mark.parametrize("fmt", list(WEIGHT_FORMATS))
def test_weights_lie_on_the_grid(fmt):
    """Re-quantizing a GPTQ weight returns it unchanged, the amax is max calibration's."""
    model = _model()
    ours = _quantize(model, _config(WEIGHT_FORMATS[fmt], block_size=3))
    rtn = _quantize(model, {**_config(WEIGHT_FORMATS[fmt]), "algorithm": "max"})
    for i in (0, 2):
        q = ours[i].weight_quantizer
        assert torch.equal(q(ours[i].weight), ours[i].weight)
        assert torch.equal(q.amax, rtn[i].weight_quantizer.amax)
    assert not torch.equal(ours[0].weight, rtn[0].weight_quantizer(rtn[0].weight))


# ------------------------------------------------------------------------------ the run
def test_registered():
    assert algorithm_for(GPTQCalibConfig()).run is gptq_module.gptq_calibrate
    caps = algorithm_for(GPTQCalibConfig()).capabilities
    assert caps.needs_forward_data and caps.writes_weights


NVFP4_STATIC = WEIGHT_FORMATS["nvfp4 static"]


@pytest.mark.parametrize(
    ("weight", "options", "message"),
    [
        (None, {"perc_damp": None}, "perc_damp is null"),
        (None, {"block_size": None}, "block_size is null"),
        (None, {"block_size": 0}, "at least 1"),
        (NVFP4_STATIC, {"fused": True, "block_size": 6}, "multiple of the NVFP4 block"),
        (
            {**NVFP4_STATIC, "block_sizes": {**NVFP4_STATIC["block_sizes"], "four_over_six": True}},
            {"fused": True},
            "four_over_six",
        ),
        (None, {"layerwise": {"enable": True}}, "layerwise"),
    ],
)
def test_refused_before_the_model_is_touched(weight, options, message):
    model = _model()
    with pytest.raises(UnsupportedAlgorithmError, match=message):
        qruntime.quantize(model, _config(weight, **options), _loop)
    assert type(model[0]) is nn.Linear


def test_out_of_range_damping_is_refused_by_the_config():
    with pytest.raises(ValueError, match="perc_damp"):
        qruntime.quantize(_model(), _config(perc_damp=0.0), _loop)


def test_no_forward_loop_is_refused():
    model = _model()
    with pytest.raises(UnsupportedAlgorithmError):
        qruntime.quantize(model, _config(), None)
    assert type(model[0]) is nn.Linear


def test_fused_runs_the_unfused_update_on_other_formats():
    model = _model()
    fused = _quantize(model, _config(fused=True))
    plain = _quantize(model, _config())
    assert torch.equal(fused[0].weight, plain[0].weight)


def test_a_failing_loop_leaves_the_model_unchanged():
    model = _model()
    original = copy.deepcopy(model.state_dict())
    loop = loop_failing_on_pass(2, _loop)  # the Hessian pass
    with pytest.raises(RuntimeError, match="went away"):
        qruntime.quantize(model, _config(), loop)
    assert type(model[0]) is nn.Linear
    assert_same_state(model, original)


def test_a_failing_update_restores_the_weights_already_written(monkeypatch):
    model = _model()
    original = copy.deepcopy(model.state_dict())
    real = gptq_module.update_weights
    done = []

    def update_then_fail(linear, hessian, options):
        if done:
            raise RuntimeError("second layer failed")
        real(linear, hessian, options)
        done.append(linear.name)
        assert not torch.equal(linear.weight, original[f"{linear.name}.weight"])

    monkeypatch.setattr(gptq_module, "update_weights", update_then_fail)
    with pytest.raises(RuntimeError, match="second layer failed"):
        qruntime.quantize(model, _config(), _loop)
    assert done == ["0"]
    assert type(model[0]) is nn.Linear
    for key, value in model.state_dict().items():
        assert torch.equal(value, original[key]), key


# ------------------------------------------------------------------------------ fused: true
def _textbook_fused(w, amax, global_amax, u, block_size, quant_block):
    """The fused update written out element by element in numpy fp32 scalars (IEEE, no FMA):
    per row and column the two-level scale, the FP4 magnitude, the error, the in-block update;
    after each block the trailing update with torch's ``addmm`` (the host step)."""
    import numpy as np

    f = np.float32
    gs = f(float(global_amax) / (6.0 * 448.0))
    grid = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    w = w.clone()
    rows, cols = w.shape
    for b0 in range(0, cols, block_size):
        b1 = min(b0 + block_size, cols)
        work = w[:, b0:b1].numpy().astype(np.float32).copy()
        q = np.zeros_like(work)
        err = np.zeros_like(work)
        for r in range(rows):
            for i in range(b1 - b0):
                x = f(work[r, i] + f(0.0))
                unit = min(f(amax[r, (b0 + i) // quant_block]) / (f(6.0) * gs), f(448.0))
                scale = f(torch.tensor(unit).to(torch.float8_e4m3fn).float().item()) * gs
                a = abs(x) / scale
                # nearest grid magnitude; a tie goes to the even code (index)
                k = min(range(8), key=lambda n: (abs(a - grid[n]), n % 2))
                mag = f(grid[k]) * scale
                q[r, i] = f((mag if x >= 0 else -mag) + f(0.0))
                err[r, i] = (x - q[r, i]) / f(u[b0 + i, b0 + i])
                for j in range(i + 1, b1 - b0):
                    work[r, j] = work[r, j] - err[r, i] * f(u[b0 + i, b0 + j])
        w[:, b0:b1] = torch.from_numpy(q)
        if b1 < cols:
            w[:, b1:].addmm_(torch.from_numpy(err), u[b0:b1, b1:], alpha=-1)
    return w


def _fused_weight(rows, cols, seed, tiny=False):
    """With ``tiny`` and a global amax of 2688 (global scale 1), the block scales ``amax / 6``
    (about 0.005) are E4M3 subnormals (below 2^-6)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * (0.01 if tiny else 0.1)
    w[0, :4] = 0
    x = torch.randn(40, cols, generator=g) @ torch.randn(cols, cols, generator=g)
    u = hessian_inverse(2 * x.T @ x / 40, w, 0.01)
    return w, u


@pytest.mark.parametrize("tiny", [False, True], ids=["normal scales", "subnormal scales"])
def test_fused_update_is_the_textbook_in_fp32(tiny):
    """The torch reference against the scalar textbook, bit for bit, with normal and E4M3
    subnormal block scales."""
    w, u = _fused_weight(6, 24, 0, tiny)
    amax = w.abs().reshape(6, 6, 4).amax(-1)
    global_amax = torch.tensor(2688.0) if tiny else amax.max()
    assert (amax / 6 < 2**-6).all() if tiny else (amax / 6 >= 2**-6).float().mean() > 0.5
    ours = w.clone()
    fused_nvfp4_update(ours, u, 8, amax, global_amax, 4, backend="torch")
    expected = _textbook_fused(w, amax, global_amax, u, 8, 4)
    assert torch.equal(ours.view(torch.int32), expected.view(torch.int32))


def test_fused_qdq_by_hand():
    """Global amax 2688: global scale 1. Block amax 6.375: 1.0625 is an E4M3 tie -> 1.0, so
    2.6 -> 3.0, 0.25 -> 0 (tie to the even code), -0.3 -> -0.5. Block amax 0.018: 0.003 is E4M3
    subnormal, nearest 2^-8; 0.01 / 2^-8 = 2.56 -> 3 * 2^-8. Block amax 0: everything 0."""
    x = torch.tensor([2.6, 0.25, -0.3, 0.01, 5.0])
    amax = torch.tensor([6.375, 6.375, 6.375, 0.018, 0.0])
    out = fused_nvfp4_qdq(x, amax, 2688.0 / (6.0 * 448.0))
    assert out.tolist() == [3.0, 0.0, -0.5, 3 * 2.0**-8, 0.0]


def _interpreted() -> None:
    import triton

    assert triton.knobs.runtime.interpret, "run the kernel tests with TRITON_INTERPRET=1"


@pytest.mark.parametrize(
    "rows,cols,block_size,tiny",
    [(5, 64, 16, False), (3, 96, 48, False), (9, 40, 32, True), (1, 24, 8, False)],
)
def test_fused_kernel_is_the_torch_reference(rows, cols, block_size, tiny):
    """The Triton kernel in the interpreter against the torch reference, bit for bit: GPTQ
    blocks of 48 columns (not a power of two), a narrower final block, E4M3-subnormal scales
    and ties (the kernel rounds the scale to nearest-even itself), one row."""
    _interpreted()
    w, u = _fused_weight(rows, cols, rows * cols, tiny)
    amax = w.abs().reshape(rows, cols // 4, 4).amax(-1)
    amax[0, 0] = 6.375  # with global scale 1: 1.0625, exactly between two E4M3 values
    global_amax = torch.tensor(2688.0)
    rest = amax[:, 1:]
    assert (rest / 6 < 2**-6).all() if tiny else (rest / 6 >= 2**-6).float().mean() > 0.5
    results = []
    for backend in ("triton", "torch"):
        out = w.clone()
        fused_nvfp4_update(out, u, block_size, amax, global_amax, 4, backend=backend)
        results.append(out.view(torch.int32))
    assert torch.equal(*results)


def test_fused_nvfp4_static_weights_run_the_fused_update(monkeypatch):
    """``fused: true`` on NVFP4-static weights runs the fused update (on CPU: the torch
    reference) on the quantized linear, whose weights end on the quantizer's grid; without
    ``fused``, the unfused loop runs."""
    calls = []
    real = gptq_update.fused_nvfp4_update

    def counted(weight, *args, **kwargs):
        calls.append(tuple(weight.shape))
        real(weight, *args, **kwargs)

    monkeypatch.setattr(gptq_module, "fused_nvfp4_update", counted)
    model = _quantize(_model(), _first_layer_only(_config(NVFP4_STATIC, fused=True, block_size=8)))
    assert calls == [(COUT, CIN)]
    w = model[0].weight.detach()
    assert torch.equal(model[0].weight_quantizer(w), w)
    _quantize(_model(), _first_layer_only(_config(NVFP4_STATIC, block_size=8)))
    assert calls == [(COUT, CIN)]


def _first_layer_only(cfg):
    cfg["quant_cfg"].append({"quantizer_name": "2.weight_quantizer", "enable": False})
    return cfg


def test_fused_refuses_a_width_without_whole_blocks():
    """The second layer has 5 input columns: no whole NVFP4 blocks of 4 (Model Optimizer's
    fused path fails on the reshape of its amaxes); the error names it and the model is
    restored."""
    model = _model()
    original = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="whole NVFP4 blocks"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qruntime.quantize(model, _config(NVFP4_STATIC, fused=True, block_size=8), _loop)
    assert type(model[0]) is nn.Linear
    for key, value in model.state_dict().items():
        assert torch.equal(value, original[key]), key
