"""Reading, saving and restoring the quantizer state of a patched model.

``save_state`` writes one safetensors file: every quantizer buffer under its ``state_dict`` key
(``<module>.weight_quantizer._amax``, ``..._pre_quant_scale``, ``..._global_amax``, ...) and, in
the file's metadata, the plan JSON of the *current* quantizer states (enable toggles and
sequential structure included, so a plan plus buffers rebuilds the model; compare Model
Optimizer's recorded quantizer state, docs/model-optimizer-rules.md, 'Save and restore'), the
list of the tensors written (``tensors``) and, for calibrators given as a class or
``(class, args, kwargs)``, how to rebuild them (``calibrators``). After a calibration that
rewrote weights (SmoothQuant), the weights travel too (``weights``, :mod:`qruntime.state.weights`).
Quantizers whose amax ``lsq`` made learnable store ``_amax_post`` / ``_amax_pre`` (parameters
or buffers) in place of ``_amax``, and ``learned`` says how to convert them again
(:mod:`qruntime.state.learned`).

``restore_state`` applies that plan to a fresh model of the same architecture and loads the
buffers, all-or-nothing; the restored model's outputs are bit-identical. A state file may have
been truncated, edited by hand or be some other file, so everything is checked before the model
is touched (docs/errors.md): the file is a regular safetensors file with the metadata above, the
plan is a valid plan that fits the model (``PlanMismatchError``), and every tensor belongs to a
quantizer of the plan, under a buffer name a quantizer has, in a float dtype, with the shape the
quantizer's calibration gives on that layer's weight (where the plan and model decide it),
finite, an amax not negative, and listed in ``tensors``. Each defect is one
:class:`~qconfig.errors.DocumentError` naming the file and the tensor (or metadata key).

This module is the save/read/restore sequence; ``file`` opens the safetensors file and reads its
metadata, ``checks`` checks its tensors against the plan and the model, ``calibrator_refs``
writes and reads the ``calibrators`` metadata, ``weights`` the rewritten weights, ``learned``
the learned-amax quantizers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from qconfig.errors import DocumentError
from qconfig.plan import Plan, QuantizerPlan
from safetensors.torch import save_file
from torch import nn

from qruntime.apply import PLAN_ATTRIBUTE, applied_plan, check_plan, patch_model
from qruntime.inventory import inventory
from qruntime.modules.low_rank import (
    LORA_A,
    LORA_B,
    LOW_RANK_BUFFERS,
    as_svd_layout,
    attach_low_rank,
    promoted_weight_quantizer,
)
from qruntime.quantizer import SequentialQuantizer, TensorQuantizer, is_quantizer
from qruntime.state.calibrator_refs import restore_calibrators, split_calibrators
from qruntime.state.checks import (
    BUFFER_NAMES,
    Owner,
    check_header,
    check_listing,
    load_tensors,
    tensor_owners,
)
from qruntime.state.compressed import (
    apply_packed,
    check_packed,
    listed_packed,
    metadata_entry,
    packed_keys,
    packed_tensors,
)
from qruntime.state.file import STATE_FORMAT, StateFile, state_metadata
from qruntime.state.learned import (
    LEARNED_KEY,
    LearnedAmax,
    learned_state,
    read_learned,
    rebuild_learned,
    revert_learned,
)
from qruntime.state.weights import (
    check_weight_entries,
    listed_weights,
    load_weights,
    quantized_parameters,
    rewritten_weights,
    write_weights,
)
from qruntime.transaction import ModelSnapshot

__all__ = [
    "BUFFER_NAMES",
    "STATE_FORMAT",
    "current_plan",
    "quantizer_states",
    "read_plan",
    "restore_state",
    "save_state",
]


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


# ------------------------------------------------------------------------------------ save
def save_state(model: nn.Module, path: str | Path) -> None:
    """Write the quantizer state of ``model`` to ``path`` (safetensors + plan JSON metadata).

    Learned amaxes (``lsq``) are stored with how to convert their quantizers again.
    ``ValueError`` (nothing written) when a quantizer's ``calibrator`` is a constructor that a
    file cannot describe: only a class importable by name, alone or as ``(class, args,
    kwargs)`` with arguments made of None, bools, numbers, strings, lists, tuples and dicts,
    is restored.
    """
    plan = current_plan(model)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, TensorQuantizer):
            for key, value in module._buffers.items():
                # SVDQuant's factors are kept out of state_dict on some quantizers, as Model
                # Optimizer does; the state file still needs them to rebuild the branch
                persistent = key not in module._non_persistent_buffers_set
                if value is not None and (persistent or key in LOW_RANK_BUFFERS):
                    tensors[f"{name}.{key}"] = value.detach().cpu().contiguous().clone()
    learned_tensors, learned = learned_state(model)  # parameters or buffers: all of them here
    tensors.update(learned_tensors)
    plan, calibrators = split_calibrators(plan)
    metadata = {
        "format": STATE_FORMAT,
        "plan": plan.to_json(),
        "tensors": json.dumps(sorted(tensors), separators=(",", ":")),
    }
    if calibrators:
        metadata["calibrators"] = json.dumps(calibrators, separators=(",", ":"), sort_keys=True)
    if learned is not None:
        metadata[LEARNED_KEY] = learned
    weights = rewritten_weights(model)
    if weights:
        metadata["weights"] = json.dumps(sorted(weights), separators=(",", ":"))
    packed, layouts = packed_tensors(model)  # compressed layers (qruntime.compress)
    if layouts:
        metadata["compressed"] = metadata_entry(layouts)
    save_file({**tensors, **weights, **packed}, str(path), metadata=metadata)


# ------------------------------------------------------------------------------------ read
def read_plan(path: str | Path) -> Plan:
    """The plan stored in a ``save_state`` file (calibrator constructors rebuilt)."""
    file = str(path)
    with StateFile(file) as handle:
        return _stored_plan(state_metadata(handle, file), file)


def _stored_plan(metadata: dict[str, str], file: str) -> Plan:
    """The plan of the metadata, with its constructor calibrators put back."""
    try:
        plan = Plan.from_json(metadata["plan"], file=file)
    except DocumentError as exc:
        raise DocumentError(
            exc.message, file=file, path=("__metadata__", "plan", *exc.path)
        ) from None
    if "calibrators" in metadata:
        plan = restore_calibrators(plan, metadata["calibrators"], file)
    return plan


# ------------------------------------------------------------------------------------ restore
def restore_state(model: nn.Module, path: str | Path) -> nn.Module:
    """Quantize a fresh ``model`` exactly as the saved one was; returns ``model``.

    Everything in the file is checked first (module docstring): a file that cannot be read is
    an :class:`~qconfig.fileio.InputFileError`, one that is not a valid state file a
    :class:`~qconfig.errors.DocumentError` naming the tensor or metadata key, a plan that does
    not fit the model a ``PlanMismatchError``. In every such case the model is not changed; on
    success it holds exactly the saved quantizers and buffers.
    """
    file = str(path)
    with StateFile(file) as handle:
        metadata = state_metadata(handle, file)
        plan = _stored_plan(metadata, file)
        check_plan(model, plan)
        owners = tensor_owners(model, plan)
        learned = read_learned(metadata, file, owners)
        stored_weights = listed_weights(metadata, file)
        layouts = listed_packed(metadata, file)
        not_quantizer = [*stored_weights, *packed_keys(handle, layouts)]
        keys = check_header(handle, file, owners, not_quantizer, learned)
        check_listing(file, metadata, keys)
        parameters = quantized_parameters(model) if stored_weights else {}
        check_weight_entries(handle, file, stored_weights, parameters)
        tensors = dict(load_tensors(handle, file, keys))
        weights = load_weights(handle, file, stored_weights, parameters)
        packed = check_packed(handle, file, layouts, model)
    snapshot = ModelSnapshot(model)
    try:
        revert_learned(model)  # a model converted before gets the file's state, not a mix
        patch_model(model, plan)
        _load_buffers(model, owners, tensors, learned)
        apply_packed(model, layouts, packed)
        # resolved again: conversion may replace a parameter (Conv1D's transposed weight)
        parameters = quantized_parameters(model) if weights else {}
        model.__dict__[PLAN_ATTRIBUTE] = plan
    except BaseException:
        snapshot.restore()
        raise
    write_weights(model, parameters, weights)  # last: nothing after it can fail
    return model


def _load_buffers(
    model: nn.Module,
    owners: dict[str, Owner],
    tensors: dict[str, torch.Tensor],
    learned: dict[str, LearnedAmax],
) -> None:
    """Every quantizer of the plan gets the file's buffers and no others (a quantizer that was
    calibrated before keeps nothing the file does not have); the learned ones are converted
    last, once their other buffers (``_global_amax``) are in place."""
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    for owner in owners:
        quantizer = model.get_submodule(owner)
        assert isinstance(quantizer, TensorQuantizer)
        for buffer in BUFFER_NAMES:
            quantizer._buffers.pop(buffer, None)
            value = tensors.get(f"{owner}.{buffer}")
            if value is not None and buffer not in LOW_RANK_BUFFERS:
                quantizer.register_buffer(buffer, value.to(device))
        lora_a, lora_b = tensors.get(f"{owner}.{LORA_A}"), tensors.get(f"{owner}.{LORA_B}")
        if lora_a is not None and lora_b is not None:  # pairs: checked with the header
            persistent = not promoted_weight_quantizer(quantizer)
            lora_a, lora_b = as_svd_layout(lora_a.to(device), lora_b.to(device))
            attach_low_rank(quantizer, lora_a, lora_b, persistent=persistent)
    rebuild_learned(model, learned, owners, tensors, device)
