"""The method → algorithm registry and the calibration driver shared by every algorithm."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from qconfig.algorithms import QuantizeAlgorithmConfig
from qconfig.plan import Plan
from torch import nn

__all__ = [
    "CalibrationAlgorithm",
    "ForwardLoop",
    "UnsupportedAlgorithmError",
    "check_supported",
    "register_algorithm",
    "registered_methods",
    "run_algorithms",
]

ForwardLoop = Callable[[nn.Module], Any]


class UnsupportedAlgorithmError(ValueError):
    """The plan asks for a calibration this runtime cannot run; nothing was changed."""


@dataclass(frozen=True)
class CalibrationAlgorithm:
    """``run(model, config, forward_loop)`` calibrates a converted, configured model in place;
    ``check(plan, config)`` raises ``UnsupportedAlgorithmError`` for plans it cannot honour
    (called before the model is touched)."""

    method: str
    run: Callable[[nn.Module, QuantizeAlgorithmConfig, ForwardLoop | None], None]
    check: Callable[[Plan, QuantizeAlgorithmConfig], None] | None = None


_ALGORITHMS: dict[str, CalibrationAlgorithm] = {}


def register_algorithm(algorithm: CalibrationAlgorithm) -> CalibrationAlgorithm:
    """Make ``algorithm.method`` runnable by ``apply_plan``."""
    if algorithm.method in _ALGORITHMS and _ALGORITHMS[algorithm.method] is not algorithm:
        raise ValueError(f"calibration method {algorithm.method!r} is already registered")
    _ALGORITHMS[algorithm.method] = algorithm
    return algorithm


def registered_methods() -> list[str]:
    return sorted(_ALGORITHMS)


def _lookup(config: QuantizeAlgorithmConfig) -> CalibrationAlgorithm:
    method = str(config.method)
    algorithm = _ALGORITHMS.get(method)
    if algorithm is None:
        raise UnsupportedAlgorithmError(
            f"calibration method {method!r} is not implemented in qruntime yet; implemented: "
            f"{', '.join(registered_methods())} (or no algorithm, for no calibration). "
            "The model was not changed."
        )
    return algorithm


def check_supported(plan: Plan) -> None:
    """Refuse, before anything is touched, a plan whose algorithms cannot run here."""
    for config in plan.algorithm:
        algorithm = _lookup(config)
        if algorithm.check is not None:
            algorithm.check(plan, config)


def run_algorithms(
    model: nn.Module,
    algorithms: Sequence[QuantizeAlgorithmConfig],
    forward_loop: ForwardLoop | None,
) -> None:
    """Run each algorithm in order, with the model in eval mode and autograd off
    (``mtq.calibrate``, config-semantics §10.2); training flags are restored per module."""
    if not algorithms:
        return
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            for config in algorithms:
                _lookup(config).run(model, config, forward_loop)
    finally:
        for module, training in flags:
            module.training = training
