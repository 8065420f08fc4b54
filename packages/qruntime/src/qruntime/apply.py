"""``apply_plan(model, plan, forward_loop)``: patch a model per a compiled plan, then calibrate.

Everything that can be checked without touching the model is checked first (the plan's
quantizer names, module classes and hard-disabled slots against :func:`inventory`, formats the
numerics can run, calibration methods that exist). Then, inside one transaction
(:mod:`qruntime.transaction`): modules are converted (docs/model-optimizer-rules.md, 'Module
conversion and the registry'), every quantizer is set from the plan — a tuple of attributes
becomes a ``SequentialQuantizer`` ('List cfg (sequential quantization)'), a single set on an
existing one replaces it by a ``TensorQuantizer`` ('Full replacement') — and ``plan.algorithm``
runs. Any exception restores the model exactly as it was and is re-raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from qconfig.attributes import QuantizerAttributeConfig
from qconfig.plan import Plan, QuantizerPlan
from qconfig.spec import QuantizerSpec
from torch import nn

from qruntime import modules as _modules
from qruntime.calibrate import algorithm_for, check_supported, run_algorithms
from qruntime.calibrate.registry import ForwardLoop, LayerwiseOptions, synced_parallel
from qruntime.calibrate.sync import announce_failure
from qruntime.inventory import inventory
from qruntime.modules.base import quantized_weight
from qruntime.numerics.checks import check_spec
from qruntime.parallel import ParallelState, resolve_parallel
from qruntime.quantizer import SequentialQuantizer, TensorQuantizer
from qruntime.sites import find_sites
from qruntime.transaction import Transaction

__all__ = [
    "PLAN_ATTRIBUTE",
    "WEIGHTS_REWRITTEN",
    "PlanMismatchError",
    "applied_plan",
    "apply_plan",
    "check_plan",
    "patch_model",
]

#: Where the applied plan is kept on the root module (read by ``summary`` and ``save_state``).
PLAN_ATTRIBUTE = "_qruntime_plan"
#: Set in a model's ``__dict__`` once an algorithm that writes weights has calibrated it (or it
#: was restored from a state file that carries weights): ``save_state`` then stores the weights.
WEIGHTS_REWRITTEN = "_qruntime_weights_rewritten"


class PlanMismatchError(ValueError):
    """The plan was compiled for another model (or cannot run here); nothing was changed."""


def _listing(names: Iterable[str], limit: int = 5) -> str:
    names = sorted(names)
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _elements(q: QuantizerPlan) -> tuple[QuantizerAttributeConfig, ...]:
    return q.attributes if isinstance(q.attributes, tuple) else (q.attributes,)


def _check_format(name: str, attrs: QuantizerAttributeConfig, spec: QuantizerSpec) -> None:
    """A custom backend is not available here (the format check is :func:`_check_spec`)."""
    if attrs.backend is not None:
        raise PlanMismatchError(
            f"{name}: custom quantization backend {attrs.backend!r} is not available in "
            "qruntime. The model was not changed."
        )


def _check_enable(name: str, q: QuantizerPlan, hard_disabled: bool) -> None:
    """A plan built in Python can say ``enable`` one way and its attribute sets the other;
    apply_plan applies the attribute sets, so such a plan is refused (Plan.from_json refuses
    the same in a file)."""
    elements = _elements(q)
    if not elements or not all(isinstance(a, QuantizerAttributeConfig) for a in elements):
        raise PlanMismatchError(
            f"{name}: the plan's attributes must be a QuantizerAttributeConfig or a non-empty "
            f"tuple of them, got {type(q.attributes).__name__}. The model was not changed."
        )
    derived = any(a.enable for a in elements)
    if q.enable != derived:
        raise PlanMismatchError(
            f"{name}: the plan says enable: {q.enable} but its attribute set(s) say enable: "
            f"{derived} (apply_plan applies the attribute sets; set their enable). The model "
            "was not changed."
        )
    if hard_disabled and q.enable:
        raise PlanMismatchError(
            f"{name} is hard-disabled (an Embedding's input quantizer sees token indices) and "
            "cannot be enabled. The model was not changed."
        )


def _check_spec(
    name: str,
    spec: QuantizerSpec,
    shape: tuple[int, ...] | None,
    cache: dict[tuple[int, tuple[int, ...] | None], str],
) -> None:
    """The numerics can run ``spec`` on a tensor of ``shape`` (cached: plans share a handful
    of specs and weight shapes among thousands of quantizers)."""
    key = (id(spec), shape)
    if key not in cache:
        try:
            check_spec(spec, shape)
            cache[key] = ""
        except ValueError as exc:
            cache[key] = str(exc)
    if cache[key]:
        on = f" (its weight has shape {list(shape)})" if shape is not None else ""
        raise PlanMismatchError(f"{name}{on}: {cache[key]}. The model was not changed.")


def _check_unsigned_weight(name: str, spec: QuantizerSpec, weight: torch.Tensor) -> None:
    """An unsigned quantizer raises at every forward on a negative input (Model Optimizer
    too); for a weight that is known now. A rotation changes the values first: not checked."""
    if spec.rotate.enable or weight.is_meta or weight.numel() == 0:
        return
    low = float(weight.detach().min())
    if low < 0:
        raise PlanMismatchError(
            f"{name}: unsigned quantization of a weight with negative values (minimum "
            f"{low:.4g}) fails at every forward; use a signed format. The model was not changed."
        )


def _check_static_nvfp4_on_weight(name: str, spec: Any, weight: Any) -> None:
    """Static NVFP4 blocks are a weight format: Model Optimizer runs them only on weight
    quantizers that max calibration promotes (per-block plus global amax); on an input, output
    or attention quantizer it raises ``NotImplementedError`` at the first forward after
    calibration, whatever the device."""
    if weight is None and spec.family == "nvfp4" and spec.is_static_block:
        raise PlanMismatchError(
            f"{name}: static NVFP4 blocks (num_bits (2, 1), block type static) quantize weights "
            "only; for activations use dynamic blocks (type: dynamic), as NVFP4_DEFAULT_CFG "
            "does. Model Optimizer fails at the first forward. The model was not changed."
        )


def check_plan(model: nn.Module, plan: Plan) -> None:
    """Raise ``PlanMismatchError`` unless ``plan`` fits ``model`` and can run on it.

    Names and module classes must match :func:`inventory`; every quantizer's ``enable`` must be
    what its attribute sets say; every enabled attribute set must be one the numerics can run
    (:func:`qruntime.numerics.checks.check_spec`), on the weight's rank for weight quantizers —
    an axis or block axis the weight does not have, a block size below 1, a format without a
    kernel, a bit count that would hang or give NaN, a non-finite ``constant_amax`` are refused
    here, naming the quantizer, before anything is touched. Activation layouts are checked at
    the forward that first sees each input rank (:class:`QuantizerInputError`).
    """
    manifest = inventory(model)
    sites = {name: (module, site) for name, module, site in manifest.iter_sites()}
    missing = sites.keys() - plan.quantizers.keys()
    extra = plan.quantizers.keys() - sites.keys()
    if missing or extra:
        parts = []
        if extra:
            parts.append(f"{len(extra)} quantizer(s) the model does not have: {_listing(extra)}")
        if missing:
            parts.append(
                f"{len(missing)} model quantizer(s) missing from the plan: {_listing(missing)}"
            )
        raise PlanMismatchError(
            "the plan does not fit this model (was it compiled for another manifest?): "
            + "; ".join(parts)
            + ". The model was not changed."
        )
    modules = dict(model.named_modules())
    cache: dict[tuple[int, tuple[int, ...] | None], str] = {}
    for name, q in plan.quantizers.items():
        module, site = sites[name]
        if q.parent_class != module.registry_key:
            raise PlanMismatchError(
                f"{name}: the plan expects a {q.parent_class} module, the model has "
                f"{module.class_name} ({module.registry_key}). The model was not changed."
            )
        if site.hard_disabled and q.is_sequential:
            raise PlanMismatchError(
                f"{name} is hard-disabled and cannot become a sequential quantizer. "
                "The model was not changed."
            )
        _check_enable(name, q, site.hard_disabled)
        if not q.enable:
            continue
        weight = quantized_weight(modules[module.name], site.attribute)
        shape = tuple(weight.shape) if weight is not None else None
        specs = q.spec if isinstance(q.spec, tuple) else (q.spec,)
        elements = _elements(q)
        for index, (attrs, spec) in enumerate(zip(elements, specs, strict=True)):
            if attrs.enable:
                where = f"{name}[{index}]" if len(elements) > 1 else name
                _check_format(where, attrs, spec)
                _check_spec(where, spec, shape, cache)
                _check_static_nvfp4_on_weight(where, spec, weight)
                if index == 0 and spec.unsigned and weight is not None:
                    _check_unsigned_weight(where, spec, weight)


def _set_quantizer(model: nn.Module, name: str, q: QuantizerPlan) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    current = parent._modules[attr]
    if q.is_sequential:
        attrs: Any = q.attributes
        if not (isinstance(current, SequentialQuantizer) and len(current) == len(attrs)):
            current = SequentialQuantizer(*(TensorQuantizer() for _ in attrs))
            parent._modules[attr] = current
    elif isinstance(current, SequentialQuantizer):
        current = TensorQuantizer()
        parent._modules[attr] = current
    current.set_from_attribute_config(q.attributes, q.spec)
    _name_quantizers(current, name)


def _name_quantizers(quantizer: nn.Module, name: str) -> None:
    """Quantizers learn their name, so that an error at a forward can say which one it is."""
    if isinstance(quantizer, SequentialQuantizer):
        for index, element in enumerate(quantizer):
            element.__dict__["_qruntime_name"] = f"{name}.{index}"
    else:
        quantizer.__dict__["_qruntime_name"] = name


def patch_model(model: nn.Module, plan: Plan) -> None:
    """Convert the plan's modules and set every quantizer (no checks, no transaction)."""
    for site in find_sites(model):
        if not _modules.is_converted(site.module):
            _modules.convert_module(site.module, site)
    for name, q in plan.quantizers.items():
        _set_quantizer(model, name, q)


