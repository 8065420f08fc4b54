"""``nvfp4_act_headroom`` calibration (``NVFP4ActHeadroomCalibConfig``): NVFP4 activation global
scales with headroom above the calibrated range; everything else as the weight algorithm does.

Why it is built this way: the activation policy and the weight policy are independent. The
algorithm only swaps a :class:`~qruntime.calibrate.headroom_calibrator.NVFP4ActHeadroomCalibrator`
into every eligible input quantizer, then runs ``weight_scale_algorithm`` (``max``, ``mse`` or
``local_hessian``, dispatched through the registry so any registered one works). Each of those
starts with a max pass, whose forward loop fills the swapped-in collectors at no extra pass;
its later weight refinements do not touch activations. The original calibrators are put back
afterwards — on failure too — so a later calibration of the model starts clean.

Eligible, as in Model Optimizer 0.47.0: a ``TensorQuantizer`` whose name ends in
``input_quantizer``, enabled, not ``type: dynamic``, with dynamic blocks of E2M1 elements and an
E4M3 scale (``num_bits`` (2, 1), ``scale_bits`` (4, 3)); its block width is ``block_sizes[-1]``
(16 when absent). An input quantizer that is a *sequential* quantizer with such an element is
refused before the model is touched (Model Optimizer raises ``NotImplementedError`` from inside
the calibration). No eligible quantizer: a warning, and the result is the weight algorithm's
alone (plain max for activations). docs/algorithms/activation-ranges.md.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

from qconfig.algorithm_methods import NVFP4ActHeadroomCalibConfig
from qconfig.algorithms import QuantizeAlgorithmConfig
from qconfig.plan import Plan
from qconfig.spec import QuantizerSpec
from torch import nn

from qruntime.calibrate.context import CalibrationContext, leaves
from qruntime.calibrate.headroom_calibrator import NVFP4ActHeadroomCalibrator
from qruntime.calibrate.registry import (
    AlgorithmCapabilities,
    CalibrationAlgorithm,
    UnsupportedAlgorithmError,
    algorithm_for,
    register_algorithm,
)
from qruntime.quantizer import SequentialQuantizer, TensorQuantizer

__all__ = [
    "HEADROOM_CAPABILITIES",
    "check_headroom",
    "headroom_targets",
    "is_nvfp4_dynamic_block",
    "nvfp4_act_headroom_calibrate",
]

#: Like max: data is read when given, not required (weights only without it). What the weight
#: algorithm needs besides is checked against its own registration (:func:`check_headroom`;
#: its forward loop by ``check_supported``).
HEADROOM_CAPABILITIES = AlgorithmCapabilities(sync_points=("amax", "global_amax"))

_INPUT_SLOT = "input_quantizer"


def is_nvfp4_dynamic_block(spec: QuantizerSpec) -> bool:
    """NVFP4 with dynamic blocks: E2M1 elements, E4M3 block scales computed at run time (the
    quantizer's calibrated ``amax`` is then the per-tensor global scale)."""
    return spec.block_type == "dynamic" and spec.num_bits == (2, 1) and spec.scale_bits == (4, 3)


def _calibrated_nvfp4(spec: QuantizerSpec, enabled: bool) -> bool:
    return enabled and not spec.is_dynamic and is_nvfp4_dynamic_block(spec)


def _sequential_refusal(name: str) -> UnsupportedAlgorithmError:
    return UnsupportedAlgorithmError(
        f"{name}: nvfp4_act_headroom cannot calibrate a sequential input quantizer with an "
        "NVFP4 dynamic-block element (one global scale per tensor has no meaning for the "
        "composition); give these inputs a single quantizer, or use 'max'. The model was not "
        "changed."
    )


def headroom_targets(model: nn.Module) -> list[tuple[str, TensorQuantizer]]:
    """The input quantizers whose collector is swapped (module docstring), in module order.

    Raises :class:`UnsupportedAlgorithmError` for a sequential input quantizer with an enabled
    NVFP4 dynamic-block element — also when the plan was not checked (an algorithm run on a
    model directly).
    """
    targets = []
    for name, module in model.named_modules():
        if not name.endswith(_INPUT_SLOT):
            continue
        if isinstance(module, SequentialQuantizer):
            if any(_calibrated_nvfp4(q.spec, q.is_enabled) for q in leaves(module)):
                raise _sequential_refusal(name)
        elif isinstance(module, TensorQuantizer) and _calibrated_nvfp4(
            module.spec, module.is_enabled
        ):
            targets.append((name, module))
    return targets


def _weight_algorithm(config: NVFP4ActHeadroomCalibConfig) -> CalibrationAlgorithm:
    weight = config.weight_scale_algorithm
    for option, used in (
        ("moe_calib_experts_ratio", weight.moe_calib_experts_ratio is not None),
        ("layerwise", weight.layerwise.enable),
    ):
        if used:
            raise UnsupportedAlgorithmError(
                f"nvfp4_act_headroom: {option} in weight_scale_algorithm is not supported "
                "(Model Optimizer passes it on as an argument its weight calibrations do not "
                "take). The model was not changed."
            )
    try:
        return algorithm_for(weight)
    except UnsupportedAlgorithmError as exc:
        raise UnsupportedAlgorithmError(
            f"nvfp4_act_headroom: weight_scale_algorithm: {exc}"
        ) from None


def check_headroom(plan: Plan, config: QuantizeAlgorithmConfig) -> None:
    """Refuse, before the model is touched, a sequential NVFP4 input quantizer and a weight
    algorithm that cannot run (not registered, or refused by its own check, which is shown the
    plan without the input quantizers whose collector is swapped).

    That the weight algorithm gets the forward loop it needs is checked by ``check_supported``
    for every nested algorithm config.
    """
    assert isinstance(config, NVFP4ActHeadroomCalibConfig)
    swapped = set()
    for name, q in plan.quantizers.items():
        if not name.endswith(_INPUT_SLOT):
            continue
        specs: Any = q.spec
        if q.is_sequential:
            if any(_calibrated_nvfp4(s, s.enable) for s in specs):
                raise _sequential_refusal(name)
        elif _calibrated_nvfp4(specs, specs.enable):
            swapped.add(name)
    algorithm = _weight_algorithm(config)
    if algorithm.check is not None:
        # The weight algorithm never sees the swapped quantizers' own calibrators: a
        # ``"histogram"`` one there is fine, as in Model Optimizer.
        kept = {n: q for n, q in plan.quantizers.items() if n not in swapped}
        algorithm.check(replace(plan, quantizers=kept), config.weight_scale_algorithm)


def nvfp4_act_headroom_calibrate(ctx: CalibrationContext) -> None:
    """Swap the headroom collectors in, run the weight algorithm, put the originals back."""
    config = ctx.config
    assert isinstance(config, NVFP4ActHeadroomCalibConfig)
    weight_config = config.weight_scale_algorithm
    weight_algorithm = _weight_algorithm(config)
    targets = headroom_targets(ctx.model)
    if not targets:
        warnings.warn(
            "nvfp4_act_headroom: no enabled NVFP4 dynamic-block input quantizer, so this is "
            "the weight algorithm alone (plain max for activations). Does the config enable "
            "NVFP4 input quantizers?",
            UserWarning,
            stacklevel=2,
        )
    originals = [(q, q.calibrator) for _, q in targets]
    try:
        for _, q in targets:
            block_sizes = q.block_sizes or {}
            q.calibrator = NVFP4ActHeadroomCalibrator(
                q.num_bits,
                None,
                q.spec.unsigned,
                block_size=block_sizes.get(-1, 16),
                anchor_percentile=config.anchor_percentile,
                upper_percentile=config.upper_percentile,
                rho=config.rho,
            )
        weight_algorithm.run(replace(ctx, config=weight_config))
    finally:
        for q, original in originals:
            q.calibrator = original


register_algorithm(
    NVFP4ActHeadroomCalibConfig,
    nvfp4_act_headroom_calibrate,
    capabilities=HEADROOM_CAPABILITIES,
    check=check_headroom,
)
