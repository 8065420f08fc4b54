"""Property tests of qruntime.numerics against independent truth.

* Formats Model Optimizer 0.47.0 runs on CPU (INT per tensor/channel/token/block, FP8 E4M3 with
  every granularity, affine bias, STE gradients, real-quant round trips): compared bit for bit
  with ``modelopt.torch.quantization`` itself on random shapes, dtypes (fp32, bf16, fp16), exact
  ties, zeros, subnormals, inf/NaN and non-contiguous inputs.
* GPU-only formats (MX, NVFP4): compared with scalar Python implementations written from
  docs/numerics.md, 'NVFP4' and 'MX formats' (one element at a time, binary32 rounding via
  ``struct``), plus hand-derived invariants (idempotence, outputs on the format grid, E8M0 exponent = exact ceil(log2)).
"""

from __future__ import annotations

import math
import struct
import warnings
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from qruntime.numerics import fake_quant, reduce_amax
from qruntime.numerics import mx as mx_mod
from qruntime.numerics import nvfp4 as nvfp4_mod
from qruntime.numerics.rotation import normalized_hadamard_transform

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from modelopt.torch.quantization import tensor_quant as mo_tq
    from modelopt.torch.quantization.config import QuantizerAttributeConfig
    from modelopt.torch.quantization.nn import TensorQuantizer

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32}


def assert_bits(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Same shape, dtype, NaN positions and bit pattern of every non-NaN element."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    nan_a, nan_e = torch.isnan(actual.float()), torch.isnan(expected.float())
    assert torch.equal(nan_a, nan_e), "NaN positions differ"
    a = actual[~nan_a].contiguous().view(_INT_VIEW[actual.element_size()])
    e = expected[~nan_e].contiguous().view(_INT_VIEW[expected.element_size()])
    bad = a != e
    assert not bool(bad.any()), (
        f"{int(bad.sum())}/{a.numel()} differ: {actual[~nan_a][bad][:4].tolist()} vs "
        f"{expected[~nan_e][bad][:4].tolist()}"
    )


# ------------------------------------------------------------------------------------ inputs
@st.composite
def shapes(draw: Any, max_dims: int = 3, max_size: int = 12) -> tuple[int, ...]:
    ndim = draw(st.integers(1, max_dims))
    return tuple(draw(st.integers(1, max_size)) for _ in range(ndim))


def make_tensor(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    seed: int,
    *,
    kind: str = "normal",
    special: bool = False,
    noncontig: bool = False,
    unit: float = 1.0,
    nonneg: bool = False,
) -> torch.Tensor:
    """Deterministic test data: ``kind`` picks the value recipe; ``unit`` scales exact grids."""
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    if kind == "ties":  # integers and half-integers: exact .5 ties when the scale is 1/unit
        v = torch.randint(-20, 21, (n,), generator=g).float() / 2 * unit
    elif kind == "subnormal":
        tiny = 2.0**-140 if dtype != torch.float16 else 2.0**-20
        v = torch.randn(n, generator=g) * tiny
    elif kind == "wide":
        v = torch.randn(n, generator=g) * torch.exp2(torch.randint(-30, 30, (n,), generator=g))
    else:
        v = torch.randn(n, generator=g) * unit
    zeros = torch.rand(n, generator=g) < 0.15
    v[zeros] = 0.0
    if special and n > 1:
        idx = torch.randint(0, n, (2,), generator=g)
        v[idx[0]] = float("nan") if seed % 2 else float("inf")
        v[idx[1]] = -float("inf") if seed % 3 else 0.0
    if nonneg:
        v = v.abs()
    v = v.to(dtype)
    if noncontig and len(shape) > 1:
        base = v.reshape(tuple(reversed(shape))).contiguous()
        return base.permute(*reversed(range(len(shape))))
    if noncontig:
        return torch.stack((v, torch.zeros_like(v)), dim=1).reshape(-1)[::2]
    return v.reshape(shape)


def modelopt_quantizer(cfg: dict[str, Any], amax: torch.Tensor | None) -> TensorQuantizer:
    tq = TensorQuantizer(QuantizerAttributeConfig(**cfg))
    if amax is not None:
        tq.amax = amax.clone()
    return tq


def run_both(x: torch.Tensor, cfg: dict[str, Any], amax: torch.Tensor | None) -> tuple[Any, Any]:
    """(ours, modelopt) outputs — or the exception type each raised."""
    results = []
    for fn in (
        lambda: fake_quant(x, cfg, amax),
        lambda: modelopt_quantizer(cfg, amax)(x),
    ):
        try:
            results.append(fn())
        except (ValueError, TypeError, RuntimeError) as exc:
            results.append(type(exc))
    return results[0], results[1]


def check_against_modelopt(x: torch.Tensor, cfg: dict[str, Any], amax: torch.Tensor | None):
    ours, ref = run_both(x, cfg, amax)
    if isinstance(ref, type):
        assert ours is ref, f"modelopt raised {ref.__name__}, we gave {ours!r}"
    else:
        assert isinstance(ours, torch.Tensor), f"we raised {ours}"
        assert_bits(ours, ref)


# --------------------------------------------------------------------- granularity strategies
@st.composite
def granularity(draw: Any, shape: tuple[int, ...]) -> dict[str, Any]:
    """Per tensor, per channel (int or tuple axis), per token, 1-D or 2-D static blocks."""
    ndim = len(shape)
    kind = draw(st.sampled_from(["tensor", "axis", "token", "block1d", "block2d"]))
    if kind == "axis":
        dims = draw(st.lists(st.integers(-ndim, ndim - 1), min_size=1, max_size=ndim))
        axis = dims[0] if len(dims) == 1 else tuple(sorted({d % ndim for d in dims}))
        return {"axis": axis}
    if kind == "token":
        return {"block_sizes": {-1: None}}
    if kind == "block1d":
        return {"block_sizes": {-1: draw(st.sampled_from([2, 4, 8, 16]))}}
    if kind == "block2d" and ndim >= 2:
        return {"block_sizes": {-1: draw(st.sampled_from([2, 4, 8])), -2: draw(st.integers(1, 4))}}
    return {}


def static_amax(x: torch.Tensor, cfg: dict[str, Any], seed: int, mode: str) -> torch.Tensor | None:
    """None (dynamic) or a calibrated-looking amax of the right layout, perturbed by ``mode``."""
    if mode == "dynamic":
        return None
    clean = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0).to(x.dtype)
    amax = reduce_amax(clean, cfg)
    assert amax is not None
    g = torch.Generator().manual_seed(seed)
    amax = amax.float() * (0.5 + torch.rand(amax.shape, generator=g))
    flat = amax.reshape(-1)
    if mode == "edge" and flat.numel():
        picks = [0.0, 2.0**-24, 2.0**-25, float("inf"), 1e-30]
        for i in range(min(flat.numel(), 3)):
            flat[(seed + i) % flat.numel()] = picks[(seed + i) % len(picks)]
    return amax.to(x.dtype) if mode == "input_dtype" else amax


