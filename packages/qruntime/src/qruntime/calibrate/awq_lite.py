"""``awq_lite`` calibration (``AWQLiteCalibConfig``): search, per quantized linear, the
per-input-channel scale that makes the quantized weight reproduce the float output best.

Why: with weight-only INT4 (or W4A8) the error that matters is that of the layer's output, and
the input channels that carry large activations matter most. AWQ multiplies weight column ``j``
by ``s_j`` before quantization and the input channel by ``1/s_j`` (the input quantizer's
``pre_quant_scale``): exact in float arithmetic, but the salient columns get more of the
quantization grid. ``s`` is a one-parameter family ``s(alpha) = act^alpha / w^(1-alpha)``
(activation and weight statistics per channel), and ``alpha`` is picked from a grid by the
output error on the calibration data.

Model Optimizer 0.47.0's procedure, which this follows so that results are bit-identical:

1. per quantized linear with an enabled weight quantizer: ``weight_scale`` = the mean over
   output rows of ``|W|`` divided by the max of its quantization block (its row when not
   block-quantized), float32; an input quantizer that is enabled is switched off for the search
   (per channel, ``axis = -1``, for its later amax);
2. pass 1 of the forward loop: the layer's float output is returned (weight quantizer off),
   ``act_scale`` accumulates the per-batch mean of ``|x|`` per channel; a quantized input is
   max-calibrated per channel on the side; the other quantizers of the model collect as in
   ``max``;
3. pass 2: for each ``alpha`` of ``arange(0, 1 + step, step)`` (float32) the layer runs with
   ``pre_quant_scale`` ``1/s`` on the input and ``s`` on the weight quantizer (dynamic, the
   weight amax is not known yet), and the mean squared difference to the float output is summed
   per ``alpha``; the layer still returns its float output;
4. per layer: ``s* = s(argmin loss)``; ``pre_quant_scale = 1/s*`` on the input quantizer,
   ``W *= 1/(1/s*)`` in place, the weight amax max-calibrated on the new weight, a quantized
   input's amax ``max_j(amax_j * (1/s*_j))``, per tensor. A layer the data never reached (in
   either pass) keeps its weight, gets max calibration and an all-ones ``pre_quant_scale``.

The scale: ``s = clamp(act^alpha / (w^(1-alpha) + tiny), 1e-4, 1e4)``, then divided by
``sqrt(max(s) * min(s))`` so that it is centred geometrically on 1.

After pass 1 the experts of a sparse MoE block share their input amaxes, as at the end of
``max`` (Model Optimizer calibrates there too). The search runs inside
:func:`qruntime.calibrate.awq.run_awq`, which reduces sequential weight quantizers to their
first element and registers the method.

Pass 2 takes its candidates from :mod:`qruntime.calibrate.awq_candidates`: the scales prepared
once per layer, the quantized scaled weights kept across batches (within a memory budget), and a
plain quantized ``nn.Linear`` computed by ``F.linear`` directly, with the very operations its
forward would run, so the losses are the same bits either way. Most of what remains is the
matrix products themselves: one per alpha per layer per batch, as in Model Optimizer.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from qruntime.calibrate import phases
from qruntime.calibrate.awq_candidates import (
    Candidates,
    WeightBudget,
    plain_linear_output,
)
from qruntime.calibrate.context import CalibrationContext
from qruntime.calibrate.registry import UnsupportedAlgorithmError
from qruntime.calibrate.smoothquant import (
    SmoothedLinear,
    back_to_per_tensor,
    divide_columns,
    recalibrate_weight,
)
from qruntime.quantizer import TensorQuantizer

__all__ = [
    "SCALE_RANGE",
    "AWQLiteRecord",
    "alpha_grid",
    "awq_lite_search",
    "awq_scale",
    "block_size_of",
    "weight_scale",
]

#: The searched scale is clamped to this range before its normalisation.
SCALE_RANGE = (1e-4, 1e4)


# ------------------------------------------------------------------------------ the formulas
def alpha_grid(step: float) -> list[float]:
    """The searched alphas: ``arange(0, 1 + step, step)`` computed in float32, as Python floats
    (so 0.1 is float32's 0.1, and the last value may pass 1 slightly)."""
    return [float(a) for a in torch.arange(0, 1.0 + step, step)]


def block_size_of(quantizer: TensorQuantizer) -> int | None:
    """The block length along the input dimension (None: not block-quantized)."""
    blocks = quantizer.block_sizes
    if blocks is None:
        return None
    for axis in (-1, 1):
        if axis in blocks:
            return int(blocks[axis])
    raise UnsupportedAlgorithmError("awq_lite needs weight blocks along the last axis")


def weight_scale(weight: torch.Tensor, block_size: int | None) -> torch.Tensor:
    """Per input channel, the mean over output rows of ``|W|`` relative to the max of its
    quantization block (the row when ``block_size`` is None); float32, shape ``(cin,)``. The
    last block is zero-padded when ``cin`` is not a multiple of ``block_size``."""
    cin = weight.shape[-1]
    shape = weight.shape
    if block_size:
        if cin % block_size:
            weight = F.pad(weight, (0, block_size - cin % block_size))
            shape = weight.shape
        weight = weight.contiguous().view(-1, block_size)
    magnitude = weight.abs()
    relative = magnitude / (magnitude.amax(dim=1, keepdim=True) + torch.finfo(weight.dtype).tiny)
    relative = relative.view(shape)[..., :cin]
    return relative.mean(0).to(torch.float32)


def awq_scale(act_scale: torch.Tensor, w_scale: torch.Tensor, alpha: float) -> torch.Tensor:
    """``s(alpha)`` of the module docstring, float32, shape ``(cin,)``."""
    tiny = torch.finfo(torch.float32).tiny
    raw = act_scale.pow(alpha) / (w_scale.to(act_scale.device).pow(1 - alpha) + tiny)
    scale = raw.clamp(min=SCALE_RANGE[0], max=SCALE_RANGE[1]).view(-1)
    return (scale / (scale.max() * scale.min()).sqrt()).view(-1)


# ------------------------------------------------------------------------------ per layer
@dataclass
class _Search:
    """What the two passes gather for one linear."""

    linear: SmoothedLinear
    weight_scale: torch.Tensor
    alphas: list[float]
    losses: list[torch.Tensor]
    input_quantized: bool
    enabled: bool = True
    act_sum: torch.Tensor | None = None
    act_scale: torch.Tensor | None = None
    cache_steps: int = 0
    search_steps: int = 0
    candidates: Candidates | None = None
    handles: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class AWQLiteRecord:
    """What the search found for one linear, kept as ``module.awq_lite`` with ``debug: true``
    (Model Optimizer's debug keeps its search helper there, with these names): the statistics,
    the summed loss per alpha, the chosen alpha and scale (None for a layer the search left at
    max calibration, ``enabled`` False)."""

    act_scale: torch.Tensor | None
    weight_scale: torch.Tensor
    loss: dict[float, float | torch.Tensor]
    best_alpha: float | None
    best_scale: torch.Tensor | None
    enabled: bool
    num_cache_steps: int
    num_search_steps: int


def _record(state: _Search, best: int | None) -> AWQLiteRecord:
    scales = state.candidates.scales if state.candidates is not None else None
    return AWQLiteRecord(
        act_scale=state.act_scale,
        weight_scale=state.weight_scale,
        # summed to Python floats for the choice, as Model Optimizer's record has them
        loss={
            alpha: float(loss) if state.enabled else loss
            for alpha, loss in zip(state.alphas, state.losses, strict=True)
        },
        best_alpha=None if best is None else state.alphas[best],
        best_scale=None if best is None or scales is None else scales[best],
        enabled=state.enabled,
        num_cache_steps=state.cache_steps,
        num_search_steps=state.search_steps,
    )


def _best(state: _Search) -> int:
    losses = [float(v) for v in state.losses]
    return min(range(len(losses)), key=losses.__getitem__)


def _clear_scales(linear: SmoothedLinear) -> None:
    for q in (linear.input_quantizer, linear.weight_quantizer):
        q.pre_quant_scale = None


def _calibrate_input(q: TensorQuantizer, x: torch.Tensor) -> None:
    """One batch of max calibration of a (search-disabled) input quantizer, per channel; the
    calibrator keeps its running max across batches."""
    q.enable()
    phases.enable_stats_collection([q])
    q(x)
    phases.finish_stats_collection([q])
    q.disable()


def _loss(out: Any, reference: torch.Tensor) -> torch.Tensor:
    """``(out - reference).float().pow(2).mean()``, Model Optimizer's loss of one batch."""
    out = out[0] if isinstance(out, tuple) else out
    return (out - reference).float().pow(2).mean()


def _loss_in_place(out: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """:func:`_loss` for an ``out`` nobody else holds: the same elementwise operations, in its
    memory (same values, fewer temporaries)."""
    if out.dtype != reference.dtype or out.shape != reference.shape:
        return _loss(out, reference)
    return out.sub_(reference).float().pow_(2).mean()


def _search_batch(
    state: _Search, budget: WeightBudget, module: nn.Module, args: tuple, kwargs: dict, output: Any
) -> None:
    """Step 3 of the module docstring on one batch: the loss of every alpha, added up."""
    reference = output[0] if isinstance(output, tuple) else output
    linear, candidates = state.linear, state.candidates
    assert candidates is not None
    if candidates.plain and len(args) == 1 and not kwargs:
        x = args[0]
        weights = candidates.quantized_weights(linear, budget)
        for i, weight in enumerate(weights):
            out = plain_linear_output(linear, x, candidates.input_scales[i], weight)
            state.losses[i] += _loss_in_place(out, reference)
        return
    q, wq = linear.input_quantizer, linear.weight_quantizer
    wq.enable()
    try:
        for i in range(len(state.alphas)):
            q.pre_quant_scale = candidates.input_scales[i]
            wq.pre_quant_scale = candidates.weight_scales[i]
            state.losses[i] += _loss(module.forward(*args, **kwargs), reference)
    finally:
        wq.disable()
        _clear_scales(linear)


def _make_hook(state: _Search, mode: list[str], budget: WeightBudget):
    """The forward hook: the module itself computes the float output (its weight quantizer is
    off during both passes); the hook gathers statistics or runs the alpha search on the same
    input, and leaves the float output as the module's result."""

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        x = args[0] if args else next(iter(kwargs.values()))
        if x.numel() == 0 or not state.enabled:
            return
        if mode[0] == "cache":
            q = state.linear.input_quantizer
            mean = q(x).abs().contiguous().view(-1, x.shape[-1]).mean(0).to(torch.float32)
            state.act_sum = mean if state.act_sum is None else state.act_sum + mean
            state.cache_steps += 1
            if state.input_quantized:
                _calibrate_input(q, x)
            return
        _search_batch(state, budget, module, args, kwargs, output)
        state.search_steps += 1

    return hook


def _collapse_input_amax(q: TensorQuantizer) -> torch.Tensor | None:
    """A quantized input back to per tensor and on: its per-channel amax is returned (for the
    smoothed amax) and replaced by its max."""
    per_channel = q.amax
    if per_channel is not None:
        back_to_per_tensor(q)
        q.amax = per_channel.amax()
    q.enable()
    return per_channel


def _apply(ctx: CalibrationContext, state: _Search) -> None:
    """Step 4 of the module docstring on one searched layer."""
    linear = state.linear
    q, weight = linear.input_quantizer, linear.weight
    best = _best(state)
    assert state.candidates is not None
    best_scale = state.candidates.scales[best]
    per_channel = _collapse_input_amax(q) if state.input_quantized else None
    pre_quant_scale = (1.0 / best_scale).to(torch.float32)
    if not bool(torch.all(pre_quant_scale > 0)):
        raise RuntimeError(f"awq_lite: {linear.name}: a non-positive scale was found")
    dtype = weight.dtype
    q.pre_quant_scale = pre_quant_scale.to(dtype)
    divide_columns(weight, pre_quant_scale)
    recalibrate_weight(ctx, linear, reset=True)
    if per_channel is not None:
        smoothed = (per_channel.to(device=weight.device, dtype=dtype) * pre_quant_scale).amax()
        stored = q.amax
        assert stored is not None
        # Model Optimizer copies into the buffer registered above (its dtype, its place in
        # state_dict order, after which the pre_quant_scale was registered)
        q.store_amax(smoothed.to(dtype).to(device=stored.device, dtype=stored.dtype))


def _apply_disabled(ctx: CalibrationContext, state: _Search) -> None:
    """A layer without a search result: max calibration, an all-ones ``pre_quant_scale``."""
    linear = state.linear
    warnings.warn(
        f"awq_lite: {linear.name or 'the model'} saw no calibration data in one of the passes "
        "(or its statistics are not numbers); it gets max calibration and a pre_quant_scale of 1",
        UserWarning,
        stacklevel=3,
    )
    recalibrate_weight(ctx, linear, reset=False)
    weight = linear.weight
    linear.input_quantizer.pre_quant_scale = torch.ones(
        weight.shape[1], dtype=weight.dtype, device=weight.device
    )
    if state.input_quantized:
        _collapse_input_amax(linear.input_quantizer)


# ------------------------------------------------------------------------------ the search
def _setup(linear: SmoothedLinear, alphas: list[float]) -> _Search:
    wq, q = linear.weight_quantizer, linear.input_quantizer
    assert isinstance(wq, TensorQuantizer)
    if q.pre_quant_scale is not None:
        raise RuntimeError(f"awq_lite: {linear.name} already has a pre_quant_scale")
    weight = linear.weight
    state = _Search(
        linear=linear,
        weight_scale=weight_scale(weight, block_size_of(wq)),
        alphas=alphas,
        losses=[torch.zeros((), device=weight.device, dtype=torch.float32) for _ in alphas],
        input_quantized=q.is_enabled,
    )
    if q.is_enabled:
        q.disable()
        if q.axis not in (None, -1):
            state.enabled = False
        else:
            q.axis = -1
    return state


def _sync_cache(ctx: CalibrationContext, states: list[_Search]) -> None:
    """Distributed runs: the activation sums and batch counts added over the data-parallel
    group, so that every process divides the sum over all batches by their number — the mean
    one process computes over the union of the data (Model Optimizer averages the per-process
    means, the same value when every process ran as many batches). A NaN anywhere reaches
    every process, which then all disable the layer."""
    if ctx.parallel is None:
        return
    sums = []
    for state in states:
        cin = state.weight_scale.shape[0]
        zeros = torch.zeros(cin, dtype=torch.float32, device=state.weight_scale.device)
        sums.append(zeros if state.act_sum is None else state.act_sum.clone())
    counts = torch.tensor([float(s.cache_steps) for s in states], dtype=torch.float64)
    phases.sync(ctx, "statistics", [*sums, counts])
    for state, total, steps in zip(states, sums, counts.tolist(), strict=True):
        state.cache_steps = int(steps)
        state.act_sum = total if steps > 0 else None


def _sync_search(ctx: CalibrationContext, states: list[_Search]) -> None:
    """Distributed runs: each alpha's loss and the search batch counts added over the
    data-parallel group, so every process picks the same alpha — the one a single process
    picks over the union of the data. Model Optimizer does not sync the losses: its processes
    may choose different scales and end with different weights."""
    if ctx.parallel is None:
        return
    losses = [torch.stack(state.losses) for state in states]
    counts = torch.tensor([float(s.search_steps) for s in states], dtype=torch.float64)
    phases.sync(ctx, "statistics", [*losses, counts])
    for state, total, steps in zip(states, losses, counts.tolist(), strict=True):
        state.losses = list(total.unbind())
        state.search_steps = int(steps)


def _finish_cache(state: _Search) -> None:
    if state.cache_steps == 0 or state.act_sum is None:
        state.enabled = False
        return
    state.act_scale = state.act_sum / state.cache_steps
    if bool(torch.isnan(state.act_scale).any()) or bool(torch.isnan(state.weight_scale).any()):
        state.enabled = False
        return
    scales = [awq_scale(state.act_scale, state.weight_scale, a) for a in state.alphas]
    state.candidates = Candidates.prepare(state.linear, scales)


@torch.no_grad()
def awq_lite_search(
    ctx: CalibrationContext,
    linears: list[SmoothedLinear],
    alpha_step: float,
    *,
    debug: bool = False,
) -> None:
    """Steps 1 to 4 of the module docstring on ``linears`` (quantized linears whose weight
    quantizer is a single, enabled quantizer), two passes of ``ctx``'s forward loop. With
    ``debug`` each linear keeps an :class:`AWQLiteRecord` as ``module.awq_lite``."""
    if ctx.forward_loop is None:
        raise ValueError("awq_lite needs calibration data: pass a forward_loop(model)")
    alphas = alpha_grid(alpha_step)
    states = [_setup(linear, alphas) for linear in linears]
    mode = ["cache"]
    budget = WeightBudget()
    for state in states:
        state.linear.weight_quantizer.disable()
        hook = _make_hook(state, mode, budget)
        state.handles.append(
            state.linear.module.register_forward_hook(hook, with_kwargs=True, prepend=True)
        )
    try:
        # as max calibration ends: the experts of a sparse MoE block share their input amaxes
        # (here also the per-channel ones gathered beside the search)
        phases.statistics_pass(ctx)
        _sync_cache(ctx, states)
        for state in states:
            _finish_cache(state)
        mode[0] = "search"
        phases.run_forward_loop(ctx)
        _sync_search(ctx, states)
    finally:
        for state in states:
            for handle in state.handles:
                handle.remove()
            state.linear.weight_quantizer.enable()
            _clear_scales(state.linear)
            if state.candidates is not None:
                state.candidates.release()
    for state in states:
        if state.cache_steps > 0 and state.search_steps == 0:
            state.enabled = False
        if state.enabled:
            _apply(ctx, state)
        else:
            _apply_disabled(ctx, state)
        if debug:
            record = _record(state, _best(state) if state.enabled else None)
            state.linear.module.__dict__["awq_lite"] = record
