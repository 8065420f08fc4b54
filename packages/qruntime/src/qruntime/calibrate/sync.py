"""The collectives of distributed calibration, built so that they can never mismatch or hang.

Every sync point starts with one *control exchange* over the control group (an
``all_gather_object``): each process says whether it is still healthy and describes what it is
about to reduce — which quantizers hold an amax, with which shape and dtype. Only then are
tensors reduced, and every decision after the exchange is made from what all processes sent, so
every process issues the same collectives in the same order:

* a quantizer that holds an amax on some processes only (an expert that saw no tokens there)
  takes part everywhere: where it is absent, a neutral element (``-inf`` for MAX) stands in,
  and it receives the reduced value — the amax one process would compute over the union of the
  data;
* a process whose calibration raised sends its error in the exchange its peers are waiting in
  (:func:`announce_failure`), so every process raises :class:`DistributedCalibrationError` and
  rolls its model back; a process that died makes the collective fail (or time out, after the
  process group's ``timeout``), which is raised as the same error;
* :func:`finish` is the last exchange, so that a process failing after the last sync point
  still fails the others.

Tensors are flattened into one buffer per dtype and reduced with one collective per group,
not one per quantizer. Model buffers are never reduced in place: a new tensor is assigned, so
the transaction's snapshot of the old buffers stays valid for rollback.
"""

from __future__ import annotations

import re
import warnings
import zlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from qruntime.parallel import (
    DistributedCalibrationError,
    ParallelState,
    control_ranks,
    device_for,
    group_ranks,
)
from qruntime.quantizer import TensorQuantizer

__all__ = [
    "announce_failure",
    "exchange",
    "finish",
    "reduce_tensors",
    "sync_amaxes",
    "warn_unsynced_biases",
]

_ROUTED_EXPERT = re.compile(r"(^|\.)experts\.")
_SHARED_EXPERT = re.compile(r"(^|\.)shared_experts\.")


def _control_group(parallel: ParallelState) -> Any:
    return parallel.control if parallel.control is not None else dist.group.WORLD


def _gather(parallel: ParallelState, message: Any, point: str) -> list[Any]:
    group = _control_group(parallel)
    out: list[Any] = [None] * dist.get_world_size(group)
    try:
        dist.all_gather_object(out, message, group=group)
    except DistributedCalibrationError:
        raise
    except Exception as exc:  # a peer died, the group timed out or was torn down
        raise DistributedCalibrationError(
            f"distributed calibration: a process of the group stopped answering at sync point "
            f"{point!r} ({type(exc).__name__}: {exc}). The model was not changed."
        ) from exc
    return out


def exchange(parallel: ParallelState, point: str, payload: Any = None) -> list[Any]:
    """The control exchange of a sync point: every process's ``payload``, in control-group
    order; :class:`DistributedCalibrationError` when any process reported a failure."""
    received = _gather(parallel, ("ok", payload), point)
    failed = [m for m in received if m[0] == "error"]
    if failed:
        details = "; ".join(f"rank {rank}: {text}" for _, rank, text in failed)
        raise DistributedCalibrationError(
            f"distributed calibration failed on another process ({details}); this process "
            f"stopped at sync point {point!r}. The model was not changed."
        )
    return [m[1] for m in received]


def announce_failure(parallel: ParallelState, error: BaseException) -> None:
    """Tell the peers waiting in a control exchange that this process failed with ``error``.

    Called once, by the process that failed, before it re-raises. If the peers cannot be
    reached (they failed too, or the group is gone) there is nobody left to tell."""
    message = ("error", dist.get_rank(), f"{type(error).__name__}: {error}")
    try:
        _gather(parallel, message, "failure")
    except DistributedCalibrationError:
        pass


def warn_unsynced_biases(model: nn.Module) -> None:
    """Warn about quantizers with a static bias: their bias is each process's own (Model
    Optimizer does not synchronise biases either), so the processes' models differ there."""
    biased = [n for n, q in _leaf_quantizers(model) if q.is_enabled and q.has_static_bias]
    if biased:
        warnings.warn(
            f"distributed calibration: {len(biased)} quantizer(s) with a static bias "
            f"({', '.join(biased[:3])}{', ...' if len(biased) > 3 else ''}) keep the bias of "
            "their own process's data: biases are not synchronised (Model Optimizer does not "
            "sync them either), so these quantizers differ between processes",
            UserWarning,
            stacklevel=5,
        )


def finish(parallel: ParallelState) -> None:
    """The closing exchange: every process has calibrated without error."""
    exchange(parallel, "end")


def _all_reduce(flat: torch.Tensor, op: Any, group: Any, point: str) -> None:
    try:
        dist.all_reduce(flat, op=op, group=group)
    except Exception as exc:
        raise DistributedCalibrationError(
            f"distributed calibration: a process of the group stopped answering while "
            f"reducing at {point!r} ({type(exc).__name__}: {exc}). The model was not changed."
        ) from exc


# ---------------------------------------------------------------------------- amax sync
def _leaf_quantizers(model: nn.Module) -> list[tuple[str, TensorQuantizer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, TensorQuantizer)]


def _meta(q: TensorQuantizer) -> tuple[tuple[int, ...], str] | None:
    amax = q.amax
    return None if amax is None else (tuple(amax.shape), str(amax.dtype).removeprefix("torch."))


