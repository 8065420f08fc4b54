"""``local_hessian`` calibration (``LocalHessianCalibConfig``): the weight search of ``mse``,
with each weight error weighted by the layer's input Hessian.

Model Optimizer 0.47.0's ``local_hessian_calibrate``:

1. ``max`` calibration (pass 1 of the data);
2. pass 2: every quantizer named ``*weight_quantizer`` switched off (rotation too, as an
   enable-only ``false`` does), the input quantizers left as they are, and each quantized
   linear's raw input accumulated into per-block Hessians (:mod:`qruntime.calibrate.hessian`);
   the quantizers are restored afterwards and the hooks removed, also when the loop raises;
3. the search of :mod:`qruntime.calibrate.mse` with the error ``ΔWᵀ H ΔW`` per (row, cin block)
   for weights with a Hessian; weights without one (no tokens, cin not divisible by
   ``block_size`` — warned —, convolutions, sequential quantizers) get the squared error. With
   the default ``fp8_scale_sweep: true`` only NVFP4-static weights are searched (the same
   warning as ``mse`` names how many are left at max).

Only the layers whose weight the search will change are hooked, and when there is none (say
``fp8_scale_sweep`` on a model without NVFP4-static weights) pass 2 is skipped: the result is
the same, one pass of data cheaper (Model Optimizer runs it anyway; docs/differences.md).

A forward loop is required: the registry refuses a run without one before the model is touched
(Model Optimizer warns and does nothing). In a distributed run the Hessian sums and token
counts are added over the data-parallel group before the search, so every process searches with
the Hessian of all the data and ends with the same amaxes (Model Optimizer does not sync them:
its processes may end with different weight amaxes). ``debug: true`` keeps the accumulators on
the model as ``_local_hessian_accumulators`` (by layer name).
"""

from __future__ import annotations

import fnmatch
import warnings

import torch
from qconfig.algorithm_methods import LocalHessianCalibConfig

from qruntime.calibrate import phases
from qruntime.calibrate.context import CalibrationContext, leaves
from qruntime.calibrate.hessian import (
    HessianAccumulator,
    HessianError,
    LinearInput,
    capture_layer_inputs,
    quantized_linears,
)
from qruntime.calibrate.mse import (
    SearchOptions,
    check_search_options,
    max_first,
    refuse_unsearchable_weights,
    search_weights,
    warn_left_at_max,
    will_search,
)
from qruntime.calibrate.registry import AlgorithmCapabilities, register_algorithm
from qruntime.calibrate.search import ErrorFn, WeightView
from qruntime.quantizer import TensorQuantizer, is_quantizer
from qruntime.transaction import ModelSnapshot

__all__ = ["LOCAL_HESSIAN_CAPABILITIES", "local_hessian_calibrate"]

#: Two passes of data; amaxes only.
LOCAL_HESSIAN_CAPABILITIES = AlgorithmCapabilities(
    needs_forward_data=True, sync_points=("amax", "global_amax", "statistics")
)

#: The quantizers switched off while the Hessians are collected (full-match on module names).
WEIGHT_QUANTIZERS = "*weight_quantizer"


def _listed(names: list[str]) -> str:
    """At most five names, then how many more."""
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return ", ".join(names[:5]) + more


def _warn_layers(layers: list[LinearInput], block_size: int) -> None:
    """One warning per kind, naming the layers: cin not divisible by ``block_size`` (plain
    squared error for them), and a quantization block other than ``block_size`` (the Hessian
    blocks then do not line up with the scale blocks)."""
    uneven = [f"{x.name} ({x.weight.shape[1]})" for x in layers if x.weight.shape[1] % block_size]
    if uneven:
        warnings.warn(
            f"local_hessian: input features not divisible by block_size {block_size}, so "
            f"these weights are searched with the plain squared error: {_listed(uneven)}",
            UserWarning,
            stacklevel=3,
        )
    other = []
    for layer in layers:
        block = (layer.quantizer.block_sizes or {}).get(-1)
        if block is not None and block != block_size:
            other.append(f"{layer.name} ({block})")
    if other:
        warnings.warn(
            f"local_hessian: block_size {block_size} differs from the quantization block of "
            f"{_listed(other)}; the Hessian weighting does not line up with its scale blocks",
            UserWarning,
            stacklevel=3,
        )


