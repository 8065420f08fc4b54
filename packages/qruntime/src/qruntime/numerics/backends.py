"""Where accelerated implementations of the format functions plug into the numerics.

Why a seam: the torch reference must stay importable and testable without Triton, and the
pipeline (:mod:`.pipeline`) owns every step common to all implementations — amax resolution, the
static block reshape, the affine bias, the straight-through gradient. An accelerator only
replaces the format function on the working layout. It registers a *selector* here; the pipeline
asks it, per call, for an implementation of a registered format for this tensor and backend
name, and runs the torch reference when it answers None. Arrows point down: accelerators (e.g.
:mod:`qruntime.kernels`) import this module, never the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from qconfig.spec import QuantizerSpec

from .dispatch import FormatEntry

__all__ = ["AcceleratedFn", "Selector", "register_accelerator", "select_accelerated"]


class AcceleratedFn(Protocol):
    """``fn(x, amax, spec, *, global_amax, need_amax) -> (y, amax_used)`` or None.

    ``x`` is the working layout with any affine bias already subtracted and without autograd.
    ``amax`` None means dynamic: the implementation computes it (and returns it as
    ``amax_used`` when ``need_amax``, for the clipped straight-through gradient). None as the
    result means "not for this input": the reference runs instead, giving the reference bits.
    """

    def __call__(
        self,
        x: torch.Tensor,
        amax: torch.Tensor | None,
        spec: QuantizerSpec,
        *,
        global_amax: torch.Tensor | None = None,
        need_amax: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None: ...


#: ``selector(x, entry, backend) -> AcceleratedFn | None``.
Selector = Callable[[torch.Tensor, FormatEntry, str], "AcceleratedFn | None"]

_SELECTORS: dict[str, Selector] = {}


def register_accelerator(name: str, selector: Selector) -> None:
    """Let ``selector`` offer implementations for backends other than ``"torch"``."""
    _SELECTORS[name] = selector


def select_accelerated(x: torch.Tensor, entry: FormatEntry, backend: str) -> AcceleratedFn | None:
    """The first registered accelerator's implementation for this call, or None."""
    for selector in _SELECTORS.values():
        fn = selector(x, entry, backend)
        if fn is not None:
            return fn
    return None
