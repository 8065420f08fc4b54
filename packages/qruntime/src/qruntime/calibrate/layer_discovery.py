"""Which modules layer-by-layer calibration calibrates one at a time: the model's repeated
blocks (decoder or encoder layers).

Why a module of its own: the search is the part users meet first (a model whose blocks are not
found is refused before anything is touched) and the part that grows with every new model
layout; the driver (:mod:`qruntime.calibrate.layerwise`) only needs the blocks in order.

Order: a path or function the caller gives; else a known Hugging Face location
(:data:`KNOWN_LAYER_PATHS`); else the one outermost ``ModuleList`` of identical blocks that
holds quantized modules; else :class:`LayerwiseError` naming the candidates and the override.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from qruntime.quantizer import TensorQuantizer

__all__ = [
    "KNOWN_LAYER_PATHS",
    "DecoderLayers",
    "LayerSpec",
    "LayerwiseError",
    "find_layers",
    "uncalibrated_outside",
]

#: How a caller names the blocks: a dotted submodule path (``"model.layers"``) or a function of
#: the model returning the blocks in execution order.
LayerSpec = str | Callable[[nn.Module], Sequence[nn.Module]]

#: Where Hugging Face models keep their blocks, tried in this order before the generic search.
KNOWN_LAYER_PATHS: tuple[str, ...] = (
    "model.language_model.layers",  # multimodal models (Gemma 3, Llama 4, Qwen-VL, ...)
    "model.layers",  # Llama, Mistral, Qwen, Phi-3, Gemma, Nemotron-H (native)
    "language_model.model.layers",  # older multimodal wrappers (Llava)
    "backbone.layers",  # Mamba, Nemotron-H (remote code)
    "model.decoder.layers",  # OPT
    "transformer.h",  # GPT-2, GPT-J, Falcon, Bloom
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "transformer.blocks",  # MPT
    "encoder.layer",  # BertModel, RobertaModel (and bert.encoder.layer via the search)
)


class LayerwiseError(ValueError):
    """Layer-by-layer calibration cannot run on this model or loop (raised before any block is
    calibrated, or by the loop's first pass that shows the problem)."""


@dataclass(frozen=True)
class DecoderLayers:
    """The blocks calibrated one at a time, in execution order, with their names in the model
    (``where`` says how they were found, for messages)."""

    names: tuple[str, ...]
    modules: tuple[nn.Module, ...]
    where: str


# --------------------------------------------------------------------------- discovery


def _holds(path: str, names: Sequence[str] | None) -> bool:
    """Whether a quantizer named in ``names`` lives under ``path`` (True when no names)."""
    if names is None:
        return True
    prefix = f"{path}." if path else ""
    return any(n.startswith(prefix) for n in names)


def _block_list(model: nn.Module, path: str) -> nn.Module | None:
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return None
    if isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) > 0:
        return module
    return None


def _homogeneous_lists(model: nn.Module, names: Sequence[str] | None) -> list[str]:
    """Outermost ``ModuleList``s of blocks of one class that hold quantized modules."""
    found: list[str] = []
    for path, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1 or not _holds(path, names):
            continue
        if any(path.startswith(f"{outer}.") for outer in found):
            continue  # experts inside a block, say
        found.append(path)
    return found


def _from_modules(model: nn.Module, blocks: Sequence[Any], where: str) -> DecoderLayers:
    names_of = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    blocks = list(blocks)
    if not blocks or not all(isinstance(b, nn.Module) for b in blocks):
        raise LayerwiseError(f"{where}: expected a non-empty sequence of modules of the model")
    names = []
    for block in blocks:
        name = names_of.get(id(block))
        if name is None or block is model:
            raise LayerwiseError(f"{where}: {type(block).__name__} is not a submodule of the model")
        names.append(name)
    if len({id(b) for b in blocks}) != len(blocks):
        raise LayerwiseError(f"{where}: a block is listed twice (calibrated once per listing?)")
    for outer in names:
        inner = [n for n in names if n.startswith(f"{outer}.")]
        if inner:
            raise LayerwiseError(f"{where}: block {inner[0]!r} is inside block {outer!r}")
    return DecoderLayers(tuple(names), tuple(blocks), where)


def find_layers(
    model: nn.Module, layers: LayerSpec | None = None, quantized: Sequence[str] | None = None
) -> DecoderLayers:
    """The blocks to calibrate one at a time (module docstring); :class:`LayerwiseError` naming
    the ``layers=`` option when there are none or several candidates.

    ``quantized``: the names of the quantizers to be calibrated (a plan's), so that a block
    list holding none of them is not chosen; None accepts any.
    """
    if isinstance(layers, str):
        blocks = _block_list(model, layers)
        if blocks is None:
            raise LayerwiseError(
                f"layers={layers!r}: the model has no non-empty ModuleList or Sequential there"
            )
        return _from_modules(model, list(blocks), f"layers={layers!r}")
    if layers is not None:
        if not callable(layers):
            raise LayerwiseError(
                f"layers must be a submodule path or a function of the model, not "
                f"{type(layers).__name__}"
            )
        return _from_modules(model, layers(model), f"layers={getattr(layers, '__name__', layers)}")
    for path in KNOWN_LAYER_PATHS:
        blocks = _block_list(model, path)
        if blocks is not None and _holds(path, quantized):
            return _from_modules(model, list(blocks), path)
    candidates = _homogeneous_lists(model, quantized)
    if len(candidates) == 1:
        return _from_modules(model, list(model.get_submodule(candidates[0])), candidates[0])
    how = (
        "name them with layers='path.to.blocks' (a ModuleList) or layers=function(model) "
        "returning the blocks in execution order"
    )
    if not candidates:
        raise LayerwiseError(
            f"layerwise calibration found no decoder layers in {type(model).__name__} (none of "
            f"{', '.join(KNOWN_LAYER_PATHS)}, and no ModuleList of identical blocks holding "
            f"quantized modules): {how}"
        )
    raise LayerwiseError(
        f"layerwise calibration found several block lists in {type(model).__name__} "
        f"({', '.join(candidates)}): {how}"
    )


def uncalibrated_outside(model: nn.Module, layers: DecoderLayers) -> list[str]:
    """Enabled static quantizers outside the blocks that have no amax (layerwise calibration
    never shows them data, so they quantize dynamically): their names, in module order."""
    inside = {id(m) for block in layers.modules for m in block.modules()}
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, TensorQuantizer) or id(module) in inside:
            continue
        if not module.is_enabled or module.is_dynamic or module.is_mx_format:
            continue
        if module.uses_constant_amax or module.amax is not None:
            continue
        out.append(name)
    return out
