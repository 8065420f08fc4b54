"""FP8 E4M3 fake quantization (docs/numerics.md, 'FP8 E4M3'): per tensor, channel, token, blocks.

All granularities share one element formula with a broadcast amax. E5M2 exists in Model Optimizer
0.47.0 only as an MX element format (:mod:`.mx`); a per-tensor/per-channel E5M2 config is rejected
by its config validator, and other (E, M) tuples raise ``NotImplementedError`` in
``ScaledE4M3Function``, which this module reproduces.
"""

from __future__ import annotations

import torch
from qconfig.spec import QuantizerSpec

from .chunking import as_f32, map_chunks
from .dispatch import register_format
from .floats import E4M3_MAX, EPS, cast_e4m3_

__all__ = ["e4m3_scales", "fake_quant_e4m3"]


def e4m3_scales(amax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, inv_scale)`` exactly as ``tensor_quant._fp8_eager`` computes them.

    A zero amax (``<= 2^-24``) is replaced by 1 — FP8 never zeroes its output. Model
    Optimizer writes ``448.0 / amax`` and ``1 / scale``; in torch a Python number divided by a
    tensor is ``reciprocal(tensor) * number``, so the scale is ``f32(f32(1/amax) * 448)`` and the
    inverse ``f32(1/scale)``. Reproducing that (instead of a single-rounding ``448/amax``) is what
    keeps the results bit-identical for every amax, not only for those in the test vectors.
    """
    a = amax.to(torch.float32)
    safe = torch.where(a <= EPS, torch.ones_like(a), a)
    scale = torch.reciprocal(safe).mul_(E4M3_MAX)
    return scale, torch.reciprocal(scale)


def fake_quant_e4m3(x: torch.Tensor, amax: torch.Tensor | None) -> torch.Tensor:
    """``y = e4m3(clamp(x * s, ±448)) * inv_s`` in float32, cast back to ``x.dtype``.

    With ``amax=None`` (only reachable through the functional) the input is cast to E4M3 and
    back without scaling. ``amax = inf`` gives ``s = 0``, ``inv_s = inf``: all NaN, as in Model
    Optimizer.
    """
    if amax is None:
        return x.to(torch.float32).to(torch.float8_e4m3fn).to(torch.float32).to(x.dtype)
    scale, inv = e4m3_scales(amax)

    def kernel(xc: torch.Tensor, buf: torch.Tensor, s: torch.Tensor, s_inv: torch.Tensor):
        # Exact upcast first: a bf16 chunk times a 0-d fp32 scale would be computed in bf16.
        torch.mul(as_f32(xc, buf), s, out=buf)
        cast_e4m3_(buf).mul_(s_inv)

    out = map_chunks(kernel, x, (scale, inv), x.dtype)
    if out is not None:
        return out
    # Broadcast patterns without a row/column view (e.g. 2-D block amax): whole-tensor ops.
    y = torch.mul(x.to(torch.float32), scale)
    return cast_e4m3_(y).mul_(inv).to(x.dtype)


def _matches(attrs: QuantizerSpec) -> bool:
    # E2M1 with E4M3 block scales in a static layout is static NVFP4, not this family.
    return attrs.family == "fp"


def _check_fp8(attrs: QuantizerSpec, ndim: int | None) -> None:
    """Only E4M3 has a scaled FP kernel outside dynamic blocks (what the format raises)."""
    if attrs.num_bits != (4, 3):
        raise ValueError(
            f"num_bits={attrs.num_bits!r} has no kernel outside dynamic blocks: the only scaled "
            "floating-point format is E4M3 (num_bits (4, 3)); other (E, M) pairs need dynamic "
            "block_sizes with scale_bits (MX, NVFP4). Model Optimizer raises "
            "NotImplementedError at the first forward"
        )


@register_format("fp8_e4m3", matches=_matches, check=_check_fp8)
def _fp8_format(
    x: torch.Tensor, amax: torch.Tensor | None, attrs: QuantizerSpec, **_: object
) -> torch.Tensor:
    if attrs.num_bits != (4, 3):
        # What ScaledE4M3Function raises for any other (E, M) outside dynamic blocks.
        raise NotImplementedError(
            f"Only support E=4 & M=3 for now (num_bits={attrs.num_bits!r} needs dynamic "
            "block_sizes with scale_bits, e.g. MX)."
        )
    return fake_quant_e4m3(x, amax)
