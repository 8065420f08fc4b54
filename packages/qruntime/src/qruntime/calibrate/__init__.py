"""Calibration: algorithms registered by their config class, run on public phases.

An algorithm is a ``run(ctx)`` function registered for a ``QuantizeAlgorithmConfig`` subclass
with :func:`register_algorithm`, declaring its :class:`AlgorithmCapabilities`; it receives a
:class:`CalibrationContext` and is built from the steps in :mod:`qruntime.calibrate.phases`.
``max`` (:mod:`qruntime.calibrate.max`) is registered on import. A plan whose algorithms are not
registered is refused by :func:`check_supported` *before* the model is touched, with the list of
methods that do exist; an empty ``algorithm`` tuple means no calibration.
"""

from __future__ import annotations

from qruntime.calibrate import awq as _awq  # noqa: F401  (registers the AWQ configs)
from qruntime.calibrate import gptq as _gptq  # noqa: F401  (registers GPTQCalibConfig)
from qruntime.calibrate import local_hessian as _local_hessian  # noqa: F401  (registers)
from qruntime.calibrate import lsq as _lsq  # noqa: F401  (registers LSQConfig)
from qruntime.calibrate import max as _max  # noqa: F401  (registers MaxCalibConfig)
from qruntime.calibrate import mse as _mse  # noqa: F401  (registers MseCalibConfig)
from qruntime.calibrate import nvfp4_act_headroom as _headroom  # noqa: F401  (registers)
from qruntime.calibrate import smoothquant as _smoothquant  # noqa: F401  (registers)
from qruntime.calibrate import svdquant as _svdquant  # noqa: F401  (registers)
from qruntime.calibrate.context import CalibrationContext, ForwardLoop, LayerDriver, WeightPair
from qruntime.calibrate.registry import (
    AlgorithmCapabilities,
    CalibrationAlgorithm,
    UnsupportedAlgorithmError,
    algorithm_for,
    check_supported,
    register_algorithm,
    registered_algorithms,
    registered_methods,
    run_algorithms,
    unregister_algorithm,
)

__all__ = [
    "AlgorithmCapabilities",
    "CalibrationAlgorithm",
    "CalibrationContext",
    "ForwardLoop",
    "LayerDriver",
    "UnsupportedAlgorithmError",
    "WeightPair",
    "algorithm_for",
    "check_supported",
    "register_algorithm",
    "registered_algorithms",
    "registered_methods",
    "run_algorithms",
    "unregister_algorithm",
]
