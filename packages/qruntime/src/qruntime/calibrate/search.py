"""The weight amax search shared by ``mse`` and ``local_hessian``: every candidate at once.

Model Optimizer's search (``MseCalibrator`` / ``NVFP4MSECalibrator``) fake-quantizes the weight
once per candidate amax in a Python loop and keeps one loss per candidate and channel (or block,
or tensor). Here a chunk of candidates is evaluated in one batch: the weight, in the layout its
quantizer computes in (:class:`WeightView`), is repeated once per candidate along the first
dim, the candidate amaxes are stacked the same way, and *one* call of
:func:`qruntime.numerics.fake_quant` quantizes the batch (the Triton kernels on CUDA). The
arithmetic per element and the reduction per channel are the same float32 operations on the same
operands as the loop's, so the losses — and the argmin over them, first index on ties — are bit
for bit Model Optimizer's (checked on CPU against the released wheel in
tests/conformance/test_mse_conformance.py). Two cases keep a loop, for exactness:

* a loss that is a single number per candidate (per-tensor amax) over at least torch's parallel
  grain of elements, with several CPU threads: torch splits such a full reduction between the
  threads, so the per-candidate sums are taken one by one, with the same split (the fake quant
  itself is still batched);
* quantizers whose fake quant cannot be batched along the first dim — dynamic-block formats,
  whose one amax is the per-tensor scale of every block, and weight quantizers that apply a
  rotation or a pre-quantization scale (applied twice by Model Optimizer's search: once before
  the calibrator sees the weight and again by the quantizer it calls; reproduced) — run one
  ``fake_quant`` per candidate.

Chunks hold at most :data:`MEMORY_BUDGET_BYTES` of batched working tensors.
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

#: Float32 tensors of the weight's size alive per candidate in a chunk (repeated input,
#: quantized output, error, and a temporary inside the format function).
_COPIES_PER_CANDIDATE = 4

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


def _scalar_sums(err: torch.Tensor, shape: tuple[int, ...], k: int) -> torch.Tensor:
    """Per-candidate full sums taken one reduction at a time (module docstring)."""
    flat = err.reshape(k, -1)
    return torch.stack([flat[j].view(shape).sum() for j in range(k)])


def _needs_scalar_sums(view: WeightView, losses_per_candidate: int) -> bool:
    return (
        losses_per_candidate == 1
        and view.x.numel() >= _PARALLEL_GRAIN
        and view.x.device.type == "cpu"
        and torch.get_num_threads() > 1
    )


def _chunk_losses(
    view: WeightView,
    amaxes: torch.Tensor,
    quantize: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    error: ErrorFn | None,
) -> torch.Tensor:
    """Losses ``(k, *kept)`` of ``k`` candidate amaxes (``amaxes``: ``(k, *amax.shape)``)."""
    x = view.x
    k = amaxes.shape[0]
    mode = view.mode
    if mode == "general":
        # (k, *view): one amax per candidate in the stored amax's own shape.
        xb_shape: tuple[int, ...] = (k, *x.shape)
        amax_b = amaxes.reshape(k, *(view.amax.shape if view.amax.dim() else [1] * x.dim()))
        x_full = x.unsqueeze(0).expand(xb_shape)
    else:
        # (k * rows, cols): one amax per row of the batch (a chunk-friendly layout).
        rows = 1 if mode == "tensor" else x.shape[0]
        xb_shape = (k * rows, x.numel() // rows)
        amax_b = amaxes.reshape(k * rows, 1)
        x_full = x.reshape(1, rows, -1).expand(k, rows, -1).reshape(xb_shape)
    if quantize is not None:
        xq = quantize(x_full.contiguous(), amax_b)
    else:
        xq = torch.stack([_quantize_one(view, a) for a in amaxes]).reshape(xb_shape)
    if error is None:
        err = F.mse_loss(x_full, xq, reduction="none")
    else:
        err = error(x_full, xq)
    # The loss of each candidate: Model Optimizer's sum over the reduced dims of the view.
    if mode == "tensor":
        if _needs_scalar_sums(view, 1):
            return _scalar_sums(err, tuple(x.shape), k)
        return err.reshape(k, -1).sum(dim=1)
    if mode == "rows":
        if _needs_scalar_sums(view, x.shape[0]):
            return _scalar_sums(err, tuple(x.shape), k).reshape(k, 1)
        return err.sum(dim=1).reshape(k, x.shape[0])
    assert view.reduce is not None
    dims = [d + 1 for d in view.reduce]
    kept = [n for i, n in enumerate(x.shape) if i not in view.reduce]
    if _needs_scalar_sums(view, math.prod(kept)):
        flat = err.reshape(k, *x.shape)
        return torch.stack([flat[j].sum(dim=list(view.reduce)) for j in range(k)])
    return err.reshape(k, *x.shape).sum(dim=dims)


def search(
    view: WeightView,
    candidates: torch.Tensor,
    candidate_amax: Callable[[torch.Tensor], torch.Tensor],
    error: ErrorFn | None = None,
    *,
    budget: int = MEMORY_BUDGET_BYTES,
) -> torch.Tensor:
    """The best candidate per channel/block/tensor: ``candidates[argmin_k loss_k]``.

    ``candidate_amax(c)`` maps candidates ``(k,)`` to their amaxes ``(k, *view.amax.shape)``;
    ``error`` replaces the squared error (local Hessian). Returns the chosen candidates in the
    shape of the per-candidate loss (``()``, ``(rows,)`` or the kept dims); ties go to the
    first (smallest-index) candidate, as ``torch.argmin``.
    """
    quantize = _quantize_batched(view) if view.batchable else None
    per_candidate = max(1, view.x.numel() * 4 * _COPIES_PER_CANDIDATE)
    chunk = max(1, min(len(candidates), budget // per_candidate))
    losses = [
        _chunk_losses(view, candidate_amax(candidates[i : i + chunk]), quantize, error)
        for i in range(0, len(candidates), chunk)
    ]
    best = torch.argmin(torch.cat(losses), dim=0)
    return candidates[best]
