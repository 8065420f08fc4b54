"""Fused MoE experts (3-D ``gate_up_proj``/``up_proj`` and ``down_proj``) with per-expert
weight quantizers.

Hugging Face ``transformers`` 5 stores a layer's experts as two 3-D parameters: the first
projection ``[E, 2I, H]`` (``gate_up_proj``; ``up_proj`` ``[E, I, H]`` when not gated) and
``down_proj`` ``[E, H, I]``. The eager forward loops over the experts that received tokens and
calls ``F.linear(x_e, <P>[e])`` then ``F.linear(h_e, down_proj[e])``. Model Optimizer 0.47.0
quantizes these two calls: one shared input quantizer per projection (one scale for all
experts, as inference kernels use) and one weight quantizer per expert, in this order:
``<P>_input_quantizer``, ``<P>_weight_quantizers.<e>``, ``down_proj_input_quantizer``,
``down_proj_weight_quantizers.<e>``.

What is done differently, and why (the numbers are the same):

* The expert index is taken where the forward takes its slice: while our forward runs, a
  ``TorchFunctionMode`` (thread-local, removed in ``finally``) records each ``<P>[e]`` /
  ``down_proj[e]`` indexing with its projection and index, and the ``F.linear`` that receives
  that very slice is quantized with that expert's quantizer. Model Optimizer instead recovers
  the index from storage offsets and alternates gate-up/down with a toggle, replacing
  ``F.linear`` process-wide; a copied weight or a forward with a different call pattern
  silently mislabels experts there. A slice this mode could not attribute raises instead.
* The eager path is run by our forward itself, whatever ``config._experts_implementation``
  says: the model's configuration is never changed. Model Optimizer sets it to ``"eager"``
  permanently, and a later switch back to ``grouped_mm``/``batched_mm`` bypasses every expert
  quantizer without a word; here a converted module always runs the quantized eager path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from qruntime.modules.base import INT8_PER_TENSOR, QuantizerSlot, QuantModule
from qruntime.modules.convert import original_class

__all__ = [
    "QuantFusedExperts",
    "QuantNonGatedFusedExperts",
    "eager_forward",
    "fused_experts_kind",
]

_LINEARS = frozenset({F.linear, torch._C._nn.linear})
#: Where transformers defines the dispatching wrapper of ``@use_experts_implementation``.
_DISPATCH_MODULE = "transformers.integrations.moe"


def _is_3d(value: object) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 3


def fused_experts_kind(module: nn.Module) -> type[QuantFusedExperts] | None:
    """The quant mixin for a fused experts container, by Model Optimizer's structural test, or
    None: ``num_experts`` and a 3-D ``down_proj``, plus a 3-D ``gate_up_proj`` (gated) or a 3-D
    ``up_proj`` without ``gate_proj``/``gate_up_proj`` (non-gated, e.g. NemotronH)."""
    if not hasattr(module, "num_experts") or not _is_3d(getattr(module, "down_proj", None)):
        return None
    gate_up = getattr(module, "gate_up_proj", None)
    if _is_3d(gate_up):
        return QuantFusedExperts
    if _is_3d(getattr(module, "up_proj", None)):
        if getattr(module, "gate_proj", None) is None and gate_up is None:
            return QuantNonGatedFusedExperts
    return None


def eager_forward(cls: type[nn.Module]) -> Callable[..., Any]:
    """The eager forward of an experts class: the function ``@use_experts_implementation``
    wrapped (its dispatcher would pick ``grouped_mm``/``batched_mm`` per the config), or the
    class's own forward when it has no dispatcher."""
    forward = cls.forward
    globals_ = getattr(forward, "__globals__", {})
    wrapped = getattr(forward, "__wrapped__", None)
    if wrapped is not None and globals_.get("__name__") == _DISPATCH_MODULE:
        return wrapped
    return forward


