"""Static block layout: the pad-and-reshape plan of ``TensorQuantizer``.

docs/numerics.md, 'Block layouts'.

Static block quantization (INT, FP8, static NVFP4) is done by ``TensorQuantizer`` itself: it pads
on the right with zeros, reshapes, quantizes with a per-"outer"-dim amax and reshapes back.
Dynamic block formats (NVFP4, MX) are laid out by their kernels instead (rows of the last
dim cut into blocks, the partial last block zero padded); that layout is
:func:`.chunking.map_blocks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from qconfig.spec import BLOCK_SPECIAL_KEYS

__all__ = ["StaticBlockPlan", "static_block_plan"]


@dataclass(frozen=True)
class StaticBlockPlan:
    """How one input shape is padded and viewed for static block quantization.

    ``axis`` lists the dims of the reshaped view that keep their own amax; all other dims (the
    inner block dims) are reduced. ``pad`` is an ``F.pad`` tuple (right padding only) or None.
    """

    shape: tuple[int, ...]
    padded_shape: tuple[int, ...]
    reshape: tuple[int, ...]
    axis: tuple[int, ...]
    pad: tuple[int, ...] | None

    @property
    def reduce_dims(self) -> tuple[int, ...]:
        """The dims of the reshaped view that one amax covers."""
        return tuple(i for i in range(len(self.reshape)) if i not in self.axis)

    def to_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """Pad with zeros on the right and reshape into the block view."""
        if tuple(x.shape) != self.shape:
            raise ValueError(f"block plan for shape {self.shape} applied to shape {tuple(x.shape)}")
        if self.pad is not None:
            x = F.pad(x, self.pad, "constant", 0)
        return x.reshape(self.reshape)

    def from_blocks(self, y: torch.Tensor) -> torch.Tensor:
        """Reshape to the padded shape and slice the padding off."""
        y = y.reshape(self.padded_shape)
        if self.padded_shape != self.shape:
            y = y[tuple(slice(0, n) for n in self.shape)]
        return y


def _block_size_for(block_axes: Mapping[int, Any], ax: int, ndim: int) -> Any:
    # Model Optimizer looks a dim up under its positive index first, then its negative one.
    return block_axes[ax] if ax in block_axes else block_axes.get(ax - ndim)


@lru_cache(maxsize=256)
def _plan(shape: tuple[int, ...], items: tuple[tuple[Any, Any], ...]) -> StaticBlockPlan:
    block_axes = dict(items)
    ndim = len(shape)
    last = block_axes.get(ndim - 1) or block_axes.get(-1)
    if last and len(block_axes) == 1:
        # One block axis, the last one: flatten to (-1, B) so blocks never cross a row.
        n = shape[-1]
        padded = n + (-n) % last
        pad = (0, padded - n) if padded != n else None
        padded_shape = (*shape[:-1], padded)
        return StaticBlockPlan(shape, padded_shape, (-1, last), (0,), pad)

    reshape: list[int] = []
    keep: list[bool] = []
    pads: list[int] = []
    for ax in range(ndim):
        bsize = _block_size_for(block_axes, ax, ndim)
        n = shape[ax]
        if bsize is not None:
            padded = n + (-n) % bsize
            reshape.extend([padded // bsize, bsize])
            keep.extend([True, False])
            pads.append(padded - n)
        else:
            reshape.append(n)
            keep.append(True)
            pads.append(0)
    padded_shape = tuple(n + p for n, p in zip(shape, pads, strict=True))
    pad: tuple[int, ...] | None = None
    if any(pads):
        flat: list[int] = []
        for p in reversed(pads):
            flat.extend([0, p])
        pad = tuple(flat)
    axis = tuple(i for i, k in enumerate(keep) if k)
    return StaticBlockPlan(tuple(shape), padded_shape, tuple(reshape), axis, pad)


def static_block_plan(shape: torch.Size | tuple[int, ...], block_sizes: Mapping) -> StaticBlockPlan:
    """The static block plan for ``shape`` and the integer axes of ``block_sizes`` (cached)."""
    items = tuple(
        sorted(
            ((k, v) for k, v in block_sizes.items() if k not in BLOCK_SPECIAL_KEYS),
            key=lambda kv: kv[0],
        )
    )
    return _plan(tuple(shape), items)
