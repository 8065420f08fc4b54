"""Format -> Triton kernel registry, keyed by the same names as :mod:`qruntime.numerics.dispatch`.

Why a separate registry: the reference registry decides *which format* an attribute set is
(``resolve_format``); this one only answers "is there a kernel for that format". Keeping the
names identical means the kernel path never re-derives the format and can never pick a kernel
for a different format than the reference would run.

Adding a format kernel = one module in :mod:`qruntime.kernels.formats` whose functions carry
``@register_kernel("<numerics format name>")``. Modules there import Triton, so they are
discovered and imported on the first lookup only (``import qruntime`` never imports Triton).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

__all__ = [
    "KernelEntry",
    "KernelFn",
    "KernelUnsupported",
    "kernel_for",
    "kernels",
    "register_kernel",
]


class KernelUnsupported(Exception):
    """Raised by a kernel for an input it does not cover (dtype, shape, parameters).

    The dispatcher then runs the torch reference, which gives the reference bits by definition:
    a kernel must raise this rather than compute something that is merely close.
    """


class KernelFn(Protocol):
    """``fn(x, amax, attrs, *, global_amax, need_amax) -> (y, amax_used)`` in the working layout.

    ``amax`` None means dynamic: the kernel computes it (in the kernel where one pass
    suffices). ``amax_used`` is the amax the straight-through estimator clips with (None for
    formats without one); it must be returned when ``need_amax`` is True.
    """

    def __call__(
        self,
        x: torch.Tensor,
        amax: torch.Tensor | None,
        attrs: Any,
        *,
        global_amax: torch.Tensor | None = None,
        need_amax: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...


@dataclass(frozen=True)
class KernelEntry:
    """A registered kernel: ``name`` is the numerics format name, ``module`` where it lives."""

    name: str
    fn: KernelFn
    module: str


_REGISTRY: dict[str, KernelEntry] = {}
_LOADED = False


def register_kernel(name: str) -> Callable[[KernelFn], KernelFn]:
    """Decorator registering ``fn`` as the Triton implementation of numerics format ``name``."""

    def deco(fn: KernelFn) -> KernelFn:
        old = _REGISTRY.get(name)
        if old is not None and old.fn is not fn and old.module != fn.__module__:
            raise ValueError(f"a kernel for format {name!r} is already registered ({old.module})")
        _REGISTRY[name] = KernelEntry(name, fn, fn.__module__)
        return fn

    return deco


def _load_builtin() -> None:
    """Import every module of :mod:`qruntime.kernels.formats` (they register themselves)."""
    global _LOADED
    if _LOADED:
        return
    from . import formats

    for info in pkgutil.iter_modules(formats.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{formats.__name__}.{info.name}")
    _LOADED = True


def kernel_for(name: str) -> KernelEntry | None:
    """The kernel registered for numerics format ``name``, or None (imports Triton)."""
    _load_builtin()
    return _REGISTRY.get(name)


def kernels() -> dict[str, KernelEntry]:
    """All registered kernels by format name (imports Triton)."""
    _load_builtin()
    return dict(_REGISTRY)
