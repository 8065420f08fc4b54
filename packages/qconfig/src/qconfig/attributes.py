"""Per-quantizer attributes: ``QuantizerAttributeConfig`` and ``RotateConfig``.

docs/model-optimizer-rules.md, 'Quantizer attributes' and 'Attribute validation': field order,
types, defaults and validators follow Model Optimizer 0.47.0 exactly, because the order is the
order attributes are written to a quantizer on full replacement ('Full replacement') and the types
decide pydantic's lax coercions (``num_bits=True`` → 1, ``[4, 3]`` → ``(4, 3)``). Where Model
Optimizer raises an empty ``"Assertion failed, "`` we say what is wrong.
"""

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from qconfig.base import ConfigBase
from qconfig.blocks import BLOCK_SPECIAL_KEYS, block_axes, is_mx_format

__all__ = [
    "BLOCK_SPECIAL_KEYS",
    "FP_FORMATS",
    "FP_FORMATS_ANY_LAYOUT",
    "QuantizerAttributeConfig",
    "RotateConfig",
    "block_axes",
    "is_mx_format",
]

#: ``(E, M)`` pairs that pass V2's first test; (0,3)/(3,0) are listed but unreachable.
FP_FORMATS = ((4, 3), (5, 2), (2, 1), (1, 2), (0, 3), (3, 0), (3, 2), (2, 3))
#: Formats allowed outside dynamic blocks.
FP_FORMATS_ANY_LAYOUT = ((4, 3), (2, 1))

BiasType = Literal["static", "dynamic"]
BiasMethod = Literal["mean", "max_min"]


class RotateConfig(ConfigBase):
    """Hadamard rotation of a quantizer's input (QuaRot/SpinQuant style)."""

    enable: bool = Field(default=False, description="Rotate the input before quantizing.")
    mode: Literal["rotate", "rotate_back"] = Field(
        default="rotate",
        description="`rotate`: rotate only; `rotate_back`: rotate, fake-quantize, rotate back.",
    )
    rotate_fp32: bool = Field(default=False, description="Compute the rotation in float32.")
    block_size: int | None = Field(
        default=None, description="Block size of a block-diagonal rotation; null = whole axis."
    )

    @field_validator("block_size", mode="before")
    @classmethod
    def _positive_block_size(cls, v: Any) -> Any:
        # mode="before" so that True is rejected before pydantic coerces it to 1.
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise ValueError(f"block_size must be a positive int, got {v!r}")
        return v


def _reject_lone_enable_true(value: Any, key: str | None = None) -> None:
    """V1: ``{"enable": True}`` alone says "quantize" without saying how (except under rotate)."""
    if isinstance(value, list):
        for item in value:
            _reject_lone_enable_true(item)
    elif isinstance(value, dict):
        if key == "rotate":
            return
        if len(value) == 1 and "enable" in value and value["enable"] is True:
            raise ValueError(
                "Invalid quantizer config: Cannot specify only {'enable': True}. "
                "Additional parameters are required when enabling quantization."
            )
        for k, v in value.items():
            _reject_lone_enable_true(v, k)


