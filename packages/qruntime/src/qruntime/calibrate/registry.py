"""Calibration algorithms, registered by their config class, and the driver that runs them.

A plan's ``algorithm`` is a tuple of config instances (``qconfig.algorithms``); each selects its
algorithm by its *type*: the most specific registered class in its MRO whose ``method`` is the
instance's ``method``. A subclass that keeps its parent's method name (a config with an extra
field, say) therefore runs the parent's algorithm, while one that declares a method of its own
must be registered itself — ``awq_full``, whose config subclasses the ``awq_lite`` and
``awq_clip`` configs, never silently runs one of them.

Each registration declares what the algorithm does (:class:`AlgorithmCapabilities`), so that
the code around it — the rollback, the checks before the model is touched, the
distributed sync — can ask instead of knowing every method. A config with
``layerwise.enable`` runs block by block (:func:`run_layerwise`, :mod:`qruntime.calibrate.
layerwise`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from qconfig.algorithms import QuantizeAlgorithmConfig
from qconfig.plan import Plan
from torch import nn

from qruntime.calibrate.context import CalibrationContext, ForwardLoop, LayerDriver, as_forward_loop
from qruntime.calibrate.layerwise import (
    DecoderLayers,
    LayerSpec,
    LayerwiseDriver,
    LayerwiseError,
    LayerwiseOptions,
    find_layers,
    uncalibrated_outside,
)
from qruntime.calibrate.moe import force_experts
from qruntime.calibrate.phases import SYNC_POINTS
from qruntime.calibrate.sync import announce_failure, finish, warn_unsynced_biases
from qruntime.calibrators import constructor_parts
from qruntime.parallel import DistributedCalibrationError, ParallelState

__all__ = [
    "AlgorithmCapabilities",
    "CalibrationAlgorithm",
    "ForwardLoop",
    "LayerwiseOptions",
    "UnsupportedAlgorithmError",
    "algorithm_for",
    "check_supported",
    "layerwise_options",
    "register_algorithm",
    "registered_algorithms",
    "registered_methods",
    "run_algorithms",
    "run_layerwise",
    "synced_parallel",
    "unregister_algorithm",
]


class UnsupportedAlgorithmError(ValueError):
    """The plan asks for a calibration this runtime cannot run; nothing was changed."""


@dataclass(frozen=True)
class AlgorithmCapabilities:
    """What an algorithm does to the model, declared when it is registered.

    * ``needs_forward_data`` — it cannot run without a forward loop (refused before the model is
      touched when none is given). ``max`` does not: without data it calibrates weights only.
    * ``writes_weights`` — it changes parameters in place (SmoothQuant, AWQ, GPTQ).
    * ``adds_modules`` — it adds modules or parameters to the model (SVDQuant's low-rank branch).
      Such an algorithm is refused with ``layerwise.enable``, as Model Optimizer refuses
      svdquant there (its branch set-up needs the whole model).
    * ``layer_by_layer`` — it runs one layer at a time through ``ctx.layer_driver`` (refused when
      no driver is given).
    * ``sync_points`` — the :func:`~qruntime.calibrate.phases.sync` points it reaches, from
      :data:`~qruntime.calibrate.phases.SYNC_POINTS`.
    """

    needs_forward_data: bool = False
    writes_weights: bool = False
    adds_modules: bool = False
    layer_by_layer: bool = False
    sync_points: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [p for p in self.sync_points if p not in SYNC_POINTS]
        if unknown:
            raise ValueError(f"unknown sync points {unknown}; known: {', '.join(SYNC_POINTS)}")


@dataclass(frozen=True)
class CalibrationAlgorithm:
    """A registered algorithm: ``run(ctx)`` calibrates the converted, configured model in place;
    ``check(plan, config)`` raises :class:`UnsupportedAlgorithmError` for plans it cannot honour
    (called before the model is touched)."""

    config_class: type[QuantizeAlgorithmConfig]
    run: Callable[[CalibrationContext], None]
    capabilities: AlgorithmCapabilities
    check: Callable[[Plan, QuantizeAlgorithmConfig], None] | None = None

    @property
    def method(self) -> str | None:
        """The method name of the config class (its ``method`` field's default)."""
        return _method_of(self.config_class)


_ALGORITHMS: dict[type[QuantizeAlgorithmConfig], CalibrationAlgorithm] = {}


def _method_of(config_class: type[QuantizeAlgorithmConfig]) -> str | None:
    field = config_class.model_fields.get("method")
    return None if field is None else field.default


def register_algorithm(
    config_class: type[QuantizeAlgorithmConfig],
    run: Callable[[CalibrationContext], None],
    *,
    capabilities: AlgorithmCapabilities,
    check: Callable[[Plan, QuantizeAlgorithmConfig], None] | None = None,
) -> CalibrationAlgorithm:
    """Make configs of ``config_class`` (and of its subclasses with the same method) runnable
    by ``apply_plan``: ``run(ctx)`` receives a :class:`CalibrationContext`."""
    if not (isinstance(config_class, type) and issubclass(config_class, QuantizeAlgorithmConfig)):
        raise TypeError(f"{config_class!r} is not a QuantizeAlgorithmConfig subclass")
    if not isinstance(capabilities, AlgorithmCapabilities):
        raise TypeError("capabilities must be an AlgorithmCapabilities")
    if config_class in _ALGORITHMS:
        raise ValueError(
            f"calibration config {config_class.__name__} is already registered; "
            "unregister_algorithm() it first"
        )
    algorithm = CalibrationAlgorithm(config_class, run, capabilities, check)
    _ALGORITHMS[config_class] = algorithm
    return algorithm


def unregister_algorithm(config_class: type[QuantizeAlgorithmConfig]) -> None:
    """Remove the registration of ``config_class`` (KeyError when it has none)."""
    del _ALGORITHMS[config_class]


def registered_algorithms() -> list[CalibrationAlgorithm]:
    """Every registration, in registration order."""
    return list(_ALGORITHMS.values())


def registered_methods() -> list[str]:
    """The method names that can run, sorted."""
    return sorted({str(a.method) for a in _ALGORITHMS.values()})


def algorithm_for(config: QuantizeAlgorithmConfig) -> CalibrationAlgorithm:
    """The algorithm that runs ``config`` (module docstring); :class:`UnsupportedAlgorithmError`
    naming the implemented methods when there is none."""
    method = config.method
    for cls in type(config).__mro__:
        algorithm = _ALGORITHMS.get(cls)  # type: ignore[arg-type]
        if algorithm is not None and algorithm.method == method:
            return algorithm
    raise UnsupportedAlgorithmError(
        f"calibration method {str(method)!r} is not implemented in qruntime yet; implemented: "
        f"{', '.join(registered_methods())} (or no algorithm, for no calibration). "
        "The model was not changed."
    )


_NOT_GIVEN: Any = object()


def _check_calibrator_constructors(plan: Plan) -> None:
    """A ``calibrator`` given as a class or ``(class, args, kwargs)`` is built when the
    quantizer is configured, enabled or not: a malformed one is refused up front."""
    for name, q in plan.quantizers.items():
        elements = q.attributes if isinstance(q.attributes, tuple) else (q.attributes,)
        for attrs in elements:
            if isinstance(attrs.calibrator, str):
                continue
            try:
                constructor_parts(attrs.calibrator)
            except TypeError as exc:
                raise UnsupportedAlgorithmError(
                    f"{name}: {exc}. The model was not changed."
                ) from None


def _nested_algorithms(config: QuantizeAlgorithmConfig) -> list[QuantizeAlgorithmConfig]:
    """Algorithm configs a config runs as part of itself (``nvfp4_act_headroom``'s
    ``weight_scale_algorithm``, ``lsq``'s ``scale_algorithm``)."""
    values = (getattr(config, name) for name in type(config).model_fields)
    return [v for v in values if isinstance(v, QuantizeAlgorithmConfig)]


def layerwise_options(layers: LayerSpec | LayerwiseOptions | None) -> LayerwiseOptions:
    """``layers`` as given to ``apply_plan``/``quantize``: a block path or function, or full
    :class:`LayerwiseOptions` (None: the defaults)."""
    if layers is None:
        return LayerwiseOptions()
    if isinstance(layers, LayerwiseOptions):
        return layers
    if isinstance(layers, str) or callable(layers):
        return LayerwiseOptions(layers=layers)
    raise TypeError(
        "layers must be a submodule path, a function of the model returning the blocks, or "
        f"LayerwiseOptions; got {type(layers).__name__}"
    )


def _planned_quantizers(plan: Plan | None) -> list[str] | None:
    """The enabled quantizers of ``plan`` (the blocks must hold some); None without a plan."""
    if plan is None:
        return None
    return [name for name, q in plan.quantizers.items() if q.enable] or list(plan.quantizers)


def _layers_of(model: nn.Module, plan: Plan | None, options: LayerwiseOptions) -> DecoderLayers:
    try:
        return find_layers(model, options.layers, _planned_quantizers(plan))
    except LayerwiseError as exc:
        raise UnsupportedAlgorithmError(f"{exc}. The model was not changed.") from None


def _check_layerwise(
    config: QuantizeAlgorithmConfig, algorithm: CalibrationAlgorithm, forward_loop: Any
) -> None:
    """What layer-by-layer calibration refuses, as Model Optimizer does: svdquant, no loop, no
    blocks (checked by the caller)."""
    method = str(config.method)
    if algorithm.capabilities.adds_modules:
        raise UnsupportedAlgorithmError(
            f"calibration method {method!r} does not support layerwise.enable (it adds modules "
            "that need the whole model; Model Optimizer refuses it too). Set layerwise.enable: "
            "false. The model was not changed."
        )
    if forward_loop is None:
        raise UnsupportedAlgorithmError(
            f"calibration method {method!r} with layerwise.enable needs calibration data: pass "
            "a forward_loop(model). The model was not changed."
        )


def check_supported(
    plan: Plan,
    forward_loop: Callable[..., Any] | None = _NOT_GIVEN,
    *,
    layer_driver: LayerDriver | None = None,
    model: nn.Module | None = None,
    layers: LayerSpec | LayerwiseOptions | None = None,
) -> None:
    """Refuse, before anything is touched, a plan whose algorithms cannot run here.

    With ``forward_loop`` given (None included), algorithms that need forward data are refused
    without one; algorithms that run layer by layer are refused without a ``layer_driver``.
    With ``model`` given, a ``layerwise.enable`` config is refused when the model's blocks
    cannot be found (``layers`` names them: :func:`layerwise_options`).
    """
    _check_calibrator_constructors(plan)
    options = layerwise_options(layers)
    for config in plan.algorithm:
        algorithm = algorithm_for(config)
        if config.layerwise.enable:
            _check_layerwise(config, algorithm, forward_loop)
            if model is not None:
                _layers_of(model, plan, options)
        capabilities = algorithm.capabilities
        for needed in (config, *_nested_algorithms(config)):
            if forward_loop is None and algorithm_for(needed).capabilities.needs_forward_data:
                within = "" if needed is config else f" (inside {str(config.method)!r})"
                raise UnsupportedAlgorithmError(
                    f"calibration method {str(needed.method)!r}{within} needs calibration "
                    "data: pass a forward_loop(model). The model was not changed."
                )
        if capabilities.layer_by_layer and layer_driver is None:
            raise UnsupportedAlgorithmError(
                f"calibration method {str(config.method)!r} runs layer by layer, and no layer "
                "driver is available. The model was not changed."
            )
        if algorithm.check is not None:
            algorithm.check(plan, config)


def _syncs(config: QuantizeAlgorithmConfig) -> bool:
    return getattr(config, "distributed_sync", True) is not False


def synced_parallel(
    algorithms: Sequence[QuantizeAlgorithmConfig], parallel: ParallelState | None
) -> ParallelState | None:
    """``parallel`` when some algorithm synchronises (``distributed_sync`` not false), else
    None: a run in which no algorithm syncs issues no collective at all."""
    return parallel if any(_syncs(c) for c in algorithms) else None


def run_algorithms(
    model: nn.Module,
    algorithms: Sequence[QuantizeAlgorithmConfig],
    forward_loop: Callable[..., Any] | None,
    *,
    plan: Plan | None = None,
    parallel: ParallelState | None = None,
    layer_driver: LayerDriver | None = None,
    layers: LayerSpec | LayerwiseOptions | None = None,
) -> None:
    """Run each algorithm in order, with the model in eval mode and autograd off, as
    ``mtq.calibrate`` does; training flags are restored per module.

    Each algorithm gets its own :class:`CalibrationContext`. A forward loop that takes no
    argument is accepted with a ``DeprecationWarning`` (:func:`as_forward_loop`), also when
    there is nothing to calibrate, as in Model Optimizer 0.47.0. A config with
    ``layerwise.enable`` runs once per block, on that block (:func:`run_layerwise`).

    ``parallel`` (already resolved: :func:`qruntime.parallel.resolve_parallel`) is handed to
    every algorithm whose ``distributed_sync`` is not false. When any algorithm syncs, a
    process whose calibration raises tells its peers before re-raising, and a closing exchange
    makes sure every process finished (:mod:`qruntime.calibrate.sync`): either all processes
    return or all raise.
    """
    loop = as_forward_loop(forward_loop)
    if not algorithms:
        return
    syncs = [_syncs(c) for c in algorithms]
    parallel = synced_parallel(algorithms, parallel)
    options = layerwise_options(layers)
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            for config, synced in zip(algorithms, syncs, strict=True):
                algorithm = algorithm_for(config)
                context = CalibrationContext(
                    model=model,
                    config=config,
                    plan=plan,
                    forward_loop=loop,
                    parallel=parallel if synced else None,
                    layer_driver=layer_driver,
                )
                with force_experts(model, config.moe_calib_experts_ratio):
                    if config.layerwise.enable:
                        run_layerwise(context, algorithm, options)
                    else:
                        algorithm.run(context)
        if parallel is not None:
            warn_unsynced_biases(model)
            finish(parallel)
    except Exception as exc:
        if parallel is not None and not isinstance(exc, DistributedCalibrationError):
            announce_failure(parallel, exc)
        raise
    finally:
        for module, training in flags:
            module.training = training


def run_layerwise(
    ctx: CalibrationContext, algorithm: CalibrationAlgorithm, options: LayerwiseOptions
) -> None:
    """Run ``algorithm`` block by block (:class:`LayerwiseDriver`): each block gets a context
    whose model is the block and whose loop replays the block's recorded inputs. Quantizers
    outside the blocks stay uncalibrated, as in Model Optimizer; a warning says how many."""
    _check_layerwise(ctx.config, algorithm, ctx.forward_loop)
    assert ctx.forward_loop is not None
    found = _layers_of(ctx.model, ctx.plan, options)
    driver = LayerwiseDriver(found, ctx.config.layerwise, options, config=ctx.config)

    def calibrate_layer(layer: nn.Module, layer_loop: ForwardLoop) -> None:
        algorithm.run(replace(ctx, model=layer, forward_loop=layer_loop))

    driver.run(ctx.model, ctx.forward_loop, calibrate_layer)
    missed = uncalibrated_outside(ctx.model, found)
    if missed:
        shown = ", ".join(missed[:3]) + (f" (+{len(missed) - 3} more)" if len(missed) > 3 else "")
        warnings.warn(
            f"layerwise calibration ({str(ctx.config.method)!r}) calibrates only the "
            f"{len(found.modules)} block{'s' if len(found.modules) != 1 else ''} of "
            f"{found.where}; {len(missed)} enabled quantizer{'s' if len(missed) != 1 else ''} "
            f"outside them stayed uncalibrated and quantize dynamically ({shown}), as in Model "
            "Optimizer. Disable them in the config, or calibrate without layerwise.",
            UserWarning,
            stacklevel=4,
        )
