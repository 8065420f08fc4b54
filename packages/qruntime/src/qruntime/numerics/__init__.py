"""Torch reference numerics of Model Optimizer 0.47.0 fake quantization (reference/numerics.md).

``fake_quant(x, attributes, amax=None, *, backend="torch")`` reproduces the bits a
``TensorQuantizer`` returns; ``reduce_amax(x, attributes)`` is the amax a max calibration reduces
to. One module per number format registers itself with :mod:`.dispatch`:

* :mod:`.integer` — INT-N (§4); :mod:`.fp8` — FP8 E4M3 (§5);
* :mod:`.nvfp4` — NVFP4 dynamic/static/four-over-six (§6); :mod:`.mx` — MX formats (§7);

plus the shared layers :mod:`.blocks` (§3), :mod:`.amax`, :mod:`.affine` (§10.1),
:mod:`.rotation` (§10.3), :mod:`.ste` (§11) and :mod:`.real_quant` (§6.8, §7.4, §8, §9).
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
