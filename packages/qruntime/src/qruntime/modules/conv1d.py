"""GPT-2's ``Conv1D`` (``transformers.pytorch_utils.Conv1D``) quantized as the linear it is.

Why a conversion that rewrites the weight: ``Conv1D`` computes ``x @ W + b`` with ``W`` stored
``[in, out]``, while every weight format, block axis and calibration algorithm of qruntime (max,
mse, smoothquant, AWQ, GPTQ, SVDQuant, local Hessian) reads a weight in ``nn.Linear``'s
``[out, in]`` layout. Model Optimizer 0.47.0 converts the module into a linear: the weight is
replaced by a new ``Parameter`` holding ``W.T`` (persistently: ``state_dict`` shows
``[out, in]``), ``in_features``/``out_features`` are set, and the forward becomes
``F.linear(Q_in(x), Q_w(W), b)`` with ``nn.Linear``'s three quantizers. Doing the same keeps
amax shapes, ``state_dict`` keys and shapes, and outputs equal to Model Optimizer's, and lets
every algorithm treat the module as a linear without a special case.

The module keeps its class identity (``Quant<Conv1D>``, still an instance of ``Conv1D``); the
transpose lives in ``_setup``, so rollback (which restores ``__dict__``, hence the original
``Parameter`` object) undoes it, and :meth:`QuantConv1D.reported_weight` reports ``[out, in]``
for an unconverted module and for a converted one alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from qruntime.modules.base import QuantizerSlot, QuantModule
from qruntime.modules.convert import is_converted
from qruntime.modules.layers import QuantLinearConv

__all__ = ["QuantConv1D", "linear_layout_weight"]


def linear_layout_weight(weight: nn.Parameter) -> nn.Parameter:
    """A new ``Parameter`` holding ``weight.T`` contiguous (``[out, in]``), with the original's
    ``requires_grad``. A new object, not a view: the transpose must survive ``state_dict`` and
    the original object must stay untouched for rollback."""
    with torch.no_grad():
        transposed = weight.detach().t().contiguous()
    return nn.Parameter(transposed, requires_grad=weight.requires_grad)


class _LinearForward(QuantModule):
    """``nn.Linear``'s forward on the transposed weight, placed in the MRO before ``Conv1D`` so
    that the quantized-weight wrapper's ``super().forward`` lands here, not on ``addmm``."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.linear(input, self.weight, self.bias)


class QuantConv1D(QuantLinearConv, _LinearForward):
    """``Conv1D`` as a quantized linear: input, output (disabled) and weight (INT8 axis 0)
    quantizers, exactly ``nn.Linear``'s slots, on a weight transposed to ``[out, in]``."""

    @classmethod
    def quantizer_slots(cls, module: nn.Module) -> list[QuantizerSlot]:
        return QuantLinearConv.quantizer_slots(module)

    @classmethod
    def reported_weight(cls, module: nn.Module) -> tuple[tuple[int, ...] | None, str | None]:
        """``[out, in]`` whether or not ``module`` is converted yet (the manifest of a model
        must not depend on it)."""
        weight = module._parameters.get("weight")
        if not isinstance(weight, torch.Tensor):
            return None, None
        shape = tuple(weight.shape)
        if not is_converted(module) and len(shape) == 2:
            shape = (shape[1], shape[0])
        return shape, str(weight.dtype).removeprefix("torch.")

    def _setup(self, slots: Sequence[QuantizerSlot] | None = None) -> None:
        weight = self._parameters["weight"]
        if weight is None or weight.dim() != 2:
            raise ValueError(f"Conv1D weight must be 2-D [in, out], got {weight!r}")
        self._parameters["weight"] = linear_layout_weight(weight)
        self.out_features, self.in_features = self._parameters["weight"].shape
        super()._setup(slots)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"

    def __repr__(self) -> Any:
        # Conv1D's own __repr__ reads nf/nx only; show the quantizers like other modules
        return nn.Module.__repr__(self)
