"""Real quantization in memory: packed weights that decode to the fake-quantized ones.

:func:`compress` replaces the float weights of a quantized model by codes plus scales
(:mod:`.codecs`, laid out by :mod:`qruntime.packing`) in ``Compressed<Quant<C>>`` layers
(:mod:`.layer`); the outputs stay equal to the fake-quant model's.
"""

from qruntime.compress.api import CompressionError, compress, compressed_layers, selected_quantizers
from qruntime.compress.layer import PackedWeight, is_compressed

__all__ = [
    "CompressionError",
    "PackedWeight",
    "compress",
    "compressed_layers",
    "is_compressed",
    "selected_quantizers",
]
