"""The configs of the calibration methods other than ``max``, imported on first use.

Reached through :mod:`qconfig.algorithms` (``ALGORITHMS``, ``algorithm_class``, or importing a
class from there), which defines the base class and ``max``; see its docstring for why they are
apart.
"""

from typing import ClassVar, Literal

from pydantic import Field, field_serializer, model_validator

from qconfig.algorithms import (
    DISTRIBUTED_SYNC,
    MaxCalibConfig,
    QuantizeAlgorithmConfig,
    SharedStatesConfig,
)
from qconfig.base import ConfigBase

__all__ = [
    "AWQClipCalibConfig",
    "AWQFullCalibConfig",
    "AWQLiteCalibConfig",
    "GPTQCalibConfig",
    "LSQConfig",
    "LocalHessianCalibConfig",
    "MseCalibConfig",
    "NVFP4ActHeadroomCalibConfig",
    "SVDQuantConfig",
    "SmoothQuantCalibConfig",
]


class MseCalibConfig(SharedStatesConfig, QuantizeAlgorithmConfig):
    """Weight amax searched to minimize the quantization MSE."""

    mutates_weights: ClassVar[bool] = False
    method: Literal["mse"] = Field(default="mse", description="MSE amax search.")
    step_size: float | None = Field(default=0.1, gt=0.0, description="Multiplier step.")
    start_multiplier: float | None = Field(default=0.25, gt=0.0, description="First multiplier.")
    stop_multiplier: float | None = Field(default=4.0, gt=0.0, description="Last multiplier.")
    fp8_scale_sweep: bool | None = Field(
        default=False, description="NVFP4: sweep all 128 FP8 E4M3 block scales."
    )
    distributed_sync: bool | None = Field(default=True, description=DISTRIBUTED_SYNC)


class LocalHessianCalibConfig(SharedStatesConfig, QuantizeAlgorithmConfig):
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
    distributed_sync: bool | None = Field(default=True, description=DISTRIBUTED_SYNC)
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
        # GPTQ needs the quantized outputs of earlier layers unless told otherwise.
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
