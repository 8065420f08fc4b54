"""Affine (asymmetric) quantization bias — the ``bias`` attribute (docs/numerics.md, 'Affine bias').

``bias = {axes...: None, "type": "static" | "dynamic", "method": "mean" | "max_min"}``. The listed
integer axes are the ones *reduced* (Model Optimizer's docstring says the opposite; its code
reduces them, and so does this module). INT and FP8 compute ``Q(x - b) + b``; NVFP4 and MX fake
quant ignore the bias entirely.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["bias_axes", "compute_dynamic_bias", "resolve_bias"]


def bias_axes(bias: Mapping[Any, Any]) -> tuple[int, ...]:
    """The integer keys of the ``bias`` attribute: the dims the bias is reduced over."""
    return tuple(k for k in bias if isinstance(k, int))


def _reduce_dims(x: torch.Tensor, axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(i for i in range(x.dim()) if i in axes or (i - x.dim()) in axes)


def compute_dynamic_bias(x: torch.Tensor, bias: Mapping[Any, Any]) -> torch.Tensor:
    """The bias of a dynamic ``bias`` attribute for this input, in ``x``'s dtype.

    ``method="mean"``: mean over the listed axes; ``"max_min"``: ``(max + min) / 2``. With no
    integer axis the reduction is over the whole tensor (a 0-d result). keepdim shapes, e.g.
    ``{-2, -4}`` on ``(B, H, T, D)`` gives ``(1, H, 1, D)``.
    """
    method = bias.get("method", "mean")
    axes = bias_axes(bias)
    if method not in ("mean", "max_min"):
        raise ValueError(f"Unknown bias method: {method}")
    if not axes:
        if method == "mean":
            return torch.mean(x)
        return (torch.max(x) + torch.min(x)) / 2
    dims = _reduce_dims(x, axes)
    if method == "mean":
        return torch.mean(x, dim=dims, keepdim=True)
    return (torch.amax(x, dim=dims, keepdim=True) + torch.amin(x, dim=dims, keepdim=True)) / 2


def resolve_bias(
    x: torch.Tensor, bias: Mapping[Any, Any] | None, bias_value: torch.Tensor | None
) -> torch.Tensor | None:
    """The bias to subtract for this call: None without a ``bias`` attribute.

    A static bias is the calibrated ``bias_value`` (required); a dynamic one is recomputed from
    ``x`` — the tensor that reaches the quantizer (after any static block reshape).
    """
    if bias is None:
        return None
    kind = bias.get("type", "static")
    if kind == "dynamic":
        return compute_dynamic_bias(x, bias)
    if kind != "static":
        raise ValueError(f"Unsupported bias type: {kind}")
    if bias_value is None:
        raise ValueError("a static bias attribute needs bias_value (the calibrated bias)")
    return bias_value