def _expert_index(index: object) -> int | None:
    """``index`` as an int if it picks one expert (an int or a 0-d integer tensor)."""
    if isinstance(index, int) and not isinstance(index, bool):
        return index
    if isinstance(index, torch.Tensor) and index.dim() == 0 and not index.is_floating_point():
        return int(index)
    return None


class _ExpertCalls(TorchFunctionMode):
    """Records ``<P>[e]``/``down_proj[e]`` slices, quantizes the ``F.linear`` that uses one."""

    def __init__(self, experts: QuantFusedExperts) -> None:
        super().__init__()
        self.experts = experts
        first = experts.first_projection
        self.params = {
            id(p): (p, name)
            for name in (first, "down_proj")
            if isinstance(p := getattr(experts, name, None), torch.Tensor)
        }
        self.slices: dict[int, tuple[torch.Tensor, str, int | None]] = {}
        self.quantized = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func is torch.Tensor.__getitem__:
            result = func(*args, **kwargs)
            owner = self.params.get(id(args[0]))
            if owner is not None and owner[0] is args[0] and isinstance(result, torch.Tensor):
                self.slices[id(result)] = (result, owner[1], _expert_index(args[1]))
            return result
        if func in _LINEARS:
            return self._linear(func, *args, **kwargs)
        return func(*args, **kwargs)

    def _linear(self, func, input, weight, bias=None):  # type: ignore[no-untyped-def]
        entry = self.slices.get(id(weight))
        if entry is None or entry[0] is not weight:
            if any(_same_storage(weight, p) for p, _ in self.params.values()):
                raise RuntimeError(
                    f"{type(self.experts).__name__}: F.linear received an expert weight that "
                    "was not taken as <proj>[expert] (copied or sliced otherwise); cannot tell "
                    "which expert's quantizer applies"
                )
            return func(input, weight, bias)
        _, projection, index = entry
        if index is None:
            raise RuntimeError(
                f"{type(self.experts).__name__}: {projection} was indexed with something other "
                "than one expert index; cannot tell which expert's quantizer applies"
            )
        modules = self.experts._modules
        input = modules[f"{projection}_input_quantizer"](input)  # type: ignore[misc]
        weight = modules[f"{projection}_weight_quantizers"][index](weight)  # type: ignore[index]
        self.quantized += 1
        return func(input, weight, bias)


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    try:
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # meta or wrapper tensors
        return False


class QuantFusedExperts(QuantModule):
    """Gated fused experts: ``gate_up_proj`` then ``down_proj`` per routed expert."""

    #: The 3-D parameter of the first projection (``up_proj`` for non-gated experts).
    first_projection = "gate_up_proj"

    @classmethod
    def quantizer_slots(cls, module: nn.Module) -> list[QuantizerSlot]:
        """Model Optimizer's order: first projection's input, its per-expert weights, then the
        same for ``down_proj``; all INT8 per tensor by default (a plain ``TensorQuantizer``)."""
        n = int(module.num_experts)  # type: ignore[arg-type]
        slots = []
        for projection in (cls.first_projection, "down_proj"):
            slots.append(QuantizerSlot(f"{projection}_input_quantizer", INT8_PER_TENSOR))
            slots.extend(
                QuantizerSlot(f"{projection}_weight_quantizers.{e}", INT8_PER_TENSOR)
                for e in range(n)
            )
        return slots

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The class's eager forward with every expert linear quantized (whatever experts
        implementation the model's configuration names)."""
        calls = _ExpertCalls(self)
        with calls:
            output = eager_forward(original_class(self))(self, *args, **kwargs)
        if calls.slices and not calls.quantized:
            raise RuntimeError(
                f"{type(self).__name__}: the eager forward took expert weights but never passed "
                "one to F.linear, so no expert was quantized; register a quant module for this "
                "experts class (qruntime.register)"
            )
        return output


class QuantNonGatedFusedExperts(QuantFusedExperts):
    """Non-gated fused experts (NemotronH): ``up_proj`` then ``down_proj`` per routed expert."""

    first_projection = "up_proj"
