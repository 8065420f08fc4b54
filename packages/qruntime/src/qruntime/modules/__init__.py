"""Quant wrappers per module type (one module each) and the built-in registrations."""

from qruntime.modules import builtin  # noqa: F401  (registers the built-in types)
from qruntime.modules.base import QuantizerSlot, QuantModule
from qruntime.modules.convert import convert_module, is_converted

__all__ = ["QuantModule", "QuantizerSlot", "convert_module", "is_converted"]
