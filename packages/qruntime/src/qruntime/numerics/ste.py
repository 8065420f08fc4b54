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
    """``fn(x)`` forward (or a clone of ``y`` computed before), the STE gradient to ``x``."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        fn: Callable[[torch.Tensor], torch.Tensor] | torch.Tensor,
        clip_amax: torch.Tensor | None,
        bias: torch.Tensor | None,
    ) -> torch.Tensor:
        if clip_amax is not None:
            centered = x if bias is None else x - bias
            ctx.save_for_backward(centered, clip_amax)
        ctx.clip = clip_amax is not None
        # Autograd forbids in-place ops (``h += r``) on an output that is a view, of an input or
        # of a tensor made here (format functions often end in ``.view(shape)``): hand out a
        # clone of a given tensor, and a detached alias (same storage, no copy) of a view.
        if isinstance(fn, torch.Tensor):
            return fn.clone()
        y = fn(x)
        return y.detach() if y._is_view() else y

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

    Under ``torch.compile`` ``fn(x)`` is computed before the autograd function and handed in as
    a tensor: ``fn`` is a closure over tensors (amax, bias), which the compiler cannot lift into
    the traced forward of an autograd function. The clone that the function then returns costs
    nothing in a compiled graph; eager keeps computing inside, without it.
    """
    if not (torch.is_grad_enabled() and x.requires_grad):
        return fn(x)
    if torch.compiler.is_compiling():
        with torch.no_grad():
            y = fn(x)
        return _StraightThrough.apply(x, y, clip_amax, bias)
    return _StraightThrough.apply(x, fn, clip_amax, bias)


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
