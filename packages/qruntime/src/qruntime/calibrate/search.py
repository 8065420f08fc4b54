"""The weight amax search shared by ``mse`` and ``local_hessian``: many candidates at once.

Model Optimizer's search (``MseCalibrator`` / ``NVFP4MSECalibrator``) fake-quantizes the weight
once per candidate amax in a Python loop and keeps one loss per candidate and channel (or block,
or tensor). Here candidates are evaluated in batches: the weight, in the layout its quantizer
computes in (:class:`WeightView`), is repeated once per candidate along the first dim, the
candidate amaxes are stacked the same way, and *one* call of
:func:`qruntime.numerics.fake_quant` quantizes the batch (the Triton kernels on CUDA; on CPU an
element-wise format broadcasts the weight against the stacked amaxes instead of copying it). The
arithmetic per element and the reduction per channel are the same float32 operations on the same
operands as the loop's, so the losses — and the argmin over them, first index on ties — are bit
for bit Model Optimizer's (checked on CPU against the released wheel in
tests/conformance/test_mse_conformance.py).

Batch sizes: with one loss per row of the view (per channel, per block), a batch is a block of
rows for all candidates (or fewer candidates for a long row); otherwise a batch is the whole view
for some candidates. A batched tensor has at most :data:`CPU_BATCH_ELEMENTS` elements on CPU
(cache-sized: the work is memory-bound there) and :data:`MEMORY_BUDGET_BYTES` of working tensors
elsewhere. The result does not depend on the batch size. Two cases keep a loop, for exactness:

* a loss that is a single number per candidate (per-tensor amax) over at least torch's parallel
  grain of elements, with several CPU threads: torch splits such a full reduction between the
  threads, so the per-candidate sums are taken one by one, with the same split (the fake quant
  itself is still batched);
* quantizers whose fake quant cannot be batched along the first dim — dynamic-block formats,
  whose one amax is the per-tensor scale of every block, and weight quantizers that apply a
  rotation or a pre-quantization scale (applied twice by Model Optimizer's search: once before
  the calibrator sees the weight and again by the quantizer it calls; reproduced) — run one
  ``fake_quant`` per candidate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from qconfig.spec import NO_ROTATION, QuantizerSpec

from qruntime.numerics import fake_quant
from qruntime.numerics.amax import axis_to_reduce_dims
from qruntime.numerics.blocks import StaticBlockPlan, static_block_plan
from qruntime.numerics.rotation import rotate
from qruntime.quantizer import TensorQuantizer

__all__ = [
    "CPU_BATCH_ELEMENTS",
    "MEMORY_BUDGET_BYTES",
    "ErrorFn",
    "WeightView",
    "fp8_scale_candidates",
    "multiplier_candidates",
    "search",
    "weight_view",
]

#: Upper bound on the batched tensors of one chunk of candidates (input copies, quantized
#: copies, errors), in bytes; one candidate is always evaluated even if it alone exceeds it.
MEMORY_BUDGET_BYTES = 256 << 20

#: Float32 tensors of the batch's size alive at once (repeated input, quantized output,
#: error, and a temporary inside the format function).
_COPIES_PER_CANDIDATE = 4

#: Elements of one batched tensor on CPU: enough to amortise the per-call overhead, few enough
#: for the batch and its temporaries to stay in cache (a batch is a block of weight rows for all
#: candidates, or fewer candidates for a longer row).
CPU_BATCH_ELEMENTS = 1 << 19

#: torch's intra-op grain: a full reduction over at least this many elements is split between
#: CPU threads (in an order that depends on the thread count).
_PARALLEL_GRAIN = 32768

#: ``error(x, xq)`` on a batch: ``x`` and ``xq`` of the batched view's shape (candidates
#: stacked along the first dim, candidate-major); returns the element-wise error, same shape.
ErrorFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def multiplier_candidates(
    start: float, stop: float, step: float, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``linspace(start, stop, ceil((stop - start) / step) + 1)``: the ``mse`` grid.

    With the defaults (0.25, 4.0, 0.1) that is 39 multipliers, and 1.0 — the max amax itself —
    is not one of them; the grid means exactly this in Model Optimizer's config.
    """
    steps = math.ceil((stop - start) / step) + 1
    return torch.linspace(start, stop, steps=steps, device=device)


def fp8_scale_candidates(device: torch.device | str = "cpu") -> torch.Tensor:
    """Every finite positive FP8 E4M3 value divided by 448 (126 values, ascending).

    A block amax of ``global_amax * c`` then gives a block scale that is exactly representable
    in E4M3, so the sweep enumerates the block scales NVFP4 can store.
    """
    codes = torch.arange(0, 128, dtype=torch.uint8, device=device)
    values = codes.view(torch.float8_e4m3fn).float()
    return values[torch.isfinite(values) & (values > 0)] / 448.0


