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
from collections.abc import Mapping
from typing import Any

from qconfig.compile import compile_plan
from qconfig.plan import Plan
from qconfig.quantize import QuantizeConfig
from torch import nn

from qruntime.apply import apply_plan
from qruntime.calibrate.registry import ForwardLoop
from qruntime.inventory import inventory

__all__ = ["compile_for", "quantize"]


def compile_for(model: nn.Module, config: QuantizeConfig | Mapping[str, Any]) -> Plan:
    """The plan ``quantize`` would apply to ``model`` (nothing is changed)."""
    plan = compile_plan(config, inventory(model, type(model).__name__))
    if isinstance(config, Mapping) and "algorithm" not in config:
        plan = dataclasses.replace(plan, algorithm=())
    return plan


def quantize(
    model: nn.Module,
    config: QuantizeConfig | Mapping[str, Any],
    forward_loop: ForwardLoop | None = None,
) -> nn.Module:
    """Quantize ``model`` in place with ``config`` and calibrate it; returns ``model``."""
    return apply_plan(model, compile_for(model, config), forward_loop)
