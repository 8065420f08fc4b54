"""Host-side layout analysis: how a broadcast amax maps onto a flat, contiguous tensor.

Why this exists: every INT/FP8 granularity of the reference (per tensor, per channel on any axis,
per token, static 1-D and 2-D blocks) is one element formula with an amax that broadcasts over
the working layout (docs/numerics.md, 'amax' and 'Block layouts'). A kernel cannot use torch
broadcasting, so the broadcast pattern is reduced here, once per call and without touching the
data, to a few integers that a kernel turns into a parameter index per tile row and column
(:class:`EwPlan`). Shapes
that do not reduce to that form return None and the caller uses the torch reference instead
(never a kernel that would give different bits).

Pure Python (no triton import): the dispatch tests exercise it without Triton.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BOTH",
    "COLS",
    "ROWS",
    "SCALAR",
    "EwPlan",
    "Group",
    "RowPlan",
    "TilePlan",
    "collapse",
    "ew_plan",
    "row_plan",
    "tile_plan",
]


@dataclass(frozen=True)
class Group:
    """A run of adjacent dims that are all kept (own amax) or all reduced (shared amax)."""

    size: int
    kept: bool


def collapse(shape: Sequence[int], param_shape: Sequence[int]) -> list[Group] | None:
    """Merge ``shape`` into alternating kept/reduced groups under a broadcast ``param_shape``.

    A dim is *kept* when the parameter has the same (non-1) size there, *reduced* when the
    parameter has size 1. Size-1 dims of ``shape`` are dropped (they change no index). None when
    the parameter does not broadcast to ``shape`` without growing it (torch would then produce a
    different output shape; the reference handles that case).
    """
    if len(param_shape) > len(shape):
        if any(d != 1 for d in param_shape[: len(param_shape) - len(shape)]):
            return None
        param_shape = param_shape[len(param_shape) - len(shape) :]
    pshape = (1,) * (len(shape) - len(param_shape)) + tuple(param_shape)
    groups: list[Group] = []
    for n, p in zip(shape, pshape, strict=True):
        if p not in (1, n):
            return None
        if n == 1:
            continue
        kept = p == n
        if groups and groups[-1].kept == kept:
            groups[-1] = Group(groups[-1].size * n, kept)
        else:
            groups.append(Group(n, kept))
    return groups


#: How an elementwise kernel finds an element's parameter (:class:`EwPlan`).
SCALAR, ROWS, COLS, BOTH = 0, 1, 2, 3


@dataclass(frozen=True)
class EwPlan:
    """A 2-D view ``(rows, cols)`` of the tensor and the parameter index of element ``(r, c)``:

    * ``SCALAR``: one parameter (per tensor);
    * ``ROWS``: ``row_idx(r)`` with ``row_idx(r) = (r // rdiv) % rmod`` (the ``%`` only when
      ``row_mod``), e.g. per channel on dim 0, static 1-D blocks;
    * ``COLS``: ``c // cdiv``, e.g. per channel on the last dim;
    * ``BOTH``: ``row_idx(r) * col_groups + c // cdiv``, e.g. the 2-D block view.

    The split is chosen so the index math runs on the 1-D row and column vectors of a tile
    (a few integer ops per row or column, not per element) and a parameter is loaded once per
    row (ROWS) or column (COLS); only BOTH gathers per element.
    """

    rows: int
    cols: int
    pattern: int
    rdiv: int = 1
    rmod: int = 1
    row_mod: bool = False
    cdiv: int = 1
    col_groups: int = 1

    def index(self, r: Any, c: Any) -> Any:
        """The parameter index of ``(r, c)`` (ints or broadcasting tensors), as the kernel does."""
        row = r // self.rdiv
        if self.row_mod:
            row = row % self.rmod
        if self.pattern == SCALAR:
            return 0 * r + 0 * c
        if self.pattern == ROWS:
            return row + 0 * c
        if self.pattern == COLS:
            return c // self.cdiv + 0 * r
        return row * self.col_groups + c // self.cdiv


def ew_plan(shape: Sequence[int], param_shape: Sequence[int]) -> EwPlan | None:
    """The :class:`EwPlan` of an elementwise formula with a broadcast parameter (≤ 2 kept runs).

    Two kept runs cover per channel on any axis or on adjacent axes, per token and the 2-D block
    view ``(R/b, b, C/b, b)``; three or more (e.g. ``axis=(0, 2, 4)`` on a 5-D input) give None.
    """
    groups = collapse(shape, param_shape)
    if groups is None:
        return None
    numel = math.prod(shape)
    kept = [i for i, g in enumerate(groups) if g.kept]
    if not kept:
        return EwPlan(1, numel, SCALAR)
    if len(kept) > 2:
        return None
    last = kept[-1]
    tail = math.prod(g.size for g in groups[last + 1 :])  # the trailing reduced run (or 1)
    if len(kept) == 1:
        k = groups[last].size
        lead = math.prod(g.size for g in groups[:last])
        if tail == 1:  # [R?, K]: the parameter follows the columns
            return EwPlan(lead, k, COLS)
        return EwPlan(lead * k, tail, ROWS, rmod=k, row_mod=lead > 1)
    first = kept[0]
    k1, k2 = groups[first].size, groups[last].size
    mid = math.prod(g.size for g in groups[first + 1 : last])
    lead = math.prod(g.size for g in groups[:first])
    return EwPlan(
        lead * k1 * mid,
        k2 * tail,
        BOTH,
        rdiv=mid,
        rmod=k1,
        row_mod=lead > 1,
        cdiv=tail,
        col_groups=k2,
    )


@dataclass(frozen=True)
class RowPlan:
    """Groups of ``block`` consecutive elements inside rows of ``row_len`` (the last one padded).

    One pass reads a group, reduces its amax and writes it: per token, per output channel of a
    row-major weight, static 1-D blocks and the NVFP4/MX row blocks (docs/numerics.md,
    'Dynamic blocks').
    """

    rows: int
    row_len: int
    block: int

    @property
    def blocks_per_row(self) -> int:
        return -(-self.row_len // self.block)

    @property
    def num_groups(self) -> int:
        return self.rows * self.blocks_per_row


def row_plan(shape: Sequence[int], amax_shape: Sequence[int]) -> RowPlan | None:
    """A :class:`RowPlan` when the amax keeps a leading run and reduces the trailing one."""
    groups = collapse(shape, amax_shape)
    if groups is None:
        return None
    if len(groups) == 2 and groups[0].kept and not groups[1].kept:
        return RowPlan(groups[0].size, groups[1].size, groups[1].size)
    if len(groups) == 1 and not groups[0].kept:  # a single group (per tensor, one row)
        return RowPlan(1, groups[0].size, groups[0].size)
    return None


@dataclass(frozen=True)
class TilePlan:
    """2-D tiles: the view ``(k1, r1, k2, r2)`` with one amax per ``(k1, k2)`` tile."""

    k1: int
    r1: int
    k2: int
    r2: int


def tile_plan(shape: Sequence[int], amax_shape: Sequence[int]) -> TilePlan | None:
    """A :class:`TilePlan` for the kept/reduced/kept/reduced pattern of 2-D static blocks."""
    groups = collapse(shape, amax_shape)
    if groups is None or len(groups) != 4:
        return None
    if [g.kept for g in groups] != [True, False, True, False]:
        return None
    return TilePlan(groups[0].size, groups[1].size, groups[2].size, groups[3].size)