class QuantizerAttributeConfig(ConfigBase):
    """The attributes of one ``TensorQuantizer`` (or one element of a sequential quantizer)."""

    enable: bool = Field(default=True, description="Quantizer on; false passes inputs through.")
    num_bits: int | tuple[int, int] | str = Field(
        default=8,
        description=(
            "Integer bits (e.g. 8, 4), an FP format `[E, M]` (`[4, 3]` FP8 E4M3, `[5, 2]` E5M2, "
            "`[2, 1]` FP4 E2M1, `[3, 2]`/`[2, 3]` FP6), an ExMy string in files (`e4m3`), or a "
            "custom backend's format name."
        ),
    )
    effective_bits: float | None = Field(
        default=None, description="Bits per element for the autoquant cost model, in (0, 16]."
    )
    axis: int | tuple[int, ...] | None = Field(
        default=None,
        description=(
            "Static per-channel axis (or axes) kept by the amax; null = per tensor. "
            "Cannot be combined with `block_sizes`."
        ),
    )
    fake_quant: bool = Field(default=True, description="Fake (quantize-dequantize) vs real.")
    unsigned: bool = Field(default=False, description="Unsigned integer range.")
    narrow_range: bool = Field(default=False, description="Integer range without -2^(n-1).")
    learn_amax: bool = Field(default=False, description="Deprecated; must stay false.")
    type: str = Field(
        default="static",
        pattern=r"^static$|^dynamic$",
        description="`static`: amax calibrated; `dynamic`: amax computed from each input.",
    )
    block_sizes: dict[int | str, int | tuple[int, int] | str | dict[int, int] | None] | None = (
        Field(
            default=None,
            description=(
                "Block quantization: `{axis: size}` (null size = whole axis) plus optional "
                "`type` (static/dynamic), `scale_bits`, `scale_block_sizes`, `four_over_six`. "
                "Cannot be combined with `axis`."
            ),
        )
    )
    bias: dict[int | str, BiasType | BiasMethod | tuple[int, ...] | bool | int | None] | None = (
        Field(
            default=None,
            description=(
                "Affine (asymmetric) quantization: int axis keys plus optional `type` "
                "(static/dynamic) and `method` (mean/max_min)."
            ),
        )
    )
    trt_high_precision_dtype: str = Field(
        default="Float",
        pattern=r"^Float$|^Half$|^BFloat16$",
        description="dtype of scales in exported ONNX QDQ nodes.",
    )
    calibrator: str | Callable | tuple = Field(
        default="max",
        description="`max` or `histogram` (or, from Python, a calibrator constructor).",
    )
    rotate: bool | RotateConfig = Field(
        default=False, description="Hadamard-rotate the input first (bool or rotate config)."
    )
    pass_through_bwd: bool = Field(
        default=True,
        description="Straight-through gradient; false zeroes gradients of clipped values.",
    )
    backend: str | None = Field(default=None, description="Custom quantization backend name.")
    backend_extra_args: dict | None = Field(
        default=None, description="Extra arguments stored on the quantizer for the backend."
    )
    use_constant_amax: bool = Field(
        default=False, description="Fix amax at 448 (FP8 E4M3 max) and skip calibration."
    )
    constant_amax: float | None = Field(
        default=None, description="Fix amax at this positive value and skip calibration."
    )

    @model_validator(mode="before")
    @classmethod
    def _v1_lone_enable(cls, values: Any) -> Any:
        _reject_lone_enable_true(values)
        return values

    @field_validator("effective_bits")
    @classmethod
    def _v3_effective_bits(cls, v: float | None) -> float | None:
        if v is not None and not (0 < v <= 16):
            raise ValueError(f"effective_bits must be in (0, 16], got {v}")
        return v

    @field_validator("learn_amax")
    @classmethod
    def _v4_learn_amax(cls, v: bool) -> bool:
        if v is True:
            raise ValueError("learn_amax is deprecated and reserved for backward compatibility.")
        return v

    @field_validator("block_sizes")
    @classmethod
    def _v5_block_sizes(cls, v: dict | None, info: ValidationInfo) -> dict | None:
        if v is None:
            return v
        if info.data.get("axis") is not None:
            raise ValueError("axis must be None when block_sizes is not None.")
        if v.get("type") == "dynamic" and len(block_axes(v)) != 1:
            raise ValueError("Dynamic block quantization only supports quantization last axis.")
        for key, size in v.items():
            if isinstance(key, str):
                if key not in BLOCK_SPECIAL_KEYS:
                    raise ValueError(
                        f"Unknown block_sizes key {key!r}: expected an int axis or one of "
                        f"{list(BLOCK_SPECIAL_KEYS)}."
                    )
            elif size is not None and not isinstance(size, int):
                raise ValueError(
                    f"block_sizes[{key}] must be an int block size or null, got {size!r}."
                )
        return v

    @field_validator("bias")
    @classmethod
    def _v6_bias(cls, v: dict | None) -> dict | None:
        if v is None:
            return v
        if "type" in v and v["type"] not in ("static", "dynamic"):
            raise ValueError(f"Invalid bias type: {v['type']}, expected 'static' or 'dynamic'")
        if "method" in v and v["method"] not in ("mean", "max_min"):
            raise ValueError(f"Invalid bias method: {v['method']}, expected 'mean' or 'max_min'")
        axes = [k for k in v if k not in ("type", "method")]
        if not axes:
            raise ValueError("The axis for bias computation is not specified.")
        for key in axes:
            if not isinstance(key, int):
                raise ValueError(f"Invalid bias key {key!r}: expected an int axis.")
        return v

    @field_validator("calibrator")
    @classmethod
    def _v7_calibrator(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in ("max", "histogram"):
            raise ValueError(f"calibrator must be 'max' or 'histogram', got {v!r}.")
        return v

    @field_validator("constant_amax")
    @classmethod
    def _v8_constant_amax(cls, v: float | None) -> float | None:
        # ``not v > 0`` (rather than ``v <= 0``) also rejects NaN, as Model Optimizer does.
        if v is not None and not v > 0:
            raise ValueError("constant_amax must be a positive value.")
        return v

    @model_validator(mode="after")
    def _v2_num_bits(self) -> "QuantizerAttributeConfig":
        if self.backend is not None:  # custom backends define their own formats
            return self
        bits = self.num_bits
        if isinstance(bits, int) and bits < 1:
            raise ValueError(
                f"num_bits must be a positive integer or a tuple of positive integers. {bits}"
            )
        if not isinstance(bits, tuple):
            return self
        # A model-level error has no field in its location, so the messages name num_bits.
        if not all(x > 0 for x in bits):
            raise ValueError(
                f"num_bits must be a positive integer or a tuple of positive integers. {bits}"
            )
        if bits not in FP_FORMATS:
            raise ValueError(
                f"num_bits {bits} is not a supported FP format. Supported FPx quantization "
                "formats: FP8 (E4M3, E5M2), FP6(E3M2, E2M3), FP4(E2M1)."
            )
        dynamic_blocks = self.block_sizes is not None and self.block_sizes.get("type") == "dynamic"
        if bits not in FP_FORMATS_ANY_LAYOUT and not dynamic_blocks:
            raise ValueError(
                f"Only blockwise dynamic quantization is supported with quantization formats "
                f"E{bits[0]}M{bits[1]} (num_bits={bits} needs block_sizes with type 'dynamic')."
            )
        return self

    @model_validator(mode="after")
    def _v9_constant_amax_modes(self) -> "QuantizerAttributeConfig":
        if self.use_constant_amax and self.constant_amax is not None:
            raise ValueError(
                "use_constant_amax and constant_amax are mutually exclusive; set only one."
            )
        return self
