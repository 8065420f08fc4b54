"""Calibration algorithms: a method name → implementation registry (calibration.md §0.4).

Each algorithm is one module that registers itself with :func:`register_algorithm`; running a
plan's ``algorithm`` tuple looks the methods up here. A method without an implementation is
refused by :func:`check_supported` *before* the model is touched (apply.py), with the list of
methods that do exist. An empty tuple means no calibration (``algorithm: None``).
"""

from __future__ import annotations

from qruntime.calibrate import max as _max  # noqa: F401  (registers "max")
from qruntime.calibrate.registry import (
    CalibrationAlgorithm,
    UnsupportedAlgorithmError,
    check_supported,
    register_algorithm,
    registered_methods,
    run_algorithms,
)

__all__ = [
    "CalibrationAlgorithm",
    "UnsupportedAlgorithmError",
    "check_supported",
    "register_algorithm",
    "registered_methods",
    "run_algorithms",
]
