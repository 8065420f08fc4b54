"""The AWQ family — ``awq_lite``, ``awq_clip``, ``awq_full`` — run through one dispatcher, as
Model Optimizer 0.47.0's ``awq``: lite (the scale search, two passes of the forward loop), then
clip (the per-block clipping search, one pass), each only when the method asks for it.

Both searches see a sequential weight quantizer (W4A8: INT4 blocks, then FP8) as its first
element: the later elements are switched off for the searches, and afterwards every element is
max-calibrated on the final weight. ``awq_full`` is therefore three passes, and its clip search
refines the per-block amax of the weights lite has already rescaled, on the rescaled inputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch
from qconfig.algorithm_methods import AWQClipCalibConfig, AWQFullCalibConfig, AWQLiteCalibConfig
from qconfig.algorithms import QuantizeAlgorithmConfig
from qconfig.plan import Plan
from torch import nn

from qruntime.calibrate.awq_clip import ClipOptions, awq_clip_search
from qruntime.calibrate.awq_lite import awq_lite_search
from qruntime.calibrate.context import CalibrationContext
from qruntime.calibrate.registry import (
    AlgorithmCapabilities,
    UnsupportedAlgorithmError,
    register_algorithm,
)
from qruntime.calibrate.smoothquant import SmoothedLinear, recalibrate_weight, smoothable_linears
from qruntime.quantizer import SequentialQuantizer

__all__ = [
    "AWQ_CAPABILITIES",
    "check_awq",
    "first_stages_only",
    "run_awq",
    "searched_linears",
]

#: One to three passes of the forward loop; lite rescales the weights in place.
AWQ_CAPABILITIES = AlgorithmCapabilities(
    needs_forward_data=True, writes_weights=True, sync_points=("amax", "statistics")
)


@contextmanager
def first_stages_only(model: nn.Module) -> Iterator[list[SmoothedLinear]]:
    """Switch off every element but the first of the model's sequential weight quantizers for
    the duration, and yield the quantized linears whose weight quantizer is sequential (the
    caller max-calibrates them afterwards)."""
    sequential = [
        linear
        for linear in smoothable_linears(model)
        if isinstance(linear.weight_quantizer, SequentialQuantizer)
    ]
    later = [stage for linear in sequential for stage in list(linear.weight_quantizer)[1:]]
    switched_off = [stage for stage in later if stage.is_enabled]
    for stage in switched_off:
        stage.disable()
    try:
        yield sequential
    finally:
        for stage in switched_off:
            stage.enable()


def searched_linears(model: nn.Module) -> list[SmoothedLinear]:
    """The quantized linears with an enabled weight quantizer, a sequential one standing for
    its first element, in module order."""
    out = []
    for linear in smoothable_linears(model):
        wq = linear.weight_quantizer
        if isinstance(wq, SequentialQuantizer):
            linear = replace(linear, weight_quantizer=next(iter(wq)))
        if linear.weight_quantizer.is_enabled:
            out.append(linear)
    return out


@torch.no_grad()
def run_awq(ctx: CalibrationContext) -> None:
    """``awq_lite``, ``awq_clip`` or ``awq_full`` (``ctx.config``'s method), module docstring."""
    config = ctx.config
    method = config.method
    if ctx.forward_loop is None:
        raise ValueError(f"{method} needs calibration data: pass a forward_loop(model)")
    with first_stages_only(ctx.model) as sequential:
        if method in ("awq_lite", "awq_full"):
            assert isinstance(config, AWQLiteCalibConfig)
            assert config.alpha_step is not None  # refused by check_awq
            awq_lite_search(
                ctx, searched_linears(ctx.model), float(config.alpha_step), debug=bool(config.debug)
            )
        if method in ("awq_clip", "awq_full"):
            assert isinstance(config, AWQClipCalibConfig)
            linears = [
                linear
                for linear in searched_linears(ctx.model)
                if linear.weight_quantizer.block_sizes is not None
            ]
            options = ClipOptions.from_config(config)
            awq_clip_search(ctx, linears, options, debug=bool(config.debug))
    for linear in sequential:  # every element calibrated on the final weight
        recalibrate_weight(ctx, linear, reset=False)


def check_awq(plan: Plan, config: QuantizeAlgorithmConfig) -> None:
    """Options this implementation does not honour are refused before the model is touched,
    instead of being ignored: ``moe_calib_experts_ratio`` (the widened expert routing during
    the passes has not been compared with Model Optimizer, which fails on the zoo's MoE block
    with a ratio); null options and batch sizes below 1."""
    method = config.method
    if config.moe_calib_experts_ratio is not None:
        raise UnsupportedAlgorithmError(
            f"{method} with moe_calib_experts_ratio is not implemented in qruntime yet (max, "
            "mse, local_hessian, smoothquant, gptq and nvfp4_act_headroom take it). The model "
            "was not changed."
        )
    if isinstance(config, AWQLiteCalibConfig) and config.alpha_step is None:
        raise UnsupportedAlgorithmError(
            f"{method}: alpha_step is null; give a number in (0, 1] or leave it out for 0.1. "
            "The model was not changed."
        )
    if isinstance(config, AWQClipCalibConfig):
        ClipOptions.from_config(config)  # refused here, not mid-run


for _config_class in (AWQLiteCalibConfig, AWQClipCalibConfig, AWQFullCalibConfig):
    register_algorithm(_config_class, run_awq, capabilities=AWQ_CAPABILITIES, check=check_awq)
