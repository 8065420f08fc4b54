"""NVFP4: E2M1 elements, FP8 E4M3 block scales, FP32 global scale (docs/numerics.md, 'NVFP4').

Dynamic NVFP4 has two GPU implementations in Model Optimizer 0.47.0 that disagree.
``fake_quant`` follows the CUDA-extension kernel (``fused_amax_convert``): it honours the
configured block size and has no small-scale rule (docs/numerics.md, 'Choices', item 1). The
Triton kernel's arithmetic is available here too (``kernel="triton"``) for comparison with
Hopper/Blackwell runs. Static NVFP4 (and four-over-six) has a single implementation (Triton),
reproduced by :func:`fake_quant_nvfp4_static`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from qconfig.spec import QuantizerSpec

from .chunking import as_f32, map_blocks, map_chunks
from .dispatch import register_format
from .floats import FLT_MAX, cast_e4m3, const, round_to_table
from .fp8 import e4m3_scales

__all__ = [
    "NVFP4_BLOCK_SIZES",
    "divide_as_cuda",
    "fake_quant_nvfp4_dynamic",
    "fake_quant_nvfp4_static",
    "fp4_cast",
    "nvfp4_static_block_scales",
]

#: Block sizes ``fused_amax_convert`` (the CUDA extension) accepts; others raise there.
NVFP4_BLOCK_SIZES = (8, 16, 32)

E2M1_MAX = 6.0
E4M3_MAX = 448.0


def _global_amax_f32(global_amax: torch.Tensor) -> torch.Tensor:
    # A multi-element quantizer amax is collapsed with ``.amax()`` before the kernel.
    g = global_amax if global_amax.numel() == 1 else global_amax.amax()
    return g.reshape(()).to(torch.float32)


def _block_amax_cuda(xf: torch.Tensor) -> torch.Tensor:
    """Block max of ``min(|x|, FLT_MAX)`` with NaN ignored (``fmaxf`` reduction)."""
    return torch.nan_to_num(xf.abs(), nan=0.0, posinf=FLT_MAX).amax(dim=-1, keepdim=True)


def _cuda_ext_scales(la: torch.Tensor, ga: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, unscale)`` of ``compute_scale_with_global``.

    Steps 1-2 of docs/numerics.md, 'Dynamic NVFP4: CUDA-extension formula'. ``t`` and the
    quantized unscale are double precision in the kernel, the 6/ga and la/6 quotients are single
    precision; reproducing the mix matters for bit-exactness.
    """
    lu = torch.div(la, const(E2M1_MAX, la))
    t = torch.div(const(E2M1_MAX, ga), ga).to(torch.float64) * E4M3_MAX
    q = cast_e4m3((lu.to(torch.float64) * t).to(torch.float32))
    luq = q.to(torch.float64) / t
    scale = torch.reciprocal(luq).to(torch.float32)
    unscale = luq.to(torch.float32)

    def invalid(v: torch.Tensor) -> torch.Tensor:
        return (v == 0) | ~torch.isfinite(v)

    bad = invalid(la) | invalid(ga)
    one = torch.ones_like(scale)
    return torch.where(bad, one, scale), torch.where(bad, one, unscale)


def _triton_scales(bmax: torch.Tensor, ga: torch.Tensor) -> torch.Tensor:
    """The per-block scale of Triton's ``fp4_fake_quant_kernel``.

    Steps 1-4 of docs/numerics.md, 'Dynamic NVFP4: Triton formula'.
    """
    gs = torch.div(ga, const(E2M1_MAX * E4M3_MAX, ga))
    gs = torch.where(gs > 0, gs, const(1e-12, gs))
    r = torch.div(bmax, gs * E2M1_MAX)
    r = torch.where(torch.isnan(r), const(E4M3_MAX, r), torch.clamp(r, max=E4M3_MAX))
    sq = cast_e4m3(r) * gs
    return torch.where(sq >= 1e-5, sq, torch.ones_like(sq))