@dataclass(frozen=True)
class WeightView:
    """A weight as its quantizer's calibrator sees it, and how to quantize it in batches.

    ``x``: float32, the quantizer's working layout (the static block view for static block
    quantizers, the weight itself otherwise; after pre-quant scale and rotation). ``amax``: the
    stored amax (keepdim form or 0-d). ``reduce``: the dims of ``x`` one amax covers (None: all).
    """

    x: torch.Tensor
    amax: torch.Tensor
    reduce: tuple[int, ...] | None
    spec: QuantizerSpec
    global_amax: torch.Tensor | None
    backend: str
    plan: StaticBlockPlan | None
    pre_quant_scale: torch.Tensor | None

    @property
    def batchable(self) -> bool:
        """Whether one ``fake_quant`` call can quantize many candidates (module docstring)."""
        spec = self.spec
        if self.pre_quant_scale is not None or spec.rotate.enable or spec.is_dynamic_block:
            return False
        if spec.family == "nvfp4":
            return self.x.dim() == 2
        return True

    @property
    def mode(self) -> str:
        """``"tensor"`` (one loss), ``"rows"`` (one loss per entry of dim 0, every other dim
        reduced: per channel, per block) or ``"general"``."""
        nd = self.x.dim()
        if self.reduce is None or len(self.reduce) == nd:
            return "tensor"
        if nd >= 1 and self.reduce == tuple(range(1, nd)) and self.amax.numel() == self.x.shape[0]:
            return "rows"
        return "general"


def weight_view(q: TensorQuantizer, weight: torch.Tensor) -> WeightView:
    """The :class:`WeightView` of ``weight`` under ``q`` (an enabled quantizer with an amax)."""
    spec = q.spec
    amax = q.amax
    assert amax is not None
    x = weight.detach()
    pqs = q.pre_quant_scale
    if pqs is not None:
        x = x * pqs
    if spec.rotate.enable:
        x = rotate(x, spec.rotate)
    plan = static_block_plan(x.shape, spec.block_sizes or {}) if q.is_static_block_quant else None
    if plan is not None:
        x = plan.to_blocks(x)
    x = x.to(torch.float32).contiguous()
    reduce = axis_to_reduce_dims(x.dim(), q.axis)
    return WeightView(x, amax, reduce, spec, q.global_amax, q.backend, plan, pqs)


