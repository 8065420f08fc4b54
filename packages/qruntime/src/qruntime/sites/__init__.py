"""Quantizer-site discovery: which modules of a model get quantizers, under which keys.

Everything that decides where quantizers go is a *site provider* (:class:`SiteProvider`): an
object with a ``name``, ``sites(model, modules)`` — the modules it converts, each as a
:class:`Site` (name, module, registry key, ``parent_class`` keys, ``subclass_of`` keys,
quantizer slots and the quant mixin that converts it) — and ``registry_keys(model, modules)``,
the keys it adds to the manifest. ``qruntime.inventory`` lists the sites of all providers
without touching the model (so it works on the meta device), and ``apply_plan`` converts the
same sites, so a manifest and the patched model always agree.

Providers form one ordered list. The built-in ones are, in this order:

1. ``"module-types"`` (:class:`~qruntime.sites.registry.ModuleTypeProvider`): the module-type
   registry, ``qruntime.register``/``qruntime.unregister`` (first registered base with the same
   ``forward`` converts a class);
2. ``"sparse-moe"`` (:class:`~qruntime.sites.moe.SparseMoeProvider`): ``hf.<Class>`` keys for
   sparse MoE blocks when ``transformers`` is importable (keys only, no quantizers).

When two providers claim the same module, the earlier one in the list wins and the later claim is
dropped: a module is converted once. Register a provider with :func:`register_provider` (at the
end, or ``before=`` another one) and remove it with :func:`unregister_provider`.

A provider converts a module through its ``Site.quant_cls``, a :class:`qruntime.QuantModule`
mixin: conversion swaps the module's class to ``Quant<C>(mixin, C)`` and calls ``_setup``, which
creates the slots' quantizers. The mixin's ``forward`` may intercept anything the original
``forward`` computes — the weight it reads, its inputs and outputs, or intermediate tensors such
as the two operands of an attention matmul (``q_bmm_quantizer``/``k_bmm_quantizer``) — and max
calibration calibrates every quantizer the forward loop reaches. See docs/manifest-and-plan.md for
what the manifest fields mean.
"""

from qruntime.sites.base import NamedModules, Site, SiteProvider
from qruntime.sites.moe import SparseMoeProvider
from qruntime.sites.providers import (
    SiteScan,
    find_sites,
    providers,
    register_provider,
    scan,
    unregister_provider,
)
from qruntime.sites.registry import ModuleTypeProvider, register, unregister

__all__ = [
    "ModuleTypeProvider",
    "NamedModules",
    "Site",
    "SiteProvider",
    "SiteScan",
    "SparseMoeProvider",
    "find_sites",
    "providers",
    "register",
    "register_provider",
    "scan",
    "unregister",
    "unregister_provider",
]
