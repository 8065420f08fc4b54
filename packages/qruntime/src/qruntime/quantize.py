"""``quantize(model, config, forward_loop)``: the drop-in for ``mtq.quantize``.

``inventory`` + ``compile_plan`` + ``apply_plan``. As in Model Optimizer 0.47.0 the calibration
algorithm is read from the *raw* mapping: a plain dict without an ``"algorithm"`` key runs no
calibration although ``QuantizeConfig.algorithm`` defaults to ``"max"``; a ``QuantizeConfig``
instance calibrates with its field value (docs/model-optimizer-rules.md, 'quantize and
calibrate'). Unlike Model Optimizer,
a config that does not fit the model (unknown ``parent_class``, unknown algorithm, ...) is
rejected before the model is touched, and a model that is already quantized gets the plan
compiled against its fresh-conversion defaults (not the entries applied on top of its current
quantizer states).

Both run ``qconfig lint`` against the model's manifest first (:mod:`qruntime.config_lint`):
a config that compiles can still be wrong for the model (``FP8_KV_CFG`` alone matches nothing
in a model without KV quantizers and leaves every Linear at INT8), and Model Optimizer would
not say so either.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from qconfig.compile import compile_plan
from qconfig.plan import Plan
from qconfig.quantize import QuantizeConfig
from torch import nn

from qruntime.apply import apply_plan
from qruntime.calibrate.registry import ForwardLoop, LayerwiseOptions
from qruntime.config_lint import LintMode, check_config, report_unraised
from qruntime.inventory import inventory
from qruntime.parallel import ParallelState

__all__ = ["compile_for", "quantize", "weight_check_from_environment"]


def weight_check_from_environment() -> bool:
    """Model Optimizer's switch for its weight check (docs/model-optimizer-rules.md,
    'Weight-quantization check'), read where a program starts a quantization: ``quantize`` is a
    drop-in for ``mtq.quantize``, which honours it; ``compile_plan`` itself never reads it."""
    return os.environ.get("MODELOPT_SKIP_WEIGHT_QUANT_CHECK") != "1"


def _compile(
    model: nn.Module,
    config: QuantizeConfig | Mapping[str, Any],
    weight_check: bool | None,
    lint: LintMode,
    stacklevel: int,
) -> Plan:
    """``compile_for``'s work; ``stacklevel`` points the lint warnings at the user's call."""
    if weight_check is None:
        weight_check = weight_check_from_environment()
    manifest = inventory(model, type(model).__name__)
    unraised = check_config(
        config, manifest, mode=lint, weight_check=weight_check, stacklevel=stacklevel + 1
    )
    plan = compile_plan(config, manifest, weight_check=weight_check)
    report_unraised(unraised, stacklevel=stacklevel + 1)
    if isinstance(config, Mapping) and "algorithm" not in config:
        plan = dataclasses.replace(plan, algorithm=())
    return plan


def compile_for(
    model: nn.Module,
    config: QuantizeConfig | Mapping[str, Any],
    *,
    weight_check: bool | None = None,
    lint: LintMode = "warn",
) -> Plan:
    """The plan ``quantize`` would apply to ``model`` (nothing is changed).

    ``weight_check``: None = as ``MODELOPT_SKIP_WEIGHT_QUANT_CHECK`` says (on unless it is 1).
    ``lint``: what to do with ``qconfig lint``'s findings for ``config`` on this model —
    ``"warn"`` (each warning as a :class:`~qruntime.config_lint.QConfigLintWarning` whose
    message is the CLI's line, infos on the ``qruntime`` logger), ``"error"`` (raise
    :class:`~qruntime.config_lint.QConfigLintError` listing them) or ``"off"``.
    """
    return _compile(model, config, weight_check, lint, stacklevel=2)


def quantize(
    model: nn.Module,
    config: QuantizeConfig | Mapping[str, Any],
    forward_loop: ForwardLoop | None = None,
    *,
    weight_check: bool | None = None,
    layers: str | Callable[[nn.Module], Sequence[nn.Module]] | LayerwiseOptions | None = None,
    lint: LintMode = "warn",
    parallel: ParallelState | None = None,
) -> nn.Module:
    """Quantize ``model`` in place with ``config`` and calibrate it; returns ``model``.

    ``weight_check`` and ``lint`` as in :func:`compile_for` (with ``lint="error"`` a finding
    raises before the model is touched); ``layers`` (the blocks of ``layerwise`` calibration,
    e.g. ``"model.layers"``) and ``parallel`` (the process groups of distributed calibration;
    None: data parallel over the default group when torch.distributed is initialised) as in
    :func:`~qruntime.apply.apply_plan`.
    """
    plan = _compile(model, config, weight_check, lint, stacklevel=2)
    return apply_plan(model, plan, forward_loop, layers=layers, parallel=parallel)
