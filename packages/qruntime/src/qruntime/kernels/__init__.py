"""Triton fake-quant kernels, bit-exact with :mod:`qruntime.numerics` (docs/kernels.md).

Importing this package does not import Triton: the format kernels in :mod:`.formats` are loaded
on the first lookup. ``fake_quant(..., backend="auto")`` and ``TensorQuantizer`` route CUDA
tensors here through :func:`.dispatch.select_kernel` (an accelerator of the numerics); ``backend="triton"`` forces the kernels
(also on CPU tensors under ``TRITON_INTERPRET=1``, which is how CI tests them).
"""

from __future__ import annotations

from .dispatch import KERNEL_STATS, choose_backend, interpreter_enabled, triton_available
from .registry import KernelEntry, KernelUnsupported, kernel_for, kernels, register_kernel

__all__ = [
    "KERNEL_STATS",
    "KernelEntry",
    "KernelUnsupported",
    "choose_backend",
    "interpreter_enabled",
    "kernel_for",
    "kernels",
    "register_kernel",
    "triton_available",
]