def fake_quant_nvfp4_dynamic(
    x: torch.Tensor,
    global_amax: torch.Tensor,
    block_size: int = 16,
    *,
    kernel: Literal["cuda_ext", "triton"] = "cuda_ext",
) -> torch.Tensor:
    """Dynamic NVFP4 fake quant of ``x`` in row blocks of ``block_size``.

    ``kernel="cuda_ext"`` (default, used by ``fake_quant``): per block ``scale = 1/luq``,
    ``unscale = luq`` with ``luq`` the E4M3-rounded ``(amax_b/6)`` on the global grid; elements
    ``y = sign * E2M1(|x| * scale) * unscale`` (multiply by the reciprocal), ``sign = +1`` only
    for ``x > 0`` — zeros come out as -0 and NaN as ``-6 * unscale``, as the host build of the
    kernel does. A block or global amax that is 0, inf or NaN gives scale 1.

    ``kernel="triton"``: the Triton kernel's formula: always blocks of 16 (the configured
    size is not passed in 0.47.0), scales below 1e-5 replaced by 1, ``y = E2M1(|x| / s) * s``
    (a division), ``sign = +1`` for ``x >= 0`` (NaN -> -6 * s).
    """
    ga = _global_amax_f32(global_amax)
    if kernel == "triton":
        return map_blocks(_triton_block_kernel, x, 16, (ga,), x.dtype)
    if kernel != "cuda_ext":
        raise ValueError(f"unknown NVFP4 kernel {kernel!r} (expected 'cuda_ext' or 'triton')")
    return map_blocks(_cuda_ext_block_kernel, x, block_size, (ga,), x.dtype)


def _cuda_ext_block_kernel(xc: torch.Tensor, buf: torch.Tensor, ga: torch.Tensor) -> None:
    xf = as_f32(xc, buf)
    m = xf.abs()
    scale, unscale = _cuda_ext_scales(_block_amax_cuda(xf), ga)
    q = round_to_table(m.mul_(scale), "E2M1").mul_(unscale)
    torch.where(xf > 0, q, q.neg(), out=buf)


def _triton_block_kernel(xc: torch.Tensor, buf: torch.Tensor, ga: torch.Tensor) -> None:
    xf = as_f32(xc, buf)
    m = xf.abs()
    # tl.max ignores NaN but keeps inf (nan_to_num would turn inf into FLT_MAX by default).
    bmax = torch.nan_to_num(m, nan=0.0, posinf=math.inf).amax(dim=-1, keepdim=True)
    s = _triton_scales(bmax, ga)
    q = round_to_table(m.div_(s), "E2M1").mul_(s)
    torch.where(xf >= 0, q, q.neg(), out=buf)


def nvfp4_static_block_scales(
    block_amax: torch.Tensor,
    global_amax: torch.Tensor | None = None,
    *,
    four_over_six: bool = False,
) -> torch.Tensor:
    """Per-block scales of static NVFP4, ``compute_fp4_scales``.

    ``s = amax_b / 6`` FP8-fake-quantized (the FP8 E4M3 formula) with amax
    ``G = global * (448/M8) / 6``; ``M8 = 256`` with four-over-six, else 448. ``global_amax``
    defaults to ``max |amax_b|``. docs/numerics.md, 'Static NVFP4 and four-over-six'.

    Both ``/ 6`` are Model Optimizer's ``tensor / 6.0`` as it runs: its static kernel needs
    CUDA, so the amaxes are CUDA tensors, and torch's CUDA division by a Python number is a
    multiplication by the float32 reciprocal, ``f32(x * f32(1/6))``. A correctly rounded
    quotient differs from it in the last bit for many amaxes, and a global amax affected so
    shifts every block scale of the weight (the FP8 inverse scale changes).
    """
    a = block_amax.to(torch.float32)
    s = divide_as_cuda(a, E2M1_MAX)
    if global_amax is None:
        g = torch.maximum(a.max().abs(), a.min().abs())
    else:
        g = global_amax.to(torch.float32)
    ratio = E4M3_MAX / (256.0 if four_over_six else E4M3_MAX)
    big_g = divide_as_cuda(g * ratio, E2M1_MAX)
    scale, inv = e4m3_scales(big_g)
    return cast_e4m3(s * scale) * inv


def divide_as_cuda(x: torch.Tensor, divisor: float) -> torch.Tensor:
    """``x / divisor`` as torch computes it for a float32 CUDA tensor and a Python number:
    ``f32(x * f32(1 / divisor))``, on any device."""
    inverse = torch.div(const(1.0, x), const(divisor, x))
    return x * inverse


