"""The steps calibration algorithms are made of, one concern per function.

Every algorithm that collects statistics goes through the same life cycle, in this order:

1. :func:`enable_stats_collection` — quantization off, statistics collection on;
2. :func:`feed_weights` — each weight quantizer sees its weight tensor directly, so weights never
   depend on the data or on MoE routing; then :func:`stop_weight_collection` where seeing the
   same weight again cannot change the result;
3. :func:`run_forward_loop` — the calibration data runs through the model;
4. :func:`finish_stats_collection` — amax (and static bias) loaded, quantization back on;
5. :func:`sync` — statistics made equal across processes (:mod:`qruntime.calibrate.sync`);
6. :func:`finalize` — static-block weight amaxes kept in float32, NVFP4-static weights get a
   global amax shared within sibling groups (:func:`shared_global_amax`).

The sparse-MoE expert sync sits between 4 and 5 (:mod:`qruntime.calibrate.moe`). The rules
they reproduce are in docs/model-optimizer-rules.md ("Calibration phases of max", "NVFP4 global
amax sharing"). These functions touch quantizers only through ``TensorQuantizer``'s public API.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from qruntime.calibrate.context import CalibrationContext, WeightPair, leaves
from qruntime.calibrate.moe import sync_moe_experts
from qruntime.calibrate.sync import reduce_tensors, sync_amaxes
from qruntime.calibrators import MaxCalibrator
from qruntime.modules.base import QuantModule
from qruntime.numerics.amax import amax_reduce
from qruntime.parallel import ShardedModelError, gathered, sharded_parameters
from qruntime.quantizer import SequentialQuantizer, TensorQuantizer

__all__ = [
    "SHARED_PATTERNS",
    "SYNC_POINTS",
    "check_sharded",
    "enable_stats_collection",
    "feed_weights",
    "finalize",
    "finish_stats_collection",
    "needs_activation_forward",
    "run_forward_loop",
    "shared_global_amax",
    "stop_weight_collection",
    "sync",
]

#: Default sibling groups sharing an NVFP4-static weight global amax: full-match regexes on module
#: names whose optional captured prefix is the parent (q/k/v, gate/up and w1/w3 are fused on
#: export, so their FP8 block-scale grids must agree).
SHARED_PATTERNS = (
    r"(?:(.*)\.)?(?:q_proj|k_proj|v_proj)",
    r"(?:(.*)\.)?(?:gate_proj|up_proj)",
    r"(?:(.*)\.)?(?:w1|w3)",
)

#: The sync points an algorithm can declare (``AlgorithmCapabilities.sync_points``):
#: ``"amax"`` — after statistics are loaded (and MoE experts synced), every quantizer's amax is
#: reduced with MAX across the processes that hold copies of it; ``"global_amax"`` — the shared
#: NVFP4 global amaxes, before they are stored; ``"statistics"`` — an algorithm's own
#: accumulators, summed over the data-parallel group.
SYNC_POINTS = ("amax", "global_amax", "statistics")


def enable_stats_collection(quantizers: Iterable[TensorQuantizer]) -> None:
    """Prepare every enabled quantizer for a statistics pass.

    Constant-amax quantizers only stop quantizing (they are not calibrated); quantizers with a
    calibrator stop quantizing and start collecting (dynamic ones never collect); quantizers
    without a calibrator are disabled for good — Model Optimizer's ``enable_stats_collection``.
    While collecting, nothing is quantized: the statistics are those of the float model.
    """
    for q in quantizers:
        if not q.is_enabled:
            continue
        q.disable_quant()
        if q.uses_constant_amax:
            continue
        if q.calibrator is not None:
            q.enable_calib()
        else:
            q.disable()


def feed_weights(pairs: Iterable[WeightPair]) -> None:
    """Run every weight quantizer on its weight tensor (collected if it is collecting).

    A weight sharded by FSDP2 (a DTensor parameter) is gathered first, one weight at a time
    (:func:`qruntime.parallel.gathered`): its quantizer must see the whole weight, as on one
    process — a per-channel or per-block amax of a slice would describe the wrong rows, and a
    DTensor amax could not be reduced at the sync points. The forward loop needs no such step:
    inside a forward pass FSDP2 has already put the gathered weights in place."""
    for pair in pairs:
        pair.quantizer(gathered(pair.weight))


def stop_weight_collection(pairs: Iterable[WeightPair]) -> None:
    """Stop collecting on weight quantizers whose result the forward loop cannot change.

    The forward loop quantizes each weight again, with the same tensor; the built-in max
    calibrator would compute the same maximum, so it stops here and saves a reduction per weight
    per batch. Any other calibrator keeps collecting, as in Model Optimizer, which feeds the
    weight to it on every forward: its result may depend on how often it saw the tensor.
    """
    for pair in pairs:
        for q in leaves(pair.quantizer):
            if q.is_calibrating and type(q.calibrator) is MaxCalibrator:
                q.disable_calib()


def check_sharded(ctx: CalibrationContext) -> None:
    """Refuse (:class:`~qruntime.parallel.ShardedModelError`) a model with FSDP2-sharded
    (DTensor) parameters unless every algorithm of the run is ``max``.

    ``max`` reads each weight once, gathered whole (:func:`feed_weights`), and its
    statistics are plain tensors afterwards. The other algorithms read weights outside a
    forward pass (searches, Hessian updates, SmoothQuant and AWQ scales), write them in place
    (FSDP2's gathered copy is freed, not written back, so a write would be lost) or add
    parameters FSDP2 does not manage (``lsq``'s learned amaxes, SVDQuant's branch: their
    gradients would not be averaged). They are refused here, naming the fix, before any weight is
    read or written: ``max_calibrate`` (the first step of every algorithm that feeds weights)
    and :func:`statistics_pass` (AWQ's first pass) call this first.
    """
    sharded = sharded_parameters(ctx.model)
    if not sharded:
        return
    configs = ctx.plan.algorithm if ctx.plan is not None else [ctx.config]
    others = sorted({str(c.method) for c in configs} - {"max"})
    if others:
        raise ShardedModelError(
            f"calibration method(s) {', '.join(repr(m) for m in others)} cannot run on a model "
            f"whose parameters are sharded (FSDP2 fully_shard: {len(sharded)} DTensor "
            f"parameter(s), e.g. {sharded[0]}); only 'max' calibrates a sharded model. Quantize "
            "before sharding: qruntime.quantize(model, ...) first, then fully_shard the "
            "quantized model. The model was not changed."
        )


def needs_activation_forward(
    quantizers: Iterable[TensorQuantizer], pairs: Iterable[WeightPair]
) -> bool:
    """Whether any enabled quantizer other than the weight quantizers collects data in the
    forward loop (Model Optimizer's test behind ``skip_forward_without_activation_calib``).

    It does when it loads an amax (it has a calibrator and is not dynamic, MX or constant-amax)
    or a static bias (any non-constant-amax quantizer with a static bias).
    """
    weights = {id(q) for pair in pairs for q in leaves(pair.quantizer)}
    for q in quantizers:
        if not q.is_enabled or id(q) in weights:
            continue
        constant = q.uses_constant_amax
        if not constant and q.has_static_bias:
            return True
        if constant or q.is_dynamic or q.is_mx_format:
            continue
        if q.calibrator is not None:
            return True
    return False


def run_forward_loop(ctx: CalibrationContext) -> bool:
    """Run the calibration data through the model once; False when there is no loop."""
    return ctx.run_forward_loop()


def finish_stats_collection(quantizers: Iterable[TensorQuantizer]) -> None:
    """End a statistics pass: load what was collected and quantize again.

    For every enabled quantizer: constant-amax ones just quantize again; a non-dynamic quantizer
    with a calibrator gets the calibrator's amax (none collected → no amax: it stays dynamic); a
    static bias is loaded; quantization on, collection off — Model Optimizer's
    ``finish_stats_collection``.
    """
    for q in quantizers:
        if not q.is_enabled:
            continue
        if q.uses_constant_amax:
            q.enable_quant()
            continue
        calibrator = q.calibrator
        if calibrator is not None and not q.is_dynamic:
            if calibrator.compute_amax() is not None:
                q.load_calib_amax()
        if q.has_static_bias:
            q.load_calib_bias()
        q.enable_quant()
        q.disable_calib()


def statistics_pass(ctx: CalibrationContext) -> None:
    """One pass of the forward loop in which every enabled quantizer collects, then loads what
    it collected, as a ``max`` calibration ends: the experts of a sparse MoE block share their
    input amaxes, then the ``"amax"`` sync point. Searches that patch layers (AWQ) run their own
    work in hooks during this pass; the quantizers they switched off take no part."""
    check_sharded(ctx)
    quantizers = ctx.quantizers()
    enable_stats_collection(quantizers)
    run_forward_loop(ctx)
    finish_stats_collection(quantizers)
    sync_moe_experts(ctx.model)
    sync(ctx, "amax")


def sync(ctx: CalibrationContext, point: str, tensors: Sequence[torch.Tensor] = ()) -> None:
    """The point where values computed per process are made equal across processes.

    ``point`` is one of :data:`SYNC_POINTS`: ``"amax"`` reduces every quantizer's amax with MAX
    over the data, expert and tensor groups (:func:`qruntime.calibrate.sync.sync_amaxes`;
    ``sync_expert_weight_amax`` of the config opts routed-expert weights into the expert
    group); ``"global_amax"`` reduces ``tensors`` (the shared NVFP4 global amaxes) with MAX over
    the expert and tensor groups; ``"statistics"`` adds ``tensors`` (an algorithm's own
    accumulators: AWQ's activation sums and losses, GPTQ's Hessians) over the data group. With
    no parallel state (``ctx.parallel`` None: one process, or ``distributed_sync: false``)
    every value is already final and there is nothing to do.
    """
    if point not in SYNC_POINTS:
        raise ValueError(f"unknown sync point {point!r}; known: {', '.join(SYNC_POINTS)}")
    parallel = ctx.parallel
    if parallel is None:
        return
    if point == "amax":
        expert_weights = bool(getattr(ctx.config, "sync_expert_weight_amax", False))
        sync_amaxes(parallel, ctx.model, sync_expert_weight_amax=expert_weights)
    elif point == "global_amax":
        reduce_tensors(parallel, point, tensors, kinds=("expert", "tensor"), op="max")
    else:
        reduce_tensors(parallel, point, tensors, kinds=("data",), op="sum")


def _stored_amax(q: TensorQuantizer) -> torch.Tensor | None:
    """The ``_amax`` buffer as stored: ``q.amax`` hides it for MX formats, which never read it,
    but a sibling group counts every stored amax of its members."""
    return dict(q.named_buffers(recurse=False)).get("_amax")


def shared_global_amax(model: nn.Module, patterns: Sequence[str]) -> dict[int, torch.Tensor]:
    """Per weight quantizer id: the global amax its sibling group shares.

    Modules whose names full-match the same pattern with the same captured parent form a group;
    a group of two or more enabled weight quantizers shares the max over its members' amaxes, in
    float32. Quantizers outside any such group are not listed.
    """
    compiled = [re.compile(p) for p in patterns]
    buckets: dict[tuple, list[TensorQuantizer]] = {}
    for name, module in model.named_modules():
        q = module._modules.get("weight_quantizer") if isinstance(module, QuantModule) else None
        if not isinstance(q, TensorQuantizer) or not q.is_enabled:
            continue
        for index, regex in enumerate(compiled):
            match = regex.fullmatch(name)
            if match is not None:
                buckets.setdefault((index, match.groups()), []).append(q)
                break
    shared: dict[int, torch.Tensor] = {}
    for members in buckets.values():
        stored = [_stored_amax(q) for q in members]
        amaxes = [amax_reduce(a) for a in stored if a is not None]
        if len(members) < 2 or not amaxes:
            continue
        value = torch.max(torch.stack(amaxes)).to(torch.float32)
        for q in members:
            shared[id(q)] = value
    return shared


def _has_nvfp4_static(pairs: Iterable[WeightPair]) -> bool:
    return any(q.is_nvfp4_static and q.is_enabled for pair in pairs for q in leaves(pair.quantizer))


def finalize(ctx: CalibrationContext, pairs: Sequence[WeightPair], patterns: Sequence[str]) -> None:
    """Finish static-block weight quantizers after their amax is final.

    Their amax is kept in float32 (Model Optimizer's promotion to a static block-scale
    quantizer); NVFP4-static ones also get a global amax — their sibling group's shared value
    (:func:`shared_global_amax`, synced at the ``"global_amax"`` point), else the max of their
    own amax. Only the first element of a sequential weight quantizer is finalized.
    """
    shared = shared_global_amax(ctx.model, patterns) if _has_nvfp4_static(pairs) else {}
    if shared:
        sync(ctx, "global_amax", list({id(v): v for v in shared.values()}.values()))
    for pair in pairs:
        quantizer = pair.quantizer
        if isinstance(quantizer, SequentialQuantizer):
            if len(quantizer) == 0:
                continue
            quantizer = quantizer[0]
        if not isinstance(quantizer, TensorQuantizer):
            continue
        if not quantizer.is_enabled or not quantizer.is_static_block_quant:
            continue
        amax = quantizer.amax
        if amax is None:
            continue
        if quantizer.is_nvfp4_static:
            quantizer.global_amax = shared.get(id(quantizer), amax_reduce(amax).to(torch.float32))
        elif not isinstance(quantizer.num_bits, int):
            continue
        quantizer.keep_amax_in_float32()
