"""Encode a weight into codes plus scales that decode to exactly its fake-quantized value.

Why not the real-quantization arithmetic of :mod:`qruntime.numerics.real_quant`: that is what
Model Optimizer's ``fake_quant=False`` computes, and it differs from fake quantization (other
scale rounding, MXFP4 ties). ``compress`` promises the fake-quant model's outputs, so each codec
here takes the element codes and the per-group factor from the *fake-quant* formula of its
format (docs/numerics.md) and keeps whatever the decoder needs to redo the last multiplication
bit for bit. :func:`encode` then checks ``decode(encode(W)) == quantizer(W)`` with ``torch.equal``
and refuses the layer otherwise, so a formula drifting from the fake-quant kernels is an error,
never a silent change of outputs.

Stored per format (``codes`` / ``scale`` / ``extra``):

- ``int`` (signed INT2..8, per tensor, per channel, static blocks): int8 codes, packed densely
  into int32 words along the last dim below 8 bits (:func:`qruntime.packing.pack_int32`); the
  float32 divisor ``qmax / amax`` per group (the fake quant divides by it).
- ``fp8`` (E4M3, same granularities): float8_e4m3fn codes; the float32 multiplier ``1 / s``.
- ``nvfp4`` (dynamic blocks, E4M3 block scales): E2M1 codes two per byte; the E4M3 block scale
  bytes; ``extra`` = the float32 global amax (the per-block multiplier is rebuilt from both with
  the kernel's float64 steps).
- ``mx`` (MXFP4 / MXFP8): E2M1 codes two per byte or E4M3 codes; E8M0 exponent bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from qconfig.spec import QuantizerSpec

from qruntime import packing
from qruntime.numerics.amax import per_channel_axis, resolve_amax
from qruntime.numerics.blocks import StaticBlockPlan, static_block_plan
from qruntime.numerics.floats import EPS, FLT_MAX, cast_e4m3, const, round_to_table
from qruntime.numerics.fp8 import e4m3_scales
from qruntime.numerics.integer import int_range
from qruntime.numerics.mx import e8m0_scale

__all__ = ["CompressionError", "Encoded", "decode", "encode", "unsupported_reason"]

_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_NVFP4_BLOCKS = (8, 16, 32)
_MX_BLOCKS = (8, 16, 32)


class CompressionError(ValueError):
    """A layer selected for compression whose weight quantizer has no packed form here; the
    message names the layer and why."""


@dataclass
class Encoded:
    """A packed weight: what the compressed layer keeps instead of its float parameter.

    ``kind`` selects the decoder; ``shape``/``dtype`` are the original weight's; ``num_bits``
    the INT width; ``block_sizes`` the integer block axes of a static layout (the pad-and-reshape
    plan is rebuilt from them); ``block`` the dynamic block size.
    """

    kind: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    codes: torch.Tensor
    scale: torch.Tensor
    extra: torch.Tensor | None = None
    num_bits: int = 8
    block_sizes: dict[int, int] = field(default_factory=dict)
    block: int = 0

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"codes": self.codes, "scale": self.scale}
        if self.extra is not None:
            out["extra"] = self.extra
        return out

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())


def unsupported_reason(spec: QuantizerSpec, weight: torch.Tensor) -> str | None:
    """Why a weight quantized by ``spec`` has no packed form here, or None."""
    if weight.dtype not in _FLOAT_DTYPES:
        return f"its weight dtype {weight.dtype} is not float32, bfloat16 or float16"
    if not spec.fake_quant:
        return (
            "its weight quantizer has fake_quant=False (Model Optimizer's real-quant round trip), "
            "whose arithmetic compress does not reproduce"
        )
    if spec.rotate.enable:
        return "its weight quantizer rotates the weight (Hadamard); no packed form keeps that"
    if spec.bias is not None:
        return "its weight quantizer has an affine bias (zero point); not supported yet"
    family = spec.family
    if family == "int":
        bits = spec.num_bits
        if spec.unsigned:
            return "unsigned INT weights are not supported (codes are stored signed)"
        if not isinstance(bits, int) or not 2 <= bits <= 8:
            return f"INT weights of num_bits={bits!r} (packed codes are 2 to 8 bits)"
        return _static_layout_reason(spec, weight)
    if family == "fp":
        if spec.num_bits != (4, 3):
            return f"floating-point weights of num_bits={spec.num_bits!r} (only E4M3 is packed)"
        return _static_layout_reason(spec, weight)
    if family == "nvfp4":
        if spec.is_static_block:
            return "static NVFP4 (per-block calibrated amax) is not supported yet"
        block = spec.dynamic_block_size(weight.dim())
        if spec.num_bits != (2, 1) or block not in _NVFP4_BLOCKS:
            return f"NVFP4 needs E2M1 elements and a block of 8/16/32, got {block!r}"
        return None if weight.dim() else "a 0-d weight has no packed layout"
    if family == "mx":
        block = spec.dynamic_block_size(weight.dim())
        if spec.num_bits not in ((2, 1), (4, 3)):
            return f"MX element num_bits={spec.num_bits!r} (only MXFP4 and MXFP8 are packed)"
        if block not in _MX_BLOCKS:
            return f"MX block size {block!r} is not one of {_MX_BLOCKS}"
        return None if weight.dim() else "a 0-d weight has no packed layout"
    return f"its weight format (family {family!r}) has no packed form"


def _static_layout_reason(spec: QuantizerSpec, weight: torch.Tensor) -> str | None:
    if spec.block_sizes is not None and spec.strategy == "token":
        return "a per-token weight layout (block_sizes with None sizes) is not supported"
    if weight.dim() == 0:
        return "a 0-d weight has no packed layout"
    return None


# ---------------------------------------------------------------------------------- encode
def encode(
    weight: torch.Tensor,
    spec: QuantizerSpec,
    amax: torch.Tensor | None,
    global_amax: torch.Tensor | None,
    expected: torch.Tensor,
    where: str,
) -> Encoded:
    """Pack ``weight`` as its quantizer (``spec``, stored ``amax``/``global_amax``) fake-quantizes
    it; ``expected`` is the quantizer's own output, which the decoded weight must equal."""
    reason = unsupported_reason(spec, weight)
    if reason is not None:
        raise _error(where, reason)
    w = weight.detach()
    if not bool(torch.isfinite(w).all()):
        raise _error(where, "its weight holds NaN or infinite values")
    family = spec.family
    if family in ("int", "fp"):
        enc = _encode_scaled(w, spec, amax, family)
    elif family == "nvfp4":
        if amax is None or amax.numel() == 0:
            raise _error(where, "its NVFP4 weight quantizer has no calibrated global amax")
        enc = _encode_nvfp4(w, spec.dynamic_block_size(w.dim()) or 16, amax)
    else:
        enc = _encode_mx(w, spec.num_bits, spec.dynamic_block_size(w.dim()) or 32)
    if not torch.equal(decode(enc), expected):
        raise _error(
            where, "its packed form does not decode to the fake-quantized weight bit for bit"
        )
    return enc


