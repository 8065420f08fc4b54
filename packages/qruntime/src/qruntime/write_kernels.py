"""The cheaper write guard: Python kernels on the ``ADInplaceOrView`` key of the writing ops.

:class:`~qruntime.tensor_journal.WriteGuard` (a ``TorchDispatchMode``) costs a Python call for
*every* aten op the calibration runs (a few microseconds each: the forward loop of a small model
on CPU gets 8-30 % slower, bench/bench_rollback_cpu.py). Every operator that writes its
arguments in place (in-place, ``out=``, ``_foreach_`` ops) goes through the ``ADInplaceOrView``
dispatch key, whose kernel bumps the written tensors' version counters; ops that write nothing
pass that key without a kernel. :class:`KernelWriteGuard` replaces those kernels, while a
transaction is open, by one that saves the written storages into the open journals, runs the op
below the key and bumps the versions as the replaced kernel does. Ops that write nothing cost
nothing; the price is a registration per transaction (about 12 ms for ~1,100 overloads; the
list and the kernels are built once per process, about 120 ms).

Gaps, where :class:`~qruntime.tensor_journal.WriteGuard` has none: operators registered after
the first use (an extension loaded later), inference tensors (made under
``torch.inference_mode``, they skip the key: :class:`~qruntime.transaction.Transaction` falls back
to the dispatch mode when the model holds any), and ``torch.func`` transforms inside the forward
loop (the op is re-dispatched from the top, below autograd). The registration is process-wide
while it lasts: writes from other threads are saved too, and their in-place ops pay the Python
call.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import torch

from qruntime.tensor_journal import UNDECLARED_WRITES, TensorJournal, written_arguments

__all__ = ["KernelWriteGuard"]

_KEY = "ADInplaceOrView"
_LOCK = threading.Lock()
_ACTIVE: list[TensorJournal] = []
_STATE: dict[str, Any] = {"library": None, "ops": None}


def _has_kernel(op: torch._ops.OpOverload) -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), _KEY)
    except RuntimeError:  # an overload the dispatcher does not know (TorchScript-only)
        return False


def _overload(qualified: str) -> torch._ops.OpOverload | None:
    namespace, _, rest = qualified.partition("::")
    name, _, overload = rest.partition(".")
    try:
        return getattr(getattr(getattr(torch.ops, namespace), name), overload or "default")
    except (AttributeError, RuntimeError):
        return None


def _writing_ops() -> list[tuple[torch._ops.OpOverload, Any]]:
    """``(op, its guard kernel)`` for every operator overload that writes an argument, in every
    namespace registered when this is first called (once per process)."""
    if _STATE["ops"] is None:
        ops = []
        for qualified in torch._C._dispatch_get_all_op_names():
            name, _, overload = qualified.partition(".")
            try:
                if not torch._C._get_schema(name, overload).is_mutable and (
                    name.partition("::")[2] not in UNDECLARED_WRITES
                ):
                    continue
            except RuntimeError:
                continue
            op = _overload(qualified)
            writes = written_arguments(op) if op is not None else ()
            if not writes:
                continue
            bumps = _has_kernel(op)
            hidden = any(flag is not None for _, _, flag in writes)
            # an aten op without the kernel decomposes above the key (never reaches it)
            if bumps or hidden or op.namespace != "aten":
                ops.append((op, _kernel(op, bumps)))
        _STATE["ops"] = ops
    return _STATE["ops"]


def _kernel(op: torch._ops.OpOverload, bumps: bool) -> Any:
    writes = written_arguments(op)
    below = torch._C._AutoDispatchBelowADInplaceOrView
    bump = torch.autograd.graph.increment_version

    def kernel(*args: Any, **kwargs: Any) -> Any:
        values, declared = [], []
        for index, name, flag in writes:
            value = args[index] if index < len(args) else kwargs.get(name)
            if flag is None:
                declared.append(value)
            elif not (args[flag[0]] if flag[0] < len(args) else kwargs.get(flag[1])):
                continue
            values.append(value)
        for journal in _ACTIVE:
            for value in values:
                journal.note_write(value)
        with below():  # Python numbers are wrapped again by the call, as the caller's were
            out = op(*args, **kwargs)
        if bumps:  # what the replaced kernel did: bump the schema's written arguments
            for value in declared:
                for t in value if isinstance(value, (list, tuple)) else (value,):
                    if isinstance(t, torch.Tensor):
                        bump(t)
        return out

    return kernel


class KernelWriteGuard:
    """``with KernelWriteGuard(journal):`` — save into ``journal`` every watched storage a
    writing aten op is about to write, in any thread. Nests; the kernels are registered while
    at least one guard is open."""

    def __init__(self, journal: TensorJournal) -> None:
        self.journal = journal

    def __enter__(self) -> KernelWriteGuard:
        with _LOCK:
            if _STATE["library"] is None:
                libraries: dict[str, torch.library.Library] = {}
                try:
                    with warnings.catch_warnings():  # "overriding a previously registered kernel"
                        warnings.simplefilter("ignore")
                        for op, kernel in _writing_ops():
                            if op.namespace not in libraries:
                                libraries[op.namespace] = torch.library.Library(
                                    op.namespace, "IMPL"
                                )
                            libraries[op.namespace].impl(op, kernel, _KEY)
                except BaseException:
                    for library in libraries.values():  # leave no kernel of ours behind
                        library._destroy()
                    raise
                _STATE["library"] = list(libraries.values())
            _ACTIVE.append(self.journal)
        return self

    def __exit__(self, *exc: object) -> None:
        with _LOCK:
            _ACTIVE.remove(self.journal)
            if not _ACTIVE and _STATE["library"] is not None:
                for library in _STATE["library"]:
                    library._destroy()  # the original kernels are back
                _STATE["library"] = None
