"""``inventory(model)``: the torch-free manifest of every quantizer site of a model.

It lists the sites of every site provider (:mod:`qruntime.sites`) — exactly the modules Model
Optimizer 0.47.0 converts, with the quantizers conversion would create and their module
defaults — without converting anything and without running ``forward``, so it works on the meta
device. On an already converted model it reports the sites of the original modules (quantizers
that a plan turned into ``SequentialQuantizer`` still appear under their slot name).
"""

from __future__ import annotations

from qconfig.manifest import Manifest, ModuleSite, QuantizerSite
from torch import nn

from qruntime.sites import Site, scan

__all__ = ["inventory", "module_site"]


def module_site(site: Site) -> ModuleSite:
    """The manifest entry of one site."""
    return ModuleSite(
        name=site.name,
        class_name=site.class_name,
        registry_key=site.registry_key,
        parent_class_keys=list(site.parent_class_keys),
        weight_shape=None if site.weight_shape is None else list(site.weight_shape),
        weight_dtype=site.weight_dtype,
        subclass_of=list(site.subclass_of),
        quantizers=[
            QuantizerSite(
                attribute=slot.attribute, defaults=slot.defaults, hard_disabled=slot.hard_disabled
            )
            for slot in site.slots
        ],
    )


def inventory(model: nn.Module, label: str = "") -> Manifest:
    """The manifest of ``model``: modules, registry keys, quantizer names and module defaults.

    ``modules`` are the providers' sites in ``named_modules`` order; ``registry_keys`` the union
    of the providers' keys (the registered module types, and e.g. ``hf.<Class>`` for sparse MoE
    blocks when Model Optimizer would register them). See docs/manifest-and-plan.md.
    """
    found = scan(model)
    modules = [module_site(site) for site in found.sites]
    return Manifest(model=label, registry_keys=found.registry_keys, modules=modules)
