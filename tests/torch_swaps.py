"""Undo what Model Optimizer's ``replace_function`` leaves behind when its forward raises.

Model Optimizer swaps ``torch.nn.functional.linear`` (fused experts), ``F.softmax`` (the
attention P path) and ``torch.matmul`` (legacy attention) for the duration of a forward, and
restores them only when that forward succeeds. Tests use it as an oracle and often make it fail
on purpose, so without this a failing Model Optimizer run would leave, say, ``F.linear``
quantizing with a stale quantizer for every later test on the worker.
"""

import contextlib

import torch

_SWAPPED = (
    (torch.nn.functional, "linear"),
    (torch.nn.functional, "softmax"),
    (torch, "matmul"),
    (torch, "bmm"),
)


@contextlib.contextmanager
def torch_functions_restored():
    """Put the swappable torch functions back as they were, on success or failure."""
    saved = [(owner, name, getattr(owner, name)) for owner, name in _SWAPPED]
    try:
        yield
    finally:
        for owner, name, function in saved:
            setattr(owner, name, function)
            cache = "_" + name
            if owner.__dict__.get(cache) is function:
                delattr(owner, cache)
