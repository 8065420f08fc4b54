"""Model Optimizer 0.47.0's 39 named presets (``mtq.INT8_DEFAULT_CFG`` …) and unit lists.

Each preset is a readable YAML file beside this module (``presets.path(name)``), composed from
the units in ``units/`` with ``imports``/``$import`` exactly like Model Optimizer's own recipes,
so users can read them, copy them, and import the units into their own configs as
``qconfig/units/<name>``. As module attributes the presets are plain dicts of the same shape as
``mtq.<NAME>``: ``QuantizeConfig(...).model_dump(exclude_unset=True)``, with tuples for
``num_bits``/``scale_bits`` and int ``block_sizes``/``bias`` keys.

Module attributes are shared and mutable, as in Model Optimizer (docs/model-optimizer-rules.md, 'Presets'); :func:`get` returns a
private deep copy. Files are loaded on first access, so ``import qconfig`` stays fast.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

__all__ = ["UNITS", "get", "names", "path"]

_DIR = Path(__file__).resolve().parent

_NAMES = (
    "INT8_DEFAULT_CFG",
    "INT8_SMOOTHQUANT_CFG",
    "INT8_WEIGHT_ONLY_CFG",
    "FP8_DEFAULT_CFG",
    "FP8_PER_CHANNEL_PER_TOKEN_CFG",
    "FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG",
    "INT4_BLOCKWISE_WEIGHT_ONLY_CFG",
    "INT4_AWQ_CFG",
    "W4A8_AWQ_BETA_CFG",
    "MXFP8_DEFAULT_CFG",
    "MXFP6_DEFAULT_CFG",
    "MXFP4_DEFAULT_CFG",
    "MXINT8_DEFAULT_CFG",
    "W4A8_MXFP4_FP8_CFG",
    "MXFP4_MLP_WEIGHT_ONLY_CFG",
    "NVFP4_DEFAULT_CFG",
    "NVFP4_AWQ_LITE_CFG",
    "NVFP4_AWQ_CLIP_CFG",
    "NVFP4_AWQ_FULL_CFG",
    "NVFP4_SVDQUANT_DEFAULT_CFG",
    "NVFP4_FOUR_OVER_SIX_CFG",
    "NVFP4_W4A4_WEIGHT_MSE_FP8_SWEEP_CFG",
    "NVFP4_W4A4_WEIGHT_LOCAL_HESSIAN_CFG",
    "W4A16_NVFP4_CFG",
    "W4A8_NVFP4_FP8_CFG",
    "NVFP4_MLP_WEIGHT_ONLY_CFG",
    "NVFP4_MLP_ONLY_CFG",
    "NVFP4_OMLP_ONLY_CFG",
    "NVFP4_EXPERTS_ONLY_CFG",
    "MAMBA_MOE_FP8_AGGRESSIVE_CFG",
    "MAMBA_MOE_FP8_CONSERVATIVE_CFG",
    "MAMBA_MOE_NVFP4_AGGRESSIVE_CFG",
    "MAMBA_MOE_NVFP4_CONSERVATIVE_CFG",
    "NVFP4_FP8_MHA_CONFIG",
    "FP8_KV_CFG",
    "FP8_AFFINE_KV_CFG",
    "NVFP4_KV_CFG",
    "NVFP4_AFFINE_KV_CFG",
    "NVFP4_KV_ROTATE_CFG",
)

#: Model Optimizer's private unit constants → our unit files (``qconfig/units/<file>``).
UNITS = {
    "_base_disable_all": "base_disable_all",
    "_default_disabled_quantizer_cfg": "default_disabled_quantizers",
    "_mamba_moe_disabled_quantizer_cfg": "mamba_moe_disabled_quantizers",
    "_nvfp4_cfg": "nvfp4",
    "_nvfp4_cfg_bs32": "nvfp4_bs32",
}


def names() -> list[str]:
    """The 39 preset names, as ``mtq.config.choices`` lists them."""
    return list(_NAMES)


def path(name: str) -> Path:
    """The YAML file that defines preset (or unit constant) ``name``."""
    if name in UNITS:
        return _DIR / "units" / f"{UNITS[name]}.yaml"
    if name not in _NAMES:
        raise KeyError(f"Unknown preset {name!r}; known presets: {', '.join(_NAMES)}")
    return _DIR / f"{re.sub(r'_(cfg|config)$', '', name.lower())}.yaml"


def _load(name: str) -> Any:
    from qconfig.entries import QuantizerCfgEntry
    from qconfig.loader import load_snippet

    value = load_snippet(path(name))
    if isinstance(value, QuantizerCfgEntry):
        value = [value]  # a one-entry unit (base_disable_all) is a list constant in 0.47.0
    if isinstance(value, list):
        return [entry.model_dump(exclude_unset=True) for entry in value]
    return value.model_dump(exclude_unset=True)


def get(name: str) -> Any:
    """A deep copy of preset (or unit constant) ``name``, safe to edit; ``KeyError`` if unknown."""
    path(name)  # raises KeyError naming the known presets
    return copy.deepcopy(__getattr__(name))


def __getattr__(name: str) -> Any:
    if name not in _NAMES and name not in UNITS:
        raise AttributeError(f"module 'qconfig.presets' has no attribute {name!r}")
    value = _load(name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, *_NAMES, *UNITS])