def _error(where: str, reason: str) -> CompressionError:
    return CompressionError(f"cannot compress {where}: {reason}")


def _plan(spec: QuantizerSpec, shape: tuple[int, ...]) -> StaticBlockPlan | None:
    return static_block_plan(shape, spec.block_sizes or {}) if spec.is_static_block else None


def _encode_scaled(
    w: torch.Tensor, spec: QuantizerSpec, amax: torch.Tensor | None, family: str
) -> Encoded:
    """INT and FP8: the working layout of the fake quant (static block view or the weight),
    its amax, then the element codes and the per-group factor of the last step."""
    attrs = per_channel_axis(spec, w.dim())
    plan = _plan(attrs, tuple(w.shape))
    if plan is not None:
        attrs = attrs.replace(axis=plan.axis)
    xw = plan.to_blocks(w) if plan is not None else w
    a = resolve_amax(xw, attrs, amax).to(torch.float32)
    xf = xw.to(torch.float32)
    block_sizes = {int(k): int(v) for k, v in attrs.block_axes.items()} if plan else {}
    if family == "int":
        bits = int(spec.num_bits)
        qmin, qmax = int_range(bits, False, spec.narrow_range)
        s = torch.div(const(float(qmax), a), a)
        zero = a <= EPS
        q = (xf * s.masked_fill(zero, 0.0)).round().clamp(qmin, qmax).to(torch.int8)
        divisor = s.masked_fill(zero, 1.0)
        codes = q.reshape(-1, q.shape[-1] if plan is None else plan.padded_shape[-1])
        if bits < 8:
            codes = packing.pack_int32(codes, bits)
        return Encoded("int", tuple(w.shape), w.dtype, codes, divisor, None, bits, block_sizes)
    scale, inv = e4m3_scales(a)
    codes = cast_e4m3(xf * scale).to(torch.float8_e4m3fn)
    return Encoded("fp8", tuple(w.shape), w.dtype, codes, inv, None, 8, block_sizes)


