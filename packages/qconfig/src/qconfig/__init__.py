"""qconfig: Model Optimizer 0.47.0's quantization config language, torch-free.

Load and validate configs, compile them against a model manifest into a per-quantizer plan,
explain and lint them, and publish a JSON Schema. Heavier parts are imported lazily so that the
CLI starts fast.
"""

from qconfig.algorithms import (
    AWQClipCalibConfig,
    AWQFullCalibConfig,
    AWQLiteCalibConfig,
    GPTQCalibConfig,
    LayerwiseConfig,
    LocalHessianCalibConfig,
    LSQConfig,
    MaxCalibConfig,
    MseCalibConfig,
    NVFP4ActHeadroomCalibConfig,
    QuantizeAlgorithmConfig,
    SmoothQuantCalibConfig,
    SVDQuantConfig,
)
from qconfig.attributes import QuantizerAttributeConfig, RotateConfig
from qconfig.entries import QuantizerCfgEntry, find_quant_cfg_entry_by_path
from qconfig.normalize import need_calibration, normalize_quant_cfg_list
from qconfig.quantize import CompressConfig, QuantizeConfig

__version__ = "0.1.0"

_LAZY = {
    "ConfigError": "qconfig.errors",
    "Diagnostic": "qconfig.errors",
    "load_config": "qconfig.loader",
    "presets": "qconfig.presets",
    "Manifest": "qconfig.manifest",
    "Plan": "qconfig.plan",
    "QuantizerPlan": "qconfig.plan",
    "compile_plan": "qconfig.compile",
    "explain": "qconfig.explain",
    "lint": "qconfig.lint",
    "json_schema": "qconfig.schema",
}

__all__ = [
    "AWQClipCalibConfig",
    "AWQFullCalibConfig",
    "AWQLiteCalibConfig",
    "CompressConfig",
    "GPTQCalibConfig",
    "LSQConfig",
    "LayerwiseConfig",
    "LocalHessianCalibConfig",
    "MaxCalibConfig",
    "MseCalibConfig",
    "NVFP4ActHeadroomCalibConfig",
    "QuantizeAlgorithmConfig",
    "QuantizeConfig",
    "QuantizerAttributeConfig",
    "QuantizerCfgEntry",
    "RotateConfig",
    "SVDQuantConfig",
    "SmoothQuantCalibConfig",
    "find_quant_cfg_entry_by_path",
    "need_calibration",
    "normalize_quant_cfg_list",
    *_LAZY,
]


def __getattr__(name: str):
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'qconfig' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(module_name)
    value = module if name == "presets" else getattr(module, name)
    globals()[name] = value
    return value
