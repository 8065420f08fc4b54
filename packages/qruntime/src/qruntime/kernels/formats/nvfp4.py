"""Triton kernels for NVFP4 (docs/numerics.md, 'NVFP4'): dynamic blocks, static, four-over-six.

Dynamic NVFP4 follows the reference's default, the CUDA-extension formula (block 8/16/32
honoured): one program reads its row blocks once, reduces each block's amax (NaN ignored, inf as
FLT_MAX), derives the E4M3-quantized block scale with the global amax in the same mixed
fp32/fp64 arithmetic as the reference, rounds the elements to E2M1 and writes — one read and one
write per block. The global amax itself is a per-tensor reduction and is taken by torch first,
exactly as the reference does (a dynamic global amax cannot be known in the same pass).

Static NVFP4 (and four-over-six) has its per-block scales computed by the reference's own
``nvfp4_static_block_scales`` (a tensor with one value per block); the kernel applies them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from qruntime.numerics.amax import amax_reduce
from qruntime.numerics.nvfp4 import NVFP4_BLOCK_SIZES, nvfp4_static_block_scales
from qruntime.numerics.pipeline import resolve_amax

from .._jit import (
    amax_ignore_nan,
    block_offsets,
    e4m3_round,
    load_f32,
    negate,
    round_grid,
    saturate,
    store_f32,
)
from ..layout import RowPlan
from ..registry import KernelUnsupported, register_kernel
from ._common import ELEMS, alloc_like, as_kernel_input, launch, next_pow2, row_tile, wide


@triton.jit
def _e2m1(m):
    """E2M1 magnitude: ties to even, saturating at 6, NaN/inf -> 6.

    docs/numerics.md, 'E2M1 rounding'.
    """
    return round_grid(saturate(m, 6.0), 1, 0)


@triton.jit
def _dynamic_kernel(
    x_ptr,
    y_ptr,
    ga_ptr,
    t_ptr,
    n_groups,
    row_len,
    bpr,
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
    la = amax_ignore_nan(ax, 1)
    ga = tl.load(ga_ptr)
    t = tl.load(t_ptr)  # f64(f32(6 / ga)) * 448, computed by torch like the reference
    # compute_scale_with_global: fp32 la/6, fp64 products and quotients.
    lu = tl.math.div_rn(la, tl.zeros_like(la) + 6.0)
    q8 = e4m3_round((lu.to(tl.float64) * t).to(tl.float32), 448.0, 3, -6)
    # fp64 '/' is IEEE div.rn.f64 on the GPU (div_rn is fp32-only; only fp32 '/' is approximate).
    luq = q8.to(tl.float64) / t
    scale = (1.0 / luq).to(tl.float32)
    unscale = luq.to(tl.float32)
    gab = la * 0.0 + ga  # the global amax broadcast over the blocks (la is finite)
    bad = (la == 0) | (gab == 0) | ((gab - gab) != 0)  # a block or global amax of 0/inf/NaN
    scale = tl.where(bad, 1.0, scale)
    unscale = tl.where(bad, 1.0, unscale)
    q = _e2m1(ax * scale[:, None]) * unscale[:, None]
    y = tl.where(x > 0, q, negate(q))  # the host build's sign: zeros -> -0, NaN -> -6 * unscale
    store_f32(y_ptr, offs, y, mask, OUT_KIND)


@triton.jit
def _static_kernel(
    x_ptr,
    y_ptr,
    sq_ptr,
    zero_ptr,
    rows,
    cols,
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
    u = tl.load(sq_ptr + r, mask=r < rows, other=1.0)[:, None]
    z = tl.load(zero_ptr + r, mask=r < rows, other=0)[:, None]
    q = _e2m1(tl.math.div_rn(tl.abs(x), u)) * u
    y = tl.where(x >= 0, q, negate(q))  # Triton's sign rule: -0 -> +0, NaN -> -6 * sq
    y = tl.where(z != 0, 0.0, y)  # a zero block scale gives +0
    store_f32(y_ptr, offs, y, mask, OUT_KIND)


def _rows_of(x: torch.Tensor, block: int) -> RowPlan:
    n = x.shape[-1] if x.dim() else 1
    return RowPlan(x.numel() // n if n else 0, n, block)


@register_kernel("nvfp4_dynamic")
def nvfp4_dynamic_kernel(
    x: torch.Tensor,
    amax: torch.Tensor | None,
    attrs: object,
    *,
    global_amax: torch.Tensor | None = None,
    need_amax: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Dynamic NVFP4 (CUDA-extension formula) in row blocks of the configured size."""
    if attrs.num_bits != (2, 1):  # type: ignore[attr-defined]
        raise KernelUnsupported("E4M3-scaled dynamic blocks need num_bits=(2, 1)")
    block = attrs.dynamic_block_size(x.dim())  # type: ignore[attr-defined]
    if block not in NVFP4_BLOCK_SIZES:
        raise KernelUnsupported(f"NVFP4 block size {block!r}")  # the reference raises
    x, xv, kin = as_kernel_input(x)
    y, yv, kout = alloc_like(x)
    if amax is None:
        amax = amax_reduce(x)  # the global amax: a per-tensor reduction, as the reference
    if x.numel() == 0:
        return y, amax
    g = amax if amax.numel() == 1 else amax.amax()
    ga = g.reshape(()).to(torch.float32).reshape(1)
    t = torch.div(torch.tensor(6.0, dtype=torch.float32, device=ga.device), ga)
    t = t.to(torch.float64) * 448.0
    rp = _rows_of(x, block)
    groups, lanes = row_tile(block)
    launch(
        _dynamic_kernel,
        (triton.cdiv(rp.num_groups, groups),),
        xv,
        yv,
        ga,
        t,
        rp.num_groups,
        rp.row_len,
        rp.blocks_per_row,
        BLOCK=block,
        G=groups,
        LANES=lanes,
        EVEN=rp.row_len % block == 0,
        IN_KIND=kin,
        OUT_KIND=kout,
        WIDE=wide(x.numel() + groups * lanes),
        elems=groups * lanes,
    )
    return y, amax


