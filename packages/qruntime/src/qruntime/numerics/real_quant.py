"""Real quantization ("compress"/export) round trips (docs/numerics.md, 'Real quantization').

With ``fake_quant=False`` Model Optimizer stores packed codes plus scales and dequantizes them on
the next forward. These formats share the element grids of fake quantization but not its
arithmetic: scales are often computed in the input dtype, MXFP4 rounds every tie down, NVFP4
clamps its block scales to [2^-9, 448], and the NF4 config that fake-quantizes as INT4 becomes NF4
here. Each ``*_quantize`` returns the packed form; ``*_dequantize`` inverts it; and
:func:`real_quant_roundtrip` is what a quantizer with ``fake_quant=False`` makes of a tensor.

Only the CPU torch code of Model Optimizer is reproduced (its CUDA INT4/NF4 kernels round ties
differently).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from qconfig.spec import QuantizerSpec

from .amax import amax_reduce, axis_to_reduce_dims
from .floats import const, round_to_table

__all__ = [
    "NF4_TABLE",
    "Packed",
    "fp8_dequantize",
    "fp8_quantize",
    "int4_dequantize",
    "int4_quantize",
    "int8_dequantize",
    "int8_quantize",
    "mxfp4_dequantize",
    "mxfp4_quantize",
    "mxfp8_dequantize",
    "mxfp8_quantize",
    "nf4_dequantize",
    "nf4_quantize",
    "nvfp4_dequantize",
    "nvfp4_quantize",
    "real_quant_error",
    "real_quant_roundtrip",
]

#: NF4 code book (QLoRA), stored in bf16 like Model Optimizer's table.
NF4_TABLE = (
    -1.0, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0,
    0.0796, 0.1609, 0.2461, 0.3379, 0.4407, 0.5626, 0.7230, 1.0,
)  # fmt: skip

_E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
_E2M1_BOUNDS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


@dataclass
class Packed:
    """A real-quantized tensor: ``data`` (codes), its ``scale``s and the original shape/dtype.

    ``double_scale``/``scale_zeros`` are the second-level scales (NVFP4 per-tensor scale, NF4
    double quantization); unused fields are None.
    """

    data: torch.Tensor
    scale: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype
    double_scale: torch.Tensor | None = None
    scale_zeros: torch.Tensor | None = None


def _pad_flat(x: torch.Tensor, block: int) -> torch.Tensor:
    flat = x.reshape(-1)
    pad = (-flat.numel()) % block
    return F.pad(flat, (0, pad)) if pad else flat


def _pack_low_first(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte, the even element in the low nibble."""
    return torch.bitwise_left_shift(codes[..., 1::2], 4) | codes[..., 0::2]


def _unpack_low_first(packed: torch.Tensor) -> torch.Tensor:
    low = packed & 0x0F
    high = torch.bitwise_right_shift(packed, 4) & 0x0F
    return torch.stack((low, high), dim=-1).reshape(*packed.shape[:-1], -1)