# ----------------------------------------------------------------------------- INT vs modelopt
@SETTINGS
@given(data=st.data())
def test_int_matches_modelopt(data: Any) -> None:
    shape = data.draw(shapes())
    dtype = data.draw(st.sampled_from(DTYPES))
    seed = data.draw(st.integers(0, 2**31 - 1))
    num_bits = data.draw(st.integers(2, 8))
    unsigned = data.draw(st.booleans())
    narrow = data.draw(st.booleans())
    kind = data.draw(st.sampled_from(["normal", "ties", "subnormal", "wide"]))
    x = make_tensor(
        shape,
        dtype,
        seed,
        kind=kind,
        special=data.draw(st.booleans()),
        noncontig=data.draw(st.booleans()),
        nonneg=unsigned,
    )
    cfg = {"num_bits": num_bits, "unsigned": unsigned, "narrow_range": narrow}
    cfg.update(data.draw(granularity(shape)))
    mode = data.draw(st.sampled_from(["dynamic", "static", "input_dtype", "edge"]))
    check_against_modelopt(x, cfg, static_amax(x, cfg, seed, mode))


@SETTINGS
@given(
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31 - 1),
    num_bits=st.sampled_from([4, 8]),
    narrow=st.booleans(),
    exp=st.integers(-6, 6),
)
def test_int_exact_ties_match_modelopt(
    dtype: torch.dtype, seed: int, num_bits: int, narrow: bool, exp: int
) -> None:
    """amax = qmax * 2^e makes the scale a power of two: every .5 input is an exact tie."""
    qmax = 2 ** (num_bits - 1) - 1
    x = make_tensor((7, 9), dtype, seed, kind="ties", unit=2.0**exp)
    amax = torch.tensor(qmax * 2.0**exp)
    check_against_modelopt(x, {"num_bits": num_bits, "narrow_range": narrow}, amax)


