"""``gptq`` calibration (``GPTQCalibConfig``): round the weights one input column at a time, each
rounding error compensated on the columns not yet rounded, weighted by the inverse Hessian of
the layer's inputs.

Why: rounding every weight to its nearest grid point ignores that errors in correlated input
channels add up in the output. GPTQ minimises ``||(W - Q) X||²`` greedily: after rounding
column ``j``, the error times ``H⁻¹`` (``H = 2 X Xᵀ / N``) is subtracted from the later columns,
which then round to values that cancel part of it. The amaxes stay those of max calibration;
the weights move, and end exactly on the quantization grid.

Model Optimizer 0.47.0's whole-model procedure, reproduced bit for bit:

1. ``max`` calibration with its defaults (pass 1 of the data: every amax, sibling global
   amaxes, static-block promotion);
2. the target layers: quantized linears (:func:`~qruntime.calibrate.smoothquant.smoothable_linears`)
   whose weight quantizer is enabled;
3. pass 2 with every ``*weight_quantizer`` switched off: per call of a target, its input — through
   the input quantizer when that is enabled, else raw (a ``pre_quant_scale`` on a disabled input
   quantizer is then ignored) — is folded into its Hessian (:func:`collect_hessians`);
4. per layer, :func:`update_weights`: damped inverse Hessian, the blockwise column loop
   (:mod:`qruntime.calibrate.gptq_update`), the weight written back in its dtype.

With ``layerwise.enable`` the registry's layer driver runs this whole procedure on one decoder
block at a time (its own max pass, Hessians from that block's inputs), as Model Optimizer does;
:func:`collect_hessians` and :func:`update_weights` are public for drivers that need the pieces.

The column loop quantizes only the current column where the format allows (see
:mod:`qruntime.calibrate.gptq_update`), instead of the whole weight once per column.

``fused: true`` on NVFP4-static weights runs Model Optimizer's fused variant: per GPTQ block
one pass over each output row with the block's columns held together, the NVFP4 scale computed
from the block amax per column (:func:`~qruntime.calibrate.gptq_update.fused_nvfp4_update`; a
Triton kernel on CUDA, its torch reference elsewhere). Its float arithmetic (one fp32 global
scale, the FP4 threshold chain, in-row error updates) is its own: one scale or rounding that
differs propagates through the later columns, so many weights differ from the unfused loop's
(about a quarter of all-MiniLM-L6-v2's, at the same accuracy); they are Model Optimizer's fused
weights. A weight without whole NVFP4 blocks per row is an error, as it is there. Refused as Model
Optimizer refuses: a GPTQ block size that is not a multiple of the NVFP4 block size; and, where
Model Optimizer's kernel would silently drop it, ``four_over_six``. On every other format Model
Optimizer ignores ``fused``, and so does this module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from qconfig.algorithm_methods import GPTQCalibConfig
from qconfig.algorithms import MaxCalibConfig, QuantizeAlgorithmConfig
from qconfig.plan import Plan
from torch import nn

from qruntime.calibrate import phases
from qruntime.calibrate.context import CalibrationContext, leaves
from qruntime.calibrate.gptq_update import (
    blockwise_update,
    column_quantizer,
    fused_nvfp4_update,
    hessian_inverse,
    update_hessian,
)
from qruntime.calibrate.max import check_calibrators, max_calibrate
from qruntime.calibrate.registry import (
    AlgorithmCapabilities,
    UnsupportedAlgorithmError,
    register_algorithm,
)
from qruntime.calibrate.smoothquant import SmoothedLinear, smoothable_linears
from qruntime.quantizer import TensorQuantizer, is_quantizer
from qruntime.transaction import ModelSnapshot, current_transaction

__all__ = [
    "GPTQ_CAPABILITIES",
    "GPTQOptions",
    "LayerHessian",
    "check_gptq",
    "collect_hessians",
    "gptq_calibrate",
    "gptq_linears",
    "sync_hessians",
    "update_weights",
]

#: Two passes of data (max, then the Hessians); the weights are rewritten in place.
GPTQ_CAPABILITIES = AlgorithmCapabilities(
    needs_forward_data=True, writes_weights=True, sync_points=("amax", "global_amax", "statistics")
)

#: The quantizers switched off while the Hessians are collected (full match on module names).
WEIGHT_QUANTIZERS = "*weight_quantizer"


@dataclass(frozen=True)
class GPTQOptions:
    """The numbers of a ``GPTQCalibConfig`` the update uses."""

    perc_damp: float = 0.01
    block_size: int = 128
    fused: bool = False

    @classmethod
    def from_config(cls, config: GPTQCalibConfig) -> GPTQOptions:
        """The config's options; :class:`UnsupportedAlgorithmError` for a null (Model Optimizer
        fails on one after the calibration passes) or a block size below 1 (its loop has no
        step)."""
        nulls = [n for n in ("perc_damp", "block_size") if getattr(config, n) is None]
        if nulls:
            raise UnsupportedAlgorithmError(
                f"gptq: {', '.join(nulls)} is null; give a number or leave it out for the "
                "default. The model was not changed."
            )
        assert config.perc_damp is not None and config.block_size is not None
        if not 0.0 < config.perc_damp <= 1.0:
            raise UnsupportedAlgorithmError(
                f"gptq: perc_damp must be in (0, 1], got {config.perc_damp}. The model was not "
                "changed."
            )
        if config.block_size < 1:
            raise UnsupportedAlgorithmError(
                f"gptq: block_size must be at least 1, got {config.block_size}. The model was "
                "not changed."
            )
        return cls(
            perc_damp=float(config.perc_damp),
            block_size=int(config.block_size),
            fused=bool(config.fused),
        )


@dataclass
class LayerHessian:
    """The running Hessian ``(cin, cin)`` float32 of one linear and the tokens folded in."""

    linear: SmoothedLinear
    hessian: torch.Tensor
    n_samples: int = 0
    handles: list = field(default_factory=list)

    def add(self, x: torch.Tensor) -> None:
        """Fold one batch of inputs in (:func:`~qruntime.calibrate.gptq_update.update_hessian`)."""
        self.n_samples = update_hessian(x, self.hessian, self.n_samples)


def gptq_linears(model: nn.Module) -> list[SmoothedLinear]:
    """The layers GPTQ updates: quantized linears whose weight quantizer is enabled."""
    return [x for x in smoothable_linears(model) if x.weight_quantizer.is_enabled]


def _nvfp4_static_weights(plan: Plan) -> list[tuple[str, dict]]:
    """``(name, block_sizes)`` of the enabled NVFP4-static weight quantizers of ``plan``."""
    out = []
    for name, q in plan.quantizers.items():
        if not fnmatch.fnmatchcase(name, WEIGHT_QUANTIZERS):
            continue
        specs = q.spec if isinstance(q.spec, tuple) else (q.spec,)
        out.extend(
            (name, dict(s.block_sizes or {}))
            for s in specs
            if s.enable and s.family == "nvfp4" and s.is_static_block
        )
    return out


def _nvfp4_block(block_sizes: dict) -> int | None:
    """The NVFP4 block size along the input dimension (Model Optimizer reads key -1, then 1)."""
    return block_sizes.get(-1) or block_sizes.get(1)


def check_gptq(plan: Plan, config: QuantizeAlgorithmConfig) -> None:
    """Refuse, before the model is touched, what this module cannot honour: calibrators max
    cannot use, null or out-of-range options, and with ``fused: true`` NVFP4-static weights
    whose block size does not divide ``block_size`` or that ask for ``four_over_six``
    (module docstring)."""
    assert isinstance(config, GPTQCalibConfig)
    check_calibrators(plan, config)
    options = GPTQOptions.from_config(config)
    if not options.fused:
        return
    for name, block_sizes in _nvfp4_static_weights(plan):
        block = _nvfp4_block(block_sizes)
        if block is not None and options.block_size % block:
            raise UnsupportedAlgorithmError(
                f"gptq: fused: true needs block_size ({options.block_size}) to be a multiple of "
                f"the NVFP4 block size of {name} ({block}), as Model Optimizer does. The model "
                "was not changed."
            )
        if block_sizes.get("four_over_six"):
            raise UnsupportedAlgorithmError(
                f"gptq: fused: true on {name}: the fused NVFP4 update has no four_over_six "
                "scale (Model Optimizer's kernel would quantize with the plain 6/448 scale); "
                "use fused: false. The model was not changed."
            )


# ------------------------------------------------------------------------------ pass 2
@contextlib.contextmanager
def _weight_quantizers_off(model: nn.Module) -> Iterator[None]:
    """Every ``*weight_quantizer`` switched off (rotation too, as an enable-only ``false``
    does), restored afterwards, also on error."""
    switched = [
        q
        for name, module in model.named_modules()
        if is_quantizer(module) and fnmatch.fnmatchcase(name, WEIGHT_QUANTIZERS)
        for q in leaves(module)
    ]
    snapshots = [ModelSnapshot(q) for q in switched]
    try:
        for q in switched:
            q.disable()
            q.disable_rotate()
        yield
    finally:
        for snapshot in snapshots:
            snapshot.restore()


def _hook(state: LayerHessian):
    def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else next(iter(kwargs.values()))
        q = state.linear.input_quantizer
        with torch.no_grad():
            state.add(q(x) if q.is_enabled else x)

    return pre_hook


def collect_hessians(ctx: CalibrationContext, linears: list[SmoothedLinear]) -> list[LayerHessian]:
    """Step 3 of the module docstring: one pass of ``ctx``'s forward loop over ``ctx.model``
    with its weight quantizers off, each of ``linears`` accumulating its Hessian (in the order
    of ``linears``). A layer no data reached keeps ``H = 0``."""
    if ctx.forward_loop is None:
        raise ValueError("gptq needs calibration data: pass a forward_loop(model)")
    states = [
        LayerHessian(x, torch.zeros(x.weight.shape[-1], x.weight.shape[-1], device=x.weight.device))
        for x in linears
    ]
    try:
        for state in states:
            handle = state.linear.module.register_forward_pre_hook(
                _hook(state), with_kwargs=True, prepend=True
            )
            state.handles.append(handle)
        with _weight_quantizers_off(ctx.model):
            ctx.run_forward_loop()
    finally:
        for state in states:
            for handle in state.handles:
                handle.remove()
            state.handles.clear()
    return states


# ------------------------------------------------------------------------------ step 4
@torch.no_grad()
def update_weights(linear: SmoothedLinear, hessian: torch.Tensor, options: GPTQOptions) -> None:
    """Step 4 of the module docstring on one layer: its weight replaced in place by the GPTQ
    result (saved first with the open transaction, so that a failure restores it)."""
    weight = linear.weight
    work = weight.detach().float().clone()
    h_inv = hessian_inverse(hessian.to(weight.device), work, options.perc_damp, linear.name)
    quantizer = linear.weight_quantizer
    if options.fused and _is_nvfp4_static(quantizer):
        _fused_update(work, h_inv, options.block_size, quantizer)
    else:
        blockwise_update(
            work,
            h_inv,
            options.block_size,
            quantizer,
            column_quantizer(quantizer, work.shape),
        )
    txn = current_transaction()
    if txn is not None:
        txn.save(weight)
    weight.copy_(work.reshape(weight.shape).to(weight.dtype))


def _is_nvfp4_static(quantizer: nn.Module) -> bool:
    return isinstance(quantizer, TensorQuantizer) and quantizer.is_nvfp4_static


def _fused_update(
    work: torch.Tensor, h_inv: torch.Tensor, block_size: int, quantizer: TensorQuantizer
) -> None:
    """``fused: true`` on one NVFP4-static weight; the global amax defaults, as in the unfused
    column path, to the largest block amax."""
    block = _nvfp4_block(dict(quantizer.spec.block_sizes or {}))
    amax = quantizer.amax
    if block is None or amax is None:
        raise ValueError("gptq fused: the NVFP4-static weight quantizer has no block size or amax")
    g = quantizer.global_amax
    if g is None:
        g = torch.maximum(amax.max().abs(), amax.min().abs())
    fused_nvfp4_update(work, h_inv, block_size, amax, g, block)


def sync_hessians(ctx: CalibrationContext, states: list[LayerHessian]) -> None:
    """Distributed runs: every process's ``n · H`` and token count ``n`` added over the
    data-parallel group, then divided — the Hessian ``2 X Xᵀ / N`` of the union of the data,
    so that every process rounds its weights the same way. Model Optimizer does not sync the
    Hessians: its processes end with different weights."""
    if ctx.parallel is None or not states:
        return
    weighted = [state.hessian * float(state.n_samples) for state in states]
    counts = torch.tensor([float(state.n_samples) for state in states], dtype=torch.float64)
    phases.sync(ctx, "statistics", [*weighted, counts])
    for state, total, n in zip(states, weighted, counts.tolist(), strict=True):
        state.n_samples = int(n)
        state.hessian = total / n if n > 0 else total


def gptq_calibrate(ctx: CalibrationContext) -> None:
    """``gptq`` calibration of a converted model (module docstring)."""
    config = ctx.config
    assert isinstance(config, GPTQCalibConfig)
    options = GPTQOptions.from_config(config)
    max_calibrate(dataclasses.replace(ctx, config=MaxCalibConfig()))
    linears = gptq_linears(ctx.model)
    if not linears:
        return
    states = collect_hessians(ctx, linears)
    sync_hessians(ctx, states)
    txn = current_transaction()
    # The loop writes only tensors it created; the weights are saved before they are written.
    with txn.paused_guard() if txn is not None else contextlib.nullcontext():
        for state in states:
            update_weights(state.linear, state.hessian, options)
            state.hessian = torch.empty(0)


register_algorithm(
    GPTQCalibConfig, gptq_calibrate, capabilities=GPTQ_CAPABILITIES, check=check_gptq
)
