"""Module types → quant wrappers: which modules get quantizers, and under which key.

Reproduces Model Optimizer's ``QuantModuleRegistry`` (config-semantics §7.1): a class ``C`` is
converted by the *first* registered class ``R`` (registration order) with ``issubclass(C, R)``
and ``C.forward is R.forward``. A subclass that inherits ``forward`` is therefore converted (under
a class generated for it, ``Quant<C>``, so ``parent_class`` keys of ``R`` do not match it); a
subclass that overrides ``forward`` gets nothing. Built-in registrations live in
:mod:`qruntime.modules.builtin`; users add their own types with :func:`register`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from qruntime.modules.base import QuantModule

__all__ = [
    "Registration",
    "generated_class",
    "lookup",
    "original_class",
    "register",
    "registered_keys",
    "registrations",
    "unregister",
]


@dataclass(frozen=True)
class Registration:
    """``original`` is converted with the mixin ``quant_cls``; ``key`` is what ``parent_class``
    names (``"nn.Linear"`` for built-ins, the class name for user registrations)."""

    original: type[nn.Module]
    quant_cls: type[QuantModule]
    key: str


_REGISTRY: dict[type[nn.Module], Registration] = {}
_GENERATED: dict[tuple[type[nn.Module], type], type[nn.Module]] = {}


def register(
    module_cls: type[nn.Module], quant_cls: type[QuantModule], *, key: str | None = None
) -> None:
    """Quantize modules of ``module_cls`` with the quant mixin ``quant_cls``.

    ``quant_cls`` subclasses :class:`qruntime.QuantModule`: it lists the module's quantizer
    slots (``quantizer_slots``) and, unless the built-in wrappers fit, overrides ``forward`` to
    call them. ``key`` defaults to ``module_cls.__name__`` (no ``nn.`` prefix), as
    ``mtq.register`` does. Re-registering a class replaces its entry in place.
    """
    from qruntime.modules.base import QuantModule

    if not (isinstance(module_cls, type) and issubclass(module_cls, nn.Module)):
        raise TypeError(f"{module_cls!r} is not an nn.Module class")
    if not (isinstance(quant_cls, type) and issubclass(quant_cls, QuantModule)):
        raise TypeError(f"{quant_cls!r} must subclass qruntime.QuantModule")
    if issubclass(module_cls, QuantModule):
        raise TypeError(f"{module_cls.__name__} is already a quant class")
    key = key if key is not None else module_cls.__name__
    for other in _REGISTRY.values():
        if other.key == key and other.original is not module_cls:
            raise ValueError(f"registry key {key!r} is already used by {other.original!r}")
    _REGISTRY[module_cls] = Registration(module_cls, quant_cls, key)
    for cached in [k for k in _GENERATED if k[0] is module_cls]:
        del _GENERATED[cached]


def unregister(module_cls: type[nn.Module]) -> None:
    """Forget a registration (modules already converted keep their quantizers)."""
    if module_cls not in _REGISTRY:
        raise KeyError(f"{module_cls!r} is not registered")
    del _REGISTRY[module_cls]


def registrations() -> list[Registration]:
    """All registrations in registration order."""
    return list(_REGISTRY.values())


def registered_keys() -> list[str]:
    """Every key ``parent_class`` may name, sorted (a manifest's ``registry_keys``)."""
    return sorted(r.key for r in _REGISTRY.values())


def lookup(cls: type[nn.Module]) -> Registration | None:
    """The registration that converts modules of class ``cls`` (the §7.1 subclass rule)."""
    for registered, registration in _REGISTRY.items():
        if issubclass(cls, registered) and cls.forward is registered.forward:
            return registration
    return None


def generated_class(cls: type[nn.Module], registration: Registration) -> type[nn.Module]:
    """``Quant<cls>``: bases (quant mixin, cls), created once per class and mixin."""
    cache_key = (cls, registration.quant_cls)
    generated = _GENERATED.get(cache_key)
    if generated is None:
        generated = type(
            f"Quant{cls.__name__}",
            (registration.quant_cls, cls),
            {"_qruntime_original": cls, "__module__": cls.__module__},
        )
        _GENERATED[cache_key] = generated
    return generated


def original_class(module: nn.Module) -> type[nn.Module]:
    """The class a (possibly converted) module had before conversion."""
    return getattr(type(module), "_qruntime_original", type(module))
