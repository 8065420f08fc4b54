"""The alpha candidates of one ``awq_lite`` search (:mod:`qruntime.calibrate.awq_lite`): their
scales, prepared once, and the quantized scaled weights ``Q(W * s(alpha))``, kept across batches
within a memory budget.

Why: pass 2 of the search runs, per linear and per batch, every alpha: scale the input, scale and
fake-quantize the weight, multiply. Once pass 1 is over, ``W`` and ``s(alpha)`` are fixed, and the
weight quantizer is dynamic (its amax is the max of the scaled block), so ``Q(W * s(alpha))`` is
the same tensor on every batch: computed once, it is the very value the module would produce, by
the very call it would make. For a plain quantized ``nn.Linear`` (the original ``forward`` of
``nn.Linear``, a disabled output quantizer, no rotation) the module's forward reduces to
``F.linear(x * (1/s), Q(W * s), bias)``, which :func:`plain_linear_output` computes directly with
the same operations in the same order, without the quantizers' per-call work. Anything else keeps
the module's own forward with the scales set on its quantizers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from qruntime.calibrate.smoothquant import SmoothedLinear
from qruntime.modules.layers import QuantLinearConv
from qruntime.quantizer import TensorQuantizer

__all__ = [
    "CACHE_BUDGET_BYTES",
    "Candidates",
    "WeightBudget",
    "is_plain_linear",
    "plain_linear_output",
    "quantize_scaled_weight",
]

#: The quantized candidate weights of all searched layers kept at once stay under this many bytes
#: (a layer beyond it quantizes its candidates again on every batch).
CACHE_BUDGET_BYTES = 1 << 30


@dataclass
class WeightBudget:
    """Bytes left for cached candidate weights, shared by the layers of one search (by default
    :data:`CACHE_BUDGET_BYTES` as the module holds it when the search starts)."""

    bytes_left: int = field(default_factory=lambda: CACHE_BUDGET_BYTES)

    def take(self, nbytes: int) -> bool:
        """Reserve ``nbytes`` if they fit (True), else reserve nothing (False)."""
        if nbytes > self.bytes_left:
            return False
        self.bytes_left -= nbytes
        return True


def _forward_definers(module: nn.Module) -> list[type]:
    return [cls for cls in type(module).__mro__ if "forward" in vars(cls)]


def is_plain_linear(linear: SmoothedLinear) -> bool:
    """Whether ``linear.module(x)`` is exactly ``F.linear(x * pre_quant_scale, wq(W), bias)``
    while its input quantizer is disabled: a converted ``nn.Linear`` whose forward nobody
    overrides, a disabled output quantizer without a scale or rotation, an input quantizer without
    rotation that applies its ``pre_quant_scale``."""
    module, q = linear.module, linear.input_quantizer
    out = module._modules.get("output_quantizer")
    if not isinstance(module, QuantLinearConv) or not isinstance(module, nn.Linear):
        return False
    if "forward" in vars(module) or _forward_definers(module)[:2] != [QuantLinearConv, nn.Linear]:
        return False
    if not isinstance(out, TensorQuantizer) or out.is_enabled or out.pre_quant_scale is not None:
        return False
    if out.spec.rotate.enable or q.spec.rotate.enable or q.is_enabled:
        return False
    # a quantizer may keep its scale without applying it: then the forward would not scale
    probe = torch.ones(1)
    q.pre_quant_scale = probe
    try:
        return q.pre_quant_scale is not None
    finally:
        q.pre_quant_scale = None


def quantize_scaled_weight(linear: SmoothedLinear, scale: torch.Tensor) -> torch.Tensor:
    """``wq(W)`` with ``scale`` as the weight quantizer's ``pre_quant_scale``: the call the
    module's forward makes when it reads its weight. The quantizer is enabled for the call only
    and left without a scale."""
    wq = linear.weight_quantizer
    assert isinstance(wq, TensorQuantizer)
    wq.pre_quant_scale = scale
    was_enabled = wq.is_enabled
    wq.enable()
    try:
        return wq(linear.weight)
    finally:
        if not was_enabled:
            wq.disable()
        wq.pre_quant_scale = None


def plain_linear_output(
    linear: SmoothedLinear, x: torch.Tensor, input_scale: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """What the plain linear's forward returns with ``input_scale`` on its (disabled) input
    quantizer and ``weight`` as its quantized weight: ``F.linear(x * input_scale, weight, b)``."""
    return F.linear(x * input_scale, weight, linear.module.bias)


@dataclass
class Candidates:
    """Per alpha: ``s(alpha)`` (float32), the input's ``1/s`` and the weight's ``s`` in the
    weight dtype (the values the quantizers' ``pre_quant_scale`` would hold), and, once asked
    for and within the budget, the quantized scaled weights."""

    scales: list[torch.Tensor]
    input_scales: list[torch.Tensor]
    weight_scales: list[torch.Tensor]
    plain: bool
    weights: list[torch.Tensor] | None = None
    cache_refused: bool = False

    @classmethod
    def prepare(cls, linear: SmoothedLinear, scales: list[torch.Tensor]) -> Candidates:
        dtype = linear.weight.dtype
        return cls(
            scales=scales,
            input_scales=[(1 / s).to(dtype) for s in scales],
            weight_scales=[s.to(dtype) for s in scales],
            plain=is_plain_linear(linear),
        )

    def quantized_weights(
        self, linear: SmoothedLinear, budget: WeightBudget
    ) -> Sequence[torch.Tensor]:
        """Every candidate's ``Q(W * s)``: the cached list, built on the first call when it fits
        in ``budget``; otherwise computed afresh (the caller uses them one at a time)."""
        if self.weights is not None:
            return self.weights
        if not self.cache_refused:
            weight = linear.weight
            nbytes = len(self.scales) * weight.numel() * weight.element_size()
            if budget.take(nbytes):
                self.weights = [quantize_scaled_weight(linear, s) for s in self.weight_scales]
                return self.weights
            self.cache_refused = True
        return _Lazy(linear, self.weight_scales)

    def release(self) -> None:
        """Drop the cached weights (the search of this layer is over)."""
        self.weights = None


class _Lazy(Sequence[torch.Tensor]):
    """The quantized candidate weights, each computed when indexed (none kept)."""

    def __init__(self, linear: SmoothedLinear, scales: list[torch.Tensor]) -> None:
        self.linear, self.scales = linear, scales

    def __len__(self) -> int:
        return len(self.scales)

    def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]
        return quantize_scaled_weight(self.linear, self.scales[i])
