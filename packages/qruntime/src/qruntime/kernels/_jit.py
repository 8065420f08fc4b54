"""Triton device helpers shared by the format kernels: exact loads/stores and exact rounding.

Why everything here is integer/bit arithmetic: bit-exactness must hold both on the GPU and in
the Triton interpreter that CI runs, and the two disagree on conversions (the interpreter
truncates fp32->bf16 and rounds exact fp32->e4m3 ties up; docs/numerics.md, 'Test vectors'). So
no kernel relies on a Triton float cast that rounds:

* bf16 tensors are read and written through an int16 view; widening is a 16-bit shift, the
  narrowing is round-to-nearest-even done on the bits (:func:`f32_to_bf16_bits`);
* fp16 stores use ``.to(tl.float16)`` — IEEE RNE in both the interpreter (numpy) and on the GPU;
* FP8/FP6/FP4 and integer rounding go through :func:`round_grid`/:func:`rne_nonneg`, which only
  multiply by exact powers of two and use a truncating float->int conversion;
* every division is ``tl.math.div_rn`` (correctly rounded; Triton's ``/`` may be approximate on
  the GPU, docs/numerics.md, 'Choices', item 9) and kernels are launched with
  ``enable_fp_fusion=False`` (no FMA contraction);
* negation flips the sign bit (:func:`negate`): Triton 3.6's unary minus is ``0 - v``;
* min/max never see a NaN: Triton's ``tl.maximum``/``tl.max`` ignore NaN on the GPU but the
  interpreter's numpy propagates it, so NaN is masked first and its effect added explicitly.

These functions exist in Triton 3.6 (the GPU image) and 3.9 (PyPI); nothing newer is used.
"""

from __future__ import annotations

import triton
import triton.language as tl

#: Storage kinds of an input/output pointer (a ``tl.constexpr`` argument of every kernel).
KIND_F32 = 0
KIND_F16 = 1
KIND_BF16 = 2  # passed as an int16 view of the tensor


@triton.jit
def load_f32(ptr, offs, mask, KIND: tl.constexpr):
    """Load elements and widen them to fp32 exactly (bf16 through its int16 bits)."""
    if KIND == 2:
        raw = tl.load(ptr + offs, mask=mask, other=0)
        out = (raw.to(tl.int32) << 16).to(tl.float32, bitcast=True)
    else:
        out = tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)
    return out


@triton.jit
def block_offsets(
    n_groups,
    bpr,
    row_len,
    BLOCK: tl.constexpr,
    G: tl.constexpr,
    LANES: tl.constexpr,
    EVEN: tl.constexpr,
    WIDE: tl.constexpr,
):
    """Offsets and mask of this program's ``G`` blocks of ``BLOCK`` elements along rows of
    ``row_len`` (``bpr`` blocks per row; ``EVEN`` when blocks tile rows exactly), shared by every
    per-block kernel so that they all lay blocks out the same way."""
    pid = tl.program_id(0)
    if WIDE:
        pid = pid.to(tl.int64)
    g = pid * G + tl.arange(0, G)
    lane = tl.arange(0, LANES)
    if LANES == BLOCK:  # no lane mask: keeps the loads vectorisable (constant along lanes)
        mask = tl.broadcast_to(g[:, None] < n_groups, (G, LANES))
    else:
        mask = (g[:, None] < n_groups) & (lane[None, :] < BLOCK)
    if EVEN:
        offs = g[:, None] * BLOCK + lane[None, :]
    else:
        row = g // bpr
        col = (g - row * bpr)[:, None] * BLOCK + lane[None, :]
        mask = mask & (col < row_len)
        offs = row[:, None] * row_len + col
    return g, offs, mask


@triton.jit
def f32_to_bf16_bits(y):
    """RNE fp32 -> bf16 on the bit pattern (torch's ``BFloat16`` constructor; NaN -> 0x7FC0)."""
    b = y.to(tl.uint32, bitcast=True)
    r = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    r = tl.where(y != y, 0x7FC0, r)
    return r.to(tl.int16)


@triton.jit
def store_f32(ptr, offs, y, mask, KIND: tl.constexpr):
    """Round fp32 results to the output dtype (RNE) and store them."""
    if KIND == 2:
        tl.store(ptr + offs, f32_to_bf16_bits(y), mask=mask)
    elif KIND == 1:
        tl.store(ptr + offs, y.to(tl.float16), mask=mask)
    else:
        tl.store(ptr + offs, y, mask=mask)


@triton.jit
def rne_nonneg(t):
    """Round finite ``0 <= t < 2^22`` to the nearest integer, ties to even (``torch.round``)."""
    ti = t.to(tl.int32)  # truncation
    f = t - ti.to(tl.float32)  # exact: t and ti share the binade's ulp or finer
    up = (f > 0.5) | ((f == 0.5) & ((ti & 1) == 1))
    return (ti + up.to(tl.int32)).to(tl.float32)


