"""Quant mixins per module type (one module each), their quantizer slots and the conversion.

Which modules get which mixin is decided by the site providers (:mod:`qruntime.sites`); this
package only defines what a converted module does.
"""

from qruntime.modules.base import QuantizerSlot, QuantModule
from qruntime.modules.convert import convert_module, is_converted, original_class

__all__ = ["QuantModule", "QuantizerSlot", "convert_module", "is_converted", "original_class"]
