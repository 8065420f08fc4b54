"""qruntime: apply qconfig plans to PyTorch models — quantizer modules, calibration, state.

Data flows one way (docs/style.md): ``inventory(model)`` → ``qconfig.Manifest``;
``compile_plan(config, manifest)`` → ``Plan``; ``apply_plan(model, plan, forward_loop)`` patches
the model and calibrates it; quantizers compute with :mod:`qruntime.numerics`.
``quantize(model, config, forward_loop)`` does all three, like ``mtq.quantize``.
"""

from qruntime import kernels as _kernels  # noqa: F401  (the Triton accelerator; Triton loads lazily)
from qruntime import sites as _sites  # noqa: F401  (the module-type registry and site providers)
from qruntime.apply import PlanMismatchError, applied_plan, apply_plan
from qruntime.calibrate import (
    AlgorithmCapabilities,
    CalibrationContext,
    UnsupportedAlgorithmError,
    register_algorithm,
    registered_methods,
    unregister_algorithm,
)
from qruntime.calibrators import Calibrator
from qruntime.compress import CompressionError, compress
from qruntime.compress.load import CheckpointImportError, load_quantized
from qruntime.config_lint import QConfigLintError, QConfigLintWarning
from qruntime.export import ExportError, ExportResult, export
from qruntime.inventory import inventory
from qruntime.modules import QuantizerSlot, QuantModule
from qruntime.numerics import fake_quant
from qruntime.parallel import DistributedCalibrationError, ParallelState, ShardedModelError
from qruntime.quantize import compile_for, quantize
from qruntime.quantizer import HardDisabledTensorQuantizer, SequentialQuantizer, TensorQuantizer
from qruntime.quantizer.learned import LearnedAmaxError
from qruntime.sites import register, unregister
from qruntime.state import current_plan, quantizer_states, restore_state, save_state
from qruntime.summary import summary

__version__ = "0.1.0"

__all__ = [
    "AlgorithmCapabilities",
    "CalibrationContext",
    "Calibrator",
    "CheckpointImportError",
    "CompressionError",
    "DistributedCalibrationError",
    "ExportError",
    "ExportResult",
    "HardDisabledTensorQuantizer",
    "LearnedAmaxError",
    "ParallelState",
    "PlanMismatchError",
    "QConfigLintError",
    "QConfigLintWarning",
    "QuantModule",
    "QuantizerSlot",
    "SequentialQuantizer",
    "ShardedModelError",
    "TensorQuantizer",
    "UnsupportedAlgorithmError",
    "applied_plan",
    "apply_plan",
    "compile_for",
    "compress",
    "current_plan",
    "export",
    "fake_quant",
    "inventory",
    "load_quantized",
    "quantize",
    "quantizer_states",
    "register",
    "register_algorithm",
    "registered_methods",
    "restore_state",
    "save_state",
    "summary",
    "unregister",
    "unregister_algorithm",
]
