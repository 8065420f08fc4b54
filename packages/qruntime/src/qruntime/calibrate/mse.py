"""``mse`` calibration (``MseCalibConfig``): max, then a search for each weight's amax.

Model Optimizer 0.47.0's ``mse_calibrate``, step by step:

1. ``max`` calibration (:func:`~qruntime.calibrate.max.max_calibrate`, with the config's
   ``distributed_sync`` and ``shared_states``) — the only forward pass; activations keep their
   max amax, NVFP4-static weights get their (shared) global amax;
2. every *eligible* weight quantizer — an enabled ``TensorQuantizer`` (sequential quantizers are
   skipped) that is not dynamic, not MX, has a calibrator and an amax, and no constant amax —
   gets its amax searched (:mod:`qruntime.calibrate.search`):

   * ``fp8_scale_sweep: false``: ``amax = amax_max * m`` for the multipliers
     ``linspace(start, stop, ceil((stop - start) / step) + 1)`` (1.0 is usually not one of
     them), chosen per channel / block / tensor by the smallest summed squared error;
   * ``fp8_scale_sweep: true``: only NVFP4-static weights are searched, over the 126 block amaxes
     ``global_amax * c`` whose block scale is an exact E4M3 value; the other eligible weights
     keep their max amax (Model Optimizer skips them silently; here one ``UserWarning`` per run
     says how many, docs/differences.md).

   The global amax of NVFP4-static weights is left as max calibration set it.

The quantizer keeps its configured calibrator (Model Optimizer leaves its search calibrator on
it; docs/differences.md). Weights only: without a forward loop the activations stay dynamic, as
with ``max``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from qconfig.algorithm_methods import MseCalibConfig
from qconfig.algorithms import MaxCalibConfig, QuantizeAlgorithmConfig
from qconfig.plan import Plan

from qruntime.calibrate.context import CalibrationContext, WeightPair
from qruntime.calibrate.max import check_calibrators, max_calibrate
from qruntime.calibrate.registry import (
    AlgorithmCapabilities,
    UnsupportedAlgorithmError,
    register_algorithm,
)
from qruntime.calibrate.search import (
    ErrorFn,
    WeightView,
    fp8_scale_candidates,
    multiplier_candidates,
    search,
    weight_view,
)
from qruntime.quantizer import TensorQuantizer
from qruntime.transaction import current_transaction

__all__ = [
    "MSE_CAPABILITIES",
    "SearchOptions",
    "check_search_options",
    "is_searchable",
    "max_first",
    "mse_calibrate",
    "refuse_unsearchable_weights",
    "search_weights",
    "warn_left_at_max",
    "will_search",
]

#: Weights only, like ``max``: data is used when given (activations), never needed.
MSE_CAPABILITIES = AlgorithmCapabilities(sync_points=("amax", "global_amax"))


@dataclass(frozen=True)
class SearchOptions:
    """The search options shared by ``mse`` and ``local_hessian``."""

    step_size: float
    start_multiplier: float
    stop_multiplier: float
    fp8_scale_sweep: bool

    @classmethod
    def of(cls, config: QuantizeAlgorithmConfig) -> SearchOptions:
        c: object = config
        return cls(
            float(c.step_size),  # type: ignore[attr-defined]
            float(c.start_multiplier),  # type: ignore[attr-defined]
            float(c.stop_multiplier),  # type: ignore[attr-defined]
            bool(c.fp8_scale_sweep),  # type: ignore[attr-defined]
        )


def check_search_options(plan: Plan, config: QuantizeAlgorithmConfig) -> None:
    """Refuse, before the model is touched, options Model Optimizer accepts but cannot run:
    a missing (null) number, or a grid without a single multiplier (it fails after the
    calibration pass). Calibrators are checked as for ``max``, which runs first."""
    check_calibrators(plan, config)
    names = ("step_size", "start_multiplier", "stop_multiplier")
    values = {n: getattr(config, n) for n in names}
    missing = [n for n, v in values.items() if v is None]
    if missing:
        raise UnsupportedAlgorithmError(
            f"calibration method {config.method!r}: {', '.join(missing)} must be a number, not "
            "null. The model was not changed."
        )
    steps = math.ceil(
        (values["stop_multiplier"] - values["start_multiplier"]) / values["step_size"]
    )
    if steps + 1 < 1:
        raise UnsupportedAlgorithmError(
            f"calibration method {config.method!r}: start_multiplier "
            f"{values['start_multiplier']} is above stop_multiplier {values['stop_multiplier']} "
            "by a step or more, so there is no multiplier to search. The model was not changed."
        )


def refuse_unsearchable_weights(pairs: Sequence[WeightPair], method: str) -> None:
    """Refuse, before anything runs, weight quantizers whose search Model Optimizer runs in a
    way no search here reproduces (docs/differences.md): an affine ``bias`` (collected a second
    time and subtracted from what is searched) and real quantization (``fake_quant: false``,
    searched with fake quantization forced on in the layout of the real one)."""
    for pair in pairs:
        q = pair.quantizer
        if not isinstance(q, TensorQuantizer) or not q.is_enabled:
            continue
        if q.bias_calibrator is not None:
            what = "an affine `bias`"
        elif not q.fake_quant:
            what = "real quantization (`fake_quant: false`)"
        else:
            continue
        raise UnsupportedAlgorithmError(
            f"{pair.name}: calibration method {method!r} does not support {what} on a weight "
            "quantizer. The model was not changed."
        )


def max_first(ctx: CalibrationContext) -> None:
    """Max calibration of everything, with the ``distributed_sync`` and ``shared_states`` of
    the search config (the first step of ``mse`` and ``local_hessian``)."""
    config = ctx.config
    max_config = MaxCalibConfig(
        distributed_sync=config.distributed_sync,  # type: ignore[attr-defined]
        shared_states=config.shared_states,  # type: ignore[attr-defined]
    )
    max_calibrate(dataclasses.replace(ctx, config=max_config))


def is_searchable(q: object) -> bool:
    """Model Optimizer's eligibility for the weight search (module docstring, step 2)."""
    return (
        isinstance(q, TensorQuantizer)
        and q.is_enabled
        and not q.is_dynamic
        and not q.is_mx_format
        and not q.uses_constant_amax
        and q.calibrator is not None
        and q.amax is not None
    )


