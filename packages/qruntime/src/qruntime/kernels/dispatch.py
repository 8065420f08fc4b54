"""Backend selection: which calls of ``fake_quant`` run a Triton kernel.

Why here and not in numerics: the reference must stay importable and testable without Triton.
This module plugs into the numerics as an accelerator (:mod:`qruntime.numerics.backends`): the
pipeline keeps amax resolution, the static block reshape, the affine bias and the gradient, and
asks :func:`select_kernel` only for the one step that differs — the format function on the
working layout — running its own torch code whenever the answer is None.

Rules (docs/kernels.md):

* ``backend="torch"``: never a kernel.
* ``backend="auto"``: Triton for CUDA tensors when Triton imports; a CUDA tensor without Triton
  warns once and runs torch. CPU tensors run torch.
* ``backend="triton"``: Triton for CUDA tensors, and for CPU tensors under ``TRITON_INTERPRET=1``
  (how CI tests the kernels); anything else raises.
* A format without a kernel, or an input a kernel does not cover (dtype, layout, bit width),
  runs the torch reference — never a kernel that would give different bits.
* Under ``"auto"`` a Triton error (a kernel that does not compile with the installed Triton, or
  does not fit the GPU) warns once per format and runs the reference; ``"triton"`` raises it.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter

import torch
from qconfig.spec import QuantizerSpec

from qruntime.numerics import AcceleratedFn, FormatEntry, register_accelerator

from .registry import KernelUnsupported, kernel_for

__all__ = [
    "KERNEL_STATS",
    "choose_backend",
    "interpreter_enabled",
    "reset_warnings",
    "select_kernel",
    "triton_available",
]

#: ``(format name, "triton" | "fallback")`` -> calls, so tests and benchmarks can prove which
#: implementation ran (a fallback is correct, but it is not a kernel test).
KERNEL_STATS: Counter[tuple[str, str]] = Counter()

_TRITON_OK: bool | None = None
_WARNED_NO_TRITON = False
_WARNED_FORMATS: set[str] = set()


def triton_available() -> bool:
    """Whether ``import triton`` works (cached; Triton is optional)."""
    global _TRITON_OK
    if _TRITON_OK is None:
        try:
            import triton  # noqa: F401
        except Exception:  # ImportError, or a broken install raising something else
            _TRITON_OK = False
        else:
            _TRITON_OK = True
    return _TRITON_OK


def interpreter_enabled() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (must be set before triton imports)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _is_cuda(x: torch.Tensor) -> bool:
    # A function of its own so that CPU tests can pretend a tensor lives on a GPU.
    return x.is_cuda


def reset_warnings() -> None:
    """Forget which warnings were shown (tests)."""
    global _WARNED_NO_TRITON
    _WARNED_NO_TRITON = False
    _WARNED_FORMATS.clear()


def _is_triton_error(exc: BaseException) -> bool:
    try:
        from triton.errors import TritonError
    except ImportError:  # pragma: no cover - Triton imported fine moments ago
        return False
    return isinstance(exc, TritonError)


def choose_backend(x: torch.Tensor, backend: str) -> str:
    """ "torch" or "triton" for this tensor under the rules of the module docstring."""
    global _WARNED_NO_TRITON
    if backend == "torch":
        return "torch"
    cuda = _is_cuda(x)
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("backend='triton' needs the triton package (pip install triton)")
        if not cuda and not interpreter_enabled():
            raise RuntimeError(
                "backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set before triton "
                "is imported to run the kernels in Triton's CPU interpreter"
            )
        return "triton"
    if backend != "auto":
        raise ValueError(f"unknown backend {backend!r}")
    if not cuda:
        return "torch"
    if not triton_available():
        if not _WARNED_NO_TRITON:
            _WARNED_NO_TRITON = True
            warnings.warn(
                "qruntime: triton is not installed; fake quantization of CUDA tensors uses the "
                "torch reference (same bits, slower). pip install triton for the kernels.",
                RuntimeWarning,
                stacklevel=6,
            )
        return "torch"
    return "triton"


def select_kernel(x: torch.Tensor, entry: FormatEntry, backend: str) -> AcceleratedFn | None:
    """The numerics accelerator selector: this format's kernel for this tensor, or None.

    Registered with :func:`qruntime.numerics.register_accelerator` when this package is
    imported; the pipeline keeps amax resolution, the affine bias and the gradient.
    """
    if choose_backend(x, backend) != "triton":
        return None
    kernel = kernel_for(entry.name)
    if kernel is None:
        KERNEL_STATS[(entry.name, "fallback")] += 1
        return None

    def run(
        src: torch.Tensor,
        amax: torch.Tensor | None,
        spec: QuantizerSpec,
        *,
        global_amax: torch.Tensor | None = None,
        need_amax: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        try:
            out = kernel.fn(src, amax, spec, global_amax=global_amax, need_amax=need_amax)
        except KernelUnsupported:
            KERNEL_STATS[(entry.name, "fallback")] += 1
            return None
        except Exception as exc:
            if backend != "auto" or not _is_triton_error(exc):
                raise
            KERNEL_STATS[(entry.name, "fallback")] += 1
            if entry.name not in _WARNED_FORMATS:
                _WARNED_FORMATS.add(entry.name)
                warnings.warn(
                    f"qruntime: the Triton kernel for {entry.name!r} failed ({exc!r}); using the "
                    "torch reference for it (same bits, slower).",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return None
        KERNEL_STATS[(entry.name, "triton")] += 1
        return out

    return run


register_accelerator("triton", select_kernel)
