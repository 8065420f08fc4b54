"""A calibrated layer's state as one safetensors file, and its restore into a fresh layer.

Why a module: a layer checkpoint must bring back everything calibration changed in a layer,
which is more than tensors — a quantizer switched off, a config changed to per-tensor, a runtime
axis, new buffers such as ``_pre_quant_scale`` — and must check a file against the layer before
touching it. (``qruntime.state``'s save/restore works on a whole model and sits above the
calibration package, which cannot import it; the quantizer attributes are stored the same way,
as a qconfig plan.)

A layer file holds every buffer of every quantizer of the layer under ``<quantizer>.<buffer>``
and, when weights are stored, every other parameter and buffer under its ``state_dict`` name.
Its metadata: ``format`` (:data:`LAYER_FORMAT`); ``quantizers``, a plan (``Plan.to_json``) of
the layer's quantizers keyed by their names inside the layer (enable and configured
attributes); ``axes``, each quantizer's runtime axis; ``buffers``, each quantizer's buffer
names with their ``state_dict`` persistence; ``weights``, the names of the weight tensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from qconfig.plan import Plan, QuantizerPlan
from safetensors import safe_open
from torch import nn

from qruntime.calibrate.checkpoint_values import cpu_copies, safetensors_metadata
from qruntime.quantizer import TensorQuantizer

__all__ = ["LAYER_FORMAT", "StoredLayer", "layer_state", "quantizer_plan"]

LAYER_FORMAT = "qruntime.layer_checkpoint.layer/v1"


def quantizer_plan(model: nn.Module) -> Plan:
    """The configured attributes and enable state of every quantizer, as a qconfig plan (the
    one serialisation of quantizer attributes the project has)."""
    quantizers = {}
    for name, q in model.named_modules():
        if isinstance(q, TensorQuantizer):
            config = q.config
            if not isinstance(config.calibrator, str):
                raise ValueError(
                    f"layer checkpoint: quantizer {name!r} has a calibrator given as "
                    f"{config.calibrator!r}; only calibrators named by a string can be "
                    "checkpointed"
                )
            quantizers[name] = QuantizerPlan(config.enable, config, type(q).__name__)
    return Plan(quantizers)


def _leaf_quantizers(layer: nn.Module) -> dict[str, TensorQuantizer]:
    return {n: m for n, m in layer.named_modules() if isinstance(m, TensorQuantizer)}


def _weights(layer: nn.Module, quantizers: dict[str, TensorQuantizer]) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of the layer that no quantizer owns, by ``state_dict`` name."""
    inside = tuple(f"{n}." for n in quantizers)
    out = {}
    for name, t in [
        *layer.named_parameters(remove_duplicate=False),
        *layer.named_buffers(remove_duplicate=False),
    ]:
        if not name.startswith(inside):
            out[name] = t
    return out


def layer_state(
    layer: nn.Module, store_weights: bool
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (CPU copies) and metadata of a layer file (module docstring)."""
    quantizers = _leaf_quantizers(layer)
    tensors: dict[str, torch.Tensor] = {}
    buffers: dict[str, dict[str, bool]] = {}
    for name, q in quantizers.items():
        persistent = set(q.state_dict(keep_vars=True))
        buffers[name] = {}
        for key, t in q.named_buffers(recurse=False):
            buffers[name][key] = key in persistent
            tensors[f"{name}.{key}"] = t
    weights = _weights(layer, quantizers) if store_weights else {}
    tensors.update(weights)
    axes = {n: list(q.axis) if isinstance(q.axis, tuple) else q.axis for n, q in quantizers.items()}
    metadata = {
        "format": LAYER_FORMAT,
        "quantizers": quantizer_plan(layer).to_json(),
        "axes": json.dumps(axes),
        "buffers": json.dumps(buffers),
        "weights": json.dumps(sorted(weights)),
    }
    return cpu_copies(tensors), metadata


class StoredLayer:
    """A layer file read and checked against the layer it will be restored into; a file that
    does not fit the layer is a ``ValueError`` saying why, and nothing is changed."""

    def __init__(self, path: Path, layer: nn.Module) -> None:
        self.path = path
        problem = self._check(layer)
        if problem:
            raise ValueError(problem)

    def _check(self, layer: nn.Module) -> str | None:
        meta = safetensors_metadata(self.path)
        if meta.get("format") != LAYER_FORMAT:
            return f"not a {LAYER_FORMAT} file"
        self.plan = Plan.from_json(meta["quantizers"], file=str(self.path))
        self.axes = json.loads(meta["axes"])
        self.buffers: dict[str, dict[str, bool]] = json.loads(meta["buffers"])
        self.weights: list[str] = json.loads(meta["weights"])
        quantizers = _leaf_quantizers(layer)
        if set(quantizers) != set(self.plan.quantizers):
            return "its quantizers differ from the stored ones"
        present = _weights(layer, quantizers)
        with safe_open(str(self.path), framework="pt") as f:
            for key in self.weights:
                if key not in present:
                    return f"{key} is not a parameter or buffer of the layer"
                stored = f.get_tensor(key)  # one tensor at a time: checked, then dropped
                if stored.shape != present[key].shape or stored.dtype != present[key].dtype:
                    return (
                        f"{key} is {stored.dtype} {list(stored.shape)}, the layer's "
                        f"{present[key].dtype} {list(present[key].shape)}"
                    )
        if self.weights and set(self.weights) != set(present):
            return "its weights differ from the stored ones: " + ", ".join(
                sorted(set(self.weights) ^ set(present))[:3]
            )
        return None

    @torch.no_grad()
    def restore(self, layer: nn.Module) -> None:
        """Quantizer attributes, axes and buffers, then weights, as stored."""
        quantizers = _leaf_quantizers(layer)
        present = _weights(layer, quantizers)
        device = next((t.device for t in present.values()), torch.device("cpu"))
        with safe_open(str(self.path), framework="pt") as f:
            for name, q in quantizers.items():
                stored = self.plan.quantizers[name]
                if q.config != stored.attributes:
                    q.set_from_attribute_config(stored.attributes)
                axis = self.axes[name]
                axis = tuple(axis) if isinstance(axis, list) else axis
                if q.axis != axis:
                    q.axis = axis
                for key, _ in list(q.named_buffers(recurse=False)):
                    delattr(q, key)
                for key, persistent in self.buffers[name].items():
                    value = f.get_tensor(f"{name}.{key}").to(device)
                    q.register_buffer(key, value, persistent=persistent)
            for key in self.weights:
                target = present[key]
                target.copy_(f.get_tensor(key).to(target.device))