def will_search(q: object, options: SearchOptions) -> bool:
    """Whether the search changes ``q``'s amax: eligible, and NVFP4-static under
    ``fp8_scale_sweep``."""
    if not is_searchable(q):
        return False
    assert isinstance(q, TensorQuantizer)
    return not options.fp8_scale_sweep or q.is_nvfp4_static


def _multiplied(amax: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``amax * c_k`` for each candidate, in the dtype Model Optimizer's ``amax * c`` (``c`` a
    0-d float32 tensor) has: the amax dtype, unless the amax is 0-d (then float32)."""
    out = amax.to(torch.float32).unsqueeze(0) * c.view(-1, *([1] * amax.dim()))
    return out.to(amax.dtype) if amax.dim() else out


def _search_one(
    q: TensorQuantizer,
    weight: torch.Tensor,
    options: SearchOptions,
    error_for: Callable[[TensorQuantizer, WeightView], ErrorFn | None] | None,
) -> None:
    view = weight_view(q, weight)
    error = error_for(q, view) if error_for is not None else None
    amax = view.amax
    device = view.x.device
    if options.fp8_scale_sweep:
        global_amax = q.global_amax
        assert global_amax is not None, "an NVFP4-static weight has a global amax after max"
        g = global_amax.to(device=device, dtype=torch.float32)
        ones = [1] * amax.dim()

        def block_amax(c: torch.Tensor) -> torch.Tensor:
            return (g * c).view(-1, *ones).expand(-1, *amax.shape)

        best = search(view, fp8_scale_candidates(device), block_amax, error)
        _store(q, torch.ones_like(amax, dtype=torch.float32) * (g * best.view_as(amax)))
        return
    candidates = multiplier_candidates(
        options.start_multiplier, options.stop_multiplier, options.step_size, device
    )
    best = search(view, candidates, lambda c: _multiplied(amax, c), error)
    _store(q, amax * best.view_as(amax))


def _store(q: TensorQuantizer, value: torch.Tensor) -> None:
    """Write the searched amax in the stored amax's dtype and ``state_dict`` place, as Model
    Optimizer's copy into the existing buffer does."""
    old = q.amax
    assert old is not None
    q.store_amax(value.to(device=old.device, dtype=old.dtype))


def search_weights(
    pairs: Sequence[WeightPair],
    options: SearchOptions,
    error_for: Callable[[TensorQuantizer, WeightView], ErrorFn | None] | None = None,
) -> int:
    """Search the amax of every eligible weight quantizer; returns how many were left at max
    because ``fp8_scale_sweep`` searches only NVFP4-static ones.

    ``error_for(q, view)`` gives a quantizer's error function on its weight view (None:
    squared error).
    """
    left = 0
    txn = current_transaction()
    # The search writes only its own candidate batches: no write guard needed around it.
    with txn.paused_guard() if txn is not None else contextlib.nullcontext():
        for pair in pairs:
            q = pair.quantizer
            if not is_searchable(q):
                continue
            if not will_search(q, options):  # under fp8_scale_sweep: not NVFP4-static
                left += 1
                continue
            assert isinstance(q, TensorQuantizer)
            _search_one(q, pair.weight, options, error_for)
    return left


def warn_left_at_max(left: int, method: str) -> None:
    """The one warning of a run whose ``fp8_scale_sweep`` skipped weights (docs/differences.md)."""
    if left:
        warnings.warn(
            f"{method}: fp8_scale_sweep searches only NVFP4-static weights; {left} other weight "
            f"quantizer(s) keep their max-calibrated amax (as in Model Optimizer). Set "
            "fp8_scale_sweep: false to search them with the multiplier grid.",
            UserWarning,
            stacklevel=2,
        )


def mse_calibrate(ctx: CalibrationContext) -> None:
    """``mse`` calibration of a converted model (module docstring)."""
    config = ctx.config
    assert isinstance(config, MseCalibConfig)
    refuse_unsearchable_weights(ctx.weight_pairs(), "mse")
    max_first(ctx)
    left = search_weights(ctx.weight_pairs(), SearchOptions.of(config))
    warn_left_at_max(left, "mse")


register_algorithm(
    MseCalibConfig, mse_calibrate, capabilities=MSE_CAPABILITIES, check=check_search_options
)
