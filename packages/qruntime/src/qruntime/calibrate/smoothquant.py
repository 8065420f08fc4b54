"""``smoothquant`` calibration (``SmoothQuantCalibConfig``): move activation outliers into the
weights with a per-input-channel scale, then calibrate per tensor.

Why: an INT8 activation quantized per tensor wastes its range on the few channels with large
values. SmoothQuant multiplies input channel ``j`` by ``s_j`` (the input quantizer's
``pre_quant_scale``) and divides weight column ``j`` by the same ``s_j``: the product
``x W^T`` is unchanged in exact arithmetic, but the activation becomes flatter and the weights,
quantized per output channel, absorb the difference. ``alpha`` sets how much moves:
``s_j = w_j^(1-alpha) / a_j^alpha`` with ``a_j`` the calibrated max of ``|x_j|`` and ``w_j`` the
max of ``|W[:, j]|``.

Model Optimizer 0.47.0's procedure, step for step (docs/algorithms/smoothing.md):

1. the enabled per-tensor input quantizers of the linears that can be smoothed collect
   per-input-channel statistics (``axis = -1``);
2. ``max`` calibration of the whole model (one pass of the forward loop);
3. per smoothed linear: ``s`` computed as above in the float arithmetic Model Optimizer uses
   (``w^(1-alpha)`` in the weight dtype, the rest in float32), channels with
   ``a_j <= 2^-31`` set to 1 when the smallest ``s`` is ``<= 2^-31``, ``s`` clamped to
   ``[1e-4, 1e4]``; ``pre_quant_scale = s`` in the weight dtype; ``W[:, j] *= 1/s_j`` in place
   (float32 product, cast back); the weight amax recomputed by max calibration of the new
   weight (per its configured axis); the input amax ``max_j(a_j * s_j)``, per tensor again.

A linear is smoothed when its input quantizer is an enabled, static INT8 quantizer (per tensor,
or already ``axis = -1``) without a static affine bias or a constant amax, its weight quantizer
is a single INT8 quantizer, it has more than one input channel, and the forward loop reached it.
Every other quantized linear is left to plain ``max`` calibration, with a warning that says why
— unlike Model Optimizer, which leaves some of them with the per-channel input axis of step 1
and stops the run on others (docs/differences.md, the smoothquant rows).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import torch
from qconfig.algorithm_methods import SmoothQuantCalibConfig
from qconfig.algorithms import MaxCalibConfig, QuantizeAlgorithmConfig
from qconfig.plan import Plan
from torch import nn

from qruntime.calibrate.context import CalibrationContext
from qruntime.calibrate.max import max_calibrate
from qruntime.calibrate.registry import (
    AlgorithmCapabilities,
    UnsupportedAlgorithmError,
    register_algorithm,
)
from qruntime.modules.base import QuantModule, quantized_weight
from qruntime.quantizer import TensorQuantizer
from qruntime.transaction import current_transaction

__all__ = [
    "SCALE_RANGE",
    "SMOOTHQUANT_CAPABILITIES",
    "ZERO_CHANNEL",
    "SmoothedLinear",
    "back_to_per_tensor",
    "divide_columns",
    "recalibrate_weight",
    "smoothable_linears",
    "smoothing_scale",
    "smoothquant_calibrate",
]

#: A channel whose activation amax is at most this is treated as all-zero (its scale is 1).
ZERO_CHANNEL = 1.0 / (1 << 31)
#: The scale is clamped to this range, so no weight column is multiplied by more than 1e4.
SCALE_RANGE = (1e-4, 1e4)

#: Model Optimizer asserts a forward loop; the weights are rescaled in place.
SMOOTHQUANT_CAPABILITIES = AlgorithmCapabilities(
    needs_forward_data=True, writes_weights=True, sync_points=("amax",)
)


@dataclass(frozen=True)
class SmoothedLinear:
    """A quantized linear as SmoothQuant sees it: its name, the module, its 2-D weight
    parameter and its two quantizers."""

    name: str
    module: nn.Module
    weight: torch.Tensor
    input_quantizer: TensorQuantizer
    weight_quantizer: nn.Module


def smoothable_linears(model: nn.Module) -> list[SmoothedLinear]:
    """The quantized linears of ``model``, in module order: converted modules (not embeddings)
    with a single ``input_quantizer``, a ``weight_quantizer`` and a 2-D ``weight`` parameter —
    Model Optimizer's ``is_quantized_linear`` test, through the public module API."""
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, QuantModule) or isinstance(module, nn.Embedding):
            continue
        inputs = module._modules.get("input_quantizer")
        weights = module._modules.get("weight_quantizer")
        weight = quantized_weight(module, "weight_quantizer")
        if not isinstance(inputs, TensorQuantizer) or weights is None or weight is None:
            continue
        if weight.dim() == 2:
            out.append(SmoothedLinear(name, module, weight, inputs, weights))
    return out


