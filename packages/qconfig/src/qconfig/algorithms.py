"""Calibration-algorithm configs and the method → class registry.

The registry is the extension point for calibration methods: ``QuantizeConfig`` validates an
``algorithm`` against it at config time, and qruntime looks up the implementation by method name.

This module defines what nearly every config needs (the base class, ``LayerwiseConfig`` and
``max``); the other methods' configs live in :mod:`qconfig.algorithm_methods` and are imported on
first use (``ALGORITHMS``, ``algorithm_class("gptq")``, ``from qconfig.algorithms import
GPTQCalibConfig``): defining a dozen pydantic classes costs ``qconfig lint`` more start-up time
than it spends linting (docs/performance.md).
"""

import importlib
import re
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from qconfig.base import ConfigBase


class LayerwiseConfig(ConfigBase):
    """Layer-by-layer calibration settings shared by every algorithm."""

    enable: bool = Field(default=False, description="Calibrate one layer at a time.")
    get_qdq_activations_from_prev_layer: bool = Field(
        default=False,
        description="Feed each layer the quantized outputs of the layers before it.",
    )
    checkpoint_dir: str | None = Field(
        default=None, description="Directory for per-layer checkpoints (resume on restart)."
    )
    save_every: int = Field(default=1, ge=1, description="Flush resume metadata every N layers.")
    calib_mutates_weights: bool = Field(
        default=True,
        description="False only for amax-only algorithms (max, mse, local_hessian).",
    )


class QuantizeAlgorithmConfig(ConfigBase):
    """Base of every calibration config; ``method: null`` means no calibration.

    Numbers must be finite: Model Optimizer accepts ``stop_multiplier: .inf`` and the like, and
    a search over an infinite range never ends (docs/differences.md); a plan file could not hold
    the value either (JSON has no infinity).
    """

    model_config = ConfigDict(**ConfigBase.model_config, allow_inf_nan=False)

    #: Whether the algorithm rewrites layer weights (gates ``calib_mutates_weights=False``).
    mutates_weights: ClassVar[bool] = True

    method: Literal[None] = Field(default=None, description="Calibration method name.")
    moe_calib_experts_ratio: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Fraction of MoE experts every calibration token is routed to.",
    )
    layerwise: LayerwiseConfig = Field(
        default_factory=LayerwiseConfig, description="Layer-by-layer calibration."
    )

    @field_validator("layerwise", mode="before")
    @classmethod
    def _coerce_layerwise(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, LayerwiseConfig):
            # keep "explicitly set" information for GPTQ's default below
            return value.model_dump(exclude_unset=True)
        return value

    @model_validator(mode="after")
    def _checkpoint_needs_layerwise(self) -> "QuantizeAlgorithmConfig":
        if self.layerwise.checkpoint_dir is not None and not self.layerwise.enable:
            raise ValueError(
                "layerwise.checkpoint_dir requires layerwise.enable=True. "
                "Set layerwise.enable=True or remove layerwise.checkpoint_dir."
            )
        return self

    @model_validator(mode="after")
    def _non_mutating_only(self) -> "QuantizeAlgorithmConfig":
        if not self.layerwise.calib_mutates_weights and self.mutates_weights:
            raise ValueError(
                f"Algorithm '{self.method}' mutates layer weights in-place; "
                "calib_mutates_weights=False would lose those updates on resume. "
                "Only max/mse/local_hessian (amax-only) support this flag."
            )
        return self


_SHARED_STATES = ("weight_global_amax",)


class SharedStatesConfig(ConfigBase):
    """``shared_states`` of the amax-only algorithms (max, mse, local_hessian)."""

    shared_states: dict[str, dict[str, list[str]]] | None = Field(
        default=None,
        description=(
            "Quantization state shared by groups of modules: `{weight_global_amax: "
            "{patterns: [regex, ...]}}` (full-match regexes on module names)."
        ),
    )

    @field_validator("shared_states")
    @classmethod
    def _check_shared_states(cls, v: dict | None) -> dict | None:
        if v is None:
            return v
        unknown = sorted(set(v) - set(_SHARED_STATES))
        if unknown:
            raise ValueError(
                f"shared_states has unsupported state(s) {unknown}; expected keys from "
                f"{sorted(_SHARED_STATES)}."
            )
        for name, state in v.items():
            extra = sorted(set(state) - {"patterns"})
            if extra:
                raise ValueError(
                    f"shared_states[{name!r}] has unsupported field(s) {extra}; "
                    "expected ['patterns']."
                )
            for pattern in state.get("patterns", []):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(
                        f"shared_states[{name!r}]['patterns'] has an invalid regex "
                        f"{pattern!r}: {exc}"
                    ) from exc
        return v


