"""``max`` calibration (``MaxCalibConfig``, calibration.md §1).

1. statistics collection on for every enabled quantizer (§0.3): constant-amax ones stop
   quantizing, the others stop quantizing and start collecting (dynamic ones only stop);
2. every weight quantizer sees its weight tensor directly (§0.5), so weights never depend on
   the data or on MoE routing;
3. ``forward_loop(model)`` once — activation quantizers keep a running max of ``amax_reduce``;
4. ``_amax`` written where something was collected (no data → stays dynamic, §1.6), static
   biases loaded, quantization back on; the experts of sparse MoE blocks share their input amax
   (§1.3 step 5, :mod:`qruntime.moe`);
5. static-block weight quantizers are finalized (§0.5): amax kept in float32, and NVFP4-static
   ones get a ``_global_amax`` — shared within q/k/v, gate/up and w1/w3 sibling groups (§1.4).

Single-process only: ``distributed_sync`` and ``sync_expert_weight_amax`` have nothing to sync.
Weight quantizers are not fed the weight again during ``forward_loop``: the max over the same
tensor is the same value (Model Optimizer does collect it again), and it saves a reduction per
weight per batch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import torch
from qconfig.algorithms import MaxCalibConfig, QuantizeAlgorithmConfig
from qconfig.plan import Plan
from torch import nn

from qruntime.calibrate.registry import (
    CalibrationAlgorithm,
    ForwardLoop,
    UnsupportedAlgorithmError,
    register_algorithm,
)
from qruntime.modules.base import QuantModule
from qruntime.moe import moe_blocks, sync_expert_amax
from qruntime.numerics.amax import amax_reduce
from qruntime.quantizer import SequentialQuantizer, TensorQuantizer

__all__ = ["SHARED_PATTERNS", "max_calibrate"]

#: Default sibling groups sharing an NVFP4-static weight global amax (calibration.md §1.4).
SHARED_PATTERNS = (
    r"(?:(.*)\.)?(?:q_proj|k_proj|v_proj)",
    r"(?:(.*)\.)?(?:gate_proj|up_proj)",
    r"(?:(.*)\.)?(?:w1|w3)",
)


def _leaves(quantizer: nn.Module) -> Iterator[TensorQuantizer]:
    if isinstance(quantizer, SequentialQuantizer):
        for child in quantizer:
            yield from _leaves(child)
    elif isinstance(quantizer, TensorQuantizer):
        yield quantizer


def _weight_pairs(model: nn.Module) -> list[tuple[str, nn.Module, torch.Tensor, nn.Module]]:
    out = []
    for name, module in model.named_modules():
        if isinstance(module, QuantModule):
            for weight, quantizer in module.iter_weights_for_calibration():
                out.append((name, module, weight, quantizer))
    return out


def enable_stats_collection(quantizers: list[TensorQuantizer]) -> None:
    """calibration.md §0.3 (``enable_stats_collection``)."""
    for q in quantizers:
        if q._disabled:
            continue
        q.disable_quant()
        if q.uses_constant_amax:
            continue
        if q._calibrator is not None:
            q.enable_calib()
        else:
            q.disable()


def finish_stats_collection(quantizers: list[TensorQuantizer]) -> None:
    """calibration.md §0.3 (``finish_stats_collection``)."""
    for q in quantizers:
        if q._disabled:
            continue
        if q.uses_constant_amax:
            q.enable_quant()
            continue
        if q._calibrator is not None and not q.is_dynamic:
            if q._calibrator.compute_amax() is not None:
                q.load_calib_amax()
        if (
            q._bias_calibrator is not None
            and (q._config.bias or {}).get("type", "static") == "static"
        ):
            q.load_calib_bias()
        q.enable_quant()
        q.disable_calib()


def _needs_activation_forward(quantizers: list[TensorQuantizer], weights: set[int]) -> bool:
    """Whether any enabled non-weight quantizer collects data (``skip_forward_...``, §1.1)."""
    for q in quantizers:
        if q._disabled or id(q) in weights:
            continue
        constant = q.uses_constant_amax
        static_bias = (q._config.bias or {}).get("type", "static") == "static"
        if not constant and q._bias_calibrator is not None and static_bias:
            return True
        if constant or q.is_dynamic or q.is_mx_format:
            continue
        if q._calibrator is not None:
            return True
    return False


def _shared_global_amax(model: nn.Module, patterns: list[str]) -> dict[int, torch.Tensor]:
    """Per weight quantizer id: its sibling group's global amax (calibration.md §1.4)."""
    compiled = [re.compile(p) for p in patterns]
    buckets: dict[tuple, list[TensorQuantizer]] = {}
    for name, module in model.named_modules():
        q = module._modules.get("weight_quantizer") if isinstance(module, QuantModule) else None
        if not isinstance(q, TensorQuantizer) or q._disabled:
            continue
        for index, regex in enumerate(compiled):
            match = regex.fullmatch(name)
            if match is not None:
                buckets.setdefault((index, match.groups()), []).append(q)
                break
    shared: dict[int, torch.Tensor] = {}
    for members in buckets.values():
        amaxes = [amax_reduce(q._amax) for q in members if q._buffers.get("_amax") is not None]
        if len(members) < 2 or not amaxes:
            continue
        value = torch.max(torch.stack(amaxes)).to(torch.float32)
        for q in members:
            shared[id(q)] = value
    return shared