def smoothing_scale(act_amax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """The per-input-channel scale ``s`` (float32, shape ``(cin,)``) for activation amax
    ``act_amax`` (per channel, any leading dims of size 1) and ``weight`` (``(cout, cin)``).

    The arithmetic is Model Optimizer's, so that the result is bit-identical: the weight's
    column max raised to ``1 - alpha`` in the weight dtype, divided by ``act_amax`` (float32)
    to the ``alpha``. Where the smallest scale is ``<= 2^-31`` (or not a number), channels whose
    activation amax is ``<= 2^-31`` get 1 — Model Optimizer means the same, but its mask has the
    activation's rank and cannot index the 1-D scale, and a 0/0 scale fails its positivity check
    (docs/differences.md, the smoothquant rows). Last, the clamp to :data:`SCALE_RANGE`.
    """
    act = act_amax.float()
    weight_max = weight.abs().amax(dim=0, keepdim=True)
    scale = (weight_max.pow(1 - alpha) / act.pow(alpha)).squeeze()
    if not bool(scale.min() > ZERO_CHANNEL):
        scale[(act <= ZERO_CHANNEL).reshape(scale.shape)] = 1
    return scale.clamp(min=SCALE_RANGE[0], max=SCALE_RANGE[1])


# ------------------------------------------------------------------------------ which layers
def _reason_before(linear: SmoothedLinear) -> str | None:
    """Why ``linear`` cannot be smoothed whatever the data (None: it is a candidate)."""
    q, wq = linear.input_quantizer, linear.weight_quantizer
    if not q.is_enabled:
        return "its input quantizer is disabled"
    if q.is_dynamic:
        return "its input quantizer is dynamic (never calibrated)"
    if q.num_bits != 8 or not isinstance(wq, TensorQuantizer) or wq.num_bits != 8:
        return "only INT8 input and weight quantizers can be smoothed"
    if q.axis not in (None, -1) or q.block_sizes is not None:
        return "its input quantizer is neither per tensor nor per input channel"
    if q.uses_constant_amax:
        return "its input quantizer has a constant amax"
    if q.has_static_bias:
        return "its input quantizer has a static affine bias"
    if q.pre_quant_scale is not None:
        raise RuntimeError(
            f"smoothquant: {linear.name} already has a pre_quant_scale (smoothed twice, or "
            "after AWQ); start from an unsmoothed model"
        )
    if linear.weight.shape[1] < 2:
        return "it has a single input channel"
    return None


def _warn_skipped(name: str, reason: str) -> None:
    warnings.warn(
        f"smoothquant: {name or 'the model'} is not smoothed ({reason}); it gets plain max "
        "calibration",
        UserWarning,
        stacklevel=4,
    )


# ------------------------------------------------------------------------------ one layer
def _smooth(ctx: CalibrationContext, linear: SmoothedLinear, alpha: float) -> None:
    """Step 3 of the module docstring on one calibrated candidate.

    The input quantizer's buffers are written in Model Optimizer's order (``_amax`` registered
    again before ``_pre_quant_scale``, then updated in place), so ``state_dict`` keys agree.
    """
    q, weight = linear.input_quantizer, linear.weight
    act_amax = q.amax
    assert act_amax is not None
    scale = smoothing_scale(act_amax, weight, alpha)
    dtype, act = weight.dtype, act_amax.float()
    back_to_per_tensor(q)
    q.amax = act.amax().to(device=weight.device, dtype=dtype)
    q.pre_quant_scale = scale.to(dtype)
    divide_columns(weight, scale)
    recalibrate_weight(ctx, linear)
    q.store_amax((act.to(device=weight.device, dtype=dtype) * scale).amax().to(dtype))


def back_to_per_tensor(q: TensorQuantizer) -> None:
    """An input quantizer that collected per input channel for a smoothing is per tensor again,
    without an amax; configured per channel, its config says per tensor too, so that a saved
    plan rebuilds it as it now is."""
    q.reset_amax()
    q.axis = None
    if q.config.axis is not None:
        q.set_from_attribute_config({"axis": None})


def divide_columns(weight: torch.Tensor, scale: torch.Tensor) -> None:
    """``W[:, j] *= 1 / scale_j`` in place (float32 product, cast back to the weight dtype), the
    weight saved with the open transaction first so that a failure restores it."""
    transaction = current_transaction()
    if transaction is not None:
        transaction.save(weight)
    weight.copy_((weight * (1.0 / scale)[None, :]).to(weight.dtype))


def recalibrate_weight(ctx: CalibrationContext, linear: SmoothedLinear, reset: bool = True) -> None:
    """``max`` calibration of the linear alone, fed its new weight (the other quantizers of the
    layer keep what they have: their calibrators are reset or hold the same statistics). With
    ``reset`` the weight quantizer's amax and bias collector are reset first, as Model
    Optimizer's ``reset_amax`` does, so that a static weight bias is that of the new weight."""
    wq = linear.weight_quantizer
    if reset:
        assert isinstance(wq, TensorQuantizer)
        wq.reset_amax()
        if wq.bias_calibrator is not None:
            wq.bias_calibrator.reset()
    weight = linear.weight
    inner = replace(
        ctx, model=linear.module, config=MaxCalibConfig(), forward_loop=lambda m: wq(weight)
    )
    max_calibrate(inner)


# ------------------------------------------------------------------------------ the algorithm
@torch.no_grad()
def smoothquant_calibrate(ctx: CalibrationContext) -> None:
    """SmoothQuant calibration of a converted model (module docstring)."""
    config = ctx.config
    assert isinstance(config, SmoothQuantCalibConfig)
    if ctx.forward_loop is None:
        raise ValueError("smoothquant needs calibration data: pass a forward_loop(model)")
    if config.alpha is None:
        raise UnsupportedAlgorithmError("smoothquant needs a number for alpha, not null")
    alpha = float(config.alpha)
    linears = smoothable_linears(ctx.model)
    reasons = {id(linear): _reason_before(linear) for linear in linears}
    candidates = [linear for linear in linears if reasons[id(linear)] is None]
    switched = {id(linear) for linear in candidates if linear.input_quantizer.axis is None}
    for linear in candidates:
        linear.input_quantizer.axis = -1
    max_calibrate(replace(ctx, config=MaxCalibConfig()))
    for linear in linears:
        reason = reasons[id(linear)]
        if reason is None and linear.input_quantizer.amax is None:
            reason = "no calibration data reached it"
            if id(linear) in switched:
                linear.input_quantizer.axis = None  # dynamic per tensor, as plain max leaves it
        if reason is not None:
            _warn_skipped(linear.name, reason)
            continue
        _smooth(ctx, linear, alpha)


def check_config(plan: Plan, config: QuantizeAlgorithmConfig) -> None:
    """Refuse, before the model is touched, an ``alpha`` of null (``layerwise`` is refused for
    every method by ``check_supported``)."""
    assert isinstance(config, SmoothQuantCalibConfig)
    if config.alpha is None:
        raise UnsupportedAlgorithmError(
            "smoothquant: alpha is null; give a number in [0, 1] (Model Optimizer fails on null "
            "after calibrating). The model was not changed."
        )


register_algorithm(
    SmoothQuantCalibConfig,
    smoothquant_calibrate,
    capabilities=SMOOTHQUANT_CAPABILITIES,
    check=check_config,
)