def test_negative_amax_and_unsigned_errors_match_modelopt() -> None:
    x = torch.tensor([-1.0, 0.5, 2.0])
    check_against_modelopt(x, {"num_bits": 8}, torch.tensor(-1.0))
    check_against_modelopt(x, {"num_bits": 8, "unsigned": True}, torch.tensor(2.0))
    with pytest.raises(ValueError, match="Negative values in amax"):
        fake_quant(x, {"num_bits": 8}, torch.tensor(-1.0))
    with pytest.raises(TypeError):
        fake_quant(x, {"num_bits": 8, "unsigned": True}, torch.tensor(2.0))


# ----------------------------------------------------------------------------- FP8 vs modelopt
@SETTINGS
@given(data=st.data())
def test_fp8_matches_modelopt(data: Any) -> None:
    shape = data.draw(shapes())
    dtype = data.draw(st.sampled_from(DTYPES))
    seed = data.draw(st.integers(0, 2**31 - 1))
    kind = data.draw(st.sampled_from(["normal", "subnormal", "wide"]))
    x = make_tensor(
        shape,
        dtype,
        seed,
        kind=kind,
        special=data.draw(st.booleans()),
        noncontig=data.draw(st.booleans()),
        unit=data.draw(st.sampled_from([1.0, 1e-3, 300.0])),
    )
    cfg: dict[str, Any] = {"num_bits": (4, 3)}
    cfg.update(data.draw(granularity(shape)))
    mode = data.draw(st.sampled_from(["dynamic", "static", "input_dtype", "edge"]))
    check_against_modelopt(x, cfg, static_amax(x, cfg, seed, mode))


@SETTINGS
@given(
    amax=st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31 - 1),
)
def test_fp8_scale_rounding_matches_modelopt(amax: float, dtype: torch.dtype, seed: int) -> None:
    """Any amax: Model Optimizer's scale is ``reciprocal(amax) * 448`` (two roundings), not a
    correctly rounded ``448 / amax`` (docs/numerics.md, 'Choices', item 5), and so is ours."""
    a = torch.tensor(amax)
    x = (torch.rand(64, generator=torch.Generator().manual_seed(seed)) * 2 - 1) * amax
    x = x.to(dtype)
    assert_bits(fake_quant(x, {"num_bits": (4, 3)}, a), mo_tq.scaled_e4m3(x, a, None, 4, 3))


def test_fp8_scale_differs_from_single_rounding_division() -> None:
    """The deviation from a one-rounding ``448 / amax`` is real: amax 7.782218 shows it."""
    a = torch.tensor(7.782217979431152)
    assert not torch.equal(torch.tensor(448.0) / a, torch.reciprocal(a) * 448.0)
    x = torch.linspace(-8, 8, 1001)
    ours = fake_quant(x, {"num_bits": (4, 3)}, a)
    assert_bits(ours, mo_tq.scaled_e4m3(x, a, None, 4, 3))
    scale = torch.tensor(448.0) / a
    single = (x * scale).clamp(-448, 448).to(torch.float8_e4m3fn).float() * (1 / scale)
    assert not torch.equal(ours, single)


def test_fp8_constant_amax_matches_modelopt() -> None:
    x = make_tensor((4, 33), torch.bfloat16, 3, kind="wide", special=True)
    check_against_modelopt(x, {"num_bits": (4, 3), "use_constant_amax": True}, None)
    check_against_modelopt(x, {"num_bits": (4, 3), "constant_amax": 3.5}, None)


# ------------------------------------------------------------------------------- bias and STE
@SETTINGS
@given(
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31 - 1),
    method=st.sampled_from(["mean", "max_min"]),
    axes=st.lists(st.sampled_from([-1, -2, -3, 0]), min_size=1, max_size=2, unique=True),
    fp8=st.booleans(),
)
def test_dynamic_bias_matches_modelopt(
    dtype: torch.dtype, seed: int, method: str, axes: list[int], fp8: bool
) -> None:
    x = make_tensor((2, 3, 5, 4), dtype, seed, unit=3.0) + 1.5
    bias: dict[Any, Any] = dict.fromkeys(axes)
    bias.update({"type": "dynamic", "method": method})
    cfg = {"num_bits": (4, 3) if fp8 else 8, "bias": bias}
    check_against_modelopt(x, cfg, None)


