"""Reading, saving and restoring the quantizer state of a patched model.

``save_state`` writes one safetensors file: every quantizer buffer under its ``state_dict`` key
(``<module>.weight_quantizer._amax``, ``..._pre_quant_scale``, ``..._global_amax``, ...) and, in
the file's metadata, the plan JSON of the *current* quantizer states (enable toggles and
sequential structure included, so a plan plus buffers rebuilds the model; compare Model
Optimizer's recorded quantizer state, docs/model-optimizer-rules.md, 'Save and restore').
``restore_state`` applies that plan to a fresh model of the same architecture and loads the
buffers, all-or-nothing; the restored model's outputs are bit-identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from qconfig.plan import Plan, QuantizerPlan
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from qruntime.apply import PLAN_ATTRIBUTE, applied_plan, check_plan, patch_model
from qruntime.inventory import inventory
from qruntime.quantizer import SequentialQuantizer, TensorQuantizer, is_quantizer
from qruntime.transaction import ModelSnapshot

__all__ = [
    "STATE_FORMAT",
    "current_plan",
    "quantizer_states",
    "read_plan",
    "restore_state",
    "save_state",
]

STATE_FORMAT = "qruntime.state/v1"


def _tq_state(q: TensorQuantizer) -> dict[str, Any]:
    return {
        "enable": q.is_enabled,
        "attributes": q.attributes(),
        "amax": q._buffers.get("_amax"),
        "pre_quant_scale": q._buffers.get("_pre_quant_scale"),
    }


def quantizer_states(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Per quantizer (a ``SequentialQuantizer``'s elements folded into it): ``enable``,
    ``attributes`` (every ``QuantizerAttributeConfig`` field with its runtime value, or a list of
    such dicts), ``amax`` (the stored ``_amax``, or None while dynamic) and ``pre_quant_scale``
    (lists for a sequential quantizer)."""
    out: dict[str, dict[str, Any]] = {}
    inside: set[int] = set()
    for name, module in model.named_modules():
        if id(module) in inside:
            continue
        if isinstance(module, SequentialQuantizer):
            elements = [_tq_state(q) for q in module]
            inside.update(id(q) for q in module)
            out[name] = {
                "enable": module.is_enabled,
                "attributes": [e["attributes"] for e in elements],
                "amax": [e["amax"] for e in elements],
                "pre_quant_scale": [e["pre_quant_scale"] for e in elements],
            }
        elif isinstance(module, TensorQuantizer):
            out[name] = _tq_state(module)
    return out


def current_plan(model: nn.Module) -> Plan:
    """A plan that reproduces the model's quantizers as they are now (no calibration steps)."""
    applied = applied_plan(model)
    quantizers = {}
    for name, module, site in inventory(model).iter_sites():
        parent, _, attr = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        q = owner._modules.get(attr)
        if q is None or not is_quantizer(q):
            raise ValueError(f"{name} is not quantized; apply a plan first")
        before = applied.quantizers.get(name) if applied is not None else None
        quantizers[name] = QuantizerPlan(
            enable=q.is_enabled,
            attributes=q.config,
            parent_class=module.registry_key,
            sources=before.sources if before is not None else (),
            hard_disabled=site.hard_disabled,
        )
    return Plan(quantizers, (), [], applied.manifest_model if applied is not None else "")


def save_state(model: nn.Module, path: str | Path) -> None:
    """Write the quantizer state of ``model`` to ``path`` (safetensors + plan JSON metadata)."""
    plan = current_plan(model)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, TensorQuantizer):
            for key, value in module._buffers.items():
                if value is not None and key not in module._non_persistent_buffers_set:
                    tensors[f"{name}.{key}"] = value.detach().cpu().contiguous().clone()
    save_file(tensors, str(path), metadata={"format": STATE_FORMAT, "plan": plan.to_json()})


def restore_state(model: nn.Module, path: str | Path) -> nn.Module:
    """Quantize a fresh ``model`` exactly as the saved one was; returns ``model``.

    The saved plan must fit the model (names, classes) and every saved buffer must belong to one
    of its quantizers; otherwise nothing is changed.
    """
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        if metadata.get("format") != STATE_FORMAT:
            raise ValueError(f"{path} is not a {STATE_FORMAT} file")
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    plan = Plan.from_json(metadata["plan"])
    check_plan(model, plan)
    snapshot = ModelSnapshot(model)
    try:
        patch_model(model, plan)
        modules = dict(model.named_modules())
        for key, value in tensors.items():
            owner, _, buffer = key.rpartition(".")
            quantizer = modules.get(owner)
            if not isinstance(quantizer, TensorQuantizer):
                raise ValueError(f"saved tensor {key!r} has no quantizer {owner!r} in this model")
            device = next((t.device for t in model.parameters()), value.device)
            quantizer._buffers.pop(buffer, None)
            quantizer.register_buffer(buffer, value.to(device))
        model.__dict__[PLAN_ATTRIBUTE] = plan
    except BaseException:
        snapshot.restore()
        raise
    return model


def read_plan(path: str | Path) -> Plan:
    """The plan stored in a ``save_state`` file."""
    with safe_open(str(path), framework="pt") as handle:
        return Plan.from_json((handle.metadata() or {})["plan"])
