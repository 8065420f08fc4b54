"""What a site provider returns: :class:`Site`, and the :class:`SiteProvider` protocol.

A *site* is one module that conversion turns into a quantized module: which module (its name in
``named_modules`` and the object), under which registry key, which ``parent_class`` keys match
it, the quantizer slots it gets, and the quant mixin that converts it. ``inventory`` turns sites
into the manifest's ``modules`` without touching the model; ``apply.patch_model`` converts them.
Both read the same list, so what the manifest promises is what patching creates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from torch import nn

from qruntime.modules.base import weight_info

if TYPE_CHECKING:
    from qruntime.modules.base import QuantizerSlot, QuantModule

__all__ = ["NamedModules", "Site", "SiteProvider", "weight_info"]

#: ``(name, module)`` pairs of a model in ``named_modules()`` order, quantizer modules left out:
#: computed once per walk and handed to every provider.
NamedModules = Sequence[tuple[str, nn.Module]]


@dataclass(frozen=True, eq=False)
class Site:
    """One module that gets quantizers, as a provider describes it.

    ``name`` is the module's ``named_modules`` name ('' for the root) and ``module`` the module
    itself (possibly already converted: providers report the site of the *original* module).
    ``class_name`` is the original class's name. ``registry_key`` is the key the module is
    converted under (a plan's ``parent_class`` for its quantizers); ``parent_class_keys`` the
    ``parent_class`` values that select it in a config; ``subclass_of`` the registered keys whose
    class it derives from (lint uses it). ``slots`` are the quantizers conversion creates, in
    creation order; ``quant_cls`` is the quant mixin that conversion mixes into the module's
    class (its ``forward`` calls the quantizers, its ``_setup`` creates exactly ``slots`` and may
    do more). ``weight_shape``/``weight_dtype`` are what the manifest reports (block-size checks).
    """

    name: str
    module: nn.Module
    class_name: str
    registry_key: str
    quant_cls: type[QuantModule]
    slots: tuple[QuantizerSlot, ...]
    parent_class_keys: tuple[str, ...] = ()
    subclass_of: tuple[str, ...] = ()
    weight_shape: tuple[int, ...] | None = None
    weight_dtype: str | None = None


@runtime_checkable
class SiteProvider(Protocol):
    """A source of quantizer sites and registry keys (see :mod:`qruntime.sites`).

    ``name`` identifies the provider in the ordered provider list. ``sites`` returns the sites it
    claims among ``modules`` (the model's modules in ``named_modules`` order, quantizers left
    out), in that order; it must not change the model and must work on the meta device.
    ``registry_keys`` returns the keys a config's ``parent_class`` may name because of this
    provider (all its registered keys, or only those the model contains).
    """

    name: str

    def sites(self, model: nn.Module, modules: NamedModules) -> Iterable[Site]: ...

    def registry_keys(self, model: nn.Module, modules: NamedModules) -> Iterable[str]: ...