@SETTINGS
@given(
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31 - 1),
    fp8=st.booleans(),
    block=st.booleans(),
    ptb=st.booleans(),
)
def test_ste_gradients_match_modelopt(
    dtype: torch.dtype, seed: int, fp8: bool, block: bool, ptb: bool
) -> None:
    x = make_tensor((3, 16), dtype, seed, special=seed % 5 == 0)
    cfg: dict[str, Any] = {"num_bits": (4, 3) if fp8 else 4, "pass_through_bwd": ptb}
    if block:
        cfg["block_sizes"] = {-1: 8}
    amax = static_amax(x, cfg, seed, "static")
    grad = make_tensor((3, 16), dtype, seed + 1)
    xa = x.clone().requires_grad_(True)
    fake_quant(xa, cfg, amax).backward(grad)
    xb = x.clone().requires_grad_(True)
    modelopt_quantizer(cfg, amax)(xb).backward(grad)
    assert xa.grad is not None and xb.grad is not None
    assert_bits(xa.grad, xb.grad)


# --------------------------------------------------------------- real quantization vs modelopt
@SETTINGS
@given(
    dtype=st.sampled_from((torch.float32, torch.bfloat16)),
    seed=st.integers(0, 2**31 - 1),
    fmt=st.sampled_from(["int8_axis0", "fp8", "int4_b32", "nf4", "nvfp4", "mxfp4", "mxfp8"]),
)
def test_real_quant_roundtrip_matches_modelopt(dtype: torch.dtype, seed: int, fmt: str) -> None:
    cfgs: dict[str, dict[str, Any]] = {
        "int8_axis0": {"num_bits": 8, "axis": 0},
        "fp8": {"num_bits": (4, 3)},
        "int4_b32": {"num_bits": 4, "block_sizes": {-1: 32}},
        "nf4": {"num_bits": 4, "block_sizes": {-1: 64, "scale_bits": 8, "scale_block_sizes": {-1: 4}}},
        "nvfp4": {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)}},
        "mxfp4": {"num_bits": (2, 1), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
        "mxfp8": {"num_bits": (4, 3), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
    }  # fmt: skip
    cfg = {**cfgs[fmt], "fake_quant": False}
    x = make_tensor((4, 64), dtype, seed, kind="ties" if seed % 3 == 0 else "normal", unit=0.25)
    tq = modelopt_quantizer(cfg, None)
    ref = tq(tq(x))  # real quantize, then the next forward dequantizes
    assert_bits(fake_quant(x, cfg), ref)


# ---------------------------------------------------- scalar Python references for GPU formats
def f32(v: float) -> float:
    """Round a Python float to binary32 (RNE), overflow to inf."""
    if math.isnan(v) or math.isinf(v):
        return v
    try:
        return struct.unpack("<f", struct.pack("<f", v))[0]
    except OverflowError:
        return math.copysign(math.inf, v)


def minifloat_grid(exp_bits: int, man_bits: int, max_value: float) -> list[float]:
    bias = 2 ** (exp_bits - 1) - 1
    vals = {0.0}
    for e in range(2**exp_bits):
        for m in range(2**man_bits):
            scale = 2.0 ** ((1 if e == 0 else e) - bias)
            v = (m / 2**man_bits + (0 if e == 0 else 1)) * scale
            if v <= max_value:
                vals.add(v)
    return sorted(vals)


GRIDS = {
    "E2M1": minifloat_grid(2, 1, 6.0),
    "E3M2": minifloat_grid(3, 2, 28.0),
    "E2M3": minifloat_grid(2, 3, 7.5),
    "E4M3": minifloat_grid(4, 3, 448.0),
    "E5M2": minifloat_grid(5, 2, 57344.0),
}


def round_grid(m: float, grid: list[float]) -> float:
    """Nearest grid value to ``m >= 0``, ties to the even index, saturating; NaN/inf -> max."""
    if math.isnan(m) or m >= grid[-1]:
        return grid[-1]
    i = max(j for j, g in enumerate(grid) if g <= m)
    if grid[i] == m:
        return m
    lo, hi = m - grid[i], grid[i + 1] - m
    if lo < hi or (lo == hi and i % 2 == 0):
        return grid[i]
    return grid[i + 1]


def ref_e4m3(v: float) -> float:
    if math.isnan(v):
        return v
    return math.copysign(round_grid(abs(v), GRIDS["E4M3"]), v)


def ref_e8m0_k(amax: float, fmax: float) -> int | None:
    """``ceil(log2(f32(amax / fmax)))`` clamped to [-127, 127], derived with ``frexp``."""
    if amax == 0 or math.isinf(amax) or math.isnan(amax):
        return None
    r = f32(amax / fmax)
    if r == 0:  # underflow: the zero bit pattern gives E - 127 = -127
        return -127
    mant, e = math.frexp(r)
    k = e - 1 if mant == 0.5 else e
    return max(-127, min(127, k))


def _rows(x: torch.Tensor, block: int) -> list[list[list[float]]]:
    rows = x.float().reshape(-1, x.shape[-1]).tolist()
    out = []
    for r in rows:
        padded = r + [0.0] * ((-len(r)) % block)
        out.append([padded[i : i + block] for i in range(0, len(padded), block)])
    return out


def _unrows(blocks: list[list[list[float]]], x: torch.Tensor) -> torch.Tensor:
    n = x.shape[-1]
    flat = [v for row in blocks for v in [e for b in row for e in b][:n]]
    return torch.tensor(flat, dtype=torch.float32).reshape(x.shape).to(x.dtype)


def _nan_max(vals: list[float]) -> float:
    finite = [min(abs(v), 3.4028234663852886e38) for v in vals if not math.isnan(v)]
    return max(finite) if finite else 0.0


def ref_mx(x: torch.Tensor, element: str, fmax: float, block: int) -> torch.Tensor:
    """docs/numerics.md, 'E8M0 scale' and 'Element conversion', one element at a time."""
    out = []
    for row in _rows(x, block):
        new_row = []
        for blk in row:
            k = ref_e8m0_k(_nan_max(blk), fmax)
            scale, unscale = (1.0, 1.0) if k is None else (2.0**-k, 2.0**k)
            vals = []
            for v in blk:
                m = f32(abs(v) * scale)
                if element == "INT8":
                    q = -127.0 if not math.isfinite(m) else float(max(-127, min(127, round(m))))
                elif element in ("E4M3", "E5M2"):
                    q = m if math.isnan(m) else round_grid(m, GRIDS[element])
                else:
                    q = round_grid(m, GRIDS[element])
                y = f32(q * unscale)
                vals.append(y if v > 0 else -y)
            new_row.append(vals)
        out.append(new_row)
    return _unrows(out, x)


def ref_nvfp4_cuda(x: torch.Tensor, ga: float, block: int) -> torch.Tensor:
    """docs/numerics.md, 'Dynamic NVFP4: CUDA-extension formula', element by element (in double
    where the kernel uses double)."""
    out = []
    bad = ga == 0 or not math.isfinite(ga)
    for row in _rows(x, block):
        new_row = []
        for blk in row:
            la = _nan_max(blk)
            if bad or la == 0 or not math.isfinite(la):
                scale = unscale = 1.0
            else:
                lu = f32(la / 6.0)
                t = 448.0 * f32(6.0 / ga)
                luq = ref_e4m3(f32(lu * t)) / t
                scale, unscale = f32(1.0 / luq) if luq else math.inf, f32(luq)
            vals = []
            for v in blk:
                m = f32(abs(v) * scale)
                y = f32(round_grid(m, GRIDS["E2M1"]) * unscale)
                vals.append(y if v > 0 else -y)
            new_row.append(vals)
        out.append(new_row)
    return _unrows(out, x)


def ref_nvfp4_triton(x: torch.Tensor, ga: float) -> torch.Tensor:
    """docs/numerics.md, 'Dynamic NVFP4: Triton formula', element by element (blocks of 16)."""
    gs = f32(ga / 2688.0)
    gs = gs if gs > 0 else f32(1e-12)
    out = []
    for row in _rows(x, 16):
        new_row = []
        for blk in row:
            finite = [abs(v) for v in blk if not math.isnan(v)]
            bmax = max(finite) if finite else 0.0
            r = f32(bmax / f32(6.0 * gs))
            r = 448.0 if math.isnan(r) else min(r, 448.0)
            sq = f32(ref_e4m3(r) * gs)
            sq = sq if sq >= f32(1e-5) else 1.0
            vals = []
            for v in blk:
                y = f32(round_grid(f32(abs(v) / sq), GRIDS["E2M1"]) * sq)
                vals.append(y if v >= 0 else -y)
            new_row.append(vals)
        out.append(new_row)
    return _unrows(out, x)


def ref_nvfp4_static(x: torch.Tensor, block_amax: list[float], g: float, m8: float) -> torch.Tensor:
    """docs/numerics.md, 'Static NVFP4 and four-over-six' (with Model Optimizer's reciprocal FP8
    scale, and its ``/ 6.0`` as CUDA computes it: times ``f32(1/6)``), element by element."""
    inv6 = f32(1.0 / 6.0)
    big_g = f32(f32(g * (448.0 / m8)) * inv6)
    safe = 1.0 if big_g <= 2.0**-24 else big_g
    sc = f32(f32(1.0 / safe) * 448.0)
    inv = f32(1.0 / sc)
    rows = x.float().reshape(len(block_amax), -1).tolist()
    out = []
    for a, blk in zip(block_amax, rows, strict=True):
        s = f32(a * inv6)
        sq = f32(ref_e4m3(max(-448.0, min(448.0, f32(s * sc)))) * inv)
        vals = []
        for v in blk:
            if sq == 0:
                vals.append(0.0)
                continue
            u = sq if math.isfinite(sq) else 1.0
            y = f32(round_grid(f32(abs(v) / u), GRIDS["E2M1"]) * u)
            vals.append(y if v >= 0 else -y)
        out.append(vals)
    return torch.tensor(out, dtype=torch.float32).reshape(x.shape).to(x.dtype)


@st.composite
def small_rows(draw: Any, max_cols: int = 70) -> tuple[int, int]:
    return draw(st.integers(1, 3)), draw(st.integers(1, max_cols))


MX_CASES = {
    (2, 1): ("E2M1", 6.0),
    (3, 2): ("E3M2", 28.0),
    (2, 3): ("E2M3", 7.5),
    (4, 3): ("E4M3", 448.0),
    (5, 2): ("E5M2", 57344.0),
    8: ("INT8", 127.0),
}


@SETTINGS
@given(
    rc=small_rows(),
    num_bits=st.sampled_from(list(MX_CASES)),
    block=st.sampled_from([8, 16, 32]),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31 - 1),
    kind=st.sampled_from(["normal", "wide", "subnormal", "ties"]),
    special=st.booleans(),
)
def test_mx_matches_scalar_reference(
    rc: tuple[int, int],
    num_bits: Any,
    block: int,
    dtype: torch.dtype,
    seed: int,
    kind: str,
    special: bool,
) -> None:
    x = make_tensor(rc, dtype, seed, kind=kind, special=special)
    cfg = {
        "num_bits": num_bits,
        "block_sizes": {-1: block, "type": "dynamic", "scale_bits": (8, 0)},
    }
    name, fmax = MX_CASES[num_bits]
    assert_bits(fake_quant(x, cfg), ref_mx(x, name, fmax, block))


