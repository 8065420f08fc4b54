"""Quant mixins for Linear/Conv/ConvTranspose, input-only layers and Embedding.

The weight is quantized where the original ``forward`` reads ``self.weight``: the mixin defines a
``weight`` property that returns ``weight_quantizer(weight)`` while ``forward`` runs and the raw
parameter otherwise (Model Optimizer's "dynamic attribute", ``QuantLinearConvBase``). The
original forward therefore runs unchanged, and subclasses that inherit it behave the same.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from qruntime.modules.base import (
    INT8_AXIS0,
    INT8_DISABLED,
    INT8_PER_TENSOR,
    QuantizerSlot,
    QuantModule,
)
from qruntime.modules.low_rank import add_low_rank_branch

__all__ = ["QuantEmbedding", "QuantInput", "QuantLinearConv"]


def _quantize_output(quantizer: nn.Module, output: Any) -> Any:
    if isinstance(output, tuple):
        return (quantizer(output[0]), *output[1:])
    return quantizer(output)


class _QuantizedWeight(QuantModule):
    """``self.weight`` is ``weight_quantizer(weight)`` inside ``forward`` (and only there)."""

    _quantize_weight = False

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        weight = self._parameters["weight"]
        if self.__dict__.get("_quantize_weight") and weight is not None:
            return self._modules["weight_quantizer"](weight)  # type: ignore[misc]
        return weight  # type: ignore[return-value]

    def _forward_quantized_weight(self, *args: Any, **kwargs: Any) -> Any:
        self.__dict__["_quantize_weight"] = True
        try:
            return super().forward(*args, **kwargs)  # type: ignore[misc]
        finally:
            self.__dict__["_quantize_weight"] = False


class QuantInput(QuantModule):
    """Norms, LeakyReLU, pooling: ``output_quantizer(forward(input_quantizer(x)))``;
    the output quantizer starts disabled (``QuantInputBase``)."""

    @classmethod
    def quantizer_slots(cls, module: nn.Module) -> list[QuantizerSlot]:
        return [
            QuantizerSlot("input_quantizer", INT8_PER_TENSOR),
            QuantizerSlot("output_quantizer", INT8_DISABLED),
        ]

    def forward(self, input: Any, *args: Any, **kwargs: Any) -> Any:
        input = self._modules["input_quantizer"](input)  # type: ignore[misc]
        return _quantize_output(
            self._modules["output_quantizer"], super().forward(input, *args, **kwargs)
        )


class QuantLinearConv(_QuantizedWeight):
    """Linear, Conv1/2/3d, ConvTranspose1/2/3d: input, output (disabled), weight (INT8 axis 0)."""

    @classmethod
    def quantizer_slots(cls, module: nn.Module) -> list[QuantizerSlot]:
        return [
            QuantizerSlot("input_quantizer", INT8_PER_TENSOR),
            QuantizerSlot("output_quantizer", INT8_DISABLED),
            QuantizerSlot("weight_quantizer", INT8_AXIS0),
        ]

    def forward(self, input: Any, *args: Any, **kwargs: Any) -> Any:
        """Input, weight and output quantizers around the original forward, plus SVDQuant's
        low-rank branch when the weight quantizer holds one (:mod:`.low_rank`)."""
        raw = input
        input = self._modules["input_quantizer"](input)  # type: ignore[misc]
        output = self._forward_quantized_weight(input, *args, **kwargs)
        output = _quantize_output(self._modules["output_quantizer"], output)
        return add_low_rank_branch(self, raw, output)


class QuantEmbedding(_QuantizedWeight):
    """Embedding: weight (INT8 per tensor), a hard-disabled input quantizer (indices cannot be
    quantized; it is never called), output (disabled)."""

    @classmethod
    def quantizer_slots(cls, module: nn.Module) -> list[QuantizerSlot]:
        return [
            QuantizerSlot("weight_quantizer", INT8_PER_TENSOR),
            QuantizerSlot("input_quantizer", INT8_DISABLED, hard_disabled=True),
            QuantizerSlot("output_quantizer", INT8_DISABLED),
        ]

    def forward(self, input: Any, *args: Any, **kwargs: Any) -> Any:
        output = self._forward_quantized_weight(input, *args, **kwargs)
        return self._modules["output_quantizer"](output)  # type: ignore[misc]
