"""Checks on tensor *values* (a negative amax, a negative input to an unsigned quantizer) that
hold in eager mode and under ``torch.compile`` alike.

Why a module of its own: in eager mode such a check reads the value back (``bool(t)``) and raises
the error Model Optimizer raises. Under ``torch.compile`` that read-back is data-dependent Python
control flow, a graph break per check (they were most of the ~50 breaks of a compiled quantized
model). Traced, the same condition becomes ``torch._assert_async``: it stays in the graph and
fails the call at run time with the same message, as a ``RuntimeError`` on CPU (on CUDA a
device-side assert, which ends the process's CUDA context). Eager semantics are unchanged.
"""

from __future__ import annotations

import torch

__all__ = ["require"]


def require(cond: torch.Tensor, error: type[Exception], message: str) -> None:
    """Raise ``error(message)`` unless the one-element bool tensor ``cond`` is true.

    Under ``torch.compile`` the check is traced into the graph instead (module docstring): it
    still fails the call, with a ``RuntimeError`` carrying ``message``.
    """
    if torch.compiler.is_compiling():
        torch._assert_async(cond, message)
        return
    if not bool(cond):
        raise error(message)