@SETTINGS
@given(rc=small_rows(), num_bits=st.sampled_from(list(MX_CASES)), seed=st.integers(0, 2**31 - 1))
def test_mx_is_idempotent(rc: tuple[int, int], num_bits: Any, seed: int) -> None:
    """An MX output is its own fake quantization: the block max lands on the grid at <= the
    same exponent, and the finer grid contains the coarser one below half the max. (Up to the
    sign of zero: a tiny positive input becomes +0, and +0 itself comes out as -0.)"""
    cfg = {"num_bits": num_bits, "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}}
    y = fake_quant(make_tensor(rc, torch.float32, seed, kind="wide"), cfg)
    assert torch.equal(fake_quant(y, cfg), y)


@SETTINGS
@given(amax=st.floats(0, 3.4e38, allow_nan=False), fmt=st.sampled_from(list(MX_CASES.values())))
def test_e8m0_is_exact_ceil_log2(amax: float, fmt: tuple[str, float]) -> None:
    a = torch.tensor([f32(amax), 2.0**-149, 6.0 * 2.0**-127, float("inf"), float("nan")])
    scale, unscale = mx_mod.e8m0_scale(a, fmt[0])
    for i, v in enumerate(a.tolist()):
        k = ref_e8m0_k(v, fmt[1])
        expect = 1.0 if k is None else 2.0**k
        assert unscale[i].item() == expect and scale[i].item() == (1.0 if k is None else 2.0**-k)


@SETTINGS
@given(
    rc=small_rows(),
    block=st.sampled_from([8, 16, 32]),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31 - 1),
    kind=st.sampled_from(["normal", "wide", "subnormal"]),
    special=st.booleans(),
    gmode=st.sampled_from(["dynamic", "calibrated", "tiny", "nan"]),
)
# fp16 overflow makes the dynamic global amax inf (Triton: inf block scale).
@example(
    rc=(1, 3), block=8, dtype=torch.float16, seed=1, kind="wide", special=False, gmode="dynamic"
)
def test_nvfp4_matches_scalar_reference(
    rc: tuple[int, int],
    block: int,
    dtype: torch.dtype,
    seed: int,
    kind: str,
    special: bool,
    gmode: str,
) -> None:
    x = make_tensor(rc, dtype, seed, kind=kind, special=special)
    finite = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0)
    ga = {
        "dynamic": float(reduce_amax(x, {})),
        "calibrated": float(finite.abs().max()) * 1.5,
        "tiny": 2.3e-3,
        "nan": float("nan"),
    }[gmode]
    g = torch.tensor(ga)
    cfg = {"num_bits": (2, 1), "block_sizes": {-1: block, "type": "dynamic", "scale_bits": (4, 3)}}
    amax = None if gmode == "dynamic" else g
    assert_bits(fake_quant(x, cfg, amax), ref_nvfp4_cuda(x, f32(ga), block))
    triton = nvfp4_mod.fake_quant_nvfp4_dynamic(x, g, block, kernel="triton")
    assert_bits(triton, ref_nvfp4_triton(x, f32(ga)))


