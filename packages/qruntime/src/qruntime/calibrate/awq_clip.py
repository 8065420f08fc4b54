"""``awq_clip`` calibration (``AWQClipCalibConfig``): per quantization block of a weight, the
clipping ratio of its amax that makes the block's share of the layer output closest to float.

Why: the max of a block is set by its largest weight; clipping it (amax times a ratio below 1)
rounds the outliers harder but gives every other weight of the block a finer grid. Which ratio
is best depends on the inputs, so each ratio is scored by the output error on calibration data.

Model Optimizer 0.47.0's procedure, which this reproduces bit for bit:

1. per quantized linear whose weight quantizer is enabled and block-quantized: the weight amax
   is reset and max-calibrated on the weight (``w_amax``); the weight quantizer is switched off
   for the pass (the layer computes in float);
2. one pass of the forward loop; on every call of the layer, before it computes: a quantized
   input is max-calibrated on the call's input (running max) and switched off again; ``x`` is
   the input with any ``pre_quant_scale`` applied (left by ``awq_lite`` in ``awq_full``);
3. *block mode*: ``x`` flattened to tokens and subsampled to every ``max(1, N // max_tokens)``-th
   one; both ``x`` and ``W`` zero-padded to whole blocks. For every ratio ``r`` of
   ``round(arange(min_clip_ratio, 1, shrink_step), 2) + [1]`` the weight is fake-quantized with
   amax ``w_amax * r`` (``Q_r``), and per output row ``c`` and block ``b`` the loss
   ``mean_t (sum_k x[t,b,k] Q_r[c,b,k] - sum_k x[t,b,k] W[c,b,k])^2`` is added to that ratio's
   loss table. *Per-tensor mode* (a dynamic-block weight without an axis, e.g. NVFP4 dynamic:
   only its global amax can be clipped): ``mean((x Q_r^T - x W^T)^2)`` with all tokens;
4. after the pass, the other quantizers of the model load what they collected, as in ``max``;
   per block the ratio with the smallest loss (the smaller ratio on a tie) sets the weight amax
   ``w_amax * r*``, and the weight (and a quantized input) quantizer is switched on again.

The cost is the loss tables: Model Optimizer computes them for ``max_co_batch_size`` output rows
at a time (a ``rows x tokens x cin`` product in memory) and re-quantizes the whole weight for
every ratio of every row batch. Here each ratio's weight is quantized once per call, and the
products are formed for as many rows as fit a cache-sized buffer (never more than
``max_co_batch_size``): the same elementwise products and reductions, in the same dtype, so the
losses are the same numbers, computed several times faster.

Deliberately different (docs/differences.md): a layer no calibration data reached keeps its
max-calibrated amax with its weight quantizer on, with a warning — Model Optimizer leaves its
weight quantizer switched off, so the layer silently stays unquantized. A loss that is not a
number (NaN or infinite calibration data) stops the run, and the model is restored; Model
Optimizer would store an amax of 0 for the block.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from qconfig.algorithm_methods import AWQClipCalibConfig
from torch import nn

from qruntime.calibrate import phases
from qruntime.calibrate.awq_lite import block_size_of
from qruntime.calibrate.context import CalibrationContext
from qruntime.calibrate.registry import UnsupportedAlgorithmError
from qruntime.calibrate.smoothquant import SmoothedLinear
from qruntime.quantizer import TensorQuantizer

__all__ = [
    "PRODUCT_ELEMENTS",
    "AWQClipRecord",
    "ClipOptions",
    "awq_clip_search",
    "best_amax",
    "block_losses",
    "clip_ratios",
]

#: Elements of one ``rows x tokens x cin`` product buffer (4 MiB of float32): small enough to
#: stay in cache between the multiply and its reduction.
PRODUCT_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class ClipOptions:
    """The four numbers of an ``AWQClipCalibConfig``."""

    max_co_batch_size: int = 1024
    max_tokens_per_batch: int = 64
    min_clip_ratio: float = 0.5
    shrink_step: float = 0.05

    @classmethod
    def from_config(cls, config: AWQClipCalibConfig) -> ClipOptions:
        """The config's options; :class:`UnsupportedAlgorithmError` for a null (Model Optimizer
        fails on one mid-run) or a batch size below 1 (it divides by them)."""
        values = {name: getattr(config, name) for name in cls.__dataclass_fields__}
        nulls = [name for name, value in values.items() if value is None]
        if nulls:
            raise UnsupportedAlgorithmError(
                f"{config.method}: {', '.join(nulls)} is null; give a number or leave it out "
                "for the default. The model was not changed."
            )
        options = cls(**values)
        if options.max_co_batch_size < 1 or options.max_tokens_per_batch < 1:
            raise UnsupportedAlgorithmError(
                f"{config.method}: max_co_batch_size and max_tokens_per_batch must be at least "
                "1. The model was not changed."
            )
        return options


def clip_ratios(min_clip_ratio: float, shrink_step: float) -> list[float]:
    """The searched ratios, ascending: ``arange(min, 1, step)`` in float32, each rounded to two
    decimals, then 1.0 (the default: 0.5, 0.55, ..., 0.95, 1.0)."""
    ratios = [round(float(r), 2) for r in torch.arange(min_clip_ratio, 1.0, shrink_step)]
    return [*ratios, 1.0]


def block_losses(
    x: torch.Tensor,
    weight: torch.Tensor,
    quantized: list[torch.Tensor],
    block_size: int,
    max_rows: int,
) -> list[torch.Tensor]:
    """Per ratio, the ``(cout, blocks)`` float32 loss of step 3 (block mode) for tokens ``x``
    ``(T, cin)``, the float ``weight`` and its fake-quantized versions ``quantized``.

    The products are formed for at most ``max_rows`` output rows at a time, fewer when a
    cache-sized buffer holds fewer; each row's numbers do not depend on the chunking.
    """
    cout, cin = weight.shape
    if cin % block_size:
        pad = (0, block_size - cin % block_size)
        x, weight = F.pad(x, pad), F.pad(weight, pad)
        quantized = [F.pad(q, pad) for q in quantized]
    blocks = weight.shape[1] // block_size
    tokens = x.reshape(1, x.shape[0], blocks, block_size)
    weight = weight.reshape(cout, 1, blocks, block_size)
    quantized = [q.reshape(cout, 1, blocks, block_size) for q in quantized]
    per_row = max(1, x.shape[0] * weight.shape[2] * block_size)
    rows = max(1, min(max_rows, PRODUCT_ELEMENTS // per_row))
    losses = [torch.empty(cout, blocks, dtype=torch.float32, device=x.device) for _ in quantized]
    for start in range(0, cout, rows):
        stop = min(start + rows, cout)
        reference = (tokens * weight[start:stop]).sum(dim=-1)
        for loss, q in zip(losses, quantized, strict=True):
            out = (tokens * q[start:stop]).sum(dim=-1)
            loss[start:stop] = (out - reference).float().pow(2).mean(dim=1)
    return losses


def best_amax(
    w_amax: torch.Tensor, ratios: list[float], losses: list[torch.Tensor]
) -> torch.Tensor:
    """Per block, ``w_amax`` times the ratio with the strictly smallest loss, the ratios taken in
    ascending order (a tie keeps the smaller one)."""
    best_loss = torch.full_like(w_amax, float("inf"))
    best = torch.zeros_like(w_amax)
    for ratio, loss in zip(ratios, losses, strict=True):
        loss = loss.view_as(w_amax)
        better = loss < best_loss
        best_loss = torch.where(better, loss, best_loss)
        best = torch.where(better, w_amax * ratio, best)
    return best


@dataclass(frozen=True)
class AWQClipRecord:
    """What the search found for one linear, kept as ``module.awq_clip`` with ``debug: true``
    (Model Optimizer's debug keeps its search helper there, with these names): the max amax,
    the summed loss per ratio, the chosen amax (None for a layer no data reached) and the
    number of tokens searched."""

    w_amax: torch.Tensor
    loss: dict[float, torch.Tensor]
    best_clip_val: torch.Tensor | None
    num_tokens: int


# ------------------------------------------------------------------------------ per layer
@dataclass
class _Clip:
    """What the pass gathers for one linear."""

    linear: SmoothedLinear
    block_size: int
    w_amax: torch.Tensor
    per_tensor: bool
    input_quantized: bool
    losses: list[torch.Tensor]
    calls: int = 0
    handles: list = field(default_factory=list)


def _per_tensor_clip(q: TensorQuantizer) -> bool:
    """Only the (global) amax can be clipped: a dynamic-block weight without an axis."""
    blocks = q.block_sizes
    dynamic_blocks = blocks is not None and blocks.get("type") == "dynamic" and q.axis is None
    return dynamic_blocks or (q.axis is None and blocks is None)


def _setup(linear: SmoothedLinear, ratios: list[float]) -> _Clip:
    wq = linear.weight_quantizer
    assert isinstance(wq, TensorQuantizer)
    block_size = block_size_of(wq)
    assert block_size is not None
    wq.reset_amax()
    phases.enable_stats_collection([wq])
    wq(linear.weight)
    phases.finish_stats_collection([wq])
    amax = wq.amax
    if amax is None:
        raise UnsupportedAlgorithmError(
            f"awq_clip: {linear.name}: its weight quantizer has no amax to clip after max "
            "calibration (a dynamic format without a calibrated scale)"
        )
    cout, cin = linear.weight.shape
    per_tensor = _per_tensor_clip(wq)
    shape = () if per_tensor else (cout, math.ceil(cin / block_size))
    device = linear.weight.device
    state = _Clip(
        linear=linear,
        block_size=block_size,
        w_amax=amax.clone(),
        per_tensor=per_tensor,
        input_quantized=linear.input_quantizer.is_enabled,
        losses=[torch.zeros(shape, device=device) for _ in ratios],
    )
    wq.disable()
    return state


def _calibrate_input(q: TensorQuantizer, x: torch.Tensor) -> None:
    """One batch of max calibration of the layer's input quantizer (running max), then off."""
    q.enable()
    phases.enable_stats_collection([q])
    q(x)
    phases.finish_stats_collection([q])
    q.disable()


def _quantized_weights(state: _Clip, ratios: list[float], amax: torch.Tensor) -> list[torch.Tensor]:
    """The weight fake-quantized with ``amax * r`` for every ratio."""
    wq, weight = state.linear.weight_quantizer, state.linear.weight
    out = []
    for ratio in ratios:
        wq.amax = amax * ratio
        out.append(wq(weight))
    return out


def _search(state: _Clip, x: torch.Tensor, ratios: list[float], options: ClipOptions) -> None:
    """Step 3 of the module docstring for one call of the layer."""
    wq, weight = state.linear.weight_quantizer, state.linear.weight
    wq.enable()
    try:
        if state.per_tensor:
            reference = x @ weight.T
            amax = wq.amax
            assert amax is not None
            amax = amax.clone()
            state.calls += x.shape[0]
            for loss, ratio in zip(state.losses, ratios, strict=True):
                wq.amax = amax * ratio
                loss += (x @ wq(weight).T - reference).float().pow(2).mean()
            return
        tokens = x.reshape(-1, x.shape[-1])
        tokens = tokens[0 :: max(1, tokens.shape[0] // options.max_tokens_per_batch)]
        state.calls += tokens.shape[0]
        quantized = _quantized_weights(state, ratios, state.w_amax)
        batch = block_losses(tokens, weight, quantized, state.block_size, options.max_co_batch_size)
        for loss, add in zip(state.losses, batch, strict=True):
            loss += add
    finally:
        wq.disable()


def _make_pre_hook(state: _Clip, ratios: list[float], options: ClipOptions):
    def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else next(iter(kwargs.values()))
        q = state.linear.input_quantizer
        if state.input_quantized:
            _calibrate_input(q, x)
        _search(state, q(x), ratios, options)

    return pre_hook


def _finish(state: _Clip, ratios: list[float], debug: bool) -> None:
    """Step 4 on one layer (or the max-calibrated amax, with a warning, when no data came)."""
    linear = state.linear
    wq = linear.weight_quantizer
    assert isinstance(wq, TensorQuantizer)
    if state.calls == 0:
        warnings.warn(
            f"awq_clip: {linear.name or 'the model'} saw no calibration data; it keeps its max "
            "calibration (Model Optimizer would leave its weight unquantized)",
            UserWarning,
            stacklevel=4,
        )
        wq.amax = state.w_amax
    else:
        if not all(bool(torch.isfinite(loss).all()) for loss in state.losses):
            raise RuntimeError(
                f"awq_clip: {linear.name}: the clipping loss is not a number (NaN or infinite "
                "values in the calibration data?)"
            )
        wq.amax = best_amax(state.w_amax, ratios, state.losses)
    wq.enable()
    if state.input_quantized:
        linear.input_quantizer.enable()
    if debug:
        linear.module.__dict__["awq_clip"] = AWQClipRecord(
            w_amax=state.w_amax,
            loss=dict(zip(ratios, state.losses, strict=True)),
            best_clip_val=wq.amax.clone() if state.calls else None,
            num_tokens=state.calls,
        )


# ------------------------------------------------------------------------------ the search
@torch.no_grad()
def awq_clip_search(
    ctx: CalibrationContext,
    linears: list[SmoothedLinear],
    options: ClipOptions,
    *,
    debug: bool = False,
) -> None:
    """Steps 1 to 4 of the module docstring on ``linears`` (quantized linears whose weight
    quantizer is a single, enabled, block-quantized quantizer), one pass of the forward loop.
    With ``debug`` each linear keeps an :class:`AWQClipRecord` as ``module.awq_clip``."""
    if ctx.forward_loop is None:
        raise ValueError("awq_clip needs calibration data: pass a forward_loop(model)")
    ratios = clip_ratios(options.min_clip_ratio, options.shrink_step)
    states = [_setup(linear, ratios) for linear in linears]
    try:
        for state in states:
            hook = _make_pre_hook(state, ratios, options)
            handle = state.linear.module.register_forward_pre_hook(
                hook, with_kwargs=True, prepend=True
            )
            state.handles.append(handle)
        phases.statistics_pass(ctx)
    finally:
        for state in states:
            for handle in state.handles:
                handle.remove()
    _sync_losses(ctx, states)
    for state in states:
        _finish(state, ratios, debug)


def _sync_losses(ctx: CalibrationContext, states: list[_Clip]) -> None:
    """Distributed runs: the loss tables and token counts added over the data-parallel group
    once, after the pass, so every process picks the same ratios — those one process picks
    over the union of the data. Model Optimizer reduces inside the forward, per batch, row
    chunk and ratio (block mode only; processes then must run equally many batches), and
    divides by the group size; the per-tensor mode is not reduced there."""
    if ctx.parallel is None:
        return
    tables = [loss.clone() for state in states for loss in state.losses]
    counts = torch.tensor([float(s.calls) for s in states], dtype=torch.float64)
    phases.sync(ctx, "statistics", [*tables, counts])
    it = iter(tables)
    for state, calls in zip(states, counts.tolist(), strict=True):
        state.losses = [next(it) for _ in state.losses]
        state.calls = int(calls)
