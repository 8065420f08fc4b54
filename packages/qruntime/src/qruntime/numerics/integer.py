"""INT-N fake quantization (docs/numerics.md, 'INT-N'): signed/unsigned, narrow range, any amax.

Per tensor, per channel (``axis`` incl. tuples), per token and static 1-D/2-D blocks all reduce
to this one element formula with a broadcast amax; the granularity is decided by the amax shape
(and the block view of :mod:`.blocks`). Semantics are those of the CPU torch path
(``tensor_quant._tensor_quant``), which is the path the reference vectors come from; the CUDA
extension differs only for zero amax (docs/numerics.md, 'Choices', item 4).
"""

from __future__ import annotations

import torch
from qconfig.spec import QuantizerSpec

from .chunking import as_f32, map_chunks
from .dispatch import register_format
from .floats import EPS, const
from .guards import require

__all__ = ["MAX_INT_BITS", "fake_quant_int", "int_cast", "int_range"]

#: The widest integer format computed. Wider ones are refused before ``2 ** (num_bits - 1)`` is
#: formed: for ``num_bits = 10**30`` that power never finishes (Model Optimizer hangs in its first
#: forward), and nothing past float32's 24-bit mantissa changes a result anyway.
MAX_INT_BITS = 64


def int_range(num_bits: int, unsigned: bool = False, narrow_range: bool = False) -> tuple[int, int]:
    """``(qmin, qmax)``: INT8 [-128, 127], narrow [-127, 127], UINT8 [0, 255].

    ``num_bits`` outside ``1..MAX_INT_BITS`` is a ``ValueError`` (a hang or a fraction
    otherwise). One signed bit gives ``qmax = 0``, whose scale is 0 and whose outputs are NaN as
    in Model Optimizer; ``apply_plan`` refuses such a quantizer up front (:func:`check_int`).
    """
    if not 1 <= num_bits <= MAX_INT_BITS:
        raise ValueError(f"num_bits must be an integer from 1 to {MAX_INT_BITS}, got {num_bits}")
    qmax = 2 ** (num_bits - 1 + int(unsigned)) - 1
    if unsigned:
        return 0, qmax
    return (-qmax if narrow_range else -qmax - 1), qmax


def _scaled_f32(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``f32(x) * scale`` into a fresh float32 tensor, with as few passes over memory as possible."""
    out_shape = torch.broadcast_shapes(x.shape, scale.shape)
    if x.dtype != torch.float32 and tuple(out_shape) == tuple(x.shape):
        y = x.to(torch.float32, memory_format=torch.contiguous_format)
        return y.mul_(scale)
    return torch.mul(x.to(torch.float32), scale)


def fake_quant_int(
    x: torch.Tensor,
    amax: torch.Tensor,
    num_bits: int = 8,
    *,
    unsigned: bool = False,
    narrow_range: bool = False,
) -> torch.Tensor:
    """Quantize-dequantize ``x`` to ``num_bits`` integers with scale ``qmax / amax``.

    ``y = clamp(round_even(x * s), qmin, qmax) / s`` in float32 with ``s = qmax / amax`` — a
    division by the scale, not a multiplication by ``amax / qmax``. Where
    ``amax <= 2^-24`` the scale is 0 for rounding and 1 for the division, so outputs are signed
    zeros (NaN for inf/NaN inputs). Raises like Model Optimizer's CPU path: ``ValueError``
    for a negative amax, ``TypeError`` for negative inputs to an unsigned quantizer.
    """
    if unsigned and x.numel():
        # ``~(min < 0)``, not ``min >= 0``: a NaN minimum passes, as it always did.
        not_negative = ~(x.min() < 0)
        require(not_negative, TypeError, "Negative values encountered in unsigned quantization.")
    a = amax.to(torch.float32)
    if a.numel():
        require(~(a.min() < 0), ValueError, "Negative values in amax")
    qmin, qmax = int_range(num_bits, unsigned, narrow_range)
    scale = torch.div(const(float(qmax), a), a)
    zero = a <= EPS
    # Traced: always mask (a mask of all False changes nothing; no data-dependent branch).
    if torch.compiler.is_compiling() or bool(zero.any()):
        round_scale = scale.masked_fill(zero, 0.0)
        div_scale = scale.masked_fill(zero, 1.0)
    else:
        round_scale = div_scale = scale

    def kernel(xc: torch.Tensor, buf: torch.Tensor, s_round: torch.Tensor, s_div: torch.Tensor):
        # Exact upcast first: a bf16 chunk times a 0-d fp32 scale would be computed in bf16.
        torch.mul(as_f32(xc, buf), s_round, out=buf)
        buf.round_().clamp_(qmin, qmax).div_(s_div)

    out = map_chunks(kernel, x, (round_scale, div_scale), x.dtype)
    if out is not None:
        return out
    # Broadcast patterns without a row/column view (e.g. 2-D block amax): whole-tensor ops.
    y = _scaled_f32(x, round_scale)
    y.round_().clamp_(qmin, qmax).div_(div_scale)
    return y.to(x.dtype)


def int_cast(
    v: torch.Tensor, num_bits: int, unsigned: bool = False, narrow_range: bool = True
) -> torch.Tensor:
    """LSQ integer cast without scaling: ``clamp(round_even(v), qmin, qmax)``.

    The forward of Model Optimizer's ``IntCastSTEFunction``; its gradient mask is
    ``qmin <= v <= qmax`` (see :func:`.ste.int_cast_ste`). docs/numerics.md, 'LSQ casts'.
    """
    qmin, qmax = int_range(num_bits, unsigned, narrow_range)
    return torch.clamp(v.round(), qmin, qmax)


def _matches(attrs: QuantizerSpec) -> bool:
    return attrs.family == "int"


def check_int(attrs: QuantizerSpec, ndim: int | None) -> None:
    """An integer format has at least one positive level: ``qmax >= 1`` (one signed bit has
    ``qmax = 0``: scale 0, every output NaN in Model Optimizer)."""
    bits = attrs.num_bits
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ValueError(f"an integer format needs an integer num_bits, got {bits!r}")
    if not 1 <= bits <= MAX_INT_BITS:
        raise ValueError(f"num_bits must be an integer from 1 to {MAX_INT_BITS}, got {bits}")
    if bits - 1 + int(attrs.unsigned) < 1:
        raise ValueError(
            f"num_bits={bits} signed has no positive level (qmax = 0): every output would be "
            "NaN; use num_bits >= 2, or unsigned"
        )


@register_format("int", matches=_matches, check=check_int)
def _int_format(
    x: torch.Tensor, amax: torch.Tensor | None, attrs: QuantizerSpec, **_: object
) -> torch.Tensor:
    assert amax is not None
    assert isinstance(attrs.num_bits, int)
    return fake_quant_int(
        x, amax, attrs.num_bits, unsigned=attrs.unsigned, narrow_range=attrs.narrow_range
    )
