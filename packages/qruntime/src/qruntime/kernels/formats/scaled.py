"""Triton kernels for the amax-scaled formats: INT-N and FP8 E4M3.

docs/numerics.md, 'INT-N' and 'FP8 E4M3'.

Both formats are one element formula with a broadcast amax, so they share three kernels:

* ``_ew_kernel``: a given amax (static/calibrated, constant, or a torch reduction) broadcast over
  any layout :func:`..layout.ew_plan` can express (per tensor, per channel on any axis, per
  token, 1-D and 2-D static blocks). The per-group scales are computed by torch with the
  reference's own expressions, so they are bit-identical by construction.
* ``_row_kernel``: dynamic amax over a trailing run (per token, per row channel, static 1-D
  blocks): one program reads its groups once, reduces the amax (NaN-propagating, like
  ``amax_reduce``), quantizes and writes — one read, one write.
* ``_tile_kernel``: dynamic 2-D blocks (``{-1: b, -2: b}``): one program per tile, one pass.

Any other dynamic layout (e.g. per column, or per tensor on a large tensor) takes the reference's
torch reduction and then ``_ew_kernel``. In-kernel scales mirror ``fake_quant_int`` and
``e4m3_scales`` operation by operation (IEEE divisions via ``div_rn``).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from qruntime.numerics.amax import amax_reduce, axis_to_reduce_dims
from qruntime.numerics.floats import EPS
from qruntime.numerics.fp8 import e4m3_scales
from qruntime.numerics.integer import int_range

from .._jit import (
    amax_propagate_nan,
    block_offsets,
    clamp_keep_nan,
    copysign,
    e4m3_round,
    load_f32,
    load_param,
    rne_nonneg,
    store_f32,
)
from ..layout import ew_plan, row_plan, tile_plan
from ..registry import KernelUnsupported, register_kernel
from ._common import ELEMS, MAX_LANES, alloc_like, as_kernel_input, launch, next_pow2, wide

FMT_INT = 0
FMT_E4M3 = 1

#: Largest INT width the kernel rounds exactly (|q| < 2^22 for the truncation-based rounding).
MAX_INT_BITS = 16


@triton.jit
def _element(x, p0, p1, FMT: tl.constexpr, QMIN: tl.constexpr, QMAX: tl.constexpr):
    """INT: ``clamp(round_even(x * p0)) / p1``; E4M3: ``e4m3(clamp(x * p0)) * p1``."""
    v = x * p0
    if FMT == 0:
        c = clamp_keep_nan(v, QMIN, QMAX)  # == clamp after rounding: the bounds are integers
        nan = c != c
        q = copysign(rne_nonneg(tl.abs(tl.where(nan, 0.0, c))), c)
        y = tl.math.div_rn(tl.where(nan, c, q), p1)
    else:
        y = e4m3_round(v, 448.0, 3, -6) * p1
    return y


@triton.jit
def _scales_from_amax(a, FMT: tl.constexpr, QMAX: tl.constexpr):
    """The reference's scale pair from a dynamic amax (fp32): INT ``qmax / a`` with the
    ``a <= 2^-24`` rule, E4M3 ``f32(1/a') * 448`` and its reciprocal."""
    zero = a <= 5.960464477539063e-08
    ones = tl.zeros_like(a) + 1.0
    if FMT == 0:
        s = tl.math.div_rn(tl.zeros_like(a) + QMAX, a)
        p0 = tl.where(zero, 0.0, s)
        p1 = tl.where(zero, 1.0, s)
    else:
        s = tl.math.div_rn(ones, tl.where(zero, 1.0, a)) * 448.0
        p0 = s
        p1 = tl.math.div_rn(ones, s)
    return p0, p1


@triton.jit
def _ew_kernel(
    x_ptr,
    y_ptr,
    p0_ptr,
    p1_ptr,
    rows,
    cols,
    rdiv,
    rmod,
    cdiv,
    col_groups,
    FMT: tl.constexpr,
    QMIN: tl.constexpr,
    QMAX: tl.constexpr,
    PATTERN: tl.constexpr,
    ROW_MOD: tl.constexpr,
    IN_KIND: tl.constexpr,
    OUT_KIND: tl.constexpr,
    BR: tl.constexpr,
    BC: tl.constexpr,
    WIDE: tl.constexpr,
):
    pid = tl.program_id(0)
    if WIDE:
        pid = pid.to(tl.int64)
    ncb = tl.cdiv(cols, BC)
    r = (pid // ncb) * BR + tl.arange(0, BR)
    c = (pid % ncb) * BC + tl.arange(0, BC)
    mask = (r[:, None] < rows) & (c[None, :] < cols)
    offs = r[:, None] * cols + c[None, :]
    x = load_f32(x_ptr, offs, mask, IN_KIND)
    p0 = load_param(p0_ptr, r, c, rows, cols, rdiv, rmod, cdiv, col_groups, PATTERN, ROW_MOD)
    p1 = load_param(p1_ptr, r, c, rows, cols, rdiv, rmod, cdiv, col_groups, PATTERN, ROW_MOD)
    y = _element(x, p0, p1, FMT, QMIN, QMAX)
    store_f32(y_ptr, offs, y, mask, OUT_KIND)


@triton.jit
def _row_kernel(
    x_ptr,
    y_ptr,
    amax_ptr,
    n_groups,
    row_len,
    bpr,
    FMT: tl.constexpr,
    QMIN: tl.constexpr,
    QMAX: tl.constexpr,
    BLOCK: tl.constexpr,
    G: tl.constexpr,
    LANES: tl.constexpr,
    EVEN: tl.constexpr,
    IN_KIND: tl.constexpr,
    OUT_KIND: tl.constexpr,
    WRITE_AMAX: tl.constexpr,
    WIDE: tl.constexpr,
):
    g, offs, mask = block_offsets(n_groups, bpr, row_len, BLOCK, G, LANES, EVEN, WIDE)
    x = load_f32(x_ptr, offs, mask, IN_KIND)
    a = amax_propagate_nan(tl.abs(x), 1)
    p0, p1 = _scales_from_amax(a, FMT, QMAX)
    y = _element(x, p0[:, None], p1[:, None], FMT, QMIN, QMAX)
    store_f32(y_ptr, offs, y, mask, OUT_KIND)
    if WRITE_AMAX:
        tl.store(amax_ptr + g, a, mask=g < n_groups)


@triton.jit
def _tile_kernel(
    x_ptr,
    y_ptr,
    amax_ptr,
    k2,
    r1,
    r2,
    FMT: tl.constexpr,
    QMIN: tl.constexpr,
    QMAX: tl.constexpr,
    R1P: tl.constexpr,
    R2P: tl.constexpr,
    IN_KIND: tl.constexpr,
    OUT_KIND: tl.constexpr,
    WRITE_AMAX: tl.constexpr,
    WIDE: tl.constexpr,
):
    pid = tl.program_id(0)
    if WIDE:
        pid = pid.to(tl.int64)
    i = pid // k2
    j = pid % k2
    rr = tl.arange(0, R1P)
    cc = tl.arange(0, R2P)
    mask = (rr[:, None] < r1) & (cc[None, :] < r2)
    offs = (i * r1 + rr)[:, None] * (k2 * r2) + (j * r2 + cc)[None, :]
    x = load_f32(x_ptr, offs, mask, IN_KIND)
    a = amax_propagate_nan(amax_propagate_nan(tl.abs(x), 1), 0)
    p0, p1 = _scales_from_amax(a, FMT, QMAX)
    y = _element(x, p0, p1, FMT, QMIN, QMAX)
    store_f32(y_ptr, offs, y, mask, OUT_KIND)
    if WRITE_AMAX:
        tl.store(amax_ptr + pid, a)


def _keepdim_shape(shape: tuple[int, ...], dims: tuple[int, ...] | None) -> tuple[int, ...]:
    if dims is None or len(dims) == 0:  # an empty tuple reduces everything (amax.py)
        return (1,) * len(shape)
    return tuple(1 if i in dims else n for i, n in enumerate(shape))


def _as_reference_amax(
    buf: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype
) -> torch.Tensor:
    """The in-kernel amax in the shape/dtype ``amax_reduce`` returns (exact: values come from x)."""
    out = buf.reshape(shape).to(dtype)
    return out.squeeze() if out.numel() == 1 else out


def _dynamic(
    x: torch.Tensor,
    xv: torch.Tensor,
    yv: torch.Tensor,
    kin: int,
    kout: int,
    fmt: int,
    qmin: float,
    qmax: float,
    axis: int | tuple[int, ...] | None,
    need_amax: bool,
) -> tuple[bool, torch.Tensor | None]:
    """One-pass dynamic amax + quantization when the layout allows: ``(ran, amax)``, the amax
    in ``amax_reduce``'s shape and dtype when ``need_amax`` (for the STE clip), else None.
    ``ran`` is False when the layout needs the torch reduction first."""
    dims = axis_to_reduce_dims(x.dim(), axis)
    amax_shape = _keepdim_shape(tuple(x.shape), dims)
    consts = {"FMT": fmt, "QMIN": qmin, "QMAX": qmax, "IN_KIND": kin, "OUT_KIND": kout}
    rp = row_plan(tuple(x.shape), amax_shape)
    if rp is not None and next_pow2(rp.block) <= MAX_LANES:
        lanes = next_pow2(rp.block)
        groups = max(1, ELEMS // lanes)
        buf = torch.empty(rp.num_groups, dtype=torch.float32, device=x.device)
        grid = (triton.cdiv(rp.num_groups, groups),)
        launch(
            _row_kernel,
            grid,
            xv,
            yv,
            buf,
            rp.num_groups,
            rp.row_len,
            rp.blocks_per_row,
            BLOCK=rp.block,
            G=groups,
            LANES=lanes,
            EVEN=rp.row_len % rp.block == 0,
            WRITE_AMAX=need_amax,
            WIDE=wide(x.numel() + groups * lanes),
            elems=groups * lanes,
            **consts,
        )
        return True, (_as_reference_amax(buf, amax_shape, x.dtype) if need_amax else None)
    tp = tile_plan(tuple(x.shape), amax_shape)
    if tp is not None and next_pow2(tp.r1) * next_pow2(tp.r2) <= MAX_LANES:
        r1p, r2p = next_pow2(tp.r1), next_pow2(tp.r2)
        buf = torch.empty(tp.k1 * tp.k2, dtype=torch.float32, device=x.device)
        launch(
            _tile_kernel,
            (tp.k1 * tp.k2,),
            xv,
            yv,
            buf,
            tp.k2,
            tp.r1,
            tp.r2,
            R1P=r1p,
            R2P=r2p,
            WRITE_AMAX=need_amax,
            WIDE=wide(x.numel()),
            elems=r1p * r2p,
            **consts,
        )
        return True, (_as_reference_amax(buf, amax_shape, x.dtype) if need_amax else None)
    return False, None


def _elementwise(
    x: torch.Tensor,
    xv: torch.Tensor,
    yv: torch.Tensor,
    kin: int,
    kout: int,
    fmt: int,
    qmin: float,
    qmax: float,
    p0: torch.Tensor,
    p1: torch.Tensor,
) -> None:
    plan = ew_plan(tuple(x.shape), tuple(p0.shape))
    if plan is None or math.prod(torch.broadcast_shapes(x.shape, p0.shape)) != x.numel():
        raise KernelUnsupported(f"amax of shape {tuple(p0.shape)} on input {tuple(x.shape)}")
    p0 = p0.to(torch.float32).contiguous().reshape(-1)
    p1 = p1.to(torch.float32).contiguous().reshape(-1)
    bc = min(next_pow2(plan.cols), ELEMS)
    br = min(next_pow2(plan.rows), max(1, ELEMS // bc))
    grid = (triton.cdiv(plan.rows, br) * triton.cdiv(plan.cols, bc),)
    launch(
        _ew_kernel,
        grid,
        xv,
        yv,
        p0,
        p1,
        plan.rows,
        plan.cols,
        plan.rdiv,
        plan.rmod,
        plan.cdiv,
        plan.col_groups,
        FMT=fmt,
        QMIN=qmin,
        QMAX=qmax,
        PATTERN=plan.pattern,
        ROW_MOD=plan.row_mod,
        IN_KIND=kin,
        OUT_KIND=kout,
        BR=br,
        BC=bc,
        WIDE=wide(x.numel() + br * bc),
        elems=br * bc,
    )


def _run(
    x: torch.Tensor,
    amax: torch.Tensor | None,
    attrs: object,
    fmt: int,
    qmin: float,
    qmax: float,
    need_amax: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    x, xv, kin = as_kernel_input(x)
    y, yv, kout = alloc_like(x)
    if x.numel() == 0:
        return y, amax
    axis = getattr(attrs, "axis", None)
    if amax is None:
        ran, used = _dynamic(x, xv, yv, kin, kout, fmt, qmin, qmax, axis, need_amax)
        if ran:
            return y, used
        amax = amax_reduce(x, axis_to_reduce_dims(x.dim(), axis))  # the reference reduction
        checked = True  # |x| maxima are never negative: no host sync for the check below
    else:
        checked = False
    a = amax.to(torch.float32)
    if fmt == FMT_INT:
        if not checked and a.numel() and bool(a.min() < 0):
            raise ValueError("Negative values in amax")
        scale = torch.div(torch.tensor(qmax, dtype=torch.float32, device=a.device), a)
        zero = a <= EPS
        p0, p1 = scale.masked_fill(zero, 0.0), scale.masked_fill(zero, 1.0)
    else:
        p0, p1 = e4m3_scales(a)
    _elementwise(x, xv, yv, kin, kout, fmt, qmin, qmax, p0, p1)
    return y, amax


@register_kernel("int")
def int_kernel(
    x: torch.Tensor,
    amax: torch.Tensor | None,
    attrs: object,
    *,
    global_amax: torch.Tensor | None = None,
    need_amax: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """INT-N fake quant of ``x`` in its working layout; ``amax=None`` = dynamic."""
    num_bits = attrs.num_bits  # type: ignore[attr-defined]
    if not isinstance(num_bits, int) or not 2 <= num_bits <= MAX_INT_BITS:
        raise KernelUnsupported(f"INT kernel covers 2..{MAX_INT_BITS} bits, got {num_bits!r}")
    unsigned = bool(attrs.unsigned)  # type: ignore[attr-defined]
    qmin, qmax = int_range(num_bits, unsigned, bool(attrs.narrow_range))  # type: ignore[attr-defined]
    if unsigned and x.numel() and bool(x.min() < 0):
        raise TypeError("Negative values encountered in unsigned quantization.")
    return _run(x, amax, attrs, FMT_INT, float(qmin), float(qmax), need_amax)


@register_kernel("fp8_e4m3")
def fp8_kernel(
    x: torch.Tensor,
    amax: torch.Tensor | None,
    attrs: object,
    *,
    global_amax: torch.Tensor | None = None,
    need_amax: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """FP8 E4M3 fake quant of ``x`` in its working layout; ``amax=None`` = dynamic.

    Other (E, M) tuples raise in the reference; they are left to it.
    """
    if attrs.num_bits != (4, 3):  # type: ignore[attr-defined]
        raise KernelUnsupported("only E4M3 has an amax-scaled FP8 path")
    return _run(x, amax, attrs, FMT_E4M3, -448.0, 448.0, need_amax)
