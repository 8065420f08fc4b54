"""``effective_bits(model)``: how many bits a quantized model spends per weight element.

Why a number of its own: "INT4" says little about size — INT4 with one float32 scale per 128
weights costs 4.25 bits, NVFP4 with an FP8 scale per 16 costs 4.5, INT8 per output channel
costs 8 + 32/in_features. The CLI report and the accuracy benchmark print this so that formats
can be compared on what they actually store.

The formula, per quantized weight tensor W with n elements (its module's ``weight_quantizer``
enabled):

* ``effective_bits`` from the config, where the config defines it (Model Optimizer's NVFP4
  presets set 4.5: 4-bit elements plus an 8-bit scale per 16). Otherwise
* element bits — ``num_bits`` for integers, ``1 + E + M`` for ``(E, M)`` floats — plus
  ``scale_bits * scales / n``: scales = 1 per tensor, one per kept ``axis`` index per channel,
  one per block for ``block_sizes`` (a dimension absent from ``block_sizes`` is split into
  single rows, ``None`` spans the whole dimension); ``scale_bits`` from ``block_sizes`` (E4M3 =
  8, E8M0 = 8) or 32 where the config does not define one (qruntime stores ``amax`` in float32).
  Block scales that are FP8 (NVFP4's two-level scaling) add one float32 per-tensor scale.
* A ``SequentialQuantizer`` stores the weight in its narrowest element format; each other element
  adds one float32 per-tensor scale.
* SVDQuant's unquantized low-rank branch (``r x cin`` and ``cout x r`` factors in the weight's
  dtype) is stored beside the quantized residual: its bits are spread over the weight's
  elements (rank 32 on a 4096 x 4096 weight in bfloat16 adds 0.25 bits per element).

The average is element-weighted: ``sum(bits_i * n_i) / sum(n_i)``. ``all_bits`` averages over
every weight that has a weight quantizer, counting unquantized ones at their dtype's width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from qconfig.attributes import QuantizerAttributeConfig
from torch import nn

from qruntime.modules.low_rank import low_rank_factors
from qruntime.quantizer import SequentialQuantizer, TensorQuantizer

__all__ = ["EffectiveBits", "effective_bits", "weight_bits"]

_FLOAT_SCALE_BITS = 32


@dataclass(frozen=True)
class EffectiveBits:
    """Average bits per weight element: over quantized weights, and over all weights."""

    bits: float  # over quantized weights (nan when none is quantized)
    quantized_tensors: int
    quantized_elements: int
    all_bits: float  # over every weight with a weight quantizer (unquantized at dtype width)
    all_tensors: int
    all_elements: int

    def describe(self) -> str:
        if not self.quantized_tensors:
            return "no weight is quantized"
        return (
            f"{self.bits:.3f} bits per weight element over {self.quantized_tensors} quantized "
            f"weights ({self.quantized_elements / 1e6:.2f}M elements); "
            f"{self.all_bits:.3f} over all {self.all_tensors} weights with a weight quantizer"
        )


def _format_bits(bits: Any) -> int:
    if isinstance(bits, tuple):
        exponent, mantissa = bits
        return 8 if (exponent, mantissa) == (8, 0) else 1 + exponent + mantissa  # E8M0: no sign
    return int(bits)


def _scale_count(shape: tuple[int, ...], attrs: QuantizerAttributeConfig) -> int:
    ndim = len(shape)
    blocks = {k: v for k, v in (attrs.block_sizes or {}).items() if isinstance(k, int)}
    if blocks:
        count = 1
        for dim, size in enumerate(shape):
            key = dim if dim in blocks else dim - ndim if dim - ndim in blocks else None
            if key is None:
                count *= size  # every row along an unblocked dimension has its own blocks
            else:
                block = blocks[key]
                count *= 1 if block is None else math.ceil(size / block)
        return count
    if attrs.axis is None:
        return 1
    axes = attrs.axis if isinstance(attrs.axis, tuple) else (attrs.axis,)
    return math.prod(shape[a] for a in axes)


def weight_bits(shape: tuple[int, ...], attrs: QuantizerAttributeConfig) -> float:
    """Bits per element of a weight of ``shape`` stored in the format ``attrs`` (module doc)."""
    if attrs.effective_bits is not None:
        return float(attrs.effective_bits)
    numel = math.prod(shape)
    scale_bits_spec = (attrs.block_sizes or {}).get("scale_bits")
    scale_bits = _FLOAT_SCALE_BITS if scale_bits_spec is None else _format_bits(scale_bits_spec)
    bits = _format_bits(attrs.num_bits) + scale_bits * _scale_count(shape, attrs) / numel
    if scale_bits_spec is not None and tuple(scale_bits_spec) != (8, 0):
        bits += _FLOAT_SCALE_BITS / numel  # FP8 block scales are scaled by a per-tensor amax
    return bits


def _quantizer_bits(shape: tuple[int, ...], quantizer: nn.Module) -> float:
    if isinstance(quantizer, SequentialQuantizer):
        elements = [q.config for q in quantizer if q.is_enabled]
        narrowest = min(elements, key=lambda a: _format_bits(a.num_bits))
        extra = (len(elements) - 1) * _FLOAT_SCALE_BITS / math.prod(shape)
        return weight_bits(shape, narrowest) + extra
    assert isinstance(quantizer, TensorQuantizer)
    return weight_bits(shape, quantizer.config)


def _low_rank_bits(numel: int, quantizer: nn.Module) -> float:
    """SVDQuant's factors, per weight element (0 without a branch)."""
    factors = low_rank_factors(quantizer)
    if factors is None:
        return 0.0
    return sum(f.numel() * f.element_size() * 8 for f in factors) / numel


def effective_bits(model: nn.Module) -> EffectiveBits:
    """Element-weighted average bits of the model's weights that have a weight quantizer."""
    q_bits = q_elements = q_tensors = 0.0
    all_bits = all_elements = all_tensors = 0.0
    for module in model.modules():
        quantizer = module._modules.get("weight_quantizer")
        weight = getattr(module, "weight", None)
        if quantizer is None or not isinstance(weight, torch.Tensor):
            continue
        shape = tuple(weight.shape)
        numel = weight.numel()
        if quantizer.is_enabled:
            bits = _quantizer_bits(shape, quantizer) + _low_rank_bits(numel, quantizer)
            q_bits += bits * numel
            q_elements += numel
            q_tensors += 1
        else:
            bits = weight.element_size() * 8
        all_bits += bits * numel
        all_elements += numel
        all_tensors += 1
    return EffectiveBits(
        bits=q_bits / q_elements if q_elements else math.nan,
        quantized_tensors=int(q_tensors),
        quantized_elements=int(q_elements),
        all_bits=all_bits / all_elements if all_elements else math.nan,
        all_tensors=int(all_tensors),
        all_elements=int(all_elements),
    )
