"""Straight-through gradients of fake quantization.

docs/numerics.md, 'Straight-through gradients': ``pass_through_bwd=True`` (the default):
``dx = dy`` and nothing is saved. ``False``: ``dx = dy`` where ``|x - b| <= amax`` else 0, with
``amax`` broadcast in the working layout (per tensor, channel or block after the static block
reshape); NaN inputs get zero gradient. Formats that never use an amax (MX) always pass through.
amax and bias never receive gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .integer import int_cast, int_range
from .nvfp4 import fp4_cast

__all__ = ["fp4_cast_ste", "int_cast_ste", "straight_through"]


class _StraightThrough(torch.autograd.Function):
    """Returns the already computed ``y`` for ``x``; the gradient goes to ``x`` (masked or not).

    ``y`` is computed before, not inside (a format function passed in would be a closure over
    tensors, which ``torch.compile`` cannot lift into the traced forward).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        clip_amax: torch.Tensor | None,
        bias: torch.Tensor | None,
    ) -> torch.Tensor:
        if clip_amax is not None:
            centered = x if bias is None else x - bias
            ctx.save_for_backward(centered, clip_amax)
        ctx.clip = clip_amax is not None
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if not ctx.clip:
            return grad, None, None, None
        centered, amax = ctx.saved_tensors
        keep = centered.abs() <= amax
        return torch.where(keep, grad, grad.new_zeros(())), None, None, None


def straight_through(
    x: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    clip_amax: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``fn(x)`` in the forward pass, the straight-through estimator in the backward pass.

    ``clip_amax=None`` passes the gradient through unchanged (``pass_through_bwd=True`` or a
    format without amax); otherwise the gradient is zeroed where ``|x - bias| > clip_amax``.
    Without autograd recording this is just ``fn(x)``.
    """
    if not (torch.is_grad_enabled() and x.requires_grad):
        return fn(x)
    with torch.no_grad():
        y = fn(x)
    return _StraightThrough.apply(x, y, clip_amax, bias)


class _MaskedCast(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        fn: Callable[[torch.Tensor], torch.Tensor],
        lo: float,
        hi: float,
    ) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.bounds = (lo, hi)
        return fn(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        lo, hi = ctx.bounds
        keep = (x >= lo) & (x <= hi)
        return torch.where(keep, grad, torch.zeros_like(grad)), None, None, None


def fp4_cast_ste(x: torch.Tensor) -> torch.Tensor:
    """LSQ FP4 cast (docs/numerics.md, 'LSQ casts') with the STE mask ``|x| <= 6``."""
    return _MaskedCast.apply(x, fp4_cast, -6.0, 6.0)


def int_cast_ste(
    x: torch.Tensor, num_bits: int, unsigned: bool = False, narrow_range: bool = True
) -> torch.Tensor:
    """LSQ integer cast (docs/numerics.md, 'LSQ casts'); STE mask ``qmin <= x <= qmax``."""
    qmin, qmax = int_range(num_bits, unsigned, narrow_range)
    return _MaskedCast.apply(
        x, lambda v: int_cast(v, num_bits, unsigned, narrow_range), float(qmin), float(qmax)
    )
