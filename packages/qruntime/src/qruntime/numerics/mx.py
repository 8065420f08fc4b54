"""MX formats: MXFP4, MXFP6 (E3M2, E2M3), MXFP8 (E4M3, E5M2), MXINT8 — E8M0 block scales.

Model Optimizer 0.47.0 runs these only through its CUDA extension (``fused_amax_convert``), with
no CPU path. This module reproduces that kernel's element functions (docs/numerics.md, 'MX formats':
the "NV" E8M0 algorithm, IEEE fp32 without FTZ), including the host build's sign rule for zero/NaN
(docs/numerics.md, 'Choices', item 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from qconfig.spec import QuantizerSpec

from .chunking import as_f32, map_blocks
from .dispatch import register_format
from .floats import FLT_MAX, cast_e4m3, cast_e5m2, const, pow2, round_to_table

__all__ = ["MX_BLOCK_SIZES", "MX_ELEMENTS", "MXElement", "e8m0_scale", "fake_quant_mx"]

#: Block sizes the CUDA kernel accepts (other sizes raise there).
MX_BLOCK_SIZES = (8, 16, 32)


@dataclass(frozen=True)
class MXElement:
    """An MX element format: its name in the kernel and its largest magnitude ``fmax``."""

    name: str
    fmax: float


#: ``num_bits`` -> element format (``mx_format_map`` of Model Optimizer's tensor_quant.py).
MX_ELEMENTS: dict[int | tuple[int, int], MXElement] = {
    (2, 1): MXElement("E2M1", 6.0),
    (3, 2): MXElement("E3M2", 28.0),
    (2, 3): MXElement("E2M3", 7.5),
    (4, 3): MXElement("E4M3", 448.0),
    (5, 2): MXElement("E5M2", 57344.0),
    8: MXElement("INT8", 127.0),
}


def _element(fmt: MXElement | str) -> MXElement:
    if isinstance(fmt, MXElement):
        return fmt
    for e in MX_ELEMENTS.values():
        if e.name == fmt:
            return e
    raise ValueError(f"unknown MX element format {fmt!r}")


def e8m0_scale(block_amax: torch.Tensor, fmt: MXElement | str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, unscale) = (2^-k, 2^k)`` with ``k = ceil(log2(amax / fmax))`` from fp32 bits.

    docs/numerics.md, 'E8M0 scale'.

    ``k`` is read off the biased exponent ``E`` and mantissa ``M`` of ``r = f32(amax / fmax)``:
    ``E - 126`` when ``M > 0`` (not an exact power of two), ``E != 254`` and ``r`` is not a
    subnormal ``<= 2^-127``; else ``E - 127``. So k is in [-127, 127] and ``2^-127`` is a valid
    (subnormal) unscale. amax 0, inf or NaN gives scale = unscale = 1.
    """
    el = _element(fmt)
    a = block_amax.to(torch.float32)
    r = torch.div(a, const(el.fmax, a))
    bits = r.view(torch.int32)
    e = torch.bitwise_right_shift(bits, 23).bitwise_and_(0xFF)
    m = bits.bitwise_and(0x7FFFFF)
    round_up = (m > 0) & (e != 254) & ~((e == 0) & (m <= 0x400000))
    k = torch.where(round_up, e - 126, e - 127)
    bad = (a == 0) | ~torch.isfinite(a)
    one = torch.ones_like(a)
    return torch.where(bad, one, pow2(-k)), torch.where(bad, one, pow2(k))


def _convert(m: torch.Tensor, el: MXElement) -> torch.Tensor:
    """The kernel's ``convert_to_types`` for non-negative ``m``.

    docs/numerics.md, 'Element conversion'.
    """
    if el.name in ("E2M1", "E3M2", "E2M3"):
        return round_to_table(m, el.name)
    if el.name == "E4M3":
        return cast_e4m3(m)
    if el.name == "E5M2":
        return cast_e5m2(m)
    # INT8: rint, then saturate to [-127, 127]. rint of inf/NaN converted to int is undefined in
    # C; x86 (the reference host build) yields INT_MIN, which saturates to -127.
    q = m.round().clamp_(-127.0, 127.0)
    return torch.where(torch.isfinite(m), q, torch.full_like(q, -127.0))


def fake_quant_mx(
    x: torch.Tensor, num_bits: int | tuple[int, int], block_size: int = 32
) -> torch.Tensor:
    """MX fake quantization of ``x`` in row blocks of ``block_size`` along the last dim.

    Per block ``a = max(min(|x|, FLT_MAX))`` ignoring NaN (zero padding included), E8M0 scales of
    :func:`e8m0_scale`, then per element ``y = sign * f32(conv(f32(|x| * scale)) * unscale)``.
    ``sign`` is +1 only for ``x > 0``: zeros come out as -0 and NaN takes the sign -1 (the host
    build of the kernel; the GPU's sign of zero is unspecified). A NaN only affects its own
    element; an inf makes its block amax FLT_MAX, so the block's finite elements become 0.
    """
    if num_bits not in MX_ELEMENTS:
        raise NotImplementedError(
            f"Unsupported num_bits: {num_bits}, scale_bits: (8, 0) for dynamic block quantization."
        )
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"MX fake quantization supports fp32/fp16/bf16 inputs, got {x.dtype}")
    el = MX_ELEMENTS[num_bits]

    def kernel(xc: torch.Tensor, buf: torch.Tensor) -> None:
        xf = as_f32(xc, buf)
        m = xf.abs()
        amax = torch.nan_to_num(m, nan=0.0, posinf=FLT_MAX).amax(dim=-1, keepdim=True)
        scale, unscale = e8m0_scale(amax, el)
        q = _convert(m.mul_(scale), el).mul_(unscale)
        torch.where(xf > 0, q, q.neg(), out=buf)

    return map_blocks(kernel, x, block_size, (), x.dtype)


def _check_mx(attrs: QuantizerSpec, ndim: int | None) -> None:
    """An element format of the MX table, and a block size the kernel accepts (where the rank
    of the input, or a ``-1`` key, decides the block axis)."""
    if attrs.num_bits not in MX_ELEMENTS:
        known = ", ".join(str(k) for k in MX_ELEMENTS)
        raise ValueError(f"num_bits={attrs.num_bits!r} is not an MX element format ({known})")
    assert attrs.block_sizes is not None
    block = attrs.dynamic_block_size(ndim) if ndim is not None else attrs.block_sizes.get(-1)
    if (ndim is not None or block is not None) and block not in MX_BLOCK_SIZES:
        raise ValueError(f"MX block size must be one of {MX_BLOCK_SIZES}, got {block!r}")


@register_format(
    "mx",
    matches=lambda attrs: attrs.family == "mx",
    uses_amax=False,
    uses_bias=False,
    check=_check_mx,
)
def _mx_format(
    x: torch.Tensor, amax: torch.Tensor | None, attrs: QuantizerSpec, **_: object
) -> torch.Tensor:
    block = attrs.dynamic_block_size(x.dim())
    if block not in MX_BLOCK_SIZES:
        raise ValueError(f"MX block size must be one of {MX_BLOCK_SIZES}, got {block!r}")
    return fake_quant_mx(x, attrs.num_bits, block)
