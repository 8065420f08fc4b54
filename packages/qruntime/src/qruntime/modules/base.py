"""The quant mixin every converted module type derives from, and its quantizer slots.

A quant mixin declares its quantizers as *slots* (``quantizer_slots``): name relative to the
module, module-default attributes and whether it is hard-disabled. The same list feeds
:func:`qruntime.inventory` (which must not touch the model and works on the meta device) and the
conversion (which creates one ``TensorQuantizer`` per slot, in slot order, so that ``state_dict``
and ``named_modules`` order match Model Optimizer's, docs/manifest-and-plan.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import torch
from qconfig.attributes import QuantizerAttributeConfig
from qconfig.spec import QuantizerSpec, resolve_spec
from torch import nn

from qruntime.quantizer import HardDisabledTensorQuantizer, SequentialQuantizer, TensorQuantizer

__all__ = [
    "INT8_AXIS0",
    "INT8_DISABLED",
    "INT8_PER_TENSOR",
    "QuantModule",
    "QuantizerSlot",
    "register_transposed_weight",
    "weight_info",
]

#: Module-default descriptors (Model Optimizer's ``QUANT_DESC_8BIT_*``; a manifest's ``defaults``).
INT8_PER_TENSOR = QuantizerAttributeConfig(num_bits=8)
INT8_AXIS0 = QuantizerAttributeConfig(num_bits=8, axis=0)
INT8_DISABLED = QuantizerAttributeConfig(num_bits=8, enable=False)


@dataclass(frozen=True)
class QuantizerSlot:
    """One quantizer a converted module gets, as conversion leaves it.

    ``attribute`` is ``"weight_quantizer"`` or, for quantizer lists, ``"<name>.<index>"`` (an
    ``nn.ModuleList``, e.g. fused experts' ``gate_up_proj_weight_quantizers.0``).
    """

    attribute: str
    defaults: QuantizerAttributeConfig = field(default_factory=lambda: INT8_PER_TENSOR)
    hard_disabled: bool = False

    @cached_property
    def spec(self) -> QuantizerSpec:
        """``defaults`` resolved once: every module converted with this slot shares it."""
        return resolve_spec(self.defaults)

    def build(self) -> TensorQuantizer:
        cls = HardDisabledTensorQuantizer if self.hard_disabled else TensorQuantizer
        return cls(self.defaults, self.spec)


def weight_info(module: nn.Module) -> tuple[tuple[int, ...] | None, str | None]:
    """Shape and dtype name (``"float32"``) of ``module.weight``, or ``(None, None)``."""
    try:
        weight = getattr(module, "weight", None)
    except AttributeError:
        weight = None
    if not isinstance(weight, torch.Tensor):
        return None, None
    return tuple(weight.shape), str(weight.dtype).removeprefix("torch.")


#: Classes whose modules, before conversion, store ``weight`` transposed to the ``[out, in]``
#: layout their weight quantizer sees after conversion (GPT-2's ``Conv1D``: a provider adds it).
_TRANSPOSED_UNTIL_CONVERTED: set[type[nn.Module]] = set()


def register_transposed_weight(cls: type[nn.Module]) -> None:
    """Say that unconverted ``cls`` modules store ``weight`` as ``[in, out]`` and that
    conversion transposes it: :func:`quantized_weight` then answers with the transposed view,
    so that plan and state-file checks see the shape the quantizer will see."""
    _TRANSPOSED_UNTIL_CONVERTED.add(cls)


def quantized_weight(module: nn.Module, attribute: str) -> torch.Tensor | None:
    """The tensor a weight quantizer slot quantizes, by Model Optimizer's naming rule (the one
    rule for calibration, ``check_plan`` and state files): ``weight_quantizer`` → ``weight``,
    ``<w>_weight_quantizer`` → ``<w>``, ``<w>_weight_quantizers.<i>`` → ``<w>[i]``; None for
    any other slot (inputs, outputs, attention operands), whose rank is known only at the first
    forward."""
    params = module._parameters
    if attribute == "weight_quantizer":
        weight = params.get("weight")
        if weight is not None and type(module) in _TRANSPOSED_UNTIL_CONVERTED:
            return weight.t()  # only the exact class: a converted module's class is Quant<C>
        return weight
    if attribute.endswith("_weight_quantizer"):
        return params.get(attribute[: -len("_weight_quantizer")])
    head, _, index = attribute.rpartition(".")
    if head.endswith("_weight_quantizers") and index.isdigit():
        weight = params.get(head[: -len("_weight_quantizers")])
        if weight is not None and weight.dim() > 0 and int(index) < weight.shape[0]:
            return weight[int(index)]
    return None


class QuantModule(nn.Module):
    """Base of quant mixins; a converted module's class is ``Quant<C>(mixin, C)``.

    Subclasses implement :meth:`quantizer_slots` and usually ``forward``. The default
    :meth:`iter_weights_for_calibration` pairs ``<w>_weight_quantizer`` (or ``weight_quantizer``)
    with the parameter ``<w>`` (``weight``) and ``<w>_weight_quantizers.<i>`` with ``<w>[i]``.
    """

    @classmethod
    def quantizer_slots(cls, module: nn.Module) -> list[QuantizerSlot]:
        """The quantizers ``module`` (not yet converted) gets, in creation order."""
        raise NotImplementedError(f"{cls.__name__} must define quantizer_slots()")

    @classmethod
    def reported_weight(cls, module: nn.Module) -> tuple[tuple[int, ...] | None, str | None]:
        """The weight shape and dtype the manifest lists for ``module`` (block-size checks run
        on it). ``module.weight`` as stored, unless the mixin quantizes it in another layout —
        e.g. a Linear-like module that stores its weight transposed reports ``[out, in]``."""
        return weight_info(module)

    def _setup(self, slots: Sequence[QuantizerSlot] | None = None) -> None:
        """Create the quantizers of ``slots`` — the site's, so that the converted module has
        exactly what the manifest lists — or of ``quantizer_slots(self)`` (conversion, after the
        class swap). A mixin whose conversion must do more overrides this and calls super."""
        lists: dict[str, nn.ModuleList] = {}
        for slot in type(self).quantizer_slots(self) if slots is None else slots:
            quantizer = slot.build()
            head, sep, index = slot.attribute.partition(".")
            if not sep:
                self.add_module(head, quantizer)
                continue
            if not index.isdigit() or "." in index:
                raise ValueError(f"unsupported quantizer slot name {slot.attribute!r}")
            container = lists.get(head)
            if container is None:
                container = lists[head] = nn.ModuleList()
                self.add_module(head, container)
            if int(index) != len(container):
                raise ValueError(f"quantizer list {head!r} slots must be numbered 0, 1, ...")
            container.append(quantizer)

    def iter_weights_for_calibration(
        self,
    ) -> Iterator[tuple[torch.Tensor, TensorQuantizer | SequentialQuantizer]]:
        """``(weight tensor, its quantizer)`` pairs that max calibration reads directly
        (weights are calibrated from the tensor itself, not from the forward loop's data)."""
        for name, module in self._modules.items():
            if name.endswith("_weight_quantizers") and isinstance(module, nn.ModuleList):
                slots = ((f"{name}.{i}", quantizer) for i, quantizer in enumerate(module))
            else:
                slots = ((name, module),)
            for attribute, quantizer in slots:
                weight = quantized_weight(self, attribute)
                if weight is not None:
                    yield weight, quantizer  # type: ignore[misc]
