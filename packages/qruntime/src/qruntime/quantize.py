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
from qruntime.inventory import inventory

__all__ = ["compile_for", "quantize", "weight_check_from_environment"]


def weight_check_from_environment() -> bool:
    """Model Optimizer's switch for its weight check (docs/model-optimizer-rules.md,
    'Weight-quantization check'), read where a program starts a quantization: ``quantize`` is a
    drop-in for ``mtq.quantize``, which honours it; ``compile_plan`` itself never reads it."""
    return os.environ.get("MODELOPT_SKIP_WEIGHT_QUANT_CHECK") != "1"


def compile_for(
    model: nn.Module,
    config: QuantizeConfig | Mapping[str, Any],
    *,
    weight_check: bool | None = None,
) -> Plan:
    """The plan ``quantize`` would apply to ``model`` (nothing is changed).

    ``weight_check``: None = as ``MODELOPT_SKIP_WEIGHT_QUANT_CHECK`` says (on unless it is 1).
    """
    if weight_check is None:
        weight_check = weight_check_from_environment()
    manifest = inventory(model, type(model).__name__)
    plan = compile_plan(config, manifest, weight_check=weight_check)
    if isinstance(config, Mapping) and "algorithm" not in config:
        plan = dataclasses.replace(plan, algorithm=())
    return plan


def quantize(
    model: nn.Module,
    config: QuantizeConfig | Mapping[str, Any],
    forward_loop: ForwardLoop | None = None,
    *,
    weight_check: bool | None = None,
    layers: str | Callable[[nn.Module], Sequence[nn.Module]] | LayerwiseOptions | None = None,
) -> nn.Module:
    """Quantize ``model`` in place with ``config`` and calibrate it; returns ``model``.

    ``weight_check`` as in :func:`compile_for`; ``layers`` (the blocks of ``layerwise``
    calibration, e.g. ``"model.layers"``) as in :func:`~qruntime.apply.apply_plan`.
    """
    plan = compile_for(model, config, weight_check=weight_check)
    return apply_plan(model, plan, forward_loop, layers=layers)
