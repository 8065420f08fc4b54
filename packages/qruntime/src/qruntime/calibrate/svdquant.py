"""``svdquant`` calibration (``SVDQuantConfig``): AWQ smoothing, then the largest singular
directions of each smoothed weight moved into an unquantized low-rank branch.

Why: after smoothing, a few singular directions of a weight still carry the outliers that set
its quantization range. Taking the rank-``r`` truncated SVD ``B @ A`` out of the weight leaves a
residual with a smaller range to quantize, and ``B @ A`` runs unquantized beside the quantized
linear (:mod:`qruntime.modules.low_rank`).

Model Optimizer 0.47.0's procedure, which this follows so that results are bit-identical:

1. linears matching ``skip_layers`` (fnmatch on the module name) whose weight quantizer is
   enabled: their enabled weight and input quantizers are switched off for step 2, so that AWQ
   leaves them alone, and on again after it;
2. ``awq_lite`` with its defaults, sequential weight quantizers reduced to their first element
   and max-calibrated on the final weight afterwards (:func:`qruntime.calibrate.awq.run_awq`;
   two passes of the forward loop);
3. per quantized linear with an enabled weight quantizer that is not skipped, in module order:
   the SVD ``W = U S V^T`` of the smoothed weight in float64; ``B = U[:, :r] * S[:r]``
   (``cout x r``) and ``A = V^T[:r]`` (``r x cin``) in the weight dtype, zero-padded with a
   warning when the weight has fewer than ``r`` singular values; ``W -= B @ A`` in place; the
   weight and input amaxes reset;
4. ``max`` calibration of the whole model (the third pass): the residual weights, and the
   inputs as the smoothed layers now see them, skipped layers included.

Refused before the model is touched (by ``check_svdquant``, or at the start of the run, which
the rollback undoes): ``lowrank`` below 1 or null, ``moe_calib_experts_ratio`` (the AWQ search
does not take it yet), and a sequential weight quantizer (W4A8) on any quantized linear, where
Model Optimizer fails: it turns the sequential container into a single quantizer class.
"""

from __future__ import annotations

import fnmatch
import warnings
from dataclasses import replace

import torch
from qconfig.algorithm_methods import AWQLiteCalibConfig, SVDQuantConfig
from qconfig.algorithms import MaxCalibConfig, QuantizeAlgorithmConfig
from qconfig.plan import Plan
from torch import nn

from qruntime.calibrate.awq import run_awq
from qruntime.calibrate.context import CalibrationContext
from qruntime.calibrate.max import max_calibrate
from qruntime.calibrate.registry import (
    AlgorithmCapabilities,
    UnsupportedAlgorithmError,
    register_algorithm,
)
from qruntime.calibrate.smoothquant import SmoothedLinear, smoothable_linears
from qruntime.modules.low_rank import attach_low_rank, promoted_weight_quantizer
from qruntime.quantizer import SequentialQuantizer, TensorQuantizer
from qruntime.transaction import current_transaction

__all__ = ["SVDQUANT_CAPABILITIES", "check_svdquant", "svd_factors", "svdquant_calibrate"]

#: Three passes of the forward loop; weights rewritten in place; factors added to quantizers.
SVDQUANT_CAPABILITIES = AlgorithmCapabilities(
    needs_forward_data=True,
    writes_weights=True,
    adds_modules=True,
    sync_points=("amax", "statistics"),
)


