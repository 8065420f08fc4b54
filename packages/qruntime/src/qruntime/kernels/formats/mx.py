"""Triton kernel for the MX formats: MXFP4, MXFP6 (E3M2, E2M3), MXFP8 (E4M3, E5M2) and MXINT8,
E8M0 block scales (docs/numerics.md, 'MX formats').

One program reads its row blocks once, reduces each block's amax (NaN ignored, inf as FLT_MAX),
takes the exact ``ceil(log2(amax / fmax))`` from the fp32 bits of the quotient, converts
the elements and writes — one read, one write. The element conversions are the reference's:
table formats by RNE on the mantissa with saturation (NaN/inf -> max), FP8 by a
saturating RNE cast with NaN kept, INT8 by ``rint`` clamped to ±127 with non-finite -> -127.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from qruntime.numerics.mx import MX_BLOCK_SIZES, MX_ELEMENTS

from .._jit import (
    amax_ignore_nan,
    block_offsets,
    e4m3_round,
    load_f32,
    negate,
    pow2,
    rne_nonneg,
    round_grid,
    saturate,
    store_f32,
)
from ..layout import RowPlan
from ..registry import KernelUnsupported, register_kernel
from ._common import alloc_like, as_kernel_input, launch, row_tile, wide

#: Element name -> (KIND, MAN_BITS, EMIN, MAX): KIND 0 = small-float table, 1 = FP8, 2 = INT8.
_ELEMENTS: dict[str, tuple[int, int, int, float]] = {
    "E2M1": (0, 1, 0, 6.0),
    "E3M2": (0, 2, -2, 28.0),
    "E2M3": (0, 3, 0, 7.5),
    "E4M3": (1, 3, -6, 448.0),
    "E5M2": (1, 2, -14, 57344.0),
    "INT8": (2, 0, 0, 127.0),
}


@triton.jit
def _convert(m, KIND: tl.constexpr, MAN: tl.constexpr, EMIN: tl.constexpr, MAX: tl.constexpr):
    """``convert_to_types`` of the CUDA extension for ``m = |x| * scale`` (>= 0 or NaN)."""
    if KIND == 0:
        q = round_grid(saturate(m, MAX), MAN, EMIN)
    elif KIND == 1:
        q = e4m3_round(m, MAX, MAN, EMIN)
    else:
        finite = (m - m) == 0
        q = rne_nonneg(tl.where(finite, tl.minimum(m, 127.0), 0.0))
        q = tl.where(finite, q, -127.0)  # rint(inf/NaN) -> INT_MIN on x86 -> saturates to -127
    return q


@triton.jit
def _mx_kernel(
    x_ptr,
    y_ptr,
    n_groups,
    row_len,
    bpr,
    KIND: tl.constexpr,
    MAN: tl.constexpr,
    EMIN: tl.constexpr,
    MAX: tl.constexpr,
    BLOCK: tl.constexpr,
    G: tl.constexpr,
    LANES: tl.constexpr,
    EVEN: tl.constexpr,
    IN_KIND: tl.constexpr,
    OUT_KIND: tl.constexpr,
    WIDE: tl.constexpr,
):
    _g, offs, mask = block_offsets(n_groups, bpr, row_len, BLOCK, G, LANES, EVEN, WIDE)
    x = load_f32(x_ptr, offs, mask, IN_KIND)
    ax = tl.abs(x)
    a = amax_ignore_nan(ax, 1)
    # E8M0 exponent k = ceil(log2(a / fmax)) read off the fp32 bits of the quotient.
    r = tl.math.div_rn(a, tl.zeros_like(a) + MAX)
    bits = r.to(tl.int32, bitcast=True)
    e = (bits >> 23) & 0xFF
    mant = bits & 0x7FFFFF
    up = (mant > 0) & (e != 254) & ~((e == 0) & (mant <= 0x400000))
    k = tl.where(up, e - 126, e - 127)
    bad = a == 0  # a is finite and not NaN here; 0 -> scale 1
    scale = tl.where(bad, 1.0, pow2(-k))
    unscale = tl.where(bad, 1.0, pow2(k))
    q = _convert(ax * scale[:, None], KIND, MAN, EMIN, MAX) * unscale[:, None]
    y = tl.where(x > 0, q, negate(q))  # the host build's sign: zeros -> -0, NaN -> negative
    store_f32(y_ptr, offs, y, mask, OUT_KIND)


@register_kernel("mx")
def mx_kernel(
    x: torch.Tensor,
    amax: torch.Tensor | None,
    attrs: object,
    *,
    global_amax: torch.Tensor | None = None,
    need_amax: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """MX fake quant in row blocks of the configured size; amax is never used."""
    num_bits = attrs.num_bits  # type: ignore[attr-defined]
    if num_bits not in MX_ELEMENTS:
        raise KernelUnsupported(f"MX element {num_bits!r}")  # the reference raises
    block = attrs.dynamic_block_size(x.dim())  # type: ignore[attr-defined]
    if block not in MX_BLOCK_SIZES:
        raise KernelUnsupported(f"MX block size {block!r}")  # the reference raises
    kind, man, emin, fmax = _ELEMENTS[MX_ELEMENTS[num_bits].name]
    x, xv, kin = as_kernel_input(x)
    y, yv, kout = alloc_like(x)
    if x.numel() == 0:
        return y, None
    n = x.shape[-1] if x.dim() else 1
    rp = RowPlan(x.numel() // n, n, block)
    groups, lanes = row_tile(block)
    launch(
        _mx_kernel,
        (triton.cdiv(rp.num_groups, groups),),
        xv,
        yv,
        rp.num_groups,
        rp.row_len,
        rp.blocks_per_row,
        KIND=kind,
        MAN=man,
        EMIN=emin,
        MAX=fmax,
        BLOCK=block,
        G=groups,
        LANES=lanes,
        EVEN=rp.row_len % block == 0,
        IN_KIND=kin,
        OUT_KIND=kout,
        WIDE=wide(x.numel() + groups * lanes),
        elems=groups * lanes,
    )
    return y, None
