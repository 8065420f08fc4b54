"""``qruntime.export``: write a quantized Hugging Face model as a packed checkpoint that an
inference engine loads (docs/export.md).

Two formats: ``"compressed-tensors"`` (vLLM, Hugging Face transformers) and ``"modelopt-hf"``
(Model Optimizer's unified checkpoint: TensorRT-LLM, vLLM, SGLang). The weights are really
quantized and packed with the codes and scales of the model's own fake quantization; a quantizer
state the chosen format cannot express raises :class:`ExportError` naming the quantizer.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

from qruntime.export.compressed_tensors import compressed_tensors_checkpoint
from qruntime.export.errors import ExportError
from qruntime.export.layout import read_model
from qruntime.export.modelopt_hf import modelopt_hf_checkpoint
from qruntime.export.shards import parse_size, write_safetensors

__all__ = ["FORMATS", "MODELOPT_LAYOUT_VERSION", "ExportError", "ExportResult", "export"]

FORMATS = ("compressed-tensors", "modelopt-hf")

#: The Model Optimizer release whose unified checkpoint layout ``"modelopt-hf"`` follows.
MODELOPT_LAYOUT_VERSION = "0.47.0"

#: Tokenizer files copied from the model's source folder when no tokenizer is passed.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "chat_template.jinja",
)


@dataclass(frozen=True)
class ExportResult:
    """Where the checkpoint went: ``directory``, the ``files`` written and the safetensors size
    (``tensor_bytes``), with the number of quantized linears."""

    directory: Path
    format: str
    files: tuple[Path, ...]
    tensor_bytes: int
    quantized_linears: int
    dropped: tuple[str, ...] = ()


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def _model_config(model: nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise ExportError(
            "export writes Hugging Face checkpoints: the model has no transformers config "
            "(model.config)"
        )
    data = config.to_dict()
    data.pop("quantization_config", None)
    if not data.get("architectures"):
        data["architectures"] = [type(model).__name__.removeprefix("Quant")]
    return data


def _copy_tokenizer(model: nn.Module, tokenizer: Any, directory: Path) -> list[Path]:
    if tokenizer is not None:
        if hasattr(tokenizer, "save_pretrained"):
            return [Path(p) for p in tokenizer.save_pretrained(str(directory))]
        source = Path(tokenizer)
    else:
        name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
        source = Path(name) if name else None
        if source is None or not source.is_dir():
            return []
    if not source.is_dir():
        raise ExportError(f"tokenizer folder {source} does not exist")
    copied = []
    for fname in _TOKENIZER_FILES:
        if (source / fname).is_file():
            copied.append(Path(shutil.copy2(source / fname, directory / fname)))
    return copied


def export(
    model: nn.Module,
    directory: str | Path,
    format: Literal["compressed-tensors", "modelopt-hf"] = "compressed-tensors",
    *,
    max_shard_size: int | str = "5GB",
    tokenizer: Any = None,
    drop_unexportable: bool = False,
) -> ExportResult:
    """Write ``model`` (quantized with :func:`qruntime.quantize` or restored with
    :func:`qruntime.restore_state`) to ``directory`` as a ``format`` checkpoint.

    Writes ``config.json`` with its ``quantization_config`` (plus ``hf_quant_config.json`` for
    ``"modelopt-hf"``), ``generation_config.json`` when the model has one, the tensors as
    safetensors (sharded with an index above ``max_shard_size``) and the tokenizer: ``tokenizer``
    (an object with ``save_pretrained`` or a folder), else the tokenizer files of the folder the
    model was loaded from. Raises :class:`ExportError` for what ``format`` cannot express, before
    anything is written. A quantizer that no checkpoint field holds (a LayerNorm's input
    quantizer, an output or attention Q/P quantizer, a quantized embedding) raises too, unless
    ``drop_unexportable``: then each one is left out with a warning (listed in
    ``ExportResult.dropped``) and the checkpoint computes without it.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    parse_size(max_shard_size)
    config = _model_config(model)
    info = read_model(model, drop_unexportable=drop_unexportable)
    from qruntime import __version__

    # Consumers of the unified checkpoint identify it by producer name "modelopt" (some refuse
    # any other); the version is that of the layout followed. The writer is recorded apart.
    producer = {"name": "modelopt", "version": MODELOPT_LAYOUT_VERSION}
    writer = {"name": "qruntime", "version": __version__}
    extra: dict[str, dict[str, Any]] = {}
    if format == "compressed-tensors":
        tensors, block = compressed_tensors_checkpoint(info)
    else:
        tensors, hf_quant, block = modelopt_hf_checkpoint(info, producer)
        hf_quant["exported_by"] = writer
        extra["hf_quant_config.json"] = hf_quant
    config["quantization_config"] = block

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    files = [_write_json(out / "config.json", config)]
    files += [_write_json(out / name, data) for name, data in extra.items()]
    generation = getattr(model, "generation_config", None)
    if generation is not None and hasattr(generation, "to_dict"):
        files.append(_write_json(out / "generation_config.json", generation.to_dict()))
    files += write_safetensors(tensors, out, max_shard_size)
    files += _copy_tokenizer(model, tokenizer, out)
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    return ExportResult(out, format, tuple(files), size, len(info.linears), tuple(info.dropped))
