"""Calibration-algorithm configs (config-semantics §4) and the method → class registry.

The registry is the extension point for calibration methods: ``QuantizeConfig`` validates an
``algorithm`` against it at config time, and qruntime looks up the implementation by method name.
"""

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_serializer, field_validator, model_validator

from qconfig.base import ConfigBase

__all__ = [
    "ALGORITHMS",
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
    "algorithm_class",
    "known_methods",
]


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
    """Base of every calibration config; ``method: null`` means no calibration."""

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


class _SharedStatesConfig(ConfigBase):
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


_DISTRIBUTED_SYNC = "Synchronize amax across distributed processes."


class MaxCalibConfig(_SharedStatesConfig, QuantizeAlgorithmConfig):
    """amax = max |x| seen during calibration (weights and activations)."""

    mutates_weights: ClassVar[bool] = False
    method: Literal["max"] = Field(default="max", description="Max calibration.")
    distributed_sync: bool | None = Field(default=True, description=_DISTRIBUTED_SYNC)
    sync_expert_weight_amax: bool = Field(
        default=False, description="Share one weight amax across the local experts of a MoE."
    )
    skip_forward_without_activation_calib: bool = Field(
        default=False,
        description="Skip the calibration forward when no activation quantizer needs data.",
    )


class MseCalibConfig(_SharedStatesConfig, QuantizeAlgorithmConfig):
    """Weight amax searched to minimize the quantization MSE."""

    mutates_weights: ClassVar[bool] = False
    method: Literal["mse"] = Field(default="mse", description="MSE amax search.")
    step_size: float | None = Field(default=0.1, gt=0.0, description="Multiplier step.")
    start_multiplier: float | None = Field(default=0.25, gt=0.0, description="First multiplier.")
    stop_multiplier: float | None = Field(default=4.0, gt=0.0, description="Last multiplier.")
    fp8_scale_sweep: bool | None = Field(
        default=False, description="NVFP4: sweep all 128 FP8 E4M3 block scales."
    )
    distributed_sync: bool | None = Field(default=True, description=_DISTRIBUTED_SYNC)


class LocalHessianCalibConfig(_SharedStatesConfig, QuantizeAlgorithmConfig):
    """Weight block scales searched to minimize the Hessian-weighted output error."""

    mutates_weights: ClassVar[bool] = False
    method: Literal["local_hessian"] = Field(default="local_hessian", description="Local Hessian.")
    step_size: float | None = Field(default=0.1, gt=0.0, description="Multiplier step.")
    start_multiplier: float | None = Field(default=0.25, gt=0.0, description="First multiplier.")
    stop_multiplier: float | None = Field(default=4.0, gt=0.0, description="Last multiplier.")
    fp8_scale_sweep: bool | None = Field(
        default=True, description="NVFP4: sweep all 128 FP8 E4M3 block scales."
    )
    block_size: int | None = Field(default=16, gt=0, description="Local Hessian block size.")
    distributed_sync: bool | None = Field(default=True, description=_DISTRIBUTED_SYNC)
    debug: bool | None = Field(default=False, description="Keep Hessian metadata on modules.")


class SmoothQuantCalibConfig(QuantizeAlgorithmConfig):
    """SmoothQuant: migrate activation outliers into weights with a per-channel scale."""

    method: Literal["smoothquant"] = Field(default="smoothquant", description="SmoothQuant.")
    alpha: float | None = Field(default=1.0, ge=0.0, le=1.0, description="Migration strength.")


class AWQLiteCalibConfig(QuantizeAlgorithmConfig):
    """AWQ lite: search a per-channel pre-quantization scale."""

    method: Literal["awq_lite"] = Field(default="awq_lite", description="AWQ lite.")
    alpha_step: float | None = Field(
        default=0.1, gt=0.0, le=1.0, description="Step of the alpha search over [0, 1]."
    )
    debug: bool | None = Field(default=False, description="Keep search metadata on modules.")


class AWQClipCalibConfig(QuantizeAlgorithmConfig):
    """AWQ clip: search clipped per-block weight amax values."""

    method: Literal["awq_clip"] = Field(default="awq_clip", description="AWQ clip.")
    max_co_batch_size: int | None = Field(
        default=1024, description="Output channels searched at once (lower on OOM)."
    )
    max_tokens_per_batch: int | None = Field(
        default=64, description="Tokens per calibration batch used by the search."
    )
    min_clip_ratio: float | None = Field(
        default=0.5, gt=0.0, lt=1.0, description="Smallest clip ratio searched, in (0, 1)."
    )
    shrink_step: float | None = Field(
        default=0.05, gt=0.0, le=1.0, description="Step of the clip-ratio search, in (0, 1]."
    )
    debug: bool | None = Field(default=False, description="Keep search metadata on modules.")


class AWQFullCalibConfig(AWQLiteCalibConfig, AWQClipCalibConfig):
    """AWQ full: ``awq_lite`` followed by ``awq_clip``."""

    method: Literal["awq_full"] = Field(default="awq_full", description="AWQ lite + clip.")
    debug: bool | None = Field(default=False, description="Keep search metadata on modules.")


