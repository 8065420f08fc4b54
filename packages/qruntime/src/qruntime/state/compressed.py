"""Compressed layers in a state file: their packed weights and layouts.

Why: a compressed layer (:mod:`qruntime.compress`) has no float weight any more, so quantizer
buffers plus the fresh model's weights would restore a *different* model (the float weights of
the fresh model, or of the model before a weight-rewriting calibration) without any error. So
``save_state`` also writes each compressed layer's packed tensors under their ``state_dict``
names (``<layer>.weight_compressed.codes``, ``.scale``, ``.extra``) and their layouts in the
metadata ``compressed``; ``restore_state`` checks them against the model before anything is
touched (the layer exists, has a weight of that shape and dtype, its tensors are all there) and
compresses those layers of the restored model from them, so the outputs are bit-identical.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from qconfig.errors import DocumentError
from torch import nn

from qruntime.compress.layer import PACKED_NAME, PackedWeight, compressed_class, is_compressed
from qruntime.state.file import metadata_json

__all__ = [
    "METADATA_KEY",
    "apply_packed",
    "check_packed",
    "listed_packed",
    "packed_keys",
    "packed_tensors",
]

METADATA_KEY = "compressed"
_BUFFERS = ("codes", "scale", "extra")


def packed_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, layouts)`` of every compressed layer of ``model``."""
    tensors: dict[str, torch.Tensor] = {}
    layouts: dict[str, Any] = {}
    for name, module in model.named_modules():
        if not is_compressed(module):
            continue
        packed = module._modules[PACKED_NAME]
        assert isinstance(packed, PackedWeight)
        layouts[name] = packed.layout()
        for key, value in packed._buffers.items():
            if value is not None:
                tensors[f"{name}.{PACKED_NAME}.{key}"] = value.detach().cpu().contiguous().clone()
    return tensors, layouts


def metadata_entry(layouts: dict[str, Any]) -> str:
    return json.dumps(layouts, separators=(",", ":"), sort_keys=True)


def listed_packed(metadata: dict[str, str], file: str) -> dict[str, dict[str, Any]]:
    """The metadata ``compressed`` map (empty for a file without one)."""
    if METADATA_KEY not in metadata:
        return {}
    where: tuple[int | str, ...] = ("__metadata__", METADATA_KEY)
    listed = metadata_json(metadata[METADATA_KEY], file, where)
    if not isinstance(listed, dict) or not all(isinstance(v, dict) for v in listed.values()):
        raise DocumentError("must be a JSON object of layer layouts", file=file, path=where)
    return listed


def packed_keys(handle: Any, layouts: dict[str, dict[str, Any]]) -> list[str]:
    """The file's tensors that belong to the listed compressed layers."""
    prefixes = tuple(f"{layer}.{PACKED_NAME}." for layer in layouts)
    return [k for k in handle.keys() if prefixes and k.startswith(prefixes)]


def check_packed(
    handle: Any, file: str, layouts: dict[str, dict[str, Any]], model: nn.Module
) -> dict[str, dict[str, torch.Tensor]]:
    """Each listed layer: a module of ``model`` with a float ``weight`` of the layout's shape and
    dtype, and its ``codes`` and ``scale`` in the file; returns the loaded tensors per layer."""
    present = set(handle.keys())
    out: dict[str, dict[str, torch.Tensor]] = {}
    for layer, layout in layouts.items():
        where = ("__metadata__", METADATA_KEY, layer)
        try:
            module = model.get_submodule(layer)
        except AttributeError:
            raise DocumentError("is not a module of this model", file=file, path=where) from None
        weight = module._parameters.get("weight")
        if not isinstance(weight, torch.Tensor):
            raise DocumentError("names a module without a weight", file=file, path=where)
        shape, dtype = layout.get("shape"), layout.get("dtype")
        if list(weight.shape) != shape or str(weight.dtype).removeprefix("torch.") != dtype:
            raise DocumentError(
                f"has a packed weight of shape {shape} and dtype {dtype}; the model's weight has "
                f"shape {list(weight.shape)} and dtype {weight.dtype}",
                file=file,
                path=where,
            )
        tensors = {}
        for buffer in _BUFFERS:
            key = f"{layer}.{PACKED_NAME}.{buffer}"
            if key in present:
                tensors[buffer] = handle.get_tensor(key)
            elif buffer != "extra":
                raise DocumentError(f"lacks its packed tensor {key}", file=file, path=where)
        try:
            PackedWeight.from_layout(layout, tensors).dequantize()
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            raise DocumentError(
                f"packed weight does not decode: {exc}", file=file, path=where
            ) from None
        out[layer] = tensors
    return out


def apply_packed(
    model: nn.Module,
    layouts: dict[str, dict[str, Any]],
    tensors: dict[str, dict[str, torch.Tensor]],
) -> None:
    """Compress the listed layers of a restored model from the file's packed tensors."""
    for layer, layout in layouts.items():
        module = model.get_submodule(layer)
        weight = module._parameters.pop("weight")
        device = weight.device if weight is not None else torch.device("cpu")
        on_device = {k: v.to(device) for k, v in tensors[layer].items()}
        module.add_module(PACKED_NAME, PackedWeight.from_layout(layout, on_device))
        module.__class__ = compressed_class(type(module))