def _quantize_batched(view: WeightView) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``quantize(xb, amax_b)`` for candidate-stacked batches (``view.batchable``)."""
    spec = view.spec.replace(enable=True, rotate=NO_ROTATION, fake_quant=True)
    if spec.family == "nvfp4":
        # (k * blocks, block): the static plan of this shape is the identity.
        def nvfp4(xb: torch.Tensor, amax_b: torch.Tensor) -> torch.Tensor:
            return fake_quant(xb, spec, amax_b, global_amax=view.global_amax, backend=view.backend)

        return nvfp4
    # INT / FP8: element-wise with a broadcast amax; the layout is already the working one.
    plain = spec.replace(block_sizes=None, axis=None)

    def elementwise(xb: torch.Tensor, amax_b: torch.Tensor) -> torch.Tensor:
        return fake_quant(xb, plain, amax_b, backend=view.backend)

    return elementwise


def _quantize_one(view: WeightView, amax: torch.Tensor) -> torch.Tensor:
    """What the quantizer's own forward returns for ``view.x`` with ``amax``, in the view's
    layout (the unbatchable cases: pre-quant scale and rotation are applied again)."""
    spec = view.spec.replace(enable=True, fake_quant=True)
    x = view.plan.from_blocks(view.x) if view.plan is not None else view.x
    y = fake_quant(
        x,
        spec,
        amax,
        global_amax=view.global_amax,
        pre_quant_scale=view.pre_quant_scale,
        backend=view.backend,
    )
    return view.plan.to_blocks(y) if view.plan is not None else y


def _sums(err: torch.Tensor, view: WeightView, k: int) -> torch.Tensor:
    """Per-candidate losses ``(k, *kept)`` of errors ``(k, *view.x.shape)`` (any layout with
    that element order): Model Optimizer's sum over the reduced dims, one candidate at a time
    where a single-output reduction would be split between CPU threads (module docstring)."""
    x = view.x
    dims = list(range(x.dim())) if view.reduce is None else list(view.reduce)
    kept = math.prod(n for i, n in enumerate(x.shape) if i not in dims)
    if (
        kept == 1
        and x.numel() >= _PARALLEL_GRAIN
        and x.device.type == "cpu"
        and torch.get_num_threads() > 1
    ):
        flat = err.reshape(k, *x.shape)
        return torch.stack([flat[j].sum(dim=dims) for j in range(k)]).reshape(k, -1)
    if view.mode == "general":
        return err.reshape(k, *x.shape).sum(dim=[d + 1 for d in dims]).reshape(k, -1)
    return err.reshape(k * kept, -1).sum(dim=1).reshape(k, kept)


def _errors(x: torch.Tensor, xq: torch.Tensor, error: ErrorFn | None) -> torch.Tensor:
    if error is None:
        return F.mse_loss(x, xq, reduction="none")
    return error(x, xq)


def _whole_view_losses(
    view: WeightView,
    amaxes: torch.Tensor,
    quantize: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    error: ErrorFn | None,
) -> torch.Tensor:
    """Losses ``(k, kept)`` of ``k`` candidates on the whole view, stacked candidate-major."""
    x = view.x
    k = amaxes.shape[0]
    if quantize is None:
        xq = torch.stack([_quantize_one(view, a) for a in amaxes])
        return _sums(_errors(x.unsqueeze(0).expand_as(xq), xq, error), view, k)
    if view.mode == "general":
        shape = view.amax.shape if view.amax.dim() else (1,) * x.dim()
        x_rep = x.unsqueeze(0).expand(k, *x.shape).contiguous()
        xq = quantize(x_rep, amaxes.reshape(k, *shape))
    else:  # one row per candidate (per tensor), or every row of the view (rows)
        rows = 1 if view.mode == "tensor" else x.shape[0]
        x_rep = x.reshape(1, rows, -1).expand(k, rows, -1).reshape(k * rows, -1)
        xq = quantize(x_rep, amaxes.reshape(k * rows, 1))
    return _sums(_errors(x_rep, xq, error), view, k)


def _row_block_losses(
    x_block: torch.Tensor,
    amaxes: torch.Tensor,
    quantize: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    error: ErrorFn | None,
    broadcast: bool,
) -> torch.Tensor:
    """Losses ``(k, r)`` of a block of ``r`` rows (one loss per row) for ``k`` candidates
    (``amaxes``: ``(k, r)``).

    ``broadcast``: the format is element-wise, so the block is quantized against the
    ``(k, r, 1)`` amaxes by broadcasting, without a repeated copy of it (the same operations
    on the same operands, one pass less over memory: used on CPU).
    """
    k, r = amaxes.shape
    if broadcast:
        xq = quantize(x_block, amaxes.reshape(k, r, 1)).reshape(k, r, -1)
        x_rep = x_block.unsqueeze(0).expand_as(xq)
    else:
        x_rep = x_block.unsqueeze(0).expand(k, r, -1).reshape(k * r, -1)
        xq = quantize(x_rep, amaxes.reshape(k * r, 1))
    return _errors(x_rep, xq, error).sum(dim=-1).reshape(k, r)


def _batch_elements(x: torch.Tensor) -> int:
    if x.device.type == "cpu":
        return CPU_BATCH_ELEMENTS
    return max(1, MEMORY_BUDGET_BYTES // (4 * _COPIES_PER_CANDIDATE))


def search(
    view: WeightView,
    candidates: torch.Tensor,
    candidate_amax: Callable[[torch.Tensor], torch.Tensor],
    error: ErrorFn | None = None,
    *,
    batch_elements: int | None = None,
) -> torch.Tensor:
    """The best candidate per channel/block/tensor: ``candidates[argmin_k loss_k]``.

    ``candidate_amax(c)`` maps candidates ``(k,)`` to their amaxes ``(k, *view.amax.shape)``;
    ``error`` replaces the squared error (local Hessian). Returns the chosen candidates in the
    shape of one candidate's loss (``()``, ``(rows,)`` or the kept dims); ties go to the first
    (smallest-index) candidate, as ``torch.argmin``. ``batch_elements`` caps the elements of one
    batched tensor (default: :data:`CPU_BATCH_ELEMENTS` on CPU, :data:`MEMORY_BUDGET_BYTES`
    elsewhere); the result does not depend on it.
    """
    x = view.x
    total = len(candidates)
    cap = batch_elements or _batch_elements(x)
    amaxes = candidate_amax(candidates)
    quantize = _quantize_batched(view) if view.batchable else None
    if quantize is not None and view.mode == "rows" and x.shape[0] > 1:
        rows = x.shape[0]
        cols = x.numel() // rows
        unit = getattr(error, "row_multiple", 1)
        # All candidates for a block of rows where a block fits, else fewer candidates.
        if total * cols * unit <= cap:
            k, r = total, max(1, cap // (total * cols * unit)) * unit
        else:
            k, r = max(1, cap // (cols * unit)), unit
        if k * r < 2:  # a single-output sum would be split between threads: keep two rows
            r = 2 * unit
        x2 = x.reshape(rows, cols)
        by_row = amaxes.reshape(total, rows)
        losses = torch.empty(total, rows, dtype=torch.float32, device=x.device)
        broadcast = x.device.type == "cpu" and view.spec.family in ("int", "fp")
        for k0 in range(0, total, k):
            for r0 in range(0, rows, r):
                losses[k0 : k0 + k, r0 : r0 + r] = _row_block_losses(
                    x2[r0 : r0 + r], by_row[k0 : k0 + k, r0 : r0 + r], quantize, error, broadcast
                )
    else:
        k = max(1, cap // max(1, x.numel()))
        losses = torch.cat(
            [
                _whole_view_losses(view, amaxes[k0 : k0 + k], quantize, error)
                for k0 in range(0, total, k)
            ]
        )
    best = torch.argmin(losses, dim=0)
    kept = [n for i, n in enumerate(x.shape) if view.reduce is not None and i not in view.reduce]
    return candidates[best].reshape(kept)
