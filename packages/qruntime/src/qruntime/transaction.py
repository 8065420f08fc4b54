"""All-or-nothing model changes: :class:`Transaction` restores a model exactly on error.

Two layers, so that what rollback costs fits what the calibration algorithm does:

* :class:`ModelSnapshot`, always: every module's class and a one-level copy of its ``__dict__``
  (``_parameters``, ``_buffers``, ``_modules``, hook dicts, the training flag...). Enough for
  everything ``apply_plan`` itself does: it only adds to a model (class swaps, quantizer
  submodules, flags) and replaces ``_amax``-style buffers by new tensors instead of writing
  into them, so amax-only algorithms (``max``) cost nothing more.
* a :class:`~qruntime.tensor_journal.TensorJournal` of the tensors the model holds at the start
  (parameters, buffers, tensor attributes, their ``.grad``): no data is copied up front; a
  storage is copied the first time it is about to be written, and copied back into the same
  storage on rollback, so tensor objects and references users hold stay valid. Writes reach
  the journal two ways: weight-writing algorithms (``Transaction(writes_weights=True)``) declare
  them with :meth:`Transaction.save` / :meth:`Transaction.writing` before writing; and while the
  transaction is open a guard saves any storage an operator writes in place — the model's own
  forward (caches, batch-norm running statistics), the user's forward loop (``w.data.mul_(2)``,
  ``out=``, ``copy_``), or an algorithm that forgot to declare a write. The default guard,
  :class:`~qruntime.write_kernels.KernelWriteGuard`, costs nothing on ops that write nothing;
  :class:`~qruntime.tensor_journal.WriteGuard`, a dispatch mode, sees every op (a few
  microseconds each) and has fewer gaps (both modules list theirs).

What no guard sees (raw-pointer writes from Triton or C++ extensions, compiled graphs) must be
declared with ``save``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Literal

import torch
from torch import nn

from qruntime.tensor_journal import TensorJournal, WriteGuard
from qruntime.write_kernels import KernelWriteGuard

__all__ = ["ModelSnapshot", "Transaction", "current_transaction"]

_CONTAINERS = (dict, list, set)


def _copy_state(state: dict[str, Any]) -> dict[str, Any]:
    """``{name: (value, copy of its contents)}``: containers keep their identity on restore."""
    return {k: (v, copy.copy(v) if isinstance(v, _CONTAINERS) else None) for k, v in state.items()}


def _restore_state(target: dict[str, Any], saved: dict[str, Any]) -> None:
    target.clear()
    for key, (value, contents) in saved.items():
        if isinstance(value, list):
            value[:] = contents
        elif contents is not None:
            value.clear()
            value.update(contents)
        target[key] = value


class ModelSnapshot:
    """The restorable state of every module reachable from ``model``."""

    def __init__(self, model: nn.Module) -> None:
        self._entries = [(m, m.__class__, _copy_state(m.__dict__)) for m in model.modules()]

    def restore(self) -> None:
        """Put every module's class and attributes back (new submodules are simply dropped)."""
        for module, cls, state in self._entries:
            module.__class__ = cls
            _restore_state(module.__dict__, state)

    def tensors(self) -> Iterator[torch.Tensor]:
        """Every tensor the modules held directly at the snapshot: parameters, buffers, tensor
        attributes."""
        for _, _, state in self._entries:
            for key in ("_parameters", "_buffers"):
                held = state.get(key, (None, None))[1] or {}
                yield from (t for t in held.values() if isinstance(t, torch.Tensor))
            yield from (v for v, _ in state.values() if isinstance(v, torch.Tensor))


_CURRENT: ContextVar[Transaction | None] = ContextVar("qruntime_transaction", default=None)


def _open_guard(kind: str, journal: TensorJournal) -> WriteGuard | KernelWriteGuard:
    """Enter the guard ``kind``; the kernels guard uses PyTorch internals that a torch release
    may change, so if it cannot be installed the dispatch-mode guard (same coverage, a few
    microseconds per op) takes over, with one warning per process."""
    global _KERNELS_FAILED
    if kind == "kernels" and not _KERNELS_FAILED:
        guard: WriteGuard | KernelWriteGuard = KernelWriteGuard(journal)
        try:
            guard.__enter__()
            return guard
        except Exception as exc:
            _KERNELS_FAILED = True
            warnings.warn(
                f"qruntime: the write guard could not install its kernels ({exc!r}); rollback "
                "uses the dispatch-mode guard instead (slower calibration, same coverage).",
                RuntimeWarning,
                stacklevel=4,
            )
    guard = WriteGuard(journal)
    guard.__enter__()
    return guard


_KERNELS_FAILED = False