def fake_quant_nvfp4_static(
    x: torch.Tensor,
    block_amax: torch.Tensor,
    global_amax: torch.Tensor | None = None,
    *,
    four_over_six: bool = False,
) -> torch.Tensor:
    """Static NVFP4 (``static_blockwise_fp4_fake_quant``): one per-block amax per row of ``x``.

    ``x`` is viewed as ``(num_blocks, numel / num_blocks)`` like the kernel does. Per block the
    scale ``sq`` of :func:`nvfp4_static_block_scales`; ``sq == 0`` gives +0 outputs, NaN/inf
    ``sq`` is replaced by 1, else ``y = ±E2M1(|x| / sq) * sq`` with Triton's sign rule
    (``x >= 0`` is positive, NaN -> ``-6 * sq``).
    """
    nblocks = block_amax.numel()
    if nblocks == 0 or x.numel() % nblocks:
        raise ValueError(
            f"x.numel() ({x.numel()}) is not a multiple of the number of block amaxes ({nblocks})"
        )
    sq = nvfp4_static_block_scales(block_amax, global_amax, four_over_six=four_over_six)
    sq = sq.reshape(nblocks, 1)
    zero = sq == 0
    safe = torch.where(zero | ~torch.isfinite(sq), torch.ones_like(sq), sq)

    def kernel(xc: torch.Tensor, buf: torch.Tensor, u: torch.Tensor, z: torch.Tensor) -> None:
        xf = as_f32(xc, buf)
        q = round_to_table(xf.abs().div_(u), "E2M1").mul_(u)
        torch.where(xf >= 0, q, q.neg(), out=buf)
        buf.masked_fill_(z, 0.0)  # a zero scale gives +0 (the kernel's ``where(zero, 0, y)``)

    out = map_chunks(kernel, x.reshape(nblocks, -1), (safe, zero), x.dtype)
    assert out is not None
    return out.reshape(x.shape)


def fp4_cast(x: torch.Tensor) -> torch.Tensor:
    """Unscaled E2M1 rounding of LSQ's ``FP4CastSTEFunction`` forward.

    Ties to even, saturating at ±6; sign by ``x >= 0`` so -0 -> +0 and NaN -> -6. The gradient
    mask of the STE is ``|x| <= 6`` (:func:`.ste.fp4_cast_ste`). docs/numerics.md, 'LSQ casts'.
    """
    xf = x.to(torch.float32)
    q = round_to_table(xf.abs(), "E2M1")
    return torch.where(xf >= 0, q, q.neg()).to(x.dtype)


_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_dtype(x: torch.Tensor) -> None:
    # Both GPU kernels dispatch on fp32/fp16/bf16 only (fp64 raises there too).
    if x.dtype not in _KERNEL_DTYPES:
        raise TypeError(f"NVFP4 fake quantization supports fp32/fp16/bf16 inputs, got {x.dtype}")


def _dynamic_matches(attrs: QuantizerSpec) -> bool:
    return attrs.family == "nvfp4" and attrs.is_dynamic_block


def _check_dynamic(attrs: QuantizerSpec, ndim: int | None) -> None:
    """E2M1 elements, and a block size the kernels accept (where the rank of the input, or a
    ``-1`` key, decides the block axis)."""
    if attrs.num_bits != (2, 1):
        raise ValueError(
            f"E4M3-scaled dynamic blocks need num_bits=(2, 1) (NVFP4), got {attrs.num_bits!r}"
        )
    assert attrs.block_sizes is not None
    block = attrs.dynamic_block_size(ndim) if ndim is not None else attrs.block_sizes.get(-1)
    if (ndim is not None or block is not None) and block not in NVFP4_BLOCK_SIZES:
        raise ValueError(f"NVFP4 block size must be one of {NVFP4_BLOCK_SIZES}, got {block!r}")


@register_format("nvfp4_dynamic", matches=_dynamic_matches, uses_bias=False, check=_check_dynamic)
def _nvfp4_dynamic_format(
    x: torch.Tensor, amax: torch.Tensor | None, attrs: QuantizerSpec, **_: object
) -> torch.Tensor:
    if attrs.num_bits != (2, 1):
        raise NotImplementedError(
            f"E4M3-scaled dynamic blocks need num_bits=(2, 1) (NVFP4), got {attrs.num_bits!r}"
        )
    _check_dtype(x)
    block = attrs.dynamic_block_size(x.dim())
    if block not in NVFP4_BLOCK_SIZES:
        raise ValueError(f"NVFP4 block size must be one of {NVFP4_BLOCK_SIZES}, got {block!r}")
    assert amax is not None
    return fake_quant_nvfp4_dynamic(x, amax, block)


def _static_matches(attrs: QuantizerSpec) -> bool:
    return attrs.family == "nvfp4" and attrs.is_static_block


@register_format("nvfp4_static", matches=_static_matches, uses_bias=False)
def _nvfp4_static_format(
    x: torch.Tensor,
    amax: torch.Tensor | None,
    attrs: QuantizerSpec,
    *,
    global_amax: torch.Tensor | None = None,
    **_: object,
) -> torch.Tensor:
    assert amax is not None and attrs.block_sizes is not None
    _check_dtype(x)
    return fake_quant_nvfp4_static(
        x, amax, global_amax, four_over_six=bool(attrs.block_sizes.get("four_over_six", False))
    )