@triton.jit
def round_grid(m, MAN_BITS: tl.constexpr, EMIN: tl.constexpr):
    """Round finite non-negative ``m`` (already saturated) to a float grid with ``MAN_BITS``
    mantissa bits and smallest normal exponent ``EMIN``, ties to even (docs/numerics.md,
    'E2M1 rounding', 'Element conversion').

    The quantum of ``m``'s binade, ``2^(max(e, EMIN) - MAN_BITS)``, is built from the exponent
    bits; scaling by it is exact, so one integer rounding gives the RNE result. This is the
    arithmetic of the reference's ``round_to_table`` and of an RNE cast to E4M3/E5M2.
    """
    e = (m.to(tl.int32, bitcast=True) >> 23) & 0xFF
    e = tl.maximum(e, EMIN + 127)
    qe = e - MAN_BITS
    quantum = (qe << 23).to(tl.float32, bitcast=True)
    inv_quantum = ((254 - qe) << 23).to(tl.float32, bitcast=True)
    return rne_nonneg(m * inv_quantum) * quantum


@triton.jit
def copysign(mag, x):
    """``mag`` (sign bit clear) with the sign bit of ``x`` (keeps -0, like torch's rounding)."""
    bits = mag.to(tl.uint32, bitcast=True) | (x.to(tl.uint32, bitcast=True) & 0x80000000)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def negate(v):
    """``-v`` by flipping the sign bit. Triton 3.6 lowers unary minus on floats to ``0 - v``,
    which turns +0 into +0 instead of -0; the reference's ``q.neg()`` gives -0."""
    return (v.to(tl.uint32, bitcast=True) ^ 0x80000000).to(tl.float32, bitcast=True)


@triton.jit
def pow2(k):
    """Exact fp32 ``2^k`` for int32 ``k`` in [-149, 127] (subnormals included), from bits."""
    normal = (k + 127) << 23
    sub = tl.full(k.shape, 1, tl.int32) << tl.minimum(tl.maximum(k + 149, 0), 22)
    return tl.where(k >= -126, normal, sub).to(tl.float32, bitcast=True)


@triton.jit
def nan_of(like):
    """A quiet NaN tensor shaped like ``like`` (made from bits: no float NaN literal needed)."""
    return tl.full(like.shape, 0x7FC00000, tl.int32).to(tl.float32, bitcast=True)


@triton.jit
def amax_propagate_nan(ax, AXIS: tl.constexpr):
    """``max`` of non-negative ``ax`` along AXIS, NaN if any element is NaN (``torch.amax``)."""
    isn = ax != ax
    m = tl.max(tl.where(isn, 0.0, ax), axis=AXIS)
    has_nan = tl.max(isn.to(tl.int32), axis=AXIS)
    return tl.where(has_nan > 0, nan_of(m), m)


@triton.jit
def amax_ignore_nan(ax, AXIS: tl.constexpr):
    """``max(min(ax, FLT_MAX))`` along AXIS ignoring NaN: the MX/NVFP4 CUDA ``fmaxf`` block
    reduction; inf counts as FLT_MAX."""
    v = tl.where(ax != ax, 0.0, tl.minimum(ax, 3.4028234663852886e38))
    return tl.max(v, axis=AXIS)


@triton.jit
def saturate(m, MAX: tl.constexpr):
    """``fmin(m, MAX)`` for ``m >= 0``: NaN and inf become MAX (the table formats' rule)."""
    return tl.where((m != m) | (m > MAX), MAX, m)


@triton.jit
def clamp_keep_nan(v, LO: tl.constexpr, HI: tl.constexpr):
    """``torch.clamp(v, LO, HI)``: NaN stays NaN and -0 stays -0 (compare-and-select)."""
    return tl.where(v < LO, LO, tl.where(v > HI, HI, v))


@triton.jit
def e4m3_round(v, MAX: tl.constexpr, MAN_BITS: tl.constexpr, EMIN: tl.constexpr):
    """Saturating RNE cast of fp32 ``v`` to an FP8 format and back (``cast_e4m3``/``cast_e5m2``):
    clamp to ±MAX, round the magnitude on the grid, keep the sign (and -0), keep NaN."""
    c = clamp_keep_nan(v, -MAX, MAX)
    nan = c != c
    mag = round_grid(tl.abs(tl.where(nan, 0.0, c)), MAN_BITS, EMIN)
    return tl.where(nan, c, copysign(mag, c))


@triton.jit
def load_param(
    ptr,
    r,
    c,
    rows,
    cols,
    rdiv,
    rmod,
    cdiv,
    col_groups,
    PATTERN: tl.constexpr,
    ROW_MOD: tl.constexpr,
):
    """The per-element parameter of tile rows ``r`` x columns ``c`` under a
    :class:`..layout.EwPlan` (index math on the 1-D row/column vectors, see there)."""
    if PATTERN == 0:
        p = tl.load(ptr)
    elif PATTERN == 1:
        ri = r // rdiv
        if ROW_MOD:
            ri = ri % rmod
        p = tl.load(ptr + ri, mask=r < rows, other=1.0)[:, None]
    elif PATTERN == 2:
        p = tl.load(ptr + c // cdiv, mask=c < cols, other=1.0)[None, :]
    else:
        ri = r // rdiv
        if ROW_MOD:
            ri = ri % rmod
        idx = ri[:, None] * col_groups + (c // cdiv)[None, :]
        p = tl.load(ptr + idx, mask=(r < rows)[:, None] & (c < cols)[None, :], other=1.0)
    return p
