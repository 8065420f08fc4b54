"""``SequentialQuantizer``: ``Q_n(...Q_1(x))``, one amax per element (docs/numerics.md,
"Sequential quantizers"), and the test for "is this module a quantizer"."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from qconfig.attributes import QuantizerAttributeConfig
from qconfig.spec import QuantizerSpec
from torch import nn

from qruntime.quantizer.tensor import TensorQuantizer

__all__ = ["SequentialQuantizer", "is_quantizer"]


class SequentialQuantizer(nn.Sequential):
    """``Q_n(...Q_1(x))`` with one amax per element.

    docs/numerics.md, 'Sequential quantizers'; docs/model-optimizer-rules.md, 'Quantizer names
    and sequential quantizers'.

    Children are named ``<name>.0``, ``<name>.1``; reads like ``is_enabled`` answer for the
    container (true when any element is on), calls broadcast to every element.
    """

    def __init__(self, *quantizers: TensorQuantizer) -> None:
        super().__init__(*quantizers)

    def __iter__(self) -> Iterator[TensorQuantizer]:  # type: ignore[override]
        return iter(self._modules.values())  # type: ignore[arg-type]

    def set_from_attribute_config(
        self,
        config: QuantizerAttributeConfig
        | Mapping[str, Any]
        | list[QuantizerAttributeConfig]
        | tuple[QuantizerAttributeConfig, ...],
        spec: QuantizerSpec | tuple[QuantizerSpec, ...] | None = None,
    ) -> None:
        """A list is zipped with the elements (shorter wins); a single set is broadcast.
        ``spec``: the same resolved (a plan carries it)."""
        if isinstance(config, (list, tuple)):
            specs = spec if isinstance(spec, tuple) else (None,) * len(config)
            for quantizer, attrs, one in zip(self, config, specs, strict=False):
                quantizer.set_from_attribute_config(attrs, one)
        else:
            for quantizer in self:
                quantizer.set_from_attribute_config(config, spec)

    @property
    def is_enabled(self) -> bool:
        return any(q.is_enabled for q in self)

    def enable(self) -> None:
        for q in self:
            q.enable()

    def disable(self) -> None:
        for q in self:
            q.disable()

    @property
    def config(self) -> tuple[QuantizerAttributeConfig, ...]:
        return tuple(q.config for q in self)

    def attributes(self) -> list[dict[str, Any]]:
        return [q.attributes() for q in self]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for quantizer in self:
            x = quantizer(x)
        return x


def is_quantizer(module: nn.Module) -> bool:
    """A ``TensorQuantizer`` or ``SequentialQuantizer``: what config patterns can select.

    docs/model-optimizer-rules.md, 'Matching'.
    """
    return isinstance(module, (TensorQuantizer, SequentialQuantizer))
