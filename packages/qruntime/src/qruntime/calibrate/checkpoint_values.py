"""Values of a layer checkpoint as JSON plus a safetensors file: cached layer inputs and small
descriptions (a layer's output shapes).

Why a module: a layer's cached calls are nested tuples, lists and dicts of tensors and plain
values, and safetensors stores only a flat name → tensor map with string metadata. A value
becomes a JSON tree of tagged nodes (``tensor`` with its key in the tensor map and original
device, ``tuple``, ``list``, ``dict`` with string keys, ``none``, ``bool``, ``int``, ``float``
as ``float.hex`` so that it comes back exact, ``str``, ``dtype``, ``device``); each tensor
object is stored once, so tensors shared between calls stay shared. Anything else (a KV-cache
object, ...) is refused with the place where it was found, before anything is written.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import torch

__all__ = ["cpu_copies", "decode_tree", "encode_tree", "plain_json", "safetensors_metadata"]


def encode_tree(
    value: Any, tensors: dict[str, torch.Tensor], seen: dict[int, str], where: str
) -> Any:
    """A JSON node for ``value``; its tensors go into ``tensors`` under new keys (``seen`` maps
    the ids of tensors already stored to their keys). ``where`` names the value in errors."""
    if isinstance(value, torch.Tensor):
        key = seen.get(id(value))
        if key is None:
            key = seen[id(value)] = str(len(tensors))
            tensors[key] = value
        return {"type": "tensor", "key": key, "device": str(value.device)}
    if value is None:
        return {"type": "none"}
    if isinstance(value, bool):
        return {"type": "bool", "value": value}
    if isinstance(value, int):
        return {"type": "int", "value": value}
    if isinstance(value, float):
        return {"type": "float", "value": value.hex()}
    if isinstance(value, str):
        return {"type": "str", "value": value}
    if isinstance(value, torch.dtype):
        return {"type": "dtype", "value": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"type": "device", "value": str(value)}
    if type(value) in (tuple, list):
        items = [encode_tree(v, tensors, seen, f"{where}[{i}]") for i, v in enumerate(value)]
        return {"type": type(value).__name__, "items": items}
    if type(value) is dict:
        out = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(
                    f"layer checkpoint: cannot store {where}: a dict key {k!r} is not a string"
                )
            out.append([k, encode_tree(v, tensors, seen, f"{where}[{k!r}]")])
        return {"type": "dict", "items": out}
    raise ValueError(
        f"layer checkpoint: cannot store {where}, a {type(value).__module__}."
        f"{type(value).__qualname__}: cached layer inputs may hold only tensors, None, bools, "
        "numbers, strings, dtypes, devices, and tuples, lists and string-keyed dicts of them"
    )


def decode_tree(node: Any, tensors: dict[str, torch.Tensor], device: torch.device | None) -> Any:
    """The value of ``encode_tree``'s node; tensors go to ``device`` (None: where they were)."""
    kind = node["type"]
    if kind == "tensor":
        return tensors[node["key"]].to(device if device is not None else node["device"])
    if kind == "none":
        return None
    if kind in ("bool", "int", "str"):
        return node["value"]
    if kind == "float":
        return float.fromhex(node["value"])
    if kind == "dtype":
        return getattr(torch, node["value"])
    if kind == "device":
        return torch.device(node["value"])
    if kind in ("tuple", "list"):
        items = [decode_tree(n, tensors, device) for n in node["items"]]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        return {k: decode_tree(n, tensors, device) for k, n in node["items"]}
    raise ValueError(f"unknown node type {kind!r}")


def plain_json(value: Any, where: str) -> str:
    """``value`` as a JSON node tree; tensors are refused (they belong in safetensors)."""
    tensors: dict[str, torch.Tensor] = {}
    node = encode_tree(value, tensors, {}, where)
    if tensors:
        raise ValueError(f"layer checkpoint: {where} may not hold tensors")
    return json.dumps(node)


def cpu_copies(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies that share no memory (safetensors refuses shared storage)."""
    return {k: t.detach().cpu().contiguous().clone() for k, t in tensors.items()}


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, read from its header."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return header.get("__metadata__") or {}