def finalize_static_blocks(
    model: nn.Module,
    patterns: list[str],
    pairs: list[tuple[str, nn.Module, torch.Tensor, nn.Module]] | None = None,
) -> None:
    """Static-block weight quantizers keep their amax in float32; NVFP4-static ones get a
    global amax (``promote_static_block_weight_quantizers``, calibration.md §0.5)."""
    pairs = _weight_pairs(model) if pairs is None else pairs
    nvfp4 = any(
        isinstance(q, TensorQuantizer) and q.is_nvfp4_static and not q._disabled
        for _, _, _, w in pairs
        for q in _leaves(w)
    )
    shared = _shared_global_amax(model, patterns) if nvfp4 else {}
    for _, _, _, quantizer in pairs:
        if isinstance(quantizer, SequentialQuantizer):
            if len(quantizer) == 0:
                continue
            quantizer = quantizer[0]
        if not isinstance(quantizer, TensorQuantizer):
            continue
        if quantizer._disabled or not quantizer.is_static_block_quant:
            continue
        amax = quantizer._buffers.get("_amax")
        if amax is None:
            continue
        if quantizer.is_nvfp4_static:
            quantizer.global_amax = shared.get(id(quantizer), amax_reduce(amax).to(torch.float32))
        elif not isinstance(quantizer._config.num_bits, int):
            continue
        if amax.dtype != torch.float32:
            quantizer._buffers["_amax"] = amax.to(torch.float32)


def max_calibrate(
    model: nn.Module, config: QuantizeAlgorithmConfig, forward_loop: ForwardLoop | None
) -> None:
    """Max calibration of every enabled quantizer of a converted model (module docstring)."""
    assert isinstance(config, MaxCalibConfig)
    quantizers = [m for m in model.modules() if isinstance(m, TensorQuantizer)]
    pairs = _weight_pairs(model)
    enable_stats_collection(quantizers)
    weight_leaves: list[TensorQuantizer] = []
    for _, _, weight, quantizer in pairs:
        quantizer(weight)
        weight_leaves.extend(q for q in _leaves(quantizer) if q._if_calib)
    for q in weight_leaves:
        q.disable_calib()
    skip = config.skip_forward_without_activation_calib and not _needs_activation_forward(
        quantizers, {id(q) for _, _, _, w in pairs for q in _leaves(w)}
    )
    if forward_loop is not None and not skip:
        forward_loop(model)
    finish_stats_collection(quantizers)
    for block in moe_blocks(model):
        sync_expert_amax(block, config.sync_expert_weight_amax)
    finalize_static_blocks(model, _patterns(config), pairs)


def _patterns(config: MaxCalibConfig) -> list[str]:
    states: Any = config.shared_states
    if states is not None:
        return list(dict(states).get("weight_global_amax", {}).get("patterns", SHARED_PATTERNS))
    return list(SHARED_PATTERNS)


def _check(plan: Plan, config: QuantizeAlgorithmConfig) -> None:
    """Max needs a max calibrator on every enabled quantizer (histogram and custom calibrators
    fail inside Model Optimizer's ``max``, calibration.md §2.3)."""
    if config.moe_calib_experts_ratio is not None:
        raise UnsupportedAlgorithmError(
            "moe_calib_experts_ratio (forcing calibration tokens to more MoE experts) is not "
            "implemented in qruntime. The model was not changed."
        )
    for name, q in plan.quantizers.items():
        elements = q.attributes if isinstance(q.attributes, tuple) else (q.attributes,)
        for attrs in elements:
            if attrs.enable and attrs.calibrator != "max":
                raise UnsupportedAlgorithmError(
                    f"{name}: calibrator {attrs.calibrator!r} cannot be used with 'max' "
                    "calibration (only calibrator 'max' is implemented). The model was not changed."
                )


register_algorithm(CalibrationAlgorithm("max", max_calibrate, _check))
