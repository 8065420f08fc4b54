"""Writing a tensor dictionary as Hugging Face safetensors: one file, or shards plus an index.

Why its own module: both formats lay tensors out the same way on disk (``model.safetensors``, or
``model-0000k-of-0000n.safetensors`` with ``model.safetensors.index.json`` once the total exceeds
the shard limit), which is what ``from_pretrained`` and the engines read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

__all__ = ["parse_size", "write_safetensors"]

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20}
_UNITS["GIB"] = 2**30


def parse_size(size: int | str) -> int:
    """Bytes of ``size``: an int, or a string such as ``"5GB"``, ``"500MB"`` or ``"2GiB"``."""
    if isinstance(size, int) and not isinstance(size, bool):
        if size <= 0:
            raise ValueError(f"max_shard_size must be positive, got {size}")
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]I?B|B)?\s*", str(size), re.IGNORECASE)
    if not match:
        raise ValueError(f"max_shard_size {size!r} is not a size such as 5GB or 500MB")
    value = float(match.group(1)) * _UNITS[(match.group(2) or "").upper()]
    if value <= 0:
        raise ValueError(f"max_shard_size must be positive, got {size!r}")
    return int(value)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _without_aliases(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each storage once (safetensors refuses shared memory): a tied tensor such as BERT's
    ``cls.predictions.decoder.bias`` keeps its first name; Hugging Face re-ties it on load."""
    seen: set[tuple[int, int, tuple[int, ...], torch.dtype]] = set()
    out = {}
    for key, t in tensors.items():
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if t.numel() and ident in seen:
            continue
        seen.add(ident)
        out[key] = t
    return out


def write_safetensors(
    tensors: dict[str, torch.Tensor], directory: Path, max_shard_size: int | str
) -> list[Path]:
    """Write ``tensors`` (in order) under ``directory``; shards start a new file before the one
    that would pass ``max_shard_size`` (a tensor larger than the limit gets a shard of its own).
    Returns the files written."""
    from safetensors.torch import save_file

    limit = parse_size(max_shard_size)
    tensors = _without_aliases(tensors)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in tensors.items():
        n = _nbytes(tensor)
        if shards[-1] and size + n > limit:
            shards.append({})
            size = 0
        shards[-1][key] = tensor.detach().contiguous().cpu()
        size += n
    meta = {"format": "pt"}
    if len(shards) == 1:
        path = directory / "model.safetensors"
        save_file(shards[0], str(path), metadata=meta)
        return [path]
    paths, weight_map = [], {}
    for i, shard in enumerate(shards, 1):
        path = directory / f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path), metadata=meta)
        weight_map.update(dict.fromkeys(shard, path.name))
        paths.append(path)
    index = {
        "metadata": {"total_size": sum(_nbytes(t) for t in tensors.values())},
        "weight_map": weight_map,
    }
    index_path = directory / "model.safetensors.index.json"
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return [*paths, index_path]
