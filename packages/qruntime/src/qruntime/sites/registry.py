"""The module-type registry, and the site provider that reads it (the first built-in provider).

Reproduces Model Optimizer's ``QuantModuleRegistry``: a class ``C`` is converted by the *first*
registered class ``R`` (registration order) with ``issubclass(C, R)`` and ``C.forward is
R.forward``. A subclass that inherits ``forward`` is therefore converted (under a class generated
for it, ``Quant<C>``, so ``parent_class`` keys of ``R`` do not match it, docs/manifest-and-plan.md);
a subclass that overrides ``forward`` gets nothing. The plain-torch types
(:data:`qruntime.modules.builtin.BUILTIN_TYPES`) are registered when this module is imported,
before anything else; users add their own types with :func:`register` (``qruntime.register``).

A registration is the simplest way to quantize a new module type: the quant mixin's
``quantizer_slots`` and ``forward`` say what is quantized, its ``reported_weight`` what the
manifest lists as weight (e.g. a Linear-like module that stores its weight transposed). Anything
that is not decided by the module's class alone (a structural test, a condition on the root
model, keys that depend on the model) is a site provider of its own (:mod:`qruntime.sites`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from qruntime.modules.base import QuantModule
from qruntime.modules.builtin import BUILTIN_TYPES
from qruntime.modules.convert import forget_quant_classes, original_class, quant_class
from qruntime.sites.base import NamedModules, Site

__all__ = [
    "ModuleTypeProvider",
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


def register(
    module_cls: type[nn.Module], quant_cls: type[QuantModule], *, key: str | None = None
) -> None:
    """Quantize modules of ``module_cls`` with the quant mixin ``quant_cls``.

    ``quant_cls`` subclasses :class:`qruntime.QuantModule`: it lists the module's quantizer
    slots (``quantizer_slots``) and, unless the built-in wrappers fit, overrides ``forward`` to
    call them. ``key`` defaults to ``module_cls.__name__`` (no ``nn.`` prefix), as
    ``mtq.register`` does. Re-registering a class replaces its entry in place.
    """
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
    forget_quant_classes(module_cls)


def unregister(module_cls: type[nn.Module]) -> None:
    """Forget a registration (modules already converted keep their quantizers)."""
    if module_cls not in _REGISTRY:
        raise KeyError(f"{module_cls!r} is not registered")
    del _REGISTRY[module_cls]


def registrations() -> list[Registration]:
    """All registrations in registration order."""
    return list(_REGISTRY.values())


def registered_keys() -> list[str]:
    """Every key ``parent_class`` may name because of a registration, sorted."""
    return sorted(r.key for r in _REGISTRY.values())


def lookup(cls: type[nn.Module]) -> Registration | None:
    """The registration that converts modules of class ``cls`` (first registered base with the
    same ``forward``)."""
    for registered, registration in _REGISTRY.items():
        if issubclass(cls, registered) and cls.forward is registered.forward:
            return registration
    return None


def generated_class(cls: type[nn.Module], registration: Registration) -> type[nn.Module]:
    """``Quant<cls>``: bases (quant mixin, cls), created once per class and mixin."""
    return quant_class(cls, registration.quant_cls)


class ModuleTypeProvider:
    """Sites of every module whose original class the registry converts (and that gets at least
    one quantizer); keys: every registered key, whether or not the model uses it."""

    name = "module-types"

    def sites(self, model: nn.Module, modules: NamedModules) -> list[Site]:
        regs = registrations()
        out = []
        for name, module in modules:
            cls = original_class(module)
            registration = lookup(cls)
            if registration is None:
                continue
            slots = registration.quant_cls.quantizer_slots(module)
            if not slots:
                continue
            shape, dtype = registration.quant_cls.reported_weight(module)
            out.append(
                Site(
                    name=name,
                    module=module,
                    class_name=cls.__name__,
                    registry_key=registration.key,
                    quant_cls=registration.quant_cls,
                    slots=tuple(slots),
                    # a converted subclass gets a class of its own, which parent_class keys
                    # never match: only a module whose class is registered itself is matched
                    parent_class_keys=tuple(r.key for r in regs if r.original is cls),
                    subclass_of=tuple(r.key for r in regs if issubclass(cls, r.original)),
                    weight_shape=shape,
                    weight_dtype=dtype,
                )
            )
        return out

    def registry_keys(self, model: nn.Module, modules: NamedModules) -> list[str]:
        return registered_keys()


for _cls, _mixin in BUILTIN_TYPES:
    register(_cls, _mixin, key=f"nn.{_cls.__name__}")
