"""Fused MoE experts (``gate_up_proj`` ``[E, 2I, H]`` / ``down_proj`` ``[E, H, I]``) split into
per-expert linears for export.

Why split: checkpoint consumers (vLLM, TensorRT-LLM, SGLang) load experts as one linear per
expert and projection, and Model Optimizer 0.47.0's exporter writes them so: expert ``e`` of a
gated container becomes ``<experts>.<e>.gate_proj`` (rows ``[:I]`` of ``gate_up_proj[e]``),
``<experts>.<e>.up_proj`` (rows ``[I:]``) and ``<experts>.<e>.down_proj``; a non-gated one
``up_proj`` and ``down_proj``. Gate and up share their expert's weight quantizer, so a per-tensor
scale is the same for both and a per-channel or block scale is split by rows with the weight.
The projection's shared input quantizer gives every expert the same input scale.

The codes are computed once on the whole ``[2I, H]`` expert weight with the expert's own
quantizer (and checked against its fake quantization there), then split, so the split can never
round differently from the model that was evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from qruntime.export.errors import ExportError
from qruntime.export.weights import QuantizedWeight, quantize_weight
from qruntime.modules.fused_experts import QuantFusedExperts
from qruntime.quantizer import TensorQuantizer

__all__ = ["ExpertProjection", "expert_projections", "is_fused_experts"]


class _Projection(nn.Module):
    """Stand-in for one expert's linear: its 2-D ``[out, in]`` weight, no bias."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().contiguous(), requires_grad=False)


@dataclass
class ExpertProjection:
    """One expert projection as a linear: its name, stand-in module, quantized weight, and the
    shared input quantizer of its projection (``input_name`` labels errors)."""

    name: str
    module: nn.Module
    weight: QuantizedWeight
    input_name: str
    input_quantizer: TensorQuantizer


def is_fused_experts(module: nn.Module) -> bool:
    """Whether ``module`` is a converted fused experts container."""
    return isinstance(module, QuantFusedExperts)


def _rows(t: torch.Tensor | None, out: int, rows: slice) -> torch.Tensor | None:
    """``t`` cut to ``rows`` when it has one entry (or block) row per output row; a per-tensor
    value is shared as it is."""
    if t is None or t.numel() <= 1:
        return t
    if t.shape[0] == out:
        return t[rows].contiguous()
    if t.numel() % out == 0:
        return t.reshape(out, -1)[rows].contiguous()
    raise ExportError(f"a scale of shape {tuple(t.shape)} cannot be split by {out} output rows")


def _split(qw: QuantizedWeight, rows: slice) -> QuantizedWeight:
    out = qw.codes.shape[0]
    return replace(
        qw,
        codes=qw.codes[rows].contiguous(),
        scale=_rows(qw.scale, out, rows),
        amax=_rows(qw.amax, out, rows),
        fake_factor=_rows(qw.fake_factor, out, rows),
    )


def _quantizers(name: str, module: nn.Module, projection: str) -> list[TensorQuantizer] | None:
    """The per-expert weight quantizers of ``projection`` if all are enabled, None if none is."""
    qs = list(getattr(module, f"{projection}_weight_quantizers"))
    enabled = [isinstance(q, TensorQuantizer) and q.is_enabled for q in qs]
    if all(enabled):
        return qs
    if any(enabled):
        off = enabled.index(False)
        raise ExportError(
            f"{name}.{projection}_weight_quantizers.{off}: disabled while other experts of the "
            "same projection are quantized; a checkpoint quantizes all experts of a projection "
            "alike: enable or disable them together"
        )
    iq = getattr(module, f"{projection}_input_quantizer")
    if isinstance(iq, TensorQuantizer) and iq.is_enabled:
        raise ExportError(
            f"{name}.{projection}_input_quantizer: input quantization without weight "
            "quantization has no checkpoint field"
        )
    return None


def expert_projections(name: str, module: QuantFusedExperts) -> list[ExpertProjection]:
    """Every quantized expert projection of the container ``name``, in Model Optimizer's
    order (expert by expert: gate, up, down); empty when its experts are not quantized."""
    first = module.first_projection
    gated = first == "gate_up_proj"
    result: list[ExpertProjection] = []
    for projection in (first, "down_proj"):
        qs = _quantizers(name, module, projection)
        if qs is None:
            continue
        weights = getattr(module, projection).detach()
        iq = getattr(module, f"{projection}_input_quantizer")
        for e, wq in enumerate(qs):
            qw = quantize_weight(f"{name}.{projection}_weight_quantizers.{e}", weights[e], wq)
            if projection == first and gated:
                half = weights.shape[1] // 2
                parts = [("gate_proj", slice(0, half)), ("up_proj", slice(half, None))]
            else:
                parts = [("up_proj" if projection == first else "down_proj", slice(None))]
            for leaf, rows in parts:
                result.append(
                    ExpertProjection(
                        f"{name}.{e}.{leaf}",
                        _Projection(weights[e][rows]),
                        _split(qw, rows),
                        f"{name}.{projection}_input_quantizer",
                        iq,
                    )
                )
    order = {"gate_proj": 0, "up_proj": 1, "down_proj": 2}

    def key(p: ExpertProjection) -> tuple[int, int]:
        e, leaf = p.name[len(name) + 1 :].split(".")
        return int(e), order[leaf]

    return sorted(result, key=key)
