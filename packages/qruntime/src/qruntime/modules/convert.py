"""Convert one module in place: swap its class to ``Quant<C>`` and create its quantizers.

The module object stays the same (hooks, parameters, buffers, its place in the parent): its
``__class__`` becomes a class generated once per (original class, quant mixin) pair, with the
mixin first in the MRO so that the mixin's ``forward`` runs around the original one, and the
mixin's ``_setup`` adds one quantizer per slot. Undoing it (apply.py's rollback) is restoring
``__class__`` and ``__dict__``. Every site provider (:mod:`qruntime.sites`) converts through
here, so :func:`is_converted` and :func:`original_class` hold for every converted module,
whichever provider found it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from torch import nn

if TYPE_CHECKING:
    from collections.abc import Sequence

    from qruntime.modules.base import QuantizerSlot, QuantModule

__all__ = [
    "Conversion",
    "convert_module",
    "forget_quant_classes",
    "is_converted",
    "original_class",
    "quant_class",
]

_GENERATED: dict[tuple[type[nn.Module], type], type[nn.Module]] = {}


class Conversion(Protocol):
    """What :func:`convert_module` needs (a :class:`qruntime.sites.Site` is one): the quant
    mixin and the quantizer slots to create."""

    @property
    def quant_cls(self) -> type[QuantModule]: ...

    @property
    def slots(self) -> Sequence[QuantizerSlot]: ...


def quant_class(cls: type[nn.Module], quant_cls: type[QuantModule]) -> type[nn.Module]:
    """``Quant<cls>`` with bases (``quant_cls``, ``cls``), created once per pair so that modules
    of one class converted the same way share one class."""
    cache_key = (cls, quant_cls)
    generated = _GENERATED.get(cache_key)
    if generated is None:
        generated = type(
            f"Quant{cls.__name__}",
            (quant_cls, cls),
            {"_qruntime_original": cls, "__module__": cls.__module__},
        )
        _GENERATED[cache_key] = generated
    return generated


def forget_quant_classes(cls: type[nn.Module]) -> None:
    """Drop the cached ``Quant<cls>`` classes (a re-registration gets fresh ones)."""
    for cached in [k for k in _GENERATED if k[0] is cls]:
        del _GENERATED[cached]


def original_class(module: nn.Module) -> type[nn.Module]:
    """The class a (possibly converted) module had before conversion."""
    return getattr(type(module), "_qruntime_original", type(module))


def is_converted(module: nn.Module) -> bool:
    """Whether ``module`` already runs a quant mixin's forward."""
    return "_qruntime_original" in type(module).__dict__


def convert_module(module: nn.Module, conversion: Conversion) -> nn.Module:
    """Swap ``module``'s class to ``Quant<C>`` (mixin ``conversion.quant_cls``) and create the
    quantizers of ``conversion.slots``; anything else a conversion must do belongs in the
    mixin's ``_setup``."""
    if is_converted(module):
        raise ValueError(f"{type(module).__name__} is already converted")
    module.__class__ = quant_class(type(module), conversion.quant_cls)
    module._setup(conversion.slots)  # type: ignore[operator]
    return module