def _pack_high_first(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte, the even element in the high nibble (flat)."""
    return torch.bitwise_left_shift(codes[::2], 4) | codes[1::2]


def _unpack_high_first(packed: torch.Tensor) -> torch.Tensor:
    high = torch.bitwise_right_shift(packed, 4) & 0x0F
    low = packed & 0x0F
    return torch.stack((high, low), dim=-1).reshape(-1)


# ---------------------------------------------------------------------------------------- NVFP4
def nvfp4_quantize(
    x: torch.Tensor, block_size: int = 16, global_amax: torch.Tensor | None = None
) -> Packed:
    """``NVFP4QTensor.quantize``: codes with the even element in the low nibble.

    ``scale`` is the per-block E4M3 scale ``e4m3(clamp(amax_b / (6 s2), 2^-9, 448))`` (a zero
    ratio becomes 1), ``double_scale`` the per-tensor ``s2 = amax / (6 * 448)``; elements are
    rounded half-to-even on the E2M1 grid and negative values rounding to 0 keep code 8 (+0).
    """
    shape, dtype = x.shape, x.dtype
    xp = _pad_dims(x, {-1: block_size})
    amax = amax_reduce(xp) if global_amax is None else global_amax
    s2 = torch.div(amax.to(torch.float32), const(6.0 * 448.0, xp))
    ratio = torch.div(_block_amax(xp, {-1: block_size}).to(torch.float32), s2 * 6.0)
    ratio = torch.where(ratio == 0, torch.ones_like(ratio), ratio)
    scale8 = ratio.clamp(min=2.0**-9, max=448.0).to(torch.float8_e4m3fn)
    denom = (scale8.to(torch.float32) * s2).unsqueeze(-1)
    v = (xp.reshape(*xp.shape[:-1], -1, block_size) / denom).reshape(xp.shape)
    sign = (v < 0).to(torch.uint8)
    mag = round_to_table(v.abs(), "E2M1")
    code = torch.bucketize(mag, torch.tensor(_E2M1, device=x.device)).to(torch.uint8)
    codes = torch.bitwise_left_shift(sign, 3) | code
    return Packed(_pack_low_first(codes), scale8, shape, dtype, double_scale=s2)


def nvfp4_dequantize(p: Packed, block_size: int = 16) -> torch.Tensor:
    """Codes times ``scale * double_scale`` in float32, cast to the original dtype."""
    codes = _unpack_low_first(p.data).long()
    # Code 8 (sign bit, magnitude 0) decodes to +0, as Model Optimizer's table has it.
    table = torch.tensor((*_E2M1, 0.0, *(-v for v in _E2M1[1:])), device=codes.device)
    vals = table[codes]
    assert p.double_scale is not None
    per_block = p.scale.to(torch.float32) * p.double_scale
    y = vals.reshape(*vals.shape[:-1], -1, block_size) * per_block.unsqueeze(-1)
    y = y.reshape(*vals.shape[:-1], -1)[..., : p.shape[-1]]
    return y.reshape(p.shape).to(p.dtype)


# ---------------------------------------------------------------------------------------- MXFP4
def mxfp4_quantize(x: torch.Tensor, block_size: int = 32) -> Packed:
    """``MXFP4QTensor.quantize``: not the fake-quant MX kernel.

    ``e = ceil(max(log2(amax/6), -127))`` via ``torch.log2`` (no upper clamp, stored as
    ``e + 127``); codes count the E2M1 midpoints strictly below ``|v|`` (every tie rounds down);
    ``sign(0) = 0`` sets the sign bit, so zeros decode to -0. Even element in the low nibble.
    """
    shape, dtype = x.shape, x.dtype
    blocks = x.reshape(-1, block_size)
    amax = blocks.to(torch.float32).abs().amax(dim=-1, keepdim=True)
    descale = torch.div(amax, const(6.0, amax))
    e = torch.ceil(torch.maximum(torch.log2(descale), const(-127.0, descale)))
    v = (blocks / torch.exp2(e)).reshape(shape)
    sign_bit = torch.div(2 - torch.sign(v), 2, rounding_mode="floor")
    bounds = torch.tensor(_E2M1_BOUNDS, dtype=v.dtype, device=v.device)
    ordinal = ((v.abs().unsqueeze(-1) - bounds) > 0).sum(dim=-1)
    codes = (sign_bit * 8 + ordinal).to(torch.uint8)
    return Packed(_pack_low_first(codes), (e + 127).to(torch.uint8), shape, dtype)


def mxfp4_dequantize(p: Packed, block_size: int = 32) -> torch.Tensor:
    """``(-1)^s * E2M1[code] * 2^(scale - 127)`` in float32, cast to the original dtype."""
    codes = _unpack_low_first(p.data)
    sign = 1 - 2 * torch.bitwise_right_shift(codes & 0b1000, 3).to(torch.float32)
    mags = torch.tensor(_E2M1, device=codes.device)[(codes & 0b0111).long()]
    vals = (sign * mags).reshape(-1, block_size)
    vals = vals * torch.exp2(p.scale.to(torch.float32) - 127).reshape(-1, 1)
    return vals.reshape(p.shape).to(p.dtype)


# ---------------------------------------------------------------------------------------- MXFP8
def _mxfp8_exponent(amax: torch.Tensor) -> torch.Tensor:
    descale = torch.div(amax.to(torch.float32), const(448.0, amax))
    log2 = torch.where(descale > 0, torch.log2(descale), const(-127.0, descale))
    return torch.clamp(torch.ceil(log2), min=-127, max=127)


def mxfp8_quantize(x: torch.Tensor, block_size: int = 32) -> Packed:
    """``MXFP8QTensor.quantize``: ``e = clamp(ceil(log2(amax/448)), ±127)`` per block of 32,
    ``e4m3(clamp(x * 2^-e, ±448))`` data (padded blocks, sliced back)."""
    shape, dtype = x.shape, x.dtype
    xp = _pad_dims(x, {-1: block_size})
    e = _mxfp8_exponent(_block_amax(xp, {-1: block_size}))
    scale_u8 = (e + 127).to(torch.uint8)
    factor = torch.exp2(127 - scale_u8.to(torch.float32)).unsqueeze(-1)
    scaled = xp.reshape(*xp.shape[:-1], -1, block_size) * factor
    data = scaled.clamp(-448.0, 448.0).to(torch.float8_e4m3fn).reshape(xp.shape)
    return Packed(data[..., : shape[-1]], scale_u8, shape, dtype)


def mxfp8_dequantize(p: Packed, block_size: int = 32) -> torch.Tensor:
    """E4M3 data times ``2^(scale - 127)`` in float32, cast to the original dtype."""
    data = _pad_dims(p.data.to(torch.float32), {-1: block_size})
    descale = torch.exp2(p.scale.to(torch.float32) - 127).unsqueeze(-1)
    y = (data.reshape(*data.shape[:-1], -1, block_size) * descale).reshape(data.shape)
    return y[..., : p.shape[-1]].to(p.dtype)


# ------------------------------------------------------------------------------------------ NF4
def nf4_quantize(
    x: torch.Tensor, block_size: int, scale_block_size: int, scale_bits: int = 8
) -> Packed:
    """NF4 with double-quantized scales, all arithmetic in the input dtype.

    Per block ``sc = amax``; index = first nearest entry of the bf16 NF4 table to ``x / sc``;
    even element in the high nibble. Scales: ``z = mean`` of the zero-padded scale vector,
    ``d = reciprocal(amax(sc - z)) * 127`` per group (Model Optimizer writes ``127 / amax``),
    ``q = clamp(round_even((sc - z) * d), -127, 127)`` as int8.
    """
    shape, dtype = x.shape, x.dtype
    blocks = _pad_flat(x, block_size).reshape(-1, block_size)
    scales = amax_reduce(blocks, -1).reshape(blocks.shape[0], 1)
    v = (blocks / scales).reshape(-1)
    table = torch.tensor(NF4_TABLE, dtype=torch.bfloat16, device=x.device).to(dtype)
    idx = (v[:, None] - table).abs().argmin(dim=-1).to(torch.uint8)
    packed = _pack_high_first(idx)

    sc = _pad_flat(scales, scale_block_size)
    qmax = 2 ** (scale_bits - 1) - 1
    groups = sc.reshape(-1, scale_block_size)
    zero = groups.mean()
    centered = groups - zero
    d = torch.reciprocal(amax_reduce(centered, -1).reshape(-1, 1)) * qmax
    q = (centered * d).round().clamp(-qmax, qmax).to(torch.int8)
    return Packed(packed, q, shape, dtype, double_scale=d.reshape(-1), scale_zeros=zero)


def nf4_dequantize(p: Packed, block_size: int) -> torch.Tensor:
    """``NF4[idx] * (cast(q / d) + z)`` in the original dtype."""
    assert p.double_scale is not None and p.scale_zeros is not None
    nblocks = p.data.numel() * 2 // block_size
    q = p.scale.reshape(p.double_scale.numel(), -1)
    sc = ((q / p.double_scale.reshape(-1, 1)).to(p.dtype) + p.scale_zeros).reshape(-1)[:nblocks]
    idx = _unpack_high_first(p.data).long()
    table = torch.tensor(NF4_TABLE, dtype=torch.bfloat16, device=idx.device)
    vals = table[idx].reshape(-1, block_size) * sc.reshape(-1, 1)
    n = torch.Size(p.shape).numel()
    return vals.reshape(-1)[:n].reshape(p.shape).to(p.dtype)


# ----------------------------------------------------------------------------------------- INT4
def int4_quantize(x: torch.Tensor, block_size: int) -> Packed:
    """``INT4QTensor.quantize`` CPU path: ``s = reciprocal(amax_b) * 7`` in the input dtype,
    ``q = clamp(round_even(x * s), -8, 7) + 8``, even element in the high nibble."""
    if x.shape[-1] % 2:
        raise ValueError("INT4 real quantization needs an even last dimension")
    shape, dtype = x.shape, x.dtype
    blocks = _pad_flat(x, block_size).reshape(-1, block_size)
    scales = (torch.reciprocal(amax_reduce(blocks, -1)) * 7).reshape(blocks.shape[0], 1)
    q = (blocks * scales).reshape(-1).round().clamp(-8, 7) + 8
    packed = _pack_high_first(q.to(torch.uint8)).reshape(*shape[:-1], -1)
    return Packed(packed, scales, shape, dtype)


def int4_dequantize(p: Packed, block_size: int) -> torch.Tensor:
    """``(q - 8) / s`` (a division, in the scale dtype), cast to the original dtype."""
    codes = _unpack_high_first(p.data.reshape(-1)).long() - 8
    vals = codes.reshape(-1, block_size) / p.scale.reshape(-1, 1)
    n = torch.Size(p.shape).numel()
    return vals.reshape(-1)[:n].reshape(p.shape).to(p.dtype)


# --------------------------------------------------------------------------------- INT8 / FP8
def _expand(scale: torch.Tensor, block_sizes: dict | None) -> torch.Tensor:
    if block_sizes:
        for dim, size in block_sizes.items():
            scale = scale.repeat_interleave(size, dim=dim)
    return scale


def _block_amax(x: torch.Tensor, block_sizes: dict) -> torch.Tensor:
    amax = x
    for dim, size in block_sizes.items():
        d = dim if dim >= 0 else amax.dim() + dim
        amax = amax.reshape(*amax.shape[:d], amax.shape[d] // size, size, *amax.shape[d + 1 :])
        hi = amax.amax(dim=d + 1)
        lo = amax.amin(dim=d + 1)
        amax = torch.maximum(hi.abs(), lo.abs())
    return amax


def _pad_dims(x: torch.Tensor, block_sizes: dict) -> torch.Tensor:
    for dim, size in block_sizes.items():
        d = dim if dim >= 0 else x.dim() + dim
        pad = (-x.shape[d]) % size
        if pad:
            spec = [0] * (2 * x.dim())
            spec[(x.dim() - 1 - d) * 2 + 1] = pad
            x = F.pad(x, spec)
    return x


def int8_quantize(
    x: torch.Tensor, axis: int | tuple[int, ...] | None = None, block_sizes: dict | None = None
) -> Packed:
    """``INT8QTensor.quantize``: ``scale = amax / 127`` in the input dtype (any calibrated
    amax is ignored), ``q = clamp(round_even(x / scale), -128, 127)`` as int8."""
    shape, dtype = x.shape, x.dtype
    if block_sizes:
        x = _pad_dims(x, block_sizes)
        amax = _block_amax(x, block_sizes)
    else:
        amax = amax_reduce(x, axis_to_reduce_dims(x.dim(), axis))
    scale = amax / 127.0
    q = (x / _expand(scale, block_sizes)).round().clamp(-128, 127).to(torch.int8)
    return Packed(q, scale, shape, dtype)


def int8_dequantize(p: Packed, block_sizes: dict | None = None) -> torch.Tensor:
    """``q * scale`` in the original dtype, padding sliced off."""
    y = p.data.to(p.dtype) * _expand(p.scale, block_sizes).to(p.dtype)
    return y[tuple(slice(0, n) for n in p.shape)]


def fp8_quantize(
    x: torch.Tensor,
    amax: torch.Tensor | None = None,
    axis: int | tuple[int, ...] | None = None,
    block_sizes: dict | None = None,
) -> Packed:
    """``FP8QTensor.quantize``: ``scale = amax / 448`` (the quantizer's amax when it has
    one, else recomputed, in the input dtype), data ``e4m3(x / scale)`` without a clamp."""
    shape, dtype = x.shape, x.dtype
    if block_sizes:
        x = _pad_dims(x, block_sizes)
    if amax is None:
        if block_sizes:
            amax = _block_amax(x, block_sizes)
        else:
            amax = amax_reduce(x, axis_to_reduce_dims(x.dim(), axis))
    scale = amax / 448.0
    if block_sizes:
        expected = [
            n // block_sizes.get(d, block_sizes.get(d - x.dim(), 1)) for d, n in enumerate(x.shape)
        ]
        if scale.numel() == torch.Size(expected).numel():
            scale = scale.reshape(expected)
    data = (x / _expand(scale, block_sizes)).to(torch.float8_e4m3fn)
    return Packed(data[tuple(slice(0, n) for n in shape)], scale, shape, dtype)


def fp8_dequantize(p: Packed, block_sizes: dict | None = None) -> torch.Tensor:
    """``data * scale`` in the original dtype (padding re-added for block scales, then sliced)."""
    data = p.data
    if block_sizes:
        data = _pad_dims(data.to(p.dtype), block_sizes)
    y = data.to(p.dtype) * _expand(p.scale, block_sizes).to(p.dtype)
    return y[tuple(slice(0, n) for n in p.shape)]


# ------------------------------------------------------------------------------------- routing
def real_quant_error(attrs: QuantizerSpec, shape: tuple[int, ...] | None = None) -> str | None:
    """Why :func:`real_quant_roundtrip` fails for ``attrs`` (on an input of ``shape``, when it is
    known), or None. ``apply_plan`` checks this before the model is touched."""
    bs = attrs.block_sizes
    bits = attrs.num_bits
    if not ((bits == 4 and bs) or (bits == (2, 1) and bs) or bits in ((4, 3), 8)):
        return f"Real quantization not supported for num_bits={bits!r}, block_sizes={bs!r}"
    if any(size is None for size in attrs.block_axes.values()):
        return f"real quantization needs a block size for every block axis, got {bs!r}"
    if attrs.is_mx:
        return _mx_real_quant_error(attrs, shape)
    if bits == (4, 3) and attrs.block_axes and attrs.axis is not None:
        return (
            "FP8 real quantization with block_sizes takes one scale per block: a calibrated "
            f"per-channel amax (axis={attrs.axis!r}) does not fit it; set axis to null"
        )
    if bits in ((4, 3), 8):
        return None
    assert bs is not None
    if bs.get("scale_bits") == (4, 3) and attrs.axis is not None:
        return (
            "NVFP4 real quantization scales the tensor by one global amax: a calibrated "
            f"per-channel amax (axis={attrs.axis!r}) does not fit it; set axis to null"
        )
    if -1 not in bs:  # INT4, NF4 and NVFP4 packing read the block size of the last axis as -1
        return f"real quantization of num_bits={bits!r} needs block_sizes[-1], got {bs!r}"
    numel = math.prod(shape) if shape is not None else None
    block = bs[-1]
    if numel is not None and isinstance(block, int) and block > 0 and (numel % block or block % 2):
        return (
            f"real quantization of num_bits={bits!r} packs whole blocks of two-element bytes: "
            f"block_sizes[-1] = {block} must be even and divide the {numel} elements of a "
            f"{list(shape or ())} tensor"
        )
    scale_blocks = bs.get("scale_block_sizes")
    nf4 = bs.get("scale_bits", 0) == 8 and bool(scale_blocks)
    if nf4 and -1 not in scale_blocks:
        return f"NF4 real quantization needs scale_block_sizes[-1], got {scale_blocks!r}"
    if bs.get("scale_bits") == (4, 3) and bs.get("four_over_six"):
        return (
            "NVFP4 four-over-six has no real quantization (docs/numerics.md, 'Real quantization')"
        )
    int4 = not nf4 and bs.get("scale_bits") != (4, 3)
    if int4 and shape is not None and shape and shape[-1] % 2:
        return f"INT4 real quantization needs an even last dimension, got {list(shape)}"
    return None


def _mx_real_quant_error(attrs: QuantizerSpec, shape: tuple[int, ...] | None) -> str | None:
    bits = attrs.num_bits
    if bits not in ((2, 1), (4, 3)):
        return f"Unsupported MX format: num_bits={bits!r}"
    assert attrs.block_sizes is not None
    block = attrs.dynamic_block_size(len(shape)) if shape else attrs.block_sizes.get(-1)
    if bits == (4, 3) and (shape or block is not None) and (block or 32) != 32:
        return f"MXFP8 requires block size 32, got {block}"
    return None


def real_quant_roundtrip(
    x: torch.Tensor,
    attrs: QuantizerSpec,
    amax: torch.Tensor | None = None,
    *,
    global_amax: torch.Tensor | None = None,
) -> torch.Tensor:
    """What a ``fake_quant=False`` quantizer makes of ``x``: real quantize, then dequantize.

    Selection as ``TensorQuantizer._real_quantize``: MX -> MXFP4/MXFP8; E4M3 -> FP8; INT8 ->
    INT8 (amax ignored); 4-bit with ``scale_bits=8`` and ``scale_block_sizes`` -> NF4 double
    quantization; E4M3-scaled E2M1 -> NVFP4 (the quantizer's amax, or ``global_amax`` for a
    static one, sets the per-tensor scale); other 4-bit blocks -> INT4.
    """
    bs = attrs.block_sizes
    bits = attrs.num_bits
    if not ((bits == 4 and bs) or (bits == (2, 1) and bs) or bits in ((4, 3), 8)):
        raise ValueError(real_quant_error(attrs))
    assert bs is not None or bits in ((4, 3), 8)
    axes = attrs.block_axes or None
    if attrs.is_mx:
        block = attrs.dynamic_block_size(x.dim()) or 32
        if bits == (2, 1):
            return mxfp4_dequantize(mxfp4_quantize(x, block), block)
        if bits == (4, 3):
            if block != 32:
                raise ValueError(f"MXFP8 requires block size 32, got {block}")
            return mxfp8_dequantize(mxfp8_quantize(x, block), block)
        raise ValueError(f"Unsupported MX format: num_bits={bits!r}")
    if bits == (4, 3):
        use_amax = amax is not None and not (bs and amax.numel() == 1)
        p = fp8_quantize(x, amax if use_amax else None, attrs.axis, axes)
        return fp8_dequantize(p, axes)
    if bits == 8:
        return int8_dequantize(int8_quantize(x, attrs.axis, axes), axes)
    assert bs is not None
    if bs.get("scale_bits", 0) == 8 and bs.get("scale_block_sizes"):
        block = bs[-1]
        p = nf4_quantize(x, block, bs["scale_block_sizes"][-1], 8)
        return nf4_dequantize(p, block)
    if bs.get("scale_bits") == (4, 3):
        if bs.get("four_over_six", False):
            raise NotImplementedError(
                "NVFP4 four-over-six has no real quantization "
                "(docs/numerics.md, 'Real quantization')"
            )
        block = bs[-1]
        g = global_amax if global_amax is not None else amax
        return nvfp4_dequantize(nvfp4_quantize(x, block, g), block)
    block = bs[-1]
    return int4_dequantize(int4_quantize(x, block), block)
