"""Element-format helpers shared by the format modules: FP8 casts, small float grids, powers of 2.

Everything here works on float32 tensors and is exact in the sense of numerics.md §1: one IEEE
binary32 rounding per operation, round-to-nearest-even, no FMA contraction. Divisions by a
constant are written as tensor-by-tensor divisions on purpose: ``scalar / tensor`` in torch is
``reciprocal(tensor) * scalar`` (two roundings), and CUDA turns ``tensor / python_scalar`` into a
multiplication by the rounded reciprocal, so neither form is a correctly rounded quotient.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch

__all__ = [
    "EPS",
    "FLT_MAX",
    "TABLE_FORMATS",
    "TableFormat",
    "cast_e4m3",
    "cast_e5m2",
    "const",
    "f32_div",
    "pow2",
    "round_to_table",
    "to_f32_copy",
]

#: amax values ``<= EPS`` (2^-24) count as "zero amax" for INT and FP8 (numerics.md §1).
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


def cast_e4m3(v: torch.Tensor) -> torch.Tensor:
    """RNE cast of float32 values to OCP E4M3FN and back, saturating at ±448, NaN kept (§1).

    The clamp makes the saturation explicit (CUDA's ``__NV_SATFINITE``) instead of relying on the
    behaviour of torch's cast for values above the largest finite E4M3 value.
    """
    return v.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).to(torch.float32)


def cast_e5m2(v: torch.Tensor) -> torch.Tensor:
    """RNE cast to E5M2 and back with SATFINITE semantics (torch's own cast overflows to inf)."""
    return v.clamp(-E5M2_MAX, E5M2_MAX).to(torch.float8_e5m2).to(torch.float32)


def pow2(k: torch.Tensor) -> torch.Tensor:
    """Exact float32 ``2**k`` for integer ``k`` in [-149, 127], built from the bit pattern.

    E8M0 scales (numerics.md §7.2) can be the subnormal 2^-127, which some ``exp2``/``ldexp``
    paths flush or round; assembling the bits avoids depending on that.
    """
    k = k.to(torch.int32)
    normal = torch.bitwise_left_shift(k + 127, 23)
    sub = torch.bitwise_left_shift(torch.ones_like(k), (k + 149).clamp(0, 22))
    bits = torch.where(k >= -126, normal, sub)
    return bits.view(torch.float32)


@dataclass(frozen=True)
class TableFormat:
    """A small float element format given by its non-negative value table (§6.1, §7.3).

    Fake quantization rounds a magnitude to the nearest table value, exact ties to the even
    table index (= even code), saturating at the largest value; inf and NaN map to the largest
    value, as the CUDA table routine and Triton's ``fp4_round_magnitude`` both do.
    """

    name: str
    values: tuple[float, ...]

    @property
    def max(self) -> float:
        return self.values[-1]


def _minifloat_values(exp_bits: int, man_bits: int, max_value: float) -> tuple[float, ...]:
    bias = 2 ** (exp_bits - 1) - 1
    vals = {0.0}
    for e in range(2**exp_bits):
        for m in range(2**man_bits):
            if e == 0:
                v = (m / 2**man_bits) * 2.0 ** (1 - bias)
            else:
                v = (1 + m / 2**man_bits) * 2.0 ** (e - bias)
            if v <= max_value:
                vals.add(v)
    return tuple(sorted(vals))


#: E2M1 (FP4), E3M2 and E2M3 (FP6): the OCP MX element tables (numerics.md §6.1, §7.3).
TABLE_FORMATS = {
    "E2M1": TableFormat("E2M1", _minifloat_values(2, 1, 6.0)),
    "E3M2": TableFormat("E3M2", _minifloat_values(3, 2, 28.0)),
    "E2M3": TableFormat("E2M3", _minifloat_values(2, 3, 7.5)),
}


@cache
def _table_tensors(name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    values = TABLE_FORMATS[name].values
    mids = []
    for i in range(len(values) - 1):
        mid = torch.tensor((values[i] + values[i + 1]) / 2, dtype=torch.float32)
        if i % 2 == 1:
            # An exact tie at an odd-index midpoint rounds up to the even index i+1: move the
            # boundary one ulp down so that "boundary < m" already holds at the tie.
            mid = torch.nextafter(mid, torch.tensor(-1.0))
        mids.append(mid)
    bounds = torch.stack(mids).to(device)
    return bounds, torch.tensor(values, dtype=torch.float32, device=device)


def round_to_table(m: torch.Tensor, fmt: TableFormat | str) -> torch.Tensor:
    """Round non-negative float32 magnitudes ``m`` onto a small-float grid (ties to even code).

    ``bucketize`` against the midpoints (odd ones nudged one ulp down) counts the boundaries
    strictly below ``m``, which is exactly the table index of round-half-to-even; NaN is sorted
    past every boundary and so lands on the maximum like inf does.
    """
    name = fmt if isinstance(fmt, str) else fmt.name
    bounds, values = _table_tensors(name, m.device)
    idx = torch.bucketize(m, bounds, out_int32=True)
    return values[idx]