#: Description of the ``distributed_sync`` field the amax-only methods share.
DISTRIBUTED_SYNC = "Synchronize amax across distributed processes."


class MaxCalibConfig(SharedStatesConfig, QuantizeAlgorithmConfig):
    """amax = max |x| seen during calibration (weights and activations)."""

    mutates_weights: ClassVar[bool] = False
    method: Literal["max"] = Field(default="max", description="Max calibration.")
    distributed_sync: bool | None = Field(default=True, description=DISTRIBUTED_SYNC)
    sync_expert_weight_amax: bool = Field(
        default=False, description="Share one weight amax across the local experts of a MoE."
    )
    skip_forward_without_activation_calib: bool = Field(
        default=False,
        description="Skip the calibration forward when no activation quantizer needs data.",
    )


#: Config classes defined in :mod:`qconfig.algorithm_methods`, by method, in registry order.
_LAZY_METHODS = {
    "mse": "MseCalibConfig",
    "local_hessian": "LocalHessianCalibConfig",
    "smoothquant": "SmoothQuantCalibConfig",
    "awq_lite": "AWQLiteCalibConfig",
    "awq_clip": "AWQClipCalibConfig",
    "awq_full": "AWQFullCalibConfig",
    "svdquant": "SVDQuantConfig",
    "gptq": "GPTQCalibConfig",
    "nvfp4_act_headroom": "NVFP4ActHeadroomCalibConfig",
    "lsq": "LSQConfig",
}
_BUILTIN_METHODS = (None, "max", *_LAZY_METHODS)

__all__ = sorted(
    [
        "ALGORITHMS",
        "LayerwiseConfig",
        "MaxCalibConfig",
        "QuantizeAlgorithmConfig",
        "algorithm_class",
        "config_class_names",
        "known_methods",
        *_LAZY_METHODS.values(),
    ]
)
_registry: dict[str | None, type[QuantizeAlgorithmConfig]] | None = None


def _algorithms() -> dict[str | None, type[QuantizeAlgorithmConfig]]:
    """``ALGORITHMS``, built (importing every method's config) on first use."""
    global _registry
    if _registry is None:
        methods = importlib.import_module("qconfig.algorithm_methods")
        _registry = {
            None: QuantizeAlgorithmConfig,
            "max": MaxCalibConfig,
            **{m: getattr(methods, name) for m, name in _LAZY_METHODS.items()},
        }
    return _registry


def __getattr__(name: str) -> Any:
    #: ``ALGORITHMS``: method name (None = no calibration) → config class. Register new methods
    #: there (``qconfig.algorithms.ALGORITHMS["mine"] = MyConfig``); it is one dict, built once.
    if name == "ALGORITHMS":
        return _algorithms()
    if name in _LAZY_METHODS.values():
        return getattr(importlib.import_module("qconfig.algorithm_methods"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def config_class_names() -> list[str]:
    """Names of every config class this module provides, without importing the lazy ones."""
    return ["LayerwiseConfig", "QuantizeAlgorithmConfig", "MaxCalibConfig", *_LAZY_METHODS.values()]


def known_methods() -> list[str]:
    """Method names accepted in ``algorithm`` (``null`` also means "no calibration")."""
    methods = _BUILTIN_METHODS if _registry is None else _registry
    return [m for m in methods if m is not None]


def algorithm_class(method: Any) -> type[QuantizeAlgorithmConfig]:
    """The config class of ``method``; ValueError naming the known methods otherwise."""
    if _registry is None and method is None:
        return QuantizeAlgorithmConfig
    if _registry is None and method == "max":
        return MaxCalibConfig
    registry = _algorithms()
    if method is None or (isinstance(method, str) and method in registry):
        return registry[method]
    raise ValueError(
        f"Unknown calibration algorithm {method!r}; known methods: "
        f"{', '.join(known_methods())} (or null for no calibration)."
    )
