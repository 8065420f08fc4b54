"""``lsq`` calibration (``LSQConfig``): calibrate the weight scales, then make them learnable.

Why it is two steps: the learned step size starts from a good step. ``scale_algorithm`` (``mse``
when not given; or ``max`` / ``local_hessian``), dispatched through the registry, calibrates
first; then every enabled, calibrated static-block weight quantizer (NVFP4-static or INT
elements, blocks along the last dim) becomes a
:class:`~qruntime.quantizer.learned.LearnedAmaxQuantizer` with ``learnable_amax`` (default
``["post"]``) as ``nn.Parameter``s, ``tied_amax`` and ``quantize_pre_scale`` as configured —
what Model Optimizer 0.47.0's ``lsq`` does. Other quantizers (activations, per-channel weights,
sequential weight quantizers) keep their calibrated amax. Training afterwards updates the
learnable amaxes with the weights (docs/qat.md).
"""

from __future__ import annotations

from dataclasses import replace

from qconfig.algorithm_methods import LSQConfig, MseCalibConfig
from qconfig.algorithms import QuantizeAlgorithmConfig
from qconfig.plan import Plan

from qruntime.calibrate.context import CalibrationContext
from qruntime.calibrate.registry import (
    AlgorithmCapabilities,
    CalibrationAlgorithm,
    UnsupportedAlgorithmError,
    algorithm_for,
    register_algorithm,
)
from qruntime.quantizer import TensorQuantizer
from qruntime.quantizer.learned import LearnedAmaxQuantizer

__all__ = ["LSQ_CAPABILITIES", "check_lsq", "convertible", "lsq_calibrate", "scale_config"]

#: The nested algorithm's sync points (its own capabilities decide whether it needs data);
#: LSQ adds parameters to the quantizers, so it is refused with ``layerwise.enable``.
LSQ_CAPABILITIES = AlgorithmCapabilities(
    adds_modules=True, sync_points=("amax", "global_amax", "statistics")
)


def scale_config(config: LSQConfig) -> QuantizeAlgorithmConfig:
    """The scale algorithm ``lsq`` runs first (``mse`` with its defaults when none is given)."""
    return config.scale_algorithm if config.scale_algorithm is not None else MseCalibConfig()


def _scale_algorithm(config: LSQConfig) -> CalibrationAlgorithm:
    nested = scale_config(config)
    if nested.layerwise.enable or nested.moe_calib_experts_ratio is not None:
        raise UnsupportedAlgorithmError(
            "lsq: layerwise / moe_calib_experts_ratio in scale_algorithm are not supported "
            "(Model Optimizer passes them to calibrations that do not take them). The model "
            "was not changed."
        )
    try:
        return algorithm_for(nested)
    except UnsupportedAlgorithmError as exc:
        raise UnsupportedAlgorithmError(f"lsq: scale_algorithm: {exc}") from None


def check_lsq(plan: Plan, config: QuantizeAlgorithmConfig) -> None:
    """Refuse, before the model is touched, a scale algorithm that cannot run."""
    assert isinstance(config, LSQConfig)
    algorithm = _scale_algorithm(config)
    if algorithm.check is not None:
        algorithm.check(plan, scale_config(config))


def convertible(quantizer: object) -> bool:
    """What ``lsq`` converts: an enabled static-block ``TensorQuantizer`` with a calibrated amax
    and NVFP4 or INT elements (the quantizers Model Optimizer promotes to static-block ones)."""
    if not isinstance(quantizer, TensorQuantizer) or isinstance(quantizer, LearnedAmaxQuantizer):
        return False
    if not (quantizer.is_enabled and quantizer.is_static_block_quant):
        return False
    if quantizer.amax is None:
        return False
    return quantizer.is_nvfp4_static or isinstance(quantizer.num_bits, int)


def lsq_calibrate(ctx: CalibrationContext) -> None:
    """Run the scale algorithm, then convert the weight quantizers (module docstring)."""
    config = ctx.config
    assert isinstance(config, LSQConfig)
    _scale_algorithm(config).run(replace(ctx, config=scale_config(config)))
    seen: set[int] = set()
    for pair in ctx.weight_pairs():
        quantizer = pair.quantizer
        if id(quantizer) in seen or not convertible(quantizer):
            continue
        seen.add(id(quantizer))
        assert isinstance(quantizer, TensorQuantizer)
        LearnedAmaxQuantizer.convert(
            quantizer,
            learnable_amax=config.learnable_amax,
            tied_amax=config.tied_amax,
            quantize_pre_scale=config.quantize_pre_scale,
            dtype=pair.weight.dtype,
            ndim=pair.weight.dim(),
        )


register_algorithm(LSQConfig, lsq_calibrate, capabilities=LSQ_CAPABILITIES, check=check_lsq)