def _collect_hessians(
    ctx: CalibrationContext, layers: list[LinearInput], block_size: int
) -> dict[int, HessianAccumulator]:
    """Pass 2 (module docstring, step 2)."""
    switched = [
        q
        for name, module in ctx.model.named_modules()
        if is_quantizer(module) and fnmatch.fnmatchcase(name, WEIGHT_QUANTIZERS)
        for q in leaves(module)
    ]
    snapshots = [ModelSnapshot(q) for q in switched]
    with capture_layer_inputs(layers, block_size) as accumulators:
        try:
            for q in switched:
                q.disable()
                q.disable_rotate()
            ctx.run_forward_loop()
        finally:
            for snapshot in snapshots:
                snapshot.restore()
    return accumulators


def _sync_hessians(
    ctx: CalibrationContext, accumulators: list[tuple[HessianAccumulator, torch.device]]
) -> None:
    """Distributed runs: ``Σ XᵀX`` and the token counts added over the data-parallel group
    (a process that saw no tokens for a layer adds zeros), so that ``H / tokens`` is the
    Hessian of the union of the data on every process."""
    if ctx.parallel is None:
        return
    live = [(acc, device) for acc, device in accumulators if acc.enabled]
    sums = []
    for acc, device in live:
        shape = (acc.cin // acc.block_size, acc.block_size, acc.block_size)
        present = acc.hessian is not None
        sums.append(acc.hessian.clone() if present else torch.zeros(shape, device=device))
    tokens = torch.tensor([float(acc.tokens) for acc, _ in live], dtype=torch.float64)
    phases.sync(ctx, "statistics", [*sums, tokens])
    for (acc, _), total, count in zip(live, sums, tokens.tolist(), strict=True):
        acc.tokens = int(count)
        acc.hessian = total if count > 0 else None


def local_hessian_calibrate(ctx: CalibrationContext) -> None:
    """``local_hessian`` calibration of a converted model (module docstring)."""
    config = ctx.config
    assert isinstance(config, LocalHessianCalibConfig)
    if ctx.forward_loop is None:
        warnings.warn(
            "local_hessian needs a forward_loop; nothing was calibrated", UserWarning, stacklevel=2
        )
        return
    block_size = int(config.block_size or 16)
    refuse_unsearchable_weights(ctx.weight_pairs(), "local_hessian")
    max_first(ctx)
    options = SearchOptions.of(config)
    # Only the weights the search will change need a Hessian; without any, pass 2 is skipped.
    layers = [x for x in quantized_linears(ctx.model) if will_search(x.quantizer, options)]
    _warn_layers(layers, block_size)
    accumulators = _collect_hessians(ctx, layers, block_size) if layers else {}
    if ctx.parallel is not None:  # a layer no data reached here may have data elsewhere
        for x in layers:
            cout, cin = x.weight.shape
            accumulators.setdefault(id(x.quantizer), HessianAccumulator(cout, cin, block_size))
        _sync_hessians(ctx, [(accumulators[id(x.quantizer)], x.weight.device) for x in layers])

    def error_for(q: TensorQuantizer, view: WeightView) -> ErrorFn | None:
        acc = accumulators.get(id(q))
        hessian = acc.normalized() if acc is not None else None
        if acc is None or hessian is None:
            return None
        return HessianError(hessian, acc.cout, tuple(view.x.shape))

    left = search_weights(ctx.weight_pairs(), options, error_for)
    warn_left_at_max(left, "local_hessian")
    if config.debug:
        names = {id(layer.quantizer): layer.name for layer in layers}
        ctx.model._local_hessian_accumulators = {  # type: ignore[assignment]
            names[key]: acc for key, acc in accumulators.items()
        }


register_algorithm(
    LocalHessianCalibConfig,
    local_hessian_calibrate,
    capabilities=LOCAL_HESSIAN_CAPABILITIES,
    check=check_search_options,
)
