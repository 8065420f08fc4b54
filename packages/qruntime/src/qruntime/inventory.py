"""``inventory(model)``: the torch-free manifest of every quantizer site of a model.

It lists exactly the modules Model Optimizer 0.47.0 converts (config-semantics §7, the subclass
rule of §7.1), with the quantizers conversion would create and their module defaults, without
converting anything and without running ``forward`` — so it works on the meta device. On an
already converted model it reports the sites of the original modules (quantizers that a plan
turned into ``SequentialQuantizer`` still appear under their slot name).
"""

from __future__ import annotations

import torch
from qconfig.manifest import Manifest, ModuleSite, QuantizerSite
from torch import nn

from qruntime.modules.base import QuantizerSlot
from qruntime.quantizer import is_quantizer
from qruntime.registry import Registration, lookup, original_class, registered_keys, registrations
from qruntime.sites.moe import moe_blocks, sparse_moe_key

__all__ = ["inventory", "module_sites"]


def _weight_info(module: nn.Module) -> tuple[list[int] | None, str | None]:
    try:
        weight = getattr(module, "weight", None)
    except AttributeError:
        weight = None
    if not isinstance(weight, torch.Tensor):
        return None, None
    return list(weight.shape), str(weight.dtype).removeprefix("torch.")


def module_sites(
    model: nn.Module,
) -> list[tuple[str, nn.Module, Registration, list[QuantizerSlot]]]:
    """``(name, module, registration, slots)`` for every module that is (or would be) converted,
    in ``named_modules`` order (pre-order, children in registration order)."""
    out = []
    for name, module in model.named_modules():
        if is_quantizer(module):
            continue
        registration = lookup(original_class(module))
        if registration is None:
            continue
        slots = registration.quant_cls.quantizer_slots(module)
        if slots:
            out.append((name, module, registration, slots))
    return out


def inventory(model: nn.Module, label: str = "") -> Manifest:
    """The manifest of ``model``: modules, registry keys, quantizer names and module defaults.

    ``parent_class_keys`` holds a module's own key only if its class is itself registered (a
    converted subclass gets a class of its own that ``parent_class`` keys never match, §7.1 [obs
    E]); ``subclass_of`` lists every registered class it derives from (for lint rule QC211).
    ``registry_keys`` also holds ``hf.<Class>`` for sparse MoE blocks when Model Optimizer would
    register them (:mod:`qruntime.moe`).
    """
    regs = registrations()
    modules = []
    for name, module, registration, slots in module_sites(model):
        cls = original_class(module)
        shape, dtype = _weight_info(module)
        modules.append(
            ModuleSite(
                name=name,
                class_name=cls.__name__,
                registry_key=registration.key,
                parent_class_keys=[r.key for r in regs if r.original is cls],
                weight_shape=shape,
                weight_dtype=dtype,
                subclass_of=[r.key for r in regs if issubclass(cls, r.original)],
                quantizers=[
                    QuantizerSite(
                        attribute=slot.attribute,
                        defaults=slot.defaults,
                        hard_disabled=slot.hard_disabled,
                    )
                    for slot in slots
                ],
            )
        )
    keys = sorted({*registered_keys(), *(sparse_moe_key(m) for m in moe_blocks(model))})
    return Manifest(model=label, registry_keys=keys, modules=modules)
