"""Torch reference numerics of Model Optimizer 0.47.0 fake quantization (docs/numerics.md).

``fake_quant(x, attributes, amax=None, *, backend="torch")`` reproduces the bits a
``TensorQuantizer`` returns; ``reduce_amax(x, attributes)`` is the amax a max calibration reduces
to. One module per number format registers itself with :mod:`.dispatch`:

* :mod:`.integer` — INT-N; :mod:`.fp8` — FP8 E4M3;
* :mod:`.nvfp4` — NVFP4 dynamic/static/four-over-six; :mod:`.mx` — MX formats;

plus the shared layers :mod:`.blocks`, :mod:`.amax`, :mod:`.affine`, :mod:`.rotation`,
:mod:`.ste` and :mod:`.real_quant`. docs/numerics.md has a section for each (quoted by heading
in the docstrings, e.g. docs/numerics.md, 'Block layouts').
"""

from __future__ import annotations

from qconfig.spec import QuantizerSpec, resolve_spec

# Format modules register themselves on import; keep them imported here.
from . import fp8, integer, mx, nvfp4  # noqa: F401
from .amax import amax_reduce, reduce_amax, resolve_amax
from .backends import AcceleratedFn, register_accelerator
from .dispatch import FormatEntry, formats, register_format, resolve_format
from .pipeline import BACKENDS, fake_quant

__all__ = [
    "BACKENDS",
    "AcceleratedFn",
    "FormatEntry",
    "QuantizerSpec",
    "amax_reduce",
    "fake_quant",
    "formats",
    "reduce_amax",
    "register_accelerator",
    "register_format",
    "resolve_amax",
    "resolve_format",
    "resolve_spec",
]