@SETTINGS
@given(
    rows=st.integers(1, 4),
    blocks=st.integers(1, 3),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31 - 1),
    fos=st.booleans(),
    zero_block=st.booleans(),
)
def test_static_nvfp4_matches_scalar_reference(
    rows: int, blocks: int, dtype: torch.dtype, seed: int, fos: bool, zero_block: bool
) -> None:
    x = make_tensor((rows, 16 * blocks), dtype, seed)
    cfg = {
        "num_bits": (2, 1),
        "block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3), "four_over_six": fos},
    }
    amax = reduce_amax(x, cfg)
    assert amax is not None
    amax = amax.float() * (1.5 if fos and seed % 2 else 1.0)
    if zero_block:
        amax.view(-1)[0] = 0.0
    g = float(amax.max())
    y = fake_quant(x, cfg, amax)
    assert_bits(y, ref_nvfp4_static(x, amax.reshape(-1).tolist(), g, 256.0 if fos else 448.0))


def test_fp4_and_int_cast_ste() -> None:
    from qruntime.numerics.ste import fp4_cast_ste, int_cast_ste

    x = torch.tensor(
        [-7.0, -3.5, -0.0, 0.25, 0.75, 2.5, 5.0, 6.5, float("nan")], requires_grad=True
    )
    y = fp4_cast_ste(x)
    expect = [-6.0, -4.0, 0.0, 0.0, 1.0, 2.0, 4.0, 6.0, -6.0]
    assert y.tolist() == expect
    y.sum().backward()
    assert x.grad is not None
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    v = torch.tensor([-9.0, -7.5, 0.5, 1.5, 7.4, 8.0], requires_grad=True)
    q = int_cast_ste(v, 4, narrow_range=True)
    assert q.tolist() == [-7.0, -7.0, 0.0, 2.0, 7.0, 7.0]
    q.sum().backward()
    assert v.grad is not None
    assert v.grad.tolist() == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]