def svd_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, A)`` of step 3 of the module docstring: ``B`` (``cout x rank``) and ``A``
    (``rank x cin``) in ``weight``'s dtype, from its float64 SVD; zero-padded, with a warning,
    when the weight has fewer than ``rank`` singular values (``min(cout, cin) < rank``)."""
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("svdquant: the weight holds NaN or infinite values; it has no SVD")
    u, s, vt = torch.linalg.svd(weight.to(torch.float64), full_matrices=False)
    lora_b = (u[:, :rank] * s[:rank]).to(weight.dtype)
    lora_a = vt[:rank].to(weight.dtype)
    found = lora_b.shape[1]
    if found < rank:
        warnings.warn(
            f"svdquant: a weight of shape {list(weight.shape)} has only {found} singular values; "
            f"the rank-{rank} branch is zero-padded (lowrank is larger than the layer)",
            UserWarning,
            stacklevel=3,
        )
        padded_b = lora_b.new_zeros((lora_b.shape[0], rank))
        padded_a = lora_a.new_zeros((rank, lora_a.shape[1]))
        padded_b[:, :found] = lora_b
        padded_a[:found] = lora_a
        lora_b, lora_a = padded_b, padded_a
    return lora_b, lora_a


def _is_skipped(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def _switch_off_skipped(linears: list[SmoothedLinear], patterns: list[str]) -> list[nn.Module]:
    """Step 1: the enabled quantizers of the skipped linears, switched off (returned to switch
    on again)."""
    off: list[nn.Module] = []
    for linear in linears:
        if not linear.weight_quantizer.is_enabled or not _is_skipped(linear.name, patterns):
            continue
        for quantizer in (linear.weight_quantizer, linear.input_quantizer):
            if quantizer.is_enabled:
                quantizer.disable()
                off.append(quantizer)
    return off


def _split(linear: SmoothedLinear, rank: int) -> None:
    """Step 3 on one linear."""
    wq = linear.weight_quantizer
    if not isinstance(wq, TensorQuantizer):
        raise UnsupportedAlgorithmError(
            f"svdquant: {linear.name} has a sequential weight quantizer, which cannot hold a "
            "low-rank branch"
        )
    weight = linear.weight
    lora_b, lora_a = svd_factors(weight.detach(), rank)
    attach_low_rank(wq, lora_a, lora_b, persistent=not promoted_weight_quantizer(wq))
    transaction = current_transaction()
    if transaction is not None:
        transaction.save(weight)
    with torch.no_grad():
        weight.sub_(lora_b @ lora_a)
    for quantizer in (wq, linear.input_quantizer):
        quantizer.reset_amax()
        if quantizer.bias_calibrator is not None:
            quantizer.bias_calibrator.reset()


@torch.no_grad()
def svdquant_calibrate(ctx: CalibrationContext) -> None:
    """SVDQuant calibration of a converted model (module docstring)."""
    config = ctx.config
    assert isinstance(config, SVDQuantConfig)
    if ctx.forward_loop is None:
        raise ValueError("svdquant needs calibration data: pass a forward_loop(model)")
    if config.lowrank is None or config.lowrank < 1:
        raise UnsupportedAlgorithmError(
            f"svdquant: lowrank must be at least 1, not {config.lowrank}"
        )
    patterns = list(config.skip_layers or [])
    linears = smoothable_linears(ctx.model)
    for linear in linears:
        if isinstance(linear.weight_quantizer, SequentialQuantizer):
            raise UnsupportedAlgorithmError(
                f"svdquant: {linear.name}.weight_quantizer is a sequential quantizer (e.g. "
                "W4A8), which cannot hold a low-rank branch; Model Optimizer fails on it too "
                "(also in a skipped layer). Quantize the linears' weights with one format. The "
                "model was not changed."
            )
    switched_off = _switch_off_skipped(linears, patterns)
    try:
        run_awq(replace(ctx, config=AWQLiteCalibConfig()))
    finally:
        for quantizer in switched_off:
            quantizer.enable()
    for linear in linears:
        if linear.weight_quantizer.is_enabled and not _is_skipped(linear.name, patterns):
            _split(linear, int(config.lowrank))
    max_calibrate(replace(ctx, config=MaxCalibConfig()))


def check_svdquant(plan: Plan, config: QuantizeAlgorithmConfig) -> None:
    """Refuse, before the model is touched, what this implementation cannot honour (module
    docstring; ``layerwise`` is refused for every method by ``check_supported``)."""
    assert isinstance(config, SVDQuantConfig)
    lowrank = config.lowrank
    if lowrank is None or isinstance(lowrank, bool) or lowrank < 1:
        raise UnsupportedAlgorithmError(
            f"svdquant: lowrank is {lowrank}; give the rank of the low-rank branch, an integer "
            "of at least 1 (or leave it out for 32). The model was not changed."
        )
    if config.moe_calib_experts_ratio is not None:
        raise UnsupportedAlgorithmError(
            "svdquant with moe_calib_experts_ratio is not implemented in qruntime yet (its AWQ "
            "search does not take it). The model was not changed."
        )


register_algorithm(
    SVDQuantConfig,
    svdquant_calibrate,
    capabilities=SVDQUANT_CAPABILITIES,
    check=check_svdquant,
)