@register_kernel("nvfp4_static")
def nvfp4_static_kernel(
    x: torch.Tensor,
    amax: torch.Tensor | None,
    attrs: object,
    *,
    global_amax: torch.Tensor | None = None,
    need_amax: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Static NVFP4 / four-over-six: one per-block amax per row of the block view."""
    if amax is None:
        amax = resolve_amax(x, attrs, None)  # type: ignore[arg-type]
    nblocks = amax.numel()
    if nblocks == 0 or x.numel() % nblocks:
        raise KernelUnsupported("x.numel() is not a multiple of the number of block amaxes")
    x, xv, kin = as_kernel_input(x)
    y, yv, kout = alloc_like(x)
    four = bool((attrs.block_sizes or {}).get("four_over_six", False))  # type: ignore[attr-defined]
    sq = nvfp4_static_block_scales(amax, global_amax, four_over_six=four).reshape(nblocks)
    zero = sq == 0
    safe = torch.where(zero | ~torch.isfinite(sq), torch.ones_like(sq), sq).contiguous()
    zero = zero.to(torch.int8).contiguous()
    cols = x.numel() // nblocks
    bc = min(next_pow2(cols), ELEMS)
    br = min(next_pow2(nblocks), max(1, ELEMS // bc))
    launch(
        _static_kernel,
        (triton.cdiv(nblocks, br) * triton.cdiv(cols, bc),),
        xv,
        yv,
        safe,
        zero,
        nblocks,
        cols,
        IN_KIND=kin,
        OUT_KIND=kout,
        BR=br,
        BC=bc,
        WIDE=wide(x.numel() + br * bc),
        elems=br * bc,
    )
    return y, amax
