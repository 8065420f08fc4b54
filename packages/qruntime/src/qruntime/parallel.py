"""Which torch.distributed process groups a calibration synchronises over.

Calibration statistics are per process: each rank sees its own shard of the data (data
parallel), its own experts (expert parallel) or its own slice of each weight (tensor parallel).
:class:`ParallelState` names the group of each kind, so the sync points of
:mod:`qruntime.calibrate.sync` know which ranks hold copies of the same quantizer. qruntime does
not create groups: they come from the training framework (or ``torch.distributed.new_group``).

Without a ``ParallelState`` and with torch.distributed initialised with more than one process,
the default group is the data-parallel group — every process holds the whole model and
calibrates its own data, the common case (:func:`resolve_parallel`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistributedCalibrationError",
    "ParallelState",
    "ShardedModelError",
    "control_ranks",
    "device_for",
    "gathered",
    "group_ranks",
    "group_size",
    "resolve_parallel",
    "sharded_parameters",
]


class DistributedCalibrationError(RuntimeError):
    """Calibration failed on some process of the group (or a process stopped answering); every
    process raises it and every process's model is left as it was."""


class ShardedModelError(ValueError):
    """A calibration that cannot run on a model whose parameters are sharded (FSDP2
    ``fully_shard``): only ``max`` can. Raised before any weight is read or written; the model
    is left as it was. The fix is to quantize before sharding."""


def _is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def group_size(group: Any) -> int:
    """The number of processes in ``group`` (1 for None or without torch.distributed)."""
    if group is None or not _is_initialized():
        return 1
    return dist.get_world_size(group)


@dataclass(frozen=True)
class ParallelState:
    """The process groups calibration statistics are synchronised over.

    * ``data`` — processes holding the same weights and calibrating different data: every
      amax is reduced with MAX over it (and the search statistics of AWQ and GPTQ).
    * ``expert`` — processes holding different experts of the same MoE layers (the local
      expert ``i`` of each rank is a different expert): amaxes are reduced over it, except the
      weight amaxes of routed experts unless ``sync_expert_weight_amax``.
    * ``tensor`` — processes holding slices of the same weights: per-tensor amaxes (axis None)
      and shared NVFP4 global amaxes are reduced over it; per-channel and per-block amaxes
      describe the local slice and are not.
    * ``control`` — every process taking part in the calibration: the group on which processes
      agree, at each sync point, that all of them are still running and which quantizers hold
      statistics (None: the default group).

    None for a kind means no such parallelism (a group of one). Use
    ``torch.distributed.init_process_group(..., timeout=...)`` so that a process that dies
    cannot keep its peers waiting longer than that.
    """

    data: Any = None
    tensor: Any = None
    expert: Any = None
    control: Any = None

    def __post_init__(self) -> None:
        for name in ("data", "tensor", "expert", "control"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, dist.ProcessGroup):
                raise TypeError(
                    f"ParallelState.{name} must be a torch.distributed ProcessGroup or None, "
                    f"got {type(value).__name__}"
                )

    @property
    def is_distributed(self) -> bool:
        """Whether any group has more than one process (otherwise nothing is synchronised)."""
        return any(group_size(g) > 1 for g in (self.data, self.tensor, self.expert))

    def groups(self) -> dict[str, Any]:
        """The groups of more than one process, by kind."""
        out = {}
        for name in ("data", "expert", "tensor"):
            group = getattr(self, name)
            if group_size(group) > 1:
                out[name] = group
        return out


def resolve_parallel(parallel: ParallelState | None) -> ParallelState | None:
    """The parallel state a calibration runs with: ``parallel`` as given, else data parallel
    over the default group when torch.distributed is initialised with several processes, else
    None (one process). Giving a ``ParallelState`` without an initialised torch.distributed is
    an error: the groups could not have been made."""
    if parallel is not None:
        if not isinstance(parallel, ParallelState):
            raise TypeError(f"parallel must be a ParallelState, got {type(parallel).__name__}")
        if not _is_initialized():
            raise ValueError(
                "parallel= was given but torch.distributed is not initialised: call "
                "torch.distributed.init_process_group first (or pass parallel=None)"
            )
        return parallel if parallel.is_distributed else None
    if not _is_initialized() or dist.get_world_size() <= 1:
        return None
    return ParallelState(data=dist.group.WORLD)


def control_ranks(parallel: ParallelState) -> list[int]:
    """The global ranks of the control group, in group order."""
    group = parallel.control if parallel.control is not None else dist.group.WORLD
    return dist.get_process_group_ranks(group)


def group_ranks(group: Any) -> list[int]:
    """The global ranks of ``group``, in group order."""
    return dist.get_process_group_ranks(group)


def device_for(group: Any) -> torch.device:
    """Where tensors reduced over ``group`` must live: CUDA for NCCL, else the CPU."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ------------------------------------------------------------------------- sharded weights
def _dtensor_class() -> type | None:
    if not dist.is_available():
        return None
    from torch.distributed.tensor import DTensor

    return DTensor


def sharded_parameters(model: nn.Module) -> list[str]:
    """The names of ``model``'s parameters held as DTensors (sharded by FSDP2's
    ``fully_shard`` or laid out by DTensor tensor parallelism). Outside a forward pass such a
    parameter holds only this process's slice, so a calibration that reads or writes weights
    directly must gather it first or refuse the model."""
    dtensor = _dtensor_class()
    if dtensor is None:
        return []
    return [n for n, p in model.named_parameters() if isinstance(p, dtensor)]


def gathered(tensor: torch.Tensor) -> torch.Tensor:
    """The whole of ``tensor``: a DTensor's ``full_tensor()`` (a collective over its device
    mesh: every process of the mesh must gather the same tensors in the same order), any other
    tensor as it is. Used for the weight pass of calibration, so a weight quantizer of a
    sharded model sees the weight one process would see."""
    dtensor = _dtensor_class()
    if dtensor is not None and isinstance(tensor, dtensor):
        return tensor.full_tensor()
    return tensor