class SVDQuantConfig(QuantizeAlgorithmConfig):
    """SVDQuant: absorb outliers into a low-rank branch."""

    method: Literal["svdquant"] = Field(default="svdquant", description="SVDQuant.")
    lowrank: int | None = Field(default=32, description="Rank of the low-rank branch.")
    skip_layers: list[str] | None = Field(
        default=None, description="fnmatch patterns of module names left out."
    )


class GPTQCalibConfig(QuantizeAlgorithmConfig):
    """GPTQ: Hessian-based block-wise weight updates."""

    method: Literal["gptq"] = Field(default="gptq", description="GPTQ.")
    perc_damp: float | None = Field(
        default=0.01, gt=0.0, le=1.0, description="Damping as a fraction of mean diag(H)."
    )
    block_size: int | None = Field(default=128, description="Columns updated per block.")
    fused: bool = Field(default=False, description="Use the fused Triton kernel.")

    @model_validator(mode="after")
    def _qdq_activations_by_default(self) -> "GPTQCalibConfig":
        # GPTQ needs the quantized outputs of earlier layers unless told otherwise (§4.2).
        if "get_qdq_activations_from_prev_layer" not in self.layerwise.model_fields_set:
            self.layerwise = self.layerwise.model_copy(
                update={"get_qdq_activations_from_prev_layer": True}
            )
        return self


_ScaleAlgorithm = MaxCalibConfig | MseCalibConfig | LocalHessianCalibConfig


def _sparse(value: ConfigBase | None) -> dict | None:
    if value is None:
        return None
    return {"method": value.method, **value.model_dump(exclude={"method"}, exclude_unset=True)}


class NVFP4ActHeadroomCalibConfig(QuantizeAlgorithmConfig):
    """NVFP4 activations: global scale with headroom above a percentile anchor."""

    mutates_weights: ClassVar[bool] = False
    method: Literal["nvfp4_act_headroom"] = Field(
        default="nvfp4_act_headroom", description="NVFP4 activation headroom."
    )
    anchor_percentile: float = Field(default=1.0, gt=0.0, le=100.0, description="Anchor pct.")
    upper_percentile: float = Field(default=99.99, gt=0.0, le=100.0, description="Top pct.")
    rho: float = Field(default=16384.0, gt=0.0, lt=28672.0, description="Headroom factor.")
    weight_scale_algorithm: _ScaleAlgorithm = Field(
        default={"method": "max"},
        validate_default=True,
        description="Algorithm for the weight scales.",
    )

    @field_serializer("weight_scale_algorithm")
    def _dump_weight_scale_algorithm(self, value: ConfigBase) -> dict | None:
        return _sparse(value)


class LSQConfig(QuantizeAlgorithmConfig):
    """Learned step-size quantization of NVFP4 block weight scales."""

    method: Literal["lsq"] = Field(default="lsq", description="LSQ / Dual-LSQ.")
    learnable_amax: list[Literal["pre", "post"]] | Literal["pre", "post"] = Field(
        default=["post"], description="Which amax parameters are learned."
    )
    tied_amax: bool = Field(default=False, description="Share one tensor for pre and post.")
    quantize_pre_scale: bool = Field(default=True, description="FP8-quantize the pre-scale.")
    scale_algorithm: _ScaleAlgorithm | None = Field(
        default=None, description="Scale calibration run first."
    )

    @field_serializer("scale_algorithm")
    def _dump_scale_algorithm(self, value: ConfigBase | None) -> dict | None:
        return _sparse(value)

    @model_validator(mode="after")
    def _tied_needs_same_learnability(self) -> "LSQConfig":
        learn = (
            [self.learnable_amax] if isinstance(self.learnable_amax, str) else self.learnable_amax
        )
        if self.tied_amax and set(learn) not in (set(), {"pre", "post"}):
            raise ValueError(
                "tied_amax=True requires learnable_amax to be [] or ['pre', 'post'], "
                f"got {self.learnable_amax}"
            )
        return self


#: method name (None = no calibration) → config class. Register new methods here.
ALGORITHMS: dict[str | None, type[QuantizeAlgorithmConfig]] = {
    None: QuantizeAlgorithmConfig,
    "max": MaxCalibConfig,
    "mse": MseCalibConfig,
    "local_hessian": LocalHessianCalibConfig,
    "smoothquant": SmoothQuantCalibConfig,
    "awq_lite": AWQLiteCalibConfig,
    "awq_clip": AWQClipCalibConfig,
    "awq_full": AWQFullCalibConfig,
    "svdquant": SVDQuantConfig,
    "gptq": GPTQCalibConfig,
    "nvfp4_act_headroom": NVFP4ActHeadroomCalibConfig,
    "lsq": LSQConfig,
}


def known_methods() -> list[str]:
    """Method names accepted in ``algorithm`` (``null`` also means "no calibration")."""
    return [m for m in ALGORITHMS if m is not None]


def algorithm_class(method: Any) -> type[QuantizeAlgorithmConfig]:
    """The config class of ``method``; ValueError naming the known methods otherwise."""
    if method is None or (isinstance(method, str) and method in ALGORITHMS):
        return ALGORITHMS[method]
    raise ValueError(
        f"Unknown calibration algorithm {method!r}; known methods: "
        f"{', '.join(known_methods())} (or null for no calibration)."
    )
