"""Copy-on-first-write journal of a model's tensors, and the dispatch mode that feeds it.

A failed ``apply_plan`` must leave every parameter and buffer bit-identical and the same Python
object, whoever wrote into it: the algorithm, the model's own forward (caches, running
statistics) or the user's forward loop (``w.data.mul_(2)``, ``torch.add(a, b, out=w)``).
Copying every tensor up front would need as much memory again as the model, so the journal
copies a storage only just before its first write:

* :class:`TensorJournal` records, for each watched tensor, a storage-sharing alias and its
  ``requires_grad``/``grad`` (no data copied), and keeps a byte copy of each watched storage the
  first time :meth:`TensorJournal.save` is called for it. :meth:`TensorJournal.restore` copies
  the bytes back *into the same storage* and re-points tensors whose storage, shape, stride,
  dtype or device changed (``.data = ...``, ``set_``, ``resize_``, ``unsqueeze_``) at it again.
* :class:`WriteGuard` is a ``TorchDispatchMode`` that calls ``save`` for every argument an aten
  op writes (schema ``alias_info.is_write``: in-place, ``out=`` and ``_foreach_`` ops), matched
  by untyped storage so that ``.data``, views and user-held aliases are covered. The decision
  per op overload is computed once and cached; ops that write nothing return at once.

Versions (``Tensor._version``) are never used to decide what to restore: ``.data`` aliases have
their own counter. Writes the dispatcher cannot see (Triton or C++ extensions writing through a
raw pointer, other threads, since dispatch modes are thread-local) must be declared through
``save`` by the code that makes them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["DiskStash", "TensorJournal", "WriteGuard", "written_arguments"]

# Batch-norm kernels whose schemas do not mark the running statistics as written although they
# update them in training mode (``_native_batch_norm_legit`` and ``_batch_norm_with_update``
# declare it properly).
UNDECLARED_WRITES = {
    "native_batch_norm": ("running_mean", "running_var"),
    "cudnn_batch_norm": ("running_mean", "running_var"),
    "miopen_batch_norm": ("running_mean", "running_var"),
}

# (argument position, argument name, position and name of the bool that enables the write or
# None). Empty tuple: the op writes no tensor data.
_Writes = tuple[tuple[int, str, "tuple[int, str] | None"], ...]
_DECISIONS: dict[Any, _Writes] = {}


def written_arguments(op: torch._ops.OpOverload) -> _Writes:
    """The arguments whose *data* ``op`` may write (cached per overload).

    Ops tagged ``inplace_view`` (``set_``, ``resize_``, ``unsqueeze_``, ``detach_``...) change
    only a tensor's metadata; the journal restores that from its aliases, without a copy.
    """
    decision = _DECISIONS.get(op)
    if decision is not None:
        return decision
    schema = op._schema
    if torch.Tag.inplace_view in op.tags:
        decision = ()
    else:
        out: list[tuple[int, str, tuple[int, str] | None]] = [
            (i, a.name, None)
            for i, a in enumerate(schema.arguments)
            if a.alias_info is not None and a.alias_info.is_write
        ]
        hidden = UNDECLARED_WRITES.get(schema.name.split("::")[-1], ())
        if hidden:
            names = [a.name for a in schema.arguments]
            flag = (names.index("training"), "training") if "training" in names else None
            out += [(names.index(n), n, flag) for n in hidden if n in names]
        decision = tuple(out)
    _DECISIONS[op] = decision
    return decision


def _storage_key(tensor: torch.Tensor) -> int | None:
    try:
        return tensor.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError):  # no storage (wrapper subclass, sparse, meta)
        return None


class _Record:
    """What a watched tensor looked like: an alias of its storage and view, autograd fields."""

    __slots__ = ("alias", "grad", "requires_grad", "tensor")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor
        self.alias = tensor.detach()
        self.requires_grad = tensor.requires_grad
        self.grad = tensor.grad if tensor.is_leaf else None

    def moved(self) -> bool:
        t, a = self.tensor, self.alias
        return (
            t.dtype != a.dtype
            or t.device != a.device
            or _storage_key(t) != _storage_key(a)
            or t.storage_offset() != a.storage_offset()
            or t.shape != a.shape
            or t.stride() != a.stride()
        )

    def restore(self) -> None:
        t = self.tensor
        if self.moved():
            with torch.no_grad():
                t.data = self.alias
        if t.is_leaf:
            if t.grad is not self.grad:
                t.grad = self.grad
            if t.requires_grad != self.requires_grad:
                t.requires_grad_(self.requires_grad)


def _bytes_of(storage: torch.UntypedStorage, nbytes: int) -> torch.Tensor:
    """The first ``nbytes`` of ``storage`` as a uint8 tensor sharing its memory."""
    view = torch.empty(0, dtype=torch.uint8, device=storage.device)
    return view.set_(storage, 0, (min(nbytes, storage.nbytes()),), (1,))


class DiskStash:
    """Saved storages written to one anonymous temporary file instead of kept in memory.

    Why: layer-by-layer calibration exists so that memory stays near the model's weights, and a
    rollback copy of every weight a calibration rewrites (GPTQ, AWQ) would double them. The
    file is unlinked from the start (``tempfile.TemporaryFile``): nothing is left behind, even
    when the process is killed. Each copy is appended once and read back only on rollback.
    """

    def __init__(self, directory: str | None = None) -> None:
        self._file = tempfile.TemporaryFile(dir=directory)  # closed by close()
        self._places: dict[int, tuple[int, int]] = {}
        self.nbytes = 0

    def put(self, key: int, storage: torch.UntypedStorage, nbytes: int) -> None:
        data = _bytes_of(storage, nbytes).cpu()
        offset = self._file.seek(0, 2)
        self._file.write(memoryview(data.numpy()))
        self._places[key] = (offset, data.numel())
        self.nbytes += data.numel()

    def restore_into(self, key: int, storage: torch.UntypedStorage) -> None:
        offset, nbytes = self._places[key]
        buffer = bytearray(nbytes)
        self._file.seek(offset)
        self._file.readinto(buffer)
        _bytes_of(storage, nbytes).copy_(torch.frombuffer(buffer, dtype=torch.uint8))

    def close(self) -> None:
        self._file.close()
        self._places.clear()


class TensorJournal:
    """Restorable state of a set of tensors: metadata now, data on first write.

    ``save(t)`` copies the whole untyped storage behind ``t`` once (later saves of the same
    storage cost a dict lookup); storages shared by several tensors (tied weights, views) are
    copied once. Tensors passed to ``save`` that were not watched are watched from then on.
    Copies live on the tensor's device, or on ``stash_device`` (host memory, say) when given,
    or in a temporary file (:class:`DiskStash`) when ``stash_device`` is ``"disk"``.
    """

    def __init__(
        self,
        tensors: Iterable[torch.Tensor] = (),
        *,
        stash_device: torch.device | str | None = None,
    ) -> None:
        self._disk = DiskStash() if stash_device == "disk" else None
        self._stash = None if stash_device in (None, "disk") else torch.device(stash_device)
        self._records: dict[int, _Record] = {}
        #: Some watched tensor is an inference tensor (made under ``torch.inference_mode``).
        self.has_inference_tensors = False
        self._storages: dict[int, tuple[torch.UntypedStorage, int]] = {}
        self._saved: dict[int, tuple[torch.UntypedStorage, torch.UntypedStorage | None]] = {}
        for t in tensors:
            self.watch(t)

    def watch(self, tensor: torch.Tensor) -> None:
        """Record ``tensor`` (and its ``.grad``): no data is copied."""
        if id(tensor) in self._records:
            return
        record = _Record(tensor)
        self._records[id(tensor)] = record
        self.has_inference_tensors = self.has_inference_tensors or tensor.is_inference()
        for t in (tensor, record.grad):
            if t is not None and (key := _storage_key(t)) is not None:
                if key not in self._storages:
                    storage = t.untyped_storage()
                    self._storages[key] = (storage, storage.nbytes())

    def watches(self, tensor: torch.Tensor) -> bool:
        """True if ``tensor`` shares its storage with a watched tensor."""
        return _storage_key(tensor) in self._storages

    def save(self, *tensors: torch.Tensor) -> None:
        """Copy the storage of each tensor before its first write (no-op if already saved)."""
        for t in tensors:
            key = _storage_key(t)
            if key is None or key in self._saved:
                continue
            if key not in self._storages:
                self.watch(t)
            self._save_key(key)

    def _save_key(self, key: int) -> None:
        storage, nbytes = self._storages[key]
        if self._disk is not None:
            self._disk.put(key, storage, nbytes)
            self._saved[key] = (storage, None)
            return
        # on the stash device, e.g. GPU weights saved in host memory where two would not fit
        copy = torch.UntypedStorage(storage.nbytes(), device=self._stash or storage.device)
        copy.copy_(storage)
        if copy.nbytes() > nbytes:  # grown by a ``resize_`` since: its first bytes are ours
            copy.resize_(nbytes)
        self._saved[key] = (storage, copy)

    def note_write(self, tensor: Any) -> None:
        """``save`` for one written op argument (a tensor, a list of them or None), limited to
        watched storages: the guard's hook, kept small because it runs per written argument."""
        if isinstance(tensor, torch.Tensor):
            key = _storage_key(tensor)
            if key is not None and key not in self._saved and key in self._storages:
                self._save_key(key)
        elif isinstance(tensor, (list, tuple)):
            for t in tensor:
                self.note_write(t)

    @property
    def saved_bytes(self) -> int:
        """Bytes held by the copies in memory (what rollback costs in memory so far; copies in
        a :class:`DiskStash` are :attr:`stashed_bytes`)."""
        return sum(copy.nbytes() for _, copy in self._saved.values() if copy is not None)

    @property
    def stashed_bytes(self) -> int:
        """Bytes of the copies written to disk (0 without a disk stash)."""
        return 0 if self._disk is None else self._disk.nbytes

    def restore(self) -> None:
        """Put every watched tensor back: metadata and autograd fields, storage sizes (a
        ``resize_`` grows a storage in place), then the saved bytes."""
        with torch.no_grad():
            for record in self._records.values():
                record.restore()
            for storage, nbytes in self._storages.values():
                if storage.nbytes() != nbytes:
                    storage.resize_(nbytes)
            for key, (storage, copy) in self._saved.items():
                if copy is None:
                    assert self._disk is not None
                    self._disk.restore_into(key, storage)
                else:
                    storage.copy_(copy)

    def discard(self) -> None:
        """Drop the copies and records (the changes are kept)."""
        self._records.clear()
        self._storages.clear()
        self._saved.clear()
        if self._disk is not None:
            self._disk.close()


class WriteGuard(TorchDispatchMode):
    """Saves into ``journal`` every watched storage an aten op is about to write."""

    def __init__(self, journal: TensorJournal) -> None:
        super().__init__()
        self.journal = journal

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        # The hot path: one dict lookup, then the op. Everything else is per written argument.
        kwargs = kwargs or {}
        writes = _DECISIONS.get(func)
        if writes is None:
            writes = written_arguments(func)
        if writes:
            self._before(writes, args, kwargs)
        return func(*args, **kwargs)

    def _before(self, writes: _Writes, args: tuple, kwargs: dict) -> None:
        for index, name, flag in writes:
            if flag is not None:
                value = args[flag[0]] if flag[0] < len(args) else kwargs.get(flag[1])
                if not value:
                    continue
            value = args[index] if index < len(args) else kwargs.get(name)
            self.journal.note_write(value)