def _nvfp4_factors(
    block_e4m3: torch.Tensor | None, la: torch.Tensor | None, ga: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The CUDA-extension NVFP4 block factors (docs/numerics.md, 'Dynamic NVFP4: CUDA-extension
    formula'): ``t = f64(f32(6 / ga)) * 448``, the E4M3 code ``e4m3(f32(f64(la / 6) * t))`` of each
    block, ``unscale = f32(f64(code) / t)`` and ``scale = f32(1 / f64 unscale)``; blocks whose amax
    (or the global amax) is 0 or not finite use 1 for both. Given the stored codes instead of the
    block amaxes, only the unscale is rebuilt (those blocks' elements are all 0 anyway)."""
    t = torch.div(const(6.0, ga), ga).to(torch.float64) * 448.0
    if block_e4m3 is None:
        assert la is not None
        lu = torch.div(la, const(6.0, la))
        block_e4m3 = cast_e4m3((lu.to(torch.float64) * t).to(torch.float32))
    luq = block_e4m3.to(torch.float64) / t
    scale = torch.reciprocal(luq).to(torch.float32)
    unscale = luq.to(torch.float32)
    if la is not None:
        bad = (la == 0) | ~torch.isfinite(la) | (ga == 0) | ~torch.isfinite(ga)
        one = torch.ones_like(scale)
        scale, unscale = torch.where(bad, one, scale), torch.where(bad, one, unscale)
    return block_e4m3.to(torch.float8_e4m3fn), scale, unscale


def _rows(w: torch.Tensor, block: int) -> torch.Tensor:
    """The kernels' row-block layout: rows of the last dim, zero padded to whole blocks."""
    n = w.shape[-1]
    rows = w.to(torch.float32).reshape(-1, n)
    pad = (-n) % block
    return (torch.nn.functional.pad(rows, (0, pad)) if pad else rows).reshape(-1, block)


def _padded(n: int, block: int) -> int:
    return n + (-n) % block


def _from_rows(vals: torch.Tensor, enc: Encoded) -> torch.Tensor:
    """Rows of padded blocks back to the weight's shape (padding dropped)."""
    n = enc.shape[-1]
    return vals.reshape(-1, _padded(n, enc.block))[:, :n].reshape(enc.shape)


def _encode_nvfp4(w: torch.Tensor, block: int, amax: torch.Tensor) -> Encoded:
    ga = (amax if amax.numel() == 1 else amax.amax()).reshape(()).to(torch.float32)
    if not bool(torch.isfinite(ga)) or float(ga) <= 0:
        raise CompressionError(
            f"NVFP4 global amax {float(ga)} is not a positive finite number (the kernel would "
            "then scale every block by 1, which the packed form does not store)"
        )
    xf = _rows(w, block)
    m = xf.abs()
    la = torch.nan_to_num(m, nan=0.0, posinf=FLT_MAX).amax(dim=-1, keepdim=True)
    block_e4m3, scale, _ = _nvfp4_factors(None, la, ga)
    mag = round_to_table(m * scale, "E2M1")
    codes = _fp4_signed_codes(mag, xf)
    width = _padded(w.shape[-1], block)
    packed = packing.pack_fp4(codes.reshape(-1, width))
    scales = block_e4m3.reshape(-1, width // block)
    return Encoded("nvfp4", tuple(w.shape), w.dtype, packed, scales, ga, 4, {}, block)


def _fp4_signed_codes(mag: torch.Tensor, xf: torch.Tensor) -> torch.Tensor:
    """E2M1 codes of ``sign * mag`` with the kernels' sign rule (+ only for ``x > 0``)."""
    idx = torch.searchsorted(torch.tensor(packing.E2M1_VALUES, device=mag.device), mag)
    return (((xf <= 0).to(torch.uint8)) << 3) | idx.to(torch.uint8)


def _encode_mx(w: torch.Tensor, num_bits: object, block: int) -> Encoded:
    fmt = "E2M1" if num_bits == (2, 1) else "E4M3"
    xf = _rows(w, block)
    m = xf.abs()
    amax = torch.nan_to_num(m, nan=0.0, posinf=FLT_MAX).amax(dim=-1, keepdim=True)
    scale, unscale = e8m0_scale(amax, fmt)
    width = _padded(w.shape[-1], block)
    exponents = packing.e8m0_encode(unscale).reshape(-1, width // block)
    if fmt == "E2M1":
        codes = _fp4_signed_codes(round_to_table(m * scale, "E2M1"), xf)
        packed = packing.pack_fp4(codes.reshape(-1, width))
        return Encoded("mx", tuple(w.shape), w.dtype, packed, exponents, None, 4, {}, block)
    mag = cast_e4m3(m * scale)
    signed = torch.where(xf > 0, mag, mag.neg()).to(torch.float8_e4m3fn)
    codes = signed.reshape(-1, width)
    return Encoded("mx", tuple(w.shape), w.dtype, codes, exponents, None, 8, {}, block)


# ---------------------------------------------------------------------------------- decode
#: Elements decoded per step: the float32 and index temporaries of a step stay near 1 MiB
#: instead of several bytes per weight element (the decoded weight is the only full-size output).
CHUNK_ELEMENTS = 1 << 16


def _steps(rows: int, per_row: int) -> range:
    return range(0, rows, max(1, CHUNK_ELEMENTS // max(1, per_row)))


def decode(enc: Encoded) -> torch.Tensor:
    """The dequantized weight, in the original shape and dtype."""
    if enc.kind in ("int", "fp8"):
        return _decode_scaled(enc)
    if enc.kind not in ("nvfp4", "mx"):
        raise ValueError(f"unknown packed weight kind {enc.kind!r}")
    n, block = enc.shape[-1], enc.block
    width = _padded(n, block)
    rows = enc.codes.shape[0]
    out = torch.empty(rows, n, dtype=enc.dtype, device=enc.codes.device)
    if enc.kind == "nvfp4":
        assert enc.extra is not None
        _, _, factors = _nvfp4_factors(enc.scale.reshape(rows, -1), None, enc.extra)
    else:
        factors = packing.e8m0_decode(enc.scale.reshape(rows, -1))
    step = _steps(rows, width)
    for i in step:
        j = i + step.step
        codes = enc.codes[i:j]
        if enc.kind == "nvfp4" or enc.num_bits == 4:
            vals = packing.fp4_values(packing.unpack_fp4(codes))
        else:
            vals = codes.to(torch.float32)
        part = vals.reshape(-1, block) * factors[i:j].reshape(-1, 1)
        out[i:j] = part.reshape(-1, width)[:, :n].to(enc.dtype)
    return out.reshape(enc.shape)


def _decode_scaled(enc: Encoded) -> torch.Tensor:
    """INT: ``f32(q) / divisor``; FP8: ``f32(c) * multiplier``; row chunks of the working
    layout (the static block view, or the weight), then the block view undone."""
    plan = static_block_plan(enc.shape, enc.block_sizes) if enc.block_sizes else None
    padded = plan.padded_shape if plan is not None else enc.shape
    codes = enc.codes
    if enc.kind == "int" and enc.num_bits < 8:
        codes = packing.unpack_int32(codes, enc.num_bits, (codes.shape[0], padded[-1]))
    work = codes.reshape(plan.reshape if plan is not None else enc.shape)
    if work.dim() == 0:
        work = work.reshape(1)
    out = torch.empty(work.shape, dtype=enc.dtype, device=work.device)
    scale = enc.scale
    rows = work.shape[0]
    per_row = work[0].numel() if rows else 0
    sliced = scale.dim() == work.dim() and scale.shape[0] == rows and rows > 1
    step = _steps(rows, per_row)
    for i in step:
        j = i + step.step
        s = scale[i:j] if sliced else scale
        vals = work[i:j].to(torch.float32)
        out[i:j] = (vals / s if enc.kind == "int" else vals * s).to(enc.dtype)
    y = out.reshape(work.shape if enc.shape else ())
    return plan.from_blocks(y) if plan is not None else y.reshape(enc.shape)