def current_transaction() -> Transaction | None:
    """The innermost open transaction (``apply_plan``'s, while algorithms run), or None."""
    return _CURRENT.get()


class Transaction:
    """``with Transaction(model, writes_weights=...) as txn:`` — on an exception the model is
    restored (classes, attributes, parameter/buffer objects and their bytes, shapes, strides,
    dtypes, devices, ``requires_grad`` and ``grad``) and the exception propagates; on success
    the changes are kept and the saved copies dropped.

    ``writes_weights`` comes from the calibration algorithm's declared capability: only such
    a transaction accepts :meth:`save`, so that an algorithm that writes weights without
    declaring it fails loudly in its first test instead of relying on the guard.

    ``guard`` picks how undeclared writes are caught: ``"kernels"`` (the default,
    :mod:`qruntime.write_kernels`), kernels on the writing operators only — a fixed ~12 ms per
    transaction, nothing per op that writes nothing; ``"dispatch"``
    (:mod:`qruntime.tensor_journal`), a ``TorchDispatchMode`` that sees every aten op of this
    thread; None, no interception (for callers that know nothing writes in place; declared
    saves still work). ``stash_device`` keeps the copies off the tensors' device (``"cpu"``
    for a GPU model whose written weights would not fit twice, ``"disk"`` for a temporary file:
    layer-by-layer calibration, whose point is memory near the weights).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        writes_weights: bool = False,
        guard: Literal["kernels", "dispatch"] | None = "kernels",
        stash_device: torch.device | str | None = None,
    ) -> None:
        self.model = model
        self._stash_device = stash_device
        self.writes_weights = writes_weights
        self._use_guard = guard
        self._snapshot: ModelSnapshot | None = None
        self._journal: TensorJournal | None = None
        self._guard: WriteGuard | KernelWriteGuard | None = None
        self._token: Any = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Transaction:
        if self._snapshot is not None:
            raise RuntimeError("a Transaction can be entered once")
        self._snapshot = ModelSnapshot(self.model)
        self._journal = TensorJournal(self._snapshot.tensors(), stash_device=self._stash_device)
        if self._use_guard is not None:
            kind = self._use_guard
            if kind == "kernels" and self._journal.has_inference_tensors:
                kind = "dispatch"  # inference tensors skip the kernels' dispatch key
            self._guard = _open_guard(kind, self._journal)
        self._token = _CURRENT.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._guard is not None:
                self._guard.__exit__(None, None, None)
                self._guard = None
        finally:
            _CURRENT.reset(self._token)
            if exc_type is None:
                self._close()
            else:
                self.rollback()

    def rollback(self) -> None:
        """Restore the model as it was when the transaction was entered."""
        snapshot, journal = self._require()
        snapshot.restore()
        journal.restore()
        self._close()

    def _close(self) -> None:
        if self._journal is not None:
            self._journal.discard()
        self._journal = None
        self._snapshot = None

    def _require(self) -> tuple[ModelSnapshot, TensorJournal]:
        if self._snapshot is None or self._journal is None:
            raise RuntimeError("the transaction is not open")
        return self._snapshot, self._journal

    # ------------------------------------------------------------------ declared writes
    def save(self, *tensors: torch.Tensor) -> None:
        """Call before writing into ``tensors`` in place: the first call per storage copies it
        (later calls are a lookup), and rollback copies the bytes back into the same tensors.
        Tensors the model did not hold at the start are restored too."""
        _, journal = self._require()
        if not self.writes_weights:
            raise RuntimeError(
                "this transaction was opened for an algorithm that does not declare "
                "writes_weights; declare the capability to write tensors in place"
            )
        journal.save(*tensors)

    @contextmanager
    def writing(self, *tensors: torch.Tensor) -> Iterator[None]:
        """``with txn.writing(w, norm.weight): ...`` — :meth:`save`, as a block."""
        self.save(*tensors)
        yield

    @contextmanager
    def paused_guard(self) -> Iterator[None]:
        """``with txn.paused_guard(): ...`` — for qruntime's own computations that write only
        tensors they created (a weight search's candidate batches): the guard is there for code
        qruntime does not control and costs a Python call per in-place op, so it is lifted for
        the block and put back after, also on error. Declared saves still work inside."""
        guard = self._guard
        if guard is None:
            yield
            return
        kind = "kernels" if isinstance(guard, KernelWriteGuard) else "dispatch"
        guard.__exit__(None, None, None)
        self._guard = None
        try:
            yield
        finally:
            _, journal = self._require()
            self._guard = _open_guard(kind, journal)

    @property
    def saved_bytes(self) -> int:
        """Bytes copied so far for rollback (0 while nothing has been written)."""
        return 0 if self._journal is None else self._journal.saved_bytes
