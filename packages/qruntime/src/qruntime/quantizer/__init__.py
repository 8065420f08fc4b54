"""The quantizer modules a patched model calls (docs/architecture.md).

* :mod:`.attributes` — how an attribute set is written onto a quantizer (pure rules);
* :mod:`.tensor` — ``TensorQuantizer`` (and the hard-disabled slot of an Embedding's input);
* :mod:`.sequential` — ``SequentialQuantizer`` and :func:`is_quantizer`.

Quantizers never import the calibration algorithms: they are handed a calibrator built from
their ``calibrator`` attribute (:mod:`qruntime.calibrators`) and driven through their public
methods.
"""

from qruntime.quantizer.attributes import ATTRIBUTE_FIELDS
from qruntime.quantizer.sequential import SequentialQuantizer, is_quantizer
from qruntime.quantizer.tensor import (
    HardDisabledTensorQuantizer,
    QuantizerInputError,
    TensorQuantizer,
)

__all__ = [
    "ATTRIBUTE_FIELDS",
    "HardDisabledTensorQuantizer",
    "QuantizerInputError",
    "SequentialQuantizer",
    "TensorQuantizer",
    "is_quantizer",
]
