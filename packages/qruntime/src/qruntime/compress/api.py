"""``compress(model, config)``: replace the weights of a quantized model by their packed form.

Selection follows Model Optimizer's ``CompressConfig`` (docs/model-optimizer-rules.md, 'Config
objects'): each ``compress`` pattern is matched with ``fnmatch`` against the *weight quantizer*
names (``<layer>.weight_quantizer``), in order, the last match deciding; a ``"default"`` key
sets the answer for unmatched quantizers (else they are left alone). Unlike Model Optimizer,
whose compressed layers run its real-quant arithmetic, the packed weight decodes to exactly
the fake-quantized weight, so the compressed model's outputs equal the fake-quant model's.

``quant_gemm`` is accepted for Model Optimizer's configs; the layers dequantize on the fly
whatever its value, because a low-precision GEMM (``torch._scaled_mm``) accumulates differently
and the outputs would no longer equal the fake-quant model's.

All layers are encoded and checked first; the model changes only when every selected layer
packs (all-or-nothing), and a layer that cannot be packed is a :class:`CompressionError` that
names it and says why.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

import torch
from qconfig.compress import CompressConfig
from torch import nn

from qruntime.compress.codecs import CompressionError, Encoded, encode
from qruntime.compress.layer import PACKED_NAME, PackedWeight, compressed_class, is_compressed
from qruntime.modules.convert import is_converted
from qruntime.modules.layers import QuantEmbedding, QuantLinearConv
from qruntime.quantizer import SequentialQuantizer, TensorQuantizer

__all__ = ["CompressionError", "compress", "compressed_layers", "selected_quantizers"]

WEIGHT_QUANTIZER = "weight_quantizer"


def _as_config(config: CompressConfig | Mapping[str, Any] | None) -> CompressConfig:
    if config is None:
        return CompressConfig()
    if isinstance(config, CompressConfig):
        return config
    return CompressConfig.model_validate(dict(config))


def _decision(name: str, patterns: Mapping[str, bool]) -> bool | None:
    decided = patterns.get("default")
    for pattern, value in patterns.items():
        if pattern != "default" and fnmatch.fnmatch(name, pattern):
            decided = value
    return decided


def _weight_quantizers(model: nn.Module) -> list[tuple[str, str, str]]:
    """``(quantizer name, layer name, attribute)`` of every weight quantizer a converted layer
    owns itself (``weight_quantizer``, ``<w>_weight_quantizer``, ``<w>_weight_quantizers.<i>``);
    a layer's children (an attention module's projections) are layers of their own."""
    out = []
    for name, module in model.named_modules():
        if not is_converted(module) and not is_compressed(module):
            continue
        for child, sub in module._modules.items():
            if WEIGHT_QUANTIZER not in child:
                continue
            if isinstance(sub, nn.ModuleList) and child.endswith("_weight_quantizers"):
                slots = [(f"{child}.{i}", q) for i, q in enumerate(sub)]
            else:
                slots = [(child, sub)]
            for attribute, quantizer in slots:
                if isinstance(quantizer, (TensorQuantizer, SequentialQuantizer)):
                    out.append((f"{name}.{attribute}" if name else attribute, name, attribute))
    return out


def selected_quantizers(
    model: nn.Module, config: CompressConfig | Mapping[str, Any] | None = None
) -> list[str]:
    """The weight quantizer names ``config`` selects for compression (every weight quantizer of
    a converted layer that the patterns select, including ones without a packed form)."""
    patterns = _as_config(config).compress
    return [q for q, _, _ in _weight_quantizers(model) if _decision(q, patterns)]


def _layer_reason(module: nn.Module, attribute: str, quantizer: nn.Module) -> str | None:
    if not isinstance(module, (QuantLinearConv, QuantEmbedding)):
        return (
            f"{type(module).__name__} is not a Linear/Conv/Embedding-like layer whose forward "
            "reads one `weight`; only those have a compressed form"
        )
    if attribute != WEIGHT_QUANTIZER:
        return f"its quantizer {attribute!r} is not the layer's weight quantizer"
    if isinstance(quantizer, SequentialQuantizer):
        return (
            "its weight quantizer is sequential (e.g. W4A8's INT4 then FP8): no single packed form"
        )
    if not isinstance(quantizer, TensorQuantizer):
        return f"its weight quantizer is a {type(quantizer).__name__}"
    if quantizer.is_calibrating:
        return "its weight quantizer is still calibrating"
    if quantizer.pre_quant_scale is not None:
        return (
            "its weight quantizer has a pre_quant_scale (the packed weight would have to carry it)"
        )
    if module._parameters.get("weight") is None:
        return "it has no `weight` parameter"
    return None


@torch.no_grad()
def compress(
    model: nn.Module, config: CompressConfig | Mapping[str, Any] | None = None
) -> dict[str, str]:
    """Pack the weights of the layers ``config`` selects (default: every weight quantizer).

    Returns ``{layer: what happened}``: the packed format and size, or why an unquantized layer
    was left (a disabled weight quantizer). Raises :class:`CompressionError` — before anything
    changes — for a selected layer whose quantizer has no packed form, naming it and the reason.
    The float weight Parameters of compressed layers are dropped from the model.
    """
    cfg = _as_config(config)
    report: dict[str, str] = {}
    planned: list[tuple[str, nn.Module, Encoded]] = []
    for qname, layer_name, attribute in _weight_quantizers(model):
        if not _decision(qname, cfg.compress):
            continue
        module = model.get_submodule(layer_name) if layer_name else model
        quantizer = model.get_submodule(qname)
        if is_compressed(module):
            report[layer_name] = "already compressed"
            continue
        if isinstance(quantizer, (TensorQuantizer, SequentialQuantizer)) and not (
            quantizer.is_enabled
        ):
            report[layer_name] = "left: weight quantizer disabled"
            continue
        reason = _layer_reason(module, attribute, quantizer)
        if reason is not None:
            raise CompressionError(f"cannot compress {layer_name}: {reason}")
        assert isinstance(quantizer, TensorQuantizer)
        weight = module._parameters["weight"]
        assert weight is not None
        expected = quantizer(weight)
        enc = encode(
            weight,
            quantizer.spec,
            quantizer.amax,
            quantizer.global_amax,
            expected,
            layer_name,
        )
        planned.append((layer_name, module, enc))
    for layer_name, module, enc in planned:
        weight = module._parameters.pop("weight")
        module.add_module(PACKED_NAME, PackedWeight(enc))
        module.__class__ = compressed_class(type(module))
        saved = weight.numel() * weight.element_size() - enc.nbytes()
        report[layer_name] = f"{_label(enc)}: {enc.nbytes()} bytes ({saved} saved)"
        del weight
    return report


def _label(enc: Encoded) -> str:
    if enc.kind == "int":
        return f"int{enc.num_bits}"
    if enc.kind == "mx":
        return "mxfp4" if enc.num_bits == 4 else "mxfp8"
    return enc.kind


def compressed_layers(model: nn.Module) -> dict[str, PackedWeight]:
    """Every compressed layer of ``model`` and its packed weight."""
    return {
        name: module._modules[PACKED_NAME]  # type: ignore[misc]
        for name, module in model.named_modules()
        if is_compressed(module)
    }
