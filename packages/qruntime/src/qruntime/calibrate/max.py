"""``max`` calibration (``MaxCalibConfig``): every quantizer's amax is the max of ``|x|`` it saw.

The phases of :mod:`qruntime.calibrate.phases`, in Model Optimizer 0.47.0's order:

1. statistics collection on for every enabled quantizer;
2. every weight quantizer sees its weight tensor directly, so weights never depend on the data or
   on MoE routing (the built-in max calibrator then stops collecting: the forward loop would show
   it the same tensor again, and the max of the same tensor is the same value);
3. ``forward_loop(model)`` once — unless ``skip_forward_without_activation_calib`` and no
   activation quantizer needs data;
4. amax written where something was collected (no data → the quantizer stays dynamic), static
   biases loaded, quantization back on; the experts of sparse MoE blocks share their input amax
   (:mod:`qruntime.calibrate.moe`);
5. the ``"amax"`` sync point: in a distributed run every amax is reduced with MAX over the
   data, expert and tensor groups (:mod:`qruntime.calibrate.sync`; one process, or
   ``distributed_sync: false``: nothing to do);
6. static-block weight quantizers finalized: amax in float32, NVFP4-static ones get a global
   amax shared within q/k/v, gate/up and w1/w3 sibling groups (``shared_states`` patterns).

docs/model-optimizer-rules.md ("Calibration phases of max") states the rules reproduced here.
"""

from __future__ import annotations

from typing import Any

from qconfig.algorithms import MaxCalibConfig, QuantizeAlgorithmConfig
from qconfig.plan import Plan

from qruntime.calibrate import phases
from qruntime.calibrate.context import CalibrationContext
from qruntime.calibrate.moe import sync_moe_experts
from qruntime.calibrate.phases import SHARED_PATTERNS
from qruntime.calibrate.registry import (
    AlgorithmCapabilities,
    UnsupportedAlgorithmError,
    register_algorithm,
)

__all__ = ["MAX_CAPABILITIES", "SHARED_PATTERNS", "max_calibrate"]

#: Max reads data when it has a forward loop but does not need one (weights only without).
MAX_CAPABILITIES = AlgorithmCapabilities(sync_points=("amax", "global_amax"))


def max_calibrate(ctx: CalibrationContext) -> None:
    """Max calibration of every enabled quantizer of a converted model (module docstring)."""
    config = ctx.config
    assert isinstance(config, MaxCalibConfig)
    phases.check_sharded(ctx)
    quantizers = ctx.quantizers()
    pairs = ctx.weight_pairs()
    phases.enable_stats_collection(quantizers)
    phases.feed_weights(pairs)
    phases.stop_weight_collection(pairs)
    skip = config.skip_forward_without_activation_calib and not phases.needs_activation_forward(
        quantizers, pairs
    )
    if not skip:
        phases.run_forward_loop(ctx)
    phases.finish_stats_collection(quantizers)
    sync_moe_experts(ctx.model, config.sync_expert_weight_amax)
    phases.sync(ctx, "amax")
    phases.finalize(ctx, pairs, shared_patterns(config))


def shared_patterns(config: MaxCalibConfig) -> list[str]:
    """The ``weight_global_amax`` sibling patterns: ``shared_states``' list, else the default."""
    states: Any = config.shared_states
    if states is not None:
        return list(dict(states).get("weight_global_amax", {}).get("patterns", SHARED_PATTERNS))
    return list(SHARED_PATTERNS)


def check_calibrators(plan: Plan, config: QuantizeAlgorithmConfig) -> None:
    """Every enabled quantizer needs a calibrator max can read: ``"max"`` or a constructor.

    ``"histogram"`` is refused: its amax needs a method (entropy, percentile, ...) that max
    calibration does not pass, so Model Optimizer fails at the end of the run; so is the text of
    a constructor read back from a plan file, which names no class that could be built.
    (Constructors themselves are checked for every plan, by ``check_supported``.)
    """
    for name, q in plan.quantizers.items():
        for spec in q.spec if isinstance(q.spec, tuple) else (q.spec,):
            calibrator = spec.calibrator
            if spec.enable and isinstance(calibrator, str) and calibrator != "max":
                raise UnsupportedAlgorithmError(
                    f"{name}: calibrator {calibrator!r} cannot be used with 'max' calibration "
                    "(use 'max', or give a calibrator class or (class, args, kwargs) from "
                    "Python). The model was not changed."
                )


register_algorithm(
    MaxCalibConfig, max_calibrate, capabilities=MAX_CAPABILITIES, check=check_calibrators
)
