"""qconfig: Model Optimizer 0.47.0's quantization config language, torch-free.

Load and validate configs, compile them against a model manifest into a per-quantizer plan,
explain and lint them, and publish a JSON Schema. Heavier parts are imported lazily so that the
CLI starts fast.
"""

__version__ = "0.1.0"

#: Public name -> defining module. Everything is imported on first use, so ``import qconfig``
#: (and with it every ``qconfig`` CLI start, ``qconfig --help`` included) does not pay for
#: pydantic and the models until a command needs them; ``from qconfig import QuantizeConfig``
#: works as before.
_LAZY = {
    **dict.fromkeys(
        [
            "AWQClipCalibConfig",
            "AWQFullCalibConfig",
            "AWQLiteCalibConfig",
            "GPTQCalibConfig",
            "LSQConfig",
            "LayerwiseConfig",
            "LocalHessianCalibConfig",
            "MaxCalibConfig",
            "MseCalibConfig",
            "NVFP4ActHeadroomCalibConfig",
            "QuantizeAlgorithmConfig",
            "SVDQuantConfig",
            "SmoothQuantCalibConfig",
        ],
        "qconfig.algorithms",
    ),
    "QuantizerAttributeConfig": "qconfig.attributes",
    "RotateConfig": "qconfig.attributes",
    "QuantizerCfgEntry": "qconfig.entries",
    "find_quant_cfg_entry_by_path": "qconfig.entries",
    "need_calibration": "qconfig.normalize",
    "normalize_quant_cfg_list": "qconfig.normalize",
    "CompressConfig": "qconfig.compress",
    "QuantizeConfig": "qconfig.quantize",
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

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> object:
    import importlib

    module_name = _LAZY.get(name)
    if module_name is None:
        if name.startswith("_"):
            raise AttributeError(f"module 'qconfig' has no attribute {name!r}")
        try:  # a submodule used as an attribute (``qconfig.algorithms``) after ``import qconfig``
            return importlib.import_module(f"qconfig.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"qconfig.{name}":
                raise
            raise AttributeError(f"module 'qconfig' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if name == "presets" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