# ------------------------------------------------------------------------------------ rotation
@SETTINGS
@given(
    log2n=st.integers(1, 7),
    groups=st.integers(1, 3),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31 - 1),
)
def test_hadamard_is_orthonormal_and_self_inverse(
    log2n: int, groups: int, dtype: torch.dtype, seed: int
) -> None:
    b = 2**log2n
    x = make_tensor((3, b * groups), torch.float32, seed)
    y = normalized_hadamard_transform(x, block_size=b)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(normalized_hadamard_transform(y, block_size=b), x, rtol=0, atol=1e-5)
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < b:
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    blocks = x.double().reshape(3, groups, b) @ h / math.sqrt(b)
    torch.testing.assert_close(y.double(), blocks.reshape(3, -1), rtol=0, atol=1e-5)
    yd = normalized_hadamard_transform(x.to(dtype), block_size=b)
    assert yd.dtype == dtype


def test_hadamard_block_rules() -> None:
    x = torch.ones(2, 24)
    assert normalized_hadamard_transform(x).shape == (2, 24)  # largest pow2 divisor: 8
    with pytest.raises(RuntimeError):
        normalized_hadamard_transform(torch.ones(2, 9))
    with pytest.raises(ValueError):
        normalized_hadamard_transform(x, block_size=12)


