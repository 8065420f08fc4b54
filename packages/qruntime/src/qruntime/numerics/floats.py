"""Element-format helpers shared by the format modules: FP8 casts, small float grids, powers of 2.

Everything here works on float32 tensors and is exact in the sense of docs/numerics.md,
'Conventions': one IEEE binary32 rounding per operation, round-to-nearest-even, no FMA
contraction. Divisions by a constant are written as tensor-by-tensor divisions on purpose:
``scalar / tensor`` in torch is ``reciprocal(tensor) * scalar`` (two roundings), and CUDA turns
``tensor / python_scalar`` into a multiplication by the rounded reciprocal, so neither form is a
correctly rounded quotient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "EPS",
    "FLT_MAX",
    "TABLE_FORMATS",
    "TableFormat",
    "cast_e4m3",
    "cast_e4m3_",
    "cast_e5m2",
    "const",
    "f32_div",
    "pow2",
    "round_mantissa_",
    "round_to_table",
    "to_f32_copy",
]

#: amax values ``<= EPS`` (2^-24) count as "zero amax" for INT and FP8 (docs/numerics.md,
#: 'Conventions').
EPS = 2.0**-24
#: Largest finite binary32 value; MX/NVFP4 CUDA kernels clamp |x| to it before the block max.
FLT_MAX = torch.finfo(torch.float32).max

E4M3_MAX = 448.0
E5M2_MAX = 57344.0


def const(value: float, like: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A 0-d tensor on ``like``'s device, so that arithmetic with it is a true tensor op."""
    return torch.tensor(value, dtype=dtype, device=like.device)


def f32_div(numerator: float, denominator: torch.Tensor) -> torch.Tensor:
    """``f32(numerator / denominator)`` with a single rounding (not ``reciprocal * numerator``)."""
    return torch.div(const(numerator, denominator, denominator.dtype), denominator)


def to_f32_copy(x: torch.Tensor) -> torch.Tensor:
    """A float32 copy of ``x`` that the caller may modify in place (exact for fp16/bf16/fp32)."""
    if x.dtype == torch.float32:
        return x.clone(memory_format=torch.contiguous_format)
    return x.to(torch.float32, memory_format=torch.contiguous_format)


def round_mantissa_(v: torch.Tensor, man_bits: int, emin: int) -> torch.Tensor:
    """Round float32 ``v`` in place to ``man_bits`` mantissa bits, RNE, with gradual underflow
    below ``2^emin`` — i.e. onto the grid of a small float format, without saturation.

    Each value's quantum ``2^(max(e, emin) - man_bits)`` comes from its exponent bits, and
    ``round_even(v / quantum) * quantum`` is exact (power-of-two scaling). Signs (incl. -0) and
    NaN pass through. This equals torch's own float8 casts (checked by the tests) at a fraction of
    their cost on CPU.
    """
    exp = torch.bitwise_and(v.view(torch.int32), 0x7F800000)
    exp.clamp_(min=(emin + 127) << 23).sub_(man_bits << 23)
    quantum = exp.view(torch.float32)
    return v.div_(quantum).round_().mul_(quantum)


def cast_e4m3_(v: torch.Tensor) -> torch.Tensor:
    """In-place RNE cast of float32 ``v`` to OCP E4M3FN values, saturating at ±448, NaN kept."""
    return round_mantissa_(v.clamp_(-E4M3_MAX, E4M3_MAX), 3, -6)


def cast_e4m3(v: torch.Tensor) -> torch.Tensor:
    """RNE cast of float32 values to OCP E4M3FN and back, saturating at ±448, NaN kept.

    The saturation is explicit (CUDA's ``__NV_SATFINITE``) rather than left to a cast whose
    out-of-range behaviour differs between torch code paths.
    """
    return cast_e4m3_(v.to(torch.float32, copy=True))


def cast_e5m2(v: torch.Tensor) -> torch.Tensor:
    """RNE cast to E5M2 and back with SATFINITE semantics (torch's own cast overflows to inf)."""
    return round_mantissa_(v.to(torch.float32, copy=True).clamp_(-E5M2_MAX, E5M2_MAX), 2, -14)


def pow2(k: torch.Tensor) -> torch.Tensor:
    """Exact float32 ``2**k`` for integer ``k`` in [-149, 127], built from the bit pattern.

    E8M0 scales (docs/numerics.md, 'E8M0 scale') can be the subnormal 2^-127, which some
    ``exp2``/``ldexp`` paths flush or round; assembling the bits avoids depending on that.
    """
    k = k.to(torch.int32)
    normal = torch.bitwise_left_shift(k + 127, 23)
    sub = torch.bitwise_left_shift(torch.ones_like(k), (k + 149).clamp(0, 22))
    bits = torch.where(k >= -126, normal, sub)
    return bits.view(torch.float32)


@dataclass(frozen=True)
class TableFormat:
    """A small float element format: ``man_bits`` mantissa bits, smallest normal exponent
    ``emin``, largest value ``max`` (no inf/NaN codes); docs/numerics.md,
    'E2M1 rounding' and 'Element conversion'.

    Fake quantization rounds a magnitude to the nearest value, exact ties to the even code,
    saturating at ``max``; inf and NaN map to ``max``, as the CUDA table routine and Triton's
    ``fp4_round_magnitude`` both do. ``values`` lists the non-negative grid (for tests/docs).
    """

    name: str
    man_bits: int
    emin: int
    max: float

    @property
    def values(self) -> tuple[float, ...]:
        vals = {0.0}
        top = math.floor(math.log2(self.max))
        for e in range(self.emin, top + 1):
            for m in range(2**self.man_bits):
                vals.add((1 + m / 2**self.man_bits) * 2.0**e)
                vals.add(m / 2**self.man_bits * 2.0**self.emin)
        return tuple(sorted(v for v in vals if v <= self.max))


#: E2M1 (FP4), E3M2 and E2M3 (FP6): the OCP MX element formats.
TABLE_FORMATS = {
    "E2M1": TableFormat("E2M1", man_bits=1, emin=0, max=6.0),
    "E3M2": TableFormat("E3M2", man_bits=2, emin=-2, max=28.0),
    "E2M3": TableFormat("E2M3", man_bits=3, emin=0, max=7.5),
}


def round_to_table(m: torch.Tensor, fmt: TableFormat | str) -> torch.Tensor:
    """Round non-negative float32 magnitudes ``m`` onto a small-float grid (ties to even code).

    Table lookup with even-index ties (the kernels' formulation) is round-half-to-even on the
    format's mantissa, so it is computed arithmetically: ``fmin`` saturates (and maps NaN and inf
    to the maximum), the quantum ``2^(max(e, emin) - man_bits)`` of each value's binade is read
    off its float32 exponent bits, and ``round_even(m / quantum) * quantum`` is exact. This is a
    few vectorised passes instead of a binary search per element.
    """
    f = TABLE_FORMATS[fmt] if isinstance(fmt, str) else fmt
    m = torch.fmin(m, torch.tensor(f.max, dtype=torch.float32, device=m.device))
    return round_mantissa_(m, f.man_bits, f.emin)
