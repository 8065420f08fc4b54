"""Real quantization of one weight, reproducing the codes of its quantizer's fake quantization.

Why it reads the quantizer instead of re-deriving scales the way a format's own library would:
the exported checkpoint must decode to the weights the fake-quant model computed with (the model
that was evaluated), so each code is the one fake quantization rounded to and each scale is the
one it divided or multiplied by. Every result is checked against the quantizer's own output
before it is returned.

Supported weight layouts: INT4/INT8 per tensor, per output channel and in groups along the input
dimension; FP8 E4M3 per tensor and per output channel; dynamic NVFP4 (E2M1 in blocks of 16 with
E4M3 block scales under a per-tensor global amax). Anything else raises :class:`ExportError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from qruntime.export.errors import ExportError
from qruntime.numerics.floats import cast_e4m3, round_to_table
from qruntime.numerics.fp8 import e4m3_scales
from qruntime.numerics.integer import int_range
from qruntime.numerics.mx import e8m0_scale
from qruntime.numerics.nvfp4 import divide_as_cuda, nvfp4_static_block_scales
from qruntime.packing import e8m0_decode, e8m0_encode, fp4_codes, fp4_values
from qruntime.quantizer import TensorQuantizer

__all__ = ["QuantizedWeight", "quantize_weight"]

_EPS = 2.0**-24  # amax at or below this quantizes to zero (the fake-quant rule)


@dataclass(frozen=True)
class QuantizedWeight:
    """One weight in real quantized form, ``[out, in]``.

    ``codes``: int8 integers (``kind="int"``), float8_e4m3fn elements (``"fp8"``) or uint8 E2M1
    codes (``"nvfp4"``). ``scale`` multiplies the codes (float32): ``(1, 1)`` per tensor,
    ``(out, 1)`` per channel, ``(out, in / group_size)`` per group; for NVFP4 it is the E4M3
    block scale (float8_e4m3fn, ``(out, in / 16)``) and ``global_scale`` the float32 divisor, so
    that ``W' = e2m1 * scale / global_scale``. ``amax`` is the quantizer's (float32).
    """

    kind: Literal["int", "fp8", "nvfp4", "mxfp4", "mxfp8"]
    codes: torch.Tensor
    scale: torch.Tensor
    num_bits: int
    strategy: Literal["tensor", "channel", "group"]
    group_size: int | None
    amax: torch.Tensor
    global_scale: torch.Tensor | None = None
    #: The factor the fake quantization applied to the codes, in ``scale``'s shape: INT divides
    #: by ``qmax / amax`` (not the stored reciprocal), NVFP4 multiplies by a float32 block unscale
    #: from a double-precision quotient (which ``scale / global_scale`` may round differently).
    fake_factor: torch.Tensor | None = None

    def dequantize(self) -> torch.Tensor:
        """The float32 weight these codes and scales stand for."""
        if self.kind in ("mxfp4", "mxfp8"):
            vals = fp4_values(self.codes) if self.kind == "mxfp4" else self.codes.float()
            out, n = vals.shape
            blocks = vals.reshape(out, -1, 32) * e8m0_decode(self.scale).unsqueeze(-1)
            return blocks.reshape(out, n)
        if self.kind == "nvfp4":
            assert self.global_scale is not None
            per_block = self.scale.to(torch.float32) / self.global_scale
            vals = fp4_values(self.codes)
            out, n = vals.shape
            blocks = vals.reshape(out, -1, 16) * per_block.unsqueeze(-1)
            return blocks.reshape(out, n)
        vals = self.codes.to(torch.float32)
        if self.strategy == "group":
            assert self.group_size is not None
            return vals * self.scale.repeat_interleave(self.group_size, dim=1)
        return vals * self.scale


def _fail(name: str, what: str, instead: str) -> ExportError:
    return ExportError(f"{name}: {what}; {instead}")


def _amax_of(name: str, quantizer: TensorQuantizer, weight: torch.Tensor) -> torch.Tensor:
    amax = quantizer.amax
    if amax is not None:
        return amax.detach().to(torch.float32)
    spec = quantizer.spec
    if spec.block_sizes is None and spec.axis in (None, 0, (0,)):
        w = weight.detach().to(torch.float32).abs()
        return w.amax() if spec.axis is None else w.amax(dim=1, keepdim=True)
    raise _fail(name, "a dynamic block layout without a calibrated amax", "calibrate it first")


def _layout(name: str, quantizer: TensorQuantizer, weight: torch.Tensor, amax: torch.Tensor):
    """``(strategy, group_size, amax reshaped to the scale shape)`` of an INT/FP8 weight."""
    out, n = weight.shape
    spec = quantizer.spec
    if spec.is_static_block:
        axes = spec.block_axes
        group = axes.get(-1, axes.get(1))
        if set(axes) - {-1, 1} or not isinstance(group, int) or group <= 0:
            raise _fail(
                name,
                f"block layout {dict(spec.block_sizes or {})} (blocks other than along the input "
                "dimension)",
                "only per-tensor, per-output-channel or groups along the input dimension are "
                "written; use block_sizes {-1: <group>}",
            )
        if n % group:
            raise _fail(
                name,
                f"group size {group} does not divide the {n} input features",
                "choose a group size that divides them",
            )
        if amax.numel() != out * (n // group):
            raise _fail(name, f"amax of {amax.numel()} values for groups of {group}", "recalibrate")
        if group == n:
            return "channel", None, amax.reshape(out, 1)
        return "group", group, amax.reshape(out, n // group)
    if spec.block_sizes is not None:
        raise _fail(name, "a dynamic block layout in an INT/FP8 weight", "use a static layout")
    if amax.numel() == 1:
        return "tensor", None, amax.reshape(1, 1)
    if spec.axis in (0, (0,), -2, (-2,)) and amax.numel() == out:
        return "channel", None, amax.reshape(out, 1)
    raise _fail(
        name,
        f"axis {spec.axis!r} (one scale per input feature)",
        "only per-tensor, per-output-channel (axis 0) or grouped weights are expressible",
    )


def _check_common(name: str, quantizer: TensorQuantizer) -> None:
    spec = quantizer.spec
    if spec.rotate.enable:
        raise _fail(name, "a Hadamard rotation", "no checkpoint format stores rotations here")
    if spec.bias is not None:
        raise _fail(name, "an affine bias (zero point)", "use a symmetric format")
    if not spec.fake_quant:
        raise _fail(
            name, "fake_quant=False (already real-quantized)", "export the fake-quant model"
        )


def _int_weight(name, quantizer, weight) -> QuantizedWeight:
    spec = quantizer.spec
    bits = spec.num_bits
    if bits not in (4, 8) or spec.unsigned:
        raise _fail(
            name,
            f"{'unsigned ' if spec.unsigned else ''}INT{bits}",
            "checkpoint formats store signed INT4 or INT8",
        )
    amax = _amax_of(name, quantizer, weight)
    strategy, group, a = _layout(name, quantizer, weight, amax)
    qmin, qmax = int_range(bits, False, spec.narrow_range)
    s = torch.div(torch.tensor(float(qmax)), a)
    zero = a <= _EPS
    s_round = s.masked_fill(zero, 0.0)
    s_full = s_round.repeat_interleave(group, dim=1) if group else s_round
    codes = torch.mul(weight.detach().to(torch.float32), s_full).round_().clamp_(qmin, qmax)
    scale = torch.where(zero, torch.ones_like(s), torch.reciprocal(s))
    return QuantizedWeight(
        "int", codes.to(torch.int8), scale, bits, strategy, group, amax, fake_factor=s_round
    )


def _fp8_weight(name, quantizer, weight) -> QuantizedWeight:
    if quantizer.spec.num_bits != (4, 3):
        raise _fail(name, f"FP num_bits {quantizer.spec.num_bits}", "only E4M3 is expressible")
    amax = _amax_of(name, quantizer, weight)
    strategy, _, a = _layout(name, quantizer, weight, amax)
    if strategy == "group":
        raise _fail(name, "FP8 in groups", "use FP8 per tensor or per channel, or MXFP8")
    scale, inv = e4m3_scales(a)
    codes = cast_e4m3(torch.mul(weight.detach().to(torch.float32), scale))
    return QuantizedWeight("fp8", codes.to(torch.float8_e4m3fn), inv, 8, strategy, None, amax)


def _nvfp4_weight(name, quantizer, weight) -> QuantizedWeight:
    spec = quantizer.spec
    block = spec.dynamic_block_size(2)
    if spec.is_static_block:
        return _nvfp4_static_weight(name, quantizer, weight)
    if block != 16:
        raise _fail(name, f"NVFP4 in blocks of {block}", "NVFP4 checkpoints hold blocks of 16")
    amax = quantizer.amax
    if amax is None:
        raise _fail(name, "NVFP4 without a calibrated global amax", "calibrate it first")
    ga = amax.detach().to(torch.float32).amax().reshape(())
    if not bool(torch.isfinite(ga)) or float(ga) <= 0:
        raise _fail(name, f"NVFP4 global amax {float(ga)}", "recalibrate")
    out, n = weight.shape
    if n % 16:
        raise _fail(name, f"{n} input features", "NVFP4 needs a multiple of 16")
    w = weight.detach().to(torch.float32).reshape(out, n // 16, 16)
    # The per-block scale of the fake quantization: E4M3-rounded (amax_b / 6) on the grid of the
    # global scale t = (6 / ga) * 448, with t and the quotient kept in double precision.
    t = torch.div(torch.tensor(6.0), ga).to(torch.float64) * 448.0
    block_amax = torch.nan_to_num(w.abs(), nan=0.0).amax(dim=-1)
    q8 = cast_e4m3((torch.div(block_amax, 6.0).to(torch.float64) * t).to(torch.float32))
    unscale = (q8.to(torch.float64) / t).to(torch.float32)
    bad = (block_amax == 0) | (unscale == 0) | ~torch.isfinite(unscale)
    recip = torch.reciprocal(q8.to(torch.float64) / t).to(torch.float32)
    scale = torch.where(bad, torch.ones_like(unscale), recip)
    unscale = torch.where(bad, torch.ones_like(unscale), unscale)
    mag = round_to_table(w.abs() * scale.unsqueeze(-1), "E2M1")
    values = torch.where(w > 0, mag, -mag).reshape(out, n)
    codes = fp4_codes(values)
    q8 = torch.where(bad, torch.zeros_like(q8), q8)
    return QuantizedWeight(
        "nvfp4",
        codes,
        q8.to(torch.float8_e4m3fn),
        4,
        "group",
        16,
        amax.detach().float(),
        global_scale=t.to(torch.float32).reshape(1),
        fake_factor=unscale,
    )


def _nvfp4_static_weight(name, quantizer, weight) -> QuantizedWeight:
    """Static NVFP4 (block amaxes from MSE / local-Hessian calibration): per block
    ``sq = e4m3(s * G_scale) * G_inv`` (:func:`nvfp4_static_block_scales`); the E4M3 factor is
    the block scale and ``G_scale`` (float32) the global divisor."""
    spec = quantizer.spec
    bs = spec.block_sizes or {}
    if bs.get("four_over_six"):
        raise _fail(name, "NVFP4 four-over-six", "no checkpoint format defines it")
    out, n = weight.shape
    axes = spec.block_axes
    if set(axes) - {-1, 1} or axes.get(-1, axes.get(1)) != 16 or n % 16:
        raise _fail(name, f"static NVFP4 blocks {dict(bs)}", "NVFP4 needs blocks of 16 per row")
    amax = quantizer.amax
    if amax is None or amax.numel() != out * n // 16:
        raise _fail(name, "static NVFP4 without one amax per block", "calibrate it first")
    block_amax = amax.detach().to(torch.float32).reshape(out, n // 16)
    global_amax = quantizer.global_amax
    sq = nvfp4_static_block_scales(block_amax, global_amax)
    a = block_amax
    g = a.abs().max() if global_amax is None else global_amax.to(torch.float32).reshape(())
    g_scale, g_inv = e4m3_scales(divide_as_cuda(g.reshape(()), 6.0))
    q8 = cast_e4m3(sq / g_inv)
    if not torch.equal(q8 * g_inv, sq):
        raise _fail(name, "static NVFP4 block scales off the E4M3 grid", "please report it")
    zero = sq == 0
    safe = torch.where(zero | ~torch.isfinite(sq), torch.ones_like(sq), sq)
    w = weight.detach().to(torch.float32).reshape(out, n // 16, 16)
    mag = round_to_table(w.abs() / safe.unsqueeze(-1), "E2M1")
    mag = mag.masked_fill(zero.unsqueeze(-1), 0.0)
    values = torch.where(w >= 0, mag, -mag).reshape(out, n)
    return QuantizedWeight(
        "nvfp4",
        fp4_codes(values),
        q8.to(torch.float8_e4m3fn),
        4,
        "group",
        16,
        a.amax().reshape(()),
        global_scale=g_scale.reshape(1),
        fake_factor=safe,
    )


def _mx_weight(name, quantizer, weight) -> QuantizedWeight:
    spec = quantizer.spec
    bits = spec.num_bits
    block = spec.dynamic_block_size(2)
    kind = {(2, 1): "mxfp4", (4, 3): "mxfp8"}.get(bits)  # type: ignore[call-overload]
    if kind is None or block != 32:
        raise _fail(
            name,
            f"MX num_bits {bits!r} in blocks of {block}",
            "checkpoints hold MXFP4 (E2M1) or MXFP8 (E4M3) in blocks of 32",
        )
    out, n = weight.shape
    if n % 32:
        raise _fail(name, f"{n} input features", "MX needs a multiple of 32")
    w = weight.detach().to(torch.float32).reshape(out, n // 32, 32)
    amax = torch.nan_to_num(w.abs(), nan=0.0).amax(dim=-1)
    scale, unscale = e8m0_scale(amax, "E2M1" if kind == "mxfp4" else "E4M3")
    scaled = w.abs() * scale.unsqueeze(-1)
    mag = round_to_table(scaled, "E2M1") if kind == "mxfp4" else cast_e4m3(scaled)
    values = torch.where(w > 0, mag, -mag).reshape(out, n)
    codes = fp4_codes(values) if kind == "mxfp4" else values.to(torch.float8_e4m3fn)
    nbits = 4 if kind == "mxfp4" else 8
    return QuantizedWeight(
        kind, codes, e8m0_encode(unscale), nbits, "group", 32, torch.empty(0), None, unscale
    )


def nvfp4_from_codes(
    name: str, codes: torch.Tensor, block_scale: torch.Tensor, global_amax: torch.Tensor
) -> QuantizedWeight:
    """Dynamic NVFP4 from codes and E4M3 block scales already chosen (a compressed layer's packed
    weight), with the fake quantization's block unscale ``f32(q8 / t)``, ``t = f32(6 / ga) * 448``
    in double precision."""
    ga = global_amax.detach().to(torch.float32).amax().reshape(())
    out, n = codes.shape
    q8 = block_scale.to(torch.float32).reshape(out, n // 16)
    t = torch.div(torch.tensor(6.0), ga).to(torch.float64) * 448.0
    unscale = (q8.to(torch.float64) / t).to(torch.float32)
    unscale = torch.where(q8 == 0, torch.ones_like(unscale), unscale)
    return QuantizedWeight(
        "nvfp4",
        codes,
        q8.to(torch.float8_e4m3fn),
        4,
        "group",
        16,
        ga,
        global_scale=t.to(torch.float32).reshape(1),
        fake_factor=unscale,
    )


def check_weight(
    name: str, result: QuantizedWeight, quantizer: TensorQuantizer, reference: torch.Tensor
) -> None:
    """Raise :class:`ExportError` unless ``result`` decodes, with the fake quantization's own
    arithmetic, to ``reference`` bit for bit."""
    _check_against_fake_quant(name, reference, quantizer, result, reference)


def quantize_weight(
    name: str,
    weight: torch.Tensor,
    quantizer: TensorQuantizer,
    *,
    reference: torch.Tensor | None = None,
) -> QuantizedWeight:
    """The real codes and scales of ``weight`` under ``quantizer`` (``name`` labels errors).

    Raises :class:`ExportError` for a layout no checkpoint format stores, and when the codes do not
    reproduce the quantizer's fake-quantized weight (or ``reference``, the weight a compressed
    layer decodes to, which already is fake-quantized).
    """
    if weight.dim() != 2:
        raise _fail(name, f"a {weight.dim()}-D weight", "only 2-D [out, in] weights are written")
    _check_common(name, quantizer)
    if quantizer.pre_quant_scale is not None:
        raise _fail(name, "a pre_quant_scale on a weight quantizer", "fold it into the weight")
    family = quantizer.spec.family
    if family == "int":
        result = _int_weight(name, quantizer, weight)
    elif family == "fp":
        result = _fp8_weight(name, quantizer, weight)
    elif family == "nvfp4":
        result = _nvfp4_weight(name, quantizer, weight)
    elif family == "mx":
        result = _mx_weight(name, quantizer, weight)
    else:
        raise _fail(name, f"format family {family!r}", "use INT4/INT8, FP8, NVFP4 or MX")
    _check_against_fake_quant(name, weight, quantizer, result, reference)
    return result


def _check_against_fake_quant(
    name, weight, quantizer, result: QuantizedWeight, reference: torch.Tensor | None = None
) -> None:
    """The codes must be the ones the fake quantization rounded to: decoding them with the fake
    quantization's own arithmetic (divide by ``qmax/amax`` for INT, multiply by the inverse
    scale for FP8 and NVFP4) must give its output bit for bit."""
    if quantizer.is_calibrating:
        raise _fail(name, "a quantizer still calibrating", "finish calibration first")
    if reference is not None:
        fake = reference.detach().to(torch.float32)
    else:
        with torch.no_grad():
            fake = quantizer(weight.detach()).to(torch.float32)
    if result.kind == "int":
        s = result.fake_factor
        assert s is not None
        s = torch.where(s == 0, torch.ones_like(s), s)
        if result.group_size:
            s = s.repeat_interleave(result.group_size, dim=1)
        mine = torch.div(result.codes.to(torch.float32), s)
        mine = torch.where(torch.isfinite(mine), mine, torch.zeros_like(mine))
    else:
        mine = result.dequantize() if result.kind != "nvfp4" else _nvfp4_fake(result)
    mine = mine.to(weight.dtype).to(torch.float32)
    if not torch.equal(mine, fake):
        bad = int((mine != fake).sum())
        raise ExportError(
            f"{name}: {bad} of {fake.numel()} real-quantized weight values differ from the "
            "quantizer's fake quantization (an internal inconsistency; please report it)"
        )


def _nvfp4_fake(result: QuantizedWeight) -> torch.Tensor:
    """E2M1 values times the fake quantization's float32 block unscale."""
    assert result.fake_factor is not None
    unscale = result.fake_factor
    vals = fp4_values(result.codes)
    out, n = vals.shape
    return (vals.reshape(out, -1, 16) * unscale.unsqueeze(-1)).reshape(out, n)
