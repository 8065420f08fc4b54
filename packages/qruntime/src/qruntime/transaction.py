"""All-or-nothing model changes: snapshot every module's class and attribute dicts, restore on error.

``apply_plan`` only ever *adds* to a model (class swaps, quantizer submodules, buffers, flags)
and replaces buffers by new tensors instead of writing into them, so restoring each module's
``__class__`` and a one-level copy of its ``__dict__`` (``_parameters``, ``_buffers``,
``_modules``, hook dicts, the training flag, ...) puts the model back exactly as it was.
Parameter and buffer tensors themselves are never written, and calibration runs in eval mode
without autograd; ``changed_tensors`` lets callers verify that a user ``forward_loop`` did not
write into them in place either.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["ModelSnapshot"]

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
        self._versions = {
            id(t): (t, t._version)
            for m, _, _ in self._entries
            for t in (*m._parameters.values(), *m._buffers.values())
            if isinstance(t, torch.Tensor)
        }

    def restore(self) -> None:
        """Put every module's class and attributes back (new submodules are simply dropped)."""
        for module, cls, state in self._entries:
            module.__class__ = cls
            _restore_state(module.__dict__, state)

    def changed_tensors(self) -> list[torch.Tensor]:
        """Parameters/buffers written in place since the snapshot (by code outside qruntime)."""
        return [t for t, version in self._versions.values() if t._version != version]