# --------------------------------------------------------------------------- API behaviours
def test_backend_argument() -> None:
    """On CPU tensors "auto" is the torch reference; unknown names are rejected. ("triton" is
    qruntime.kernels' business, tested there.)"""
    x = torch.randn(4, 8)
    assert_bits(fake_quant(x, {}, backend="auto"), fake_quant(x, {}, backend="torch"))
    with pytest.raises(ValueError, match="unknown backend"):
        fake_quant(x, {}, backend="cuda")


def test_attribute_objects_and_defaults() -> None:
    """Duck-typed attribute objects, JSON-style lists/str keys and defaults behave alike."""
    x = make_tensor((4, 32), torch.float32, 7, kind="wide")

    class Attrs:
        num_bits = (4, 3)
        block_sizes = {"-1": 16}

    a = fake_quant(x, Attrs())
    b = fake_quant(x, {"num_bits": [4, 3], "block_sizes": {-1: 16}})
    assert_bits(a, b)
    assert_bits(fake_quant(x, None), fake_quant(x, {"num_bits": 8}))
    assert fake_quant(x, {"enable": False}) is x
    empty = torch.empty(0, 3)
    assert fake_quant(empty, {}) is empty


def test_reduce_amax_layouts() -> None:
    """The amax shapes calibration stores are the shapes fake_quant broadcasts."""
    x = make_tensor((6, 20), torch.bfloat16, 11)
    nvfp4 = {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)}}
    mx = {"num_bits": (2, 1), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}}
    cases: list[tuple[dict[str, Any], tuple[int, ...] | None]] = [
        ({"num_bits": 8}, ()),
        ({"num_bits": 8, "axis": 0}, (6, 1)),
        ({"num_bits": 8, "axis": -1}, (1, 20)),
        ({"num_bits": 8, "block_sizes": {-1: None}}, (6, 1)),
        ({"num_bits": 4, "block_sizes": {-1: 8}}, (18, 1)),  # 20 -> 24 padded, 3 blocks a row
        ({"num_bits": 8, "block_sizes": {-1: 8, -2: 4}}, (2, 1, 3, 1)),
        (nvfp4, ()),
        (mx, None),
    ]
    for cfg, shape in cases:
        amax = reduce_amax(x, cfg)
        if shape is None:
            assert amax is None
            continue
        assert amax is not None and tuple(amax.shape) == shape, (cfg, amax)
        assert amax.dtype == x.dtype
        assert_bits(fake_quant(x, cfg, amax), fake_quant(x, cfg))


def test_unsupported_configurations_raise() -> None:
    x = torch.randn(4, 32)
    mx = {"num_bits": (2, 1), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}}
    nvfp4 = {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)}}
    with pytest.raises(TypeError):
        fake_quant(x.double(), mx)
    with pytest.raises(TypeError):
        fake_quant(x.double(), nvfp4)
    with pytest.raises(ValueError, match="block size"):
        fake_quant(x, {**mx, "block_sizes": {-1: 64, "type": "dynamic", "scale_bits": (8, 0)}})
    with pytest.raises(NotImplementedError, match="E=4 & M=3"):
        fake_quant(x, {"num_bits": (2, 1)})
    with pytest.raises(ValueError, match="no fake-quant format"):
        fake_quant(x, {"num_bits": 4, "block_sizes": {-1: 16, "type": "dynamic"}})
    with pytest.raises(ValueError, match="bias_value"):
        fake_quant(x, {"num_bits": 8, "bias": {-1: None, "type": "static"}})
    with pytest.raises(ValueError, match="one amax"):
        fake_quant(x, [{"num_bits": 8}, {"num_bits": (4, 3)}], [torch.tensor(1.0)])
    with pytest.raises(ValueError, match="rotate_back"):
        fake_quant(
            x,
            {"num_bits": 8, "fake_quant": False, "rotate": {"enable": True, "mode": "rotate_back"}},
        )
