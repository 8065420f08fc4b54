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

Under ``torch.compile`` the kernel call is the custom op ``qruntime::format_kernel`` with a
fake (meta) implementation, so the compiler keeps it in the graph as one opaque node instead of
tracing the host code (its exceptions, warnings and counters would each be a graph break). The
op carries the few spec fields a kernel reads as a string, and falls back to the torch
reference inside itself where the eager dispatcher would return None: the same bits either way.
"""

from __future__ import annotations

import ast
import functools
import os
import warnings
from collections import Counter

import torch
from qconfig.spec import QuantizerSpec, resolve_spec

from qruntime.numerics import (
    AcceleratedFn,
    FormatEntry,
    amax_reduce,
    formats,
    register_accelerator,
    resolve_amax,
)
from qruntime.numerics.amax import axis_to_reduce_dims

from .registry import KernelEntry, KernelUnsupported, kernel_for

__all__ = [
    "KERNEL_STATS",
    "choose_backend",
    "format_kernel",
    "format_kernel_key",
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


@torch.compiler.assume_constant_result
def triton_available() -> bool:
    """Whether ``import triton`` works (cached; Triton is optional).

    A constant for ``torch.compile``: evaluated once while tracing, never traced into (the
    import would be a graph break)."""
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
        # Traced, no warning (a graph break); an eager forward (calibration) has shown it.
        if not _WARNED_NO_TRITON and not torch.compiler.is_compiling():
            _WARNED_NO_TRITON = True
            warnings.warn(
                "qruntime: triton is not installed; fake quantization of CUDA tensors uses the "
                "torch reference (same bits, slower). pip install triton for the kernels.",
                RuntimeWarning,
                stacklevel=6,
            )
        return "torch"
    return "triton"


def _call_kernel(
    entry_name: str,
    kernel: KernelEntry,
    backend: str,
    src: torch.Tensor,
    amax: torch.Tensor | None,
    spec: QuantizerSpec,
    global_amax: torch.Tensor | None,
    need_amax: bool,
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """One kernel call with the fallback rules of the module docstring (None: run torch)."""
    try:
        out = kernel.fn(src, amax, spec, global_amax=global_amax, need_amax=need_amax)
    except KernelUnsupported:
        KERNEL_STATS[(entry_name, "fallback")] += 1
        return None
    except Exception as exc:
        if backend != "auto" or not _is_triton_error(exc):
            raise
        KERNEL_STATS[(entry_name, "fallback")] += 1
        if entry_name not in _WARNED_FORMATS:
            _WARNED_FORMATS.add(entry_name)
            warnings.warn(
                f"qruntime: the Triton kernel for {entry_name!r} failed ({exc!r}); using the "
                "torch reference for it (same bits, slower).",
                RuntimeWarning,
                stacklevel=4,
            )
        return None
    KERNEL_STATS[(entry_name, "triton")] += 1
    return out


# ---------------------------------------------------------------- the custom op (torch.compile)
def format_kernel_key(spec: QuantizerSpec) -> str:
    """The spec fields a kernel reads, as a literal (traceable: plain ``repr`` of constants)."""
    blocks = spec.block_sizes
    items = None if blocks is None else tuple(blocks.items())
    return repr((spec.num_bits, spec.unsigned, spec.narrow_range, spec.axis, items))


@functools.lru_cache(maxsize=1024)
def _spec_from_key(key: str) -> QuantizerSpec:
    num_bits, unsigned, narrow_range, axis, items = ast.literal_eval(key)
    return resolve_spec(
        {
            "num_bits": num_bits,
            "unsigned": unsigned,
            "narrow_range": narrow_range,
            "axis": axis,
            "block_sizes": None if items is None else dict(items),
        }
    )


@torch.library.custom_op("qruntime::format_kernel", mutates_args=())
def format_kernel(
    x: torch.Tensor,
    amax: torch.Tensor | None,
    global_amax: torch.Tensor | None,
    fmt: str,
    spec_key: str,
    backend: str,
    need_amax: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The format function of ``fmt`` on ``x`` (working layout, bias removed, no autograd):
    its Triton kernel, or the torch reference where the kernel declines. Returns ``(y,
    amax_used)``; ``amax_used`` is empty unless ``need_amax`` (a custom op returns tensors)."""
    spec = _spec_from_key(spec_key)
    entry = formats()[fmt]
    kernel = kernel_for(fmt)
    out = None
    if kernel is not None:
        out = _call_kernel(fmt, kernel, backend, x, amax, spec, global_amax, need_amax)
    else:
        KERNEL_STATS[(fmt, "fallback")] += 1
    if out is None:
        used = resolve_amax(x, spec, amax) if entry.uses_amax else None
        y = entry.fn(x, used, spec, global_amax=global_amax)
    else:
        y, used = out
    if not need_amax or used is None:
        return y, x.new_empty(0)
    return y, used.clone()  # a custom op may not return (an alias of) an input


@format_kernel.register_fake
def _format_kernel_fake(
    x: torch.Tensor,
    amax: torch.Tensor | None,
    global_amax: torch.Tensor | None,
    fmt: str,
    spec_key: str,
    backend: str,
    need_amax: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if not need_amax:
        return y, x.new_empty(0)
    if amax is None:
        amax = amax_reduce(x, axis_to_reduce_dims(x.dim(), _spec_from_key(spec_key).axis))
    return y, torch.empty_like(amax)


def _traced_kernel(entry: FormatEntry, backend: str) -> AcceleratedFn:
    """The accelerated function handed to the pipeline while ``torch.compile`` traces."""

    def run(
        src: torch.Tensor,
        amax: torch.Tensor | None,
        spec: QuantizerSpec,
        *,
        global_amax: torch.Tensor | None = None,
        need_amax: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        y, used = format_kernel(
            src, amax, global_amax, entry.name, format_kernel_key(spec), backend, need_amax
        )
        return y, used if need_amax else None

    return run


def select_kernel(x: torch.Tensor, entry: FormatEntry, backend: str) -> AcceleratedFn | None:
    """The numerics accelerator selector: this format's kernel for this tensor, or None.

    Registered with :func:`qruntime.numerics.register_accelerator` when this package is
    imported; the pipeline keeps amax resolution, the affine bias and the gradient. Traced by
    ``torch.compile``, the answer is the custom op (module docstring).
    """
    if choose_backend(x, backend) != "triton":
        return None
    if torch.compiler.is_compiling():
        return _traced_kernel(entry, backend)
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
        return _call_kernel(entry.name, kernel, backend, src, amax, spec, global_amax, need_amax)

    return run


register_accelerator("triton", select_kernel)