def apply_plan(
    model: nn.Module,
    plan: Plan,
    forward_loop: ForwardLoop | None = None,
    *,
    layers: str | Callable[[nn.Module], Sequence[nn.Module]] | LayerwiseOptions | None = None,
    parallel: ParallelState | None = None,
) -> nn.Module:
    """Quantize ``model`` in place per ``plan`` and run ``plan.algorithm``; returns ``model``.

    ``forward_loop(model)`` runs the calibration data through the model (max calibration calls
    it once; it is not needed without calibration or for weight-only calibration).
    ``layers`` names the blocks an algorithm with ``layerwise.enable`` calibrates one at a time
    — a submodule path (``"model.layers"``), a function of the model returning the blocks in
    execution order, or :class:`~qruntime.calibrate.layerwise.LayerwiseOptions` (also CPU
    offload of the recorded inputs, the progress bar); None finds them (Hugging Face layouts,
    else the one ``ModuleList`` of identical blocks holding quantized modules). On any
    error the model — modules, classes, parameters, buffers, hooks, training flags — is left
    exactly as it was. A model that is already quantized is re-configured: its quantizers are
    set from the plan (calibrated ``_amax`` buffers are kept: docs/model-optimizer-rules.md,
    'How a quantizer applies attributes'). ``parallel`` gives the process groups of
    distributed calibration (:class:`~qruntime.parallel.ParallelState`; None: data parallel over
    the default group when torch.distributed is initialised with several processes): statistics
    are synchronised at each algorithm's sync points, and a failure on any process fails every
    process with its model unchanged (docs/distributed.md). The plan's config is not linted
    here: a plan has no config source, so ``qconfig lint``'s findings are reported by
    ``compile_for``/``quantize``.
    """
    resolved = synced_parallel(plan.algorithm, resolve_parallel(parallel))
    try:
        check_plan(model, plan)
        check_supported(plan, forward_loop, model=model, layers=layers)
    except Exception as exc:
        if resolved is not None:  # the peers would wait for this process at their first sync
            announce_failure(resolved, exc)
        raise
    writes_weights = any(algorithm_for(c).capabilities.writes_weights for c in plan.algorithm)
    # The write guard catches in-place writes by code qruntime does not control: the model's
    # forward and the loop. Without a forward loop to run, only qruntime's own code runs.
    foreign_code = forward_loop is not None and bool(plan.algorithm)
    guard = "kernels" if foreign_code or writes_weights else None
    # Layer by layer, memory should stay near the weights: the rollback copies of the weights
    # a calibration rewrites go to a temporary file instead of doubling them.
    layerwise = any(c.layerwise.enable for c in plan.algorithm)
    stash = "disk" if layerwise and writes_weights else None
    with Transaction(model, writes_weights=writes_weights, guard=guard, stash_device=stash):
        patch_model(model, plan)
        run_algorithms(
            model, plan.algorithm, forward_loop, plan=plan, layers=layers, parallel=resolved
        )
        model.__dict__[PLAN_ATTRIBUTE] = plan
        if writes_weights:
            model.__dict__[WEIGHTS_REWRITTEN] = True
    return model


def applied_plan(model: nn.Module) -> Plan | None:
    """The plan last applied to ``model`` (None if it was never quantized by qruntime)."""
    return model.__dict__.get(PLAN_ATTRIBUTE)
