"""Convert one module in place: swap its class to ``Quant<C>`` and create its quantizers.

This is Model Optimizer's conversion (config-semantics §7.1): the module object stays the same
(hooks, parameters and buffers untouched), its ``__class__`` becomes the class generated for it
and the quant mixin's ``_setup`` adds one quantizer per slot. Undoing it (apply.py's rollback)
means restoring ``__class__`` and ``__dict__``.
"""

from __future__ import annotations

from torch import nn

from qruntime.registry import Registration, generated_class

__all__ = ["convert_module", "is_converted"]


def is_converted(module: nn.Module) -> bool:
    """Whether ``module`` already runs a quant mixin's forward."""
    return "_qruntime_original" in type(module).__dict__


def convert_module(module: nn.Module, registration: Registration) -> nn.Module:
    """Swap ``module``'s class to ``Quant<C>`` and create its quantizers."""
    if is_converted(module):
        raise ValueError(f"{type(module).__name__} is already converted")
    module.__class__ = generated_class(type(module), registration)
    module._setup()  # type: ignore[operator]
    return module
