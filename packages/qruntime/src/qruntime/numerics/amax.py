"""amax reductions: the value a quantizer uses when it has no stored amax, and what calibration sees.

``amax_reduce`` is Model Optimizer's ``quant_utils.reduce_amax`` (docs/numerics.md,
'Conventions'): the larger of ``|max|`` and ``|min|`` over the reduced dims, kept dims of size 1,
computed in the input dtype (max/min do not round, so this is exact), NaN anywhere in a group gives
NaN. ``reduce_amax`` applies the granularity rules (docs/numerics.md, 'amax' and 'Block layouts')
to an attribute set, so that calibration code reduces to the same shape the fake-quant path
broadcasts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from qconfig.spec import QuantizerSpec, resolve_spec

from .blocks import static_block_plan
from .floats import E4M3_MAX

__all__ = [
    "amax_reduce",
    "axis_to_reduce_dims",
    "per_channel_axis",
    "reduce_amax",
    "resolve_amax",
]

_FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def axis_to_reduce_dims(ndim: int, axis: int | Sequence[int] | None) -> tuple[int, ...] | None:
    """The dims to reduce for a quantization ``axis`` (kept dims); None means all dims."""
    if axis is None:
        return None
    keep = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(i for i in range(ndim) if i not in keep and (i - ndim) not in keep)


@torch.no_grad()
def amax_reduce(x: torch.Tensor, dims: int | Sequence[int] | None = None) -> torch.Tensor:
    """``max(|max(x)|, |min(x)|)`` over ``dims`` with keepdim; a 0-d tensor for one element.

    Computed in ``x``'s dtype like ``quant_utils.reduce_amax`` (FP8 inputs are upcast first
    because they have no reduction kernels). A result with a single element is squeezed to 0-d,
    as Model Optimizer does (``squeeze_scalar``).
    """
    if x.dtype in _FP8_DTYPES:
        x = x.to(torch.get_default_dtype())
    if dims is None:
        hi, lo = torch.aminmax(x)
        return torch.maximum(hi.abs(), lo.abs())
    if isinstance(dims, int):
        dims = (dims,)
    # An empty tuple reduces every dim in torch (and hence in Model Optimizer): an ``axis`` that
    # lists all dims is per tensor, not per element.
    dims = tuple(dims)
    lo = torch.amin(x, dim=dims, keepdim=True)
    hi = torch.amax(x, dim=dims, keepdim=True)
    out = torch.maximum(hi.abs(), lo.abs())
    if out.numel() == 1:
        out = out.squeeze()
    return out


def per_channel_axis(attrs: QuantizerSpec, ndim: int) -> QuantizerSpec:
    """Turn ``block_sizes`` whose int keys all map to None into ``axis``.

    Step 5 of docs/numerics.md, 'Order of operations in a quantizer'.

    ``{-1: None}`` on ``(B, T, H)`` means "reduce the last dim": ``axis=(0, 1)``, one amax per
    token. The listed dims are reduced, the other dims keep their own amax.
    """
    if attrs.block_sizes is None:
        return attrs
    axes = attrs.block_axes
    if not all(v is None for v in axes.values()):
        return attrs
    listed = {k if k >= 0 else k + ndim for k in axes}
    keep = tuple(i for i in range(ndim) if i not in listed) or None
    return attrs.replace(axis=keep, block_sizes=None)


@torch.no_grad()
def reduce_amax(
    x: torch.Tensor,
    attributes: Any,
    *,
    bias_value: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """The amax a max calibration of ``x`` reduces to under ``attributes``.

    docs/numerics.md, 'amax' and 'Block layouts':

    * per tensor / per channel (``axis``): keepdim shape, e.g. ``(C, 1)`` for ``axis=0``;
    * static blocks: the static block view, e.g. ``(num_blocks, 1)`` for ``{-1: B}`` or
      ``(R/128, 1, C/128, 1)`` for 128x128 tiles — the shape ``fake_quant`` expects back;
    * NVFP4 dynamic blocks: the per-tensor (global) amax;
    * MX formats: None (they never use an amax).

    ``x`` is the tensor as it reaches the quantizer (after ``pre_quant_scale`` and rotation).
    ``bias_value`` is subtracted first, as calibration does for a calibrated static bias.
    The result keeps ``x``'s dtype; a max calibrator keeps a running element-wise max of it.
    """
    attrs = per_channel_axis(resolve_spec(attributes), x.dim())
    if attrs.is_mx:
        return None
    if bias_value is not None:
        x = x - bias_value
    if attrs.is_static_block:
        plan = static_block_plan(x.shape, attrs.block_sizes or {})
        return amax_reduce(plan.to_blocks(x), plan.reduce_dims)
    if attrs.is_dynamic_block:
        return amax_reduce(x)
    return amax_reduce(x, axis_to_reduce_dims(x.dim(), attrs.axis))


def resolve_amax(x: torch.Tensor, attrs: QuantizerSpec, amax: torch.Tensor | None) -> torch.Tensor:
    """The amax a quantizer uses for one call (``TensorQuantizer._get_amax``).

    docs/numerics.md, 'amax'.

    ``use_constant_amax`` -> 448 (the FP8 range); ``constant_amax=c`` -> ``c`` (it is written to
    the amax buffer); a given (calibrated) amax as stored; else the dynamic reduction of ``x``
    (in the working layout, in ``x``'s dtype) over the dims that ``axis`` does not keep.
    """
    if attrs.use_constant_amax:
        return torch.tensor(E4M3_MAX, dtype=torch.float32, device=x.device)
    if attrs.constant_amax is not None:
        return torch.tensor(float(attrs.constant_amax), dtype=torch.float32, device=x.device)
    if amax is not None:
        amax = torch.as_tensor(amax)
        return amax if amax.device == x.device else amax.to(x.device)
    return amax_reduce(x, axis_to_reduce_dims(x.dim(), attrs.axis))