def _fingerprint(names: Sequence[str]) -> int:
    return zlib.crc32("\n".join(names).encode())


def _selected(kind: str, name: str, q: TensorQuantizer, sync_expert_weight_amax: bool) -> bool:
    """Whether quantizer ``name`` is reduced over the group of ``kind``.

    Data: all. Expert: all but the weight quantizers of routed experts (each process holds
    different experts, so their weights differ) unless ``sync_expert_weight_amax``. Tensor:
    per-tensor amaxes only — a per-channel or per-block amax describes the local slice."""
    if kind == "expert":
        routed = _ROUTED_EXPERT.search(name) and not _SHARED_EXPERT.search(name)
        if routed and "weight_quantizer" in name:
            return sync_expert_weight_amax
        return True
    if kind == "tensor":
        return q.axis is None and q.block_sizes is None
    return True


def _local_device(q: TensorQuantizer, fallback: torch.device) -> torch.device:
    for buffer in q.buffers(recurse=False):
        return buffer.device
    return fallback


def sync_amaxes(
    parallel: ParallelState, model: nn.Module, *, sync_expert_weight_amax: bool = False
) -> None:
    """Reduce every quantizer's amax with MAX over the data, expert and tensor groups of
    ``parallel`` (in that order; module docstring for quantizers absent on some processes)."""
    quantizers = _leaf_quantizers(model)
    names = [n for n, _ in quantizers]
    fingerprint = (len(names), _fingerprint(names))
    for kind, group in parallel.groups().items():
        point = f"amax/{kind}"
        payloads = exchange(parallel, point, (fingerprint, [_meta(q) for _, q in quantizers]))
        if any(p[0] != fingerprint for p in payloads):
            raise DistributedCalibrationError(
                "distributed calibration: the processes hold different models (their quantizer "
                "names differ); every process must quantize the same model. The model was not "
                "changed."
            )
        ranks = control_ranks(parallel)
        members = [ranks.index(r) for r in group_ranks(group)]
        chosen: list[tuple[int, tuple[int, ...], torch.dtype]] = []
        for i, (name, q) in enumerate(quantizers):
            if not _selected(kind, name, q, sync_expert_weight_amax):
                continue
            metas = {payloads[m][1][i] for m in members} - {None}
            if not metas:
                continue
            if len(metas) > 1:
                raise DistributedCalibrationError(
                    f"distributed calibration: {name} has amaxes of different shapes or dtypes "
                    f"on different processes {sorted(metas)}. The model was not changed."
                )
            ((shape, dtype_name),) = metas
            chosen.append((i, shape, getattr(torch, dtype_name)))
        _reduce_amaxes(quantizers, chosen, group)


def _reduce_amaxes(
    quantizers: list[tuple[str, TensorQuantizer]],
    chosen: list[tuple[int, tuple[int, ...], torch.dtype]],
    group: Any,
) -> None:
    device = device_for(group)
    by_dtype: dict[torch.dtype, list[tuple[int, tuple[int, ...]]]] = {}
    for i, shape, dtype in chosen:
        by_dtype.setdefault(dtype, []).append((i, shape))
    for dtype, items in by_dtype.items():
        parts = []
        for i, shape in items:
            amax = quantizers[i][1].amax
            if amax is None:
                parts.append(torch.full(shape, float("-inf"), dtype=dtype, device=device))
            else:
                parts.append(amax.detach().to(device=device, dtype=dtype))
        flat = torch.cat([p.reshape(-1) for p in parts])
        _all_reduce(flat, dist.ReduceOp.MAX, group, "amax")
        offset = 0
        for (i, shape), part in zip(items, parts, strict=True):
            q = quantizers[i][1]
            value = flat[offset : offset + part.numel()].reshape(shape)
            offset += part.numel()
            old = q.amax
            target = old.device if old is not None else _local_device(q, device)
            if old is None or not torch.equal(old.to(device=device, dtype=dtype), value):
                q.amax = value.to(target)


# ------------------------------------------------------------------------ other statistics
def reduce_tensors(
    parallel: ParallelState,
    point: str,
    tensors: Sequence[torch.Tensor],
    *,
    kinds: Sequence[str] = ("data",),
    op: str = "sum",
) -> None:
    """Reduce ``tensors`` in place (SUM or MAX) over the groups of ``kinds`` that have more
    than one process, after a control exchange checking every process reduces the same
    shapes. The tensors must be the caller's own (never a model buffer: see the module
    docstring); every process must pass the same list."""
    reduce_op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op]
    groups = [(k, g) for k, g in parallel.groups().items() if k in kinds]
    if not groups:
        return
    layout = [(tuple(t.shape), str(t.dtype)) for t in tensors]
    payloads = exchange(parallel, point, _fingerprint([repr(layout)]))
    if len(set(payloads)) > 1:
        raise DistributedCalibrationError(
            f"distributed calibration: the processes reduce different statistics at {point!r} "
            "(their shapes differ). The model was not changed."
        )
    for _, group in groups:
        device = device_for(group)
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        for dtype, members in by_dtype.items():
            flat = torch.cat(
                [t.detach().reshape(-1).to(device=device, dtype=dtype) for t in members]
            )
            _all_reduce(flat, reduce_op, group, point)
            offset = 0
            for t in members:
                t.copy_(flat[offset : offset + t.numel()].reshape(t.shape))
                offset += t.numel()
