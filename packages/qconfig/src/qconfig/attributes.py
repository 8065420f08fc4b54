"""Per-quantizer attributes: ``QuantizerAttributeConfig`` and ``RotateConfig``.

docs/model-optimizer-rules.md, 'Quantizer attributes' and 'Attribute validation': field order,
types, defaults and validators follow Model Optimizer 0.47.0 exactly, because the order is the
order attributes are written to a quantizer on full replacement ('Full replacement') and the types
decide pydantic's lax coercions (``num_bits=True`` → 1, ``[4, 3]`` → ``(4, 3)``). Where Model
Optimizer raises an empty ``"Assertion failed, "`` we say what is wrong.

Deliberately stricter where Model Optimizer accepts a value and then yields NaN, fails at the
first forward or silently does something else (docs/differences.md): integer ``num_bits`` outside
what float32 computes exactly, a format name without a ``backend``, an infinite or
beyond-float32 ``constant_amax``, non-positive block sizes, ``block_sizes`` format keys with
values that do not mean what they say (``type: dynmic``), and calibrator tuples that cannot be
called.
"""

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from qconfig.base import ConfigBase
from qconfig.blocks import BLOCK_SPECIAL_KEYS, MAX_BLOCK_SIZE, block_axes, is_mx_format

__all__ = [
    "BLOCK_SPECIAL_KEYS",
    "FLOAT32_MAX",
    "FP_FORMATS",
    "FP_FORMATS_ANY_LAYOUT",
    "SCALE_FORMATS",
    "QuantizerAttributeConfig",
    "RotateConfig",
    "block_axes",
    "int_bits_range",
    "is_mx_format",
    "shown_int",
]

#: ``(E, M)`` pairs that pass V2's first test; (0,3)/(3,0) are listed but unreachable.
FP_FORMATS = ((4, 3), (5, 2), (2, 1), (1, 2), (0, 3), (3, 0), (3, 2), (2, 3))
#: Formats allowed outside dynamic blocks.
FP_FORMATS_ANY_LAYOUT = ((4, 3), (2, 1))
#: ``(E, M)`` block-scale formats Model Optimizer's dynamic block kernels know (its
#: ``mx_format_map``); its formats use E4M3 (NVFP4) and E8M0 (MX).
SCALE_FORMATS = ((4, 3), (5, 2), (3, 2), (2, 3), (8, 0), (2, 1), (1, 2), (0, 3), (3, 0))
#: The largest finite float32: Model Optimizer keeps amax in float32, where a larger one is inf.
FLOAT32_MAX = 3.4028234663852886e38
#: float32 holds every integer up to 2**24 exactly; Model Optimizer computes the grid in float32.
_FLOAT32_EXACT_BITS = 24

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
        if v is not None and v & (v - 1):
            # Model Optimizer's block Hadamard transform refuses it at every forward
            raise ValueError(
                f"block_size must be a power of 2 (the Hadamard block), got {shown_int(v)}."
            )
        return v


def _reject_lone_enable_true(value: Any) -> None:
    """V1: ``{"enable": True}`` alone says "quantize" without saying how (except under rotate).

    Walked with a stack rather than recursion, so that a deeply nested ``backend_extra_args``
    is a validation question, not a ``RecursionError``.
    """
    stack: list[tuple[Any, Any]] = [(value, None)]
    while stack:
        item, key = stack.pop()
        if isinstance(item, list):
            stack.extend((element, None) for element in reversed(item))
        elif isinstance(item, dict) and key != "rotate":
            if len(item) == 1 and "enable" in item and item["enable"] is True:
                raise ValueError(
                    "Invalid quantizer config: Cannot specify only {'enable': True}. "
                    "Additional parameters are required when enabling quantization."
                )
            stack.extend((v, k) for k, v in reversed(list(item.items())))


def int_bits_range(unsigned: bool) -> tuple[int, int]:
    """The integer ``num_bits`` Model Optimizer computes correctly: ``(lowest, highest)``.

    Its grid is ``[qmin, qmax]`` with ``qmax = 2**(num_bits - 1 + unsigned) - 1``, computed in
    float32. One signed bit gives ``qmax = 0``: scale 0, every output 0/0 = NaN. Above
    ``2**24 - 1`` float32 no longer holds ``qmax`` exactly; from 129 bits it is inf (outputs
    NaN), from 1026 bits Python's float overflows, and ``num_bits: 10**30`` hangs integer
    arithmetic (docs/differences.md).
    """
    return (1, _FLOAT32_EXACT_BITS) if unsigned else (2, _FLOAT32_EXACT_BITS + 1)


def shown_int(value: int) -> str:
    """An int for a message; a huge one by its magnitude, ``~2**99`` (``str()`` of an int of
    more than 4300 digits raises)."""
    if -(10**30) < value < 10**30:
        return str(value)
    return f"{'-' if value < 0 else ''}~2**{abs(value).bit_length() - 1}"


def _int_bits_problem(bits: int, unsigned: bool) -> str | None:
    """Why an integer ``num_bits`` makes no working quantizer (None if it does)."""
    low, high = int_bits_range(unsigned)
    if low <= bits <= high:
        return None
    kind = "unsigned" if unsigned else "signed"
    if bits < 1:  # Model Optimizer's own rejection, with its words
        return (
            f"num_bits must be a positive integer or a tuple of positive integers. {shown_int(bits)}"
            f" (integer num_bits: {low} to {high} for {kind} quantizers)."
        )
    if bits < low:
        why = "one signed bit has the single level 0, so Model Optimizer computes 0/0 = NaN"
    else:
        why = f"Model Optimizer computes the integer grid in float32, exact up to {high} bits"
    return (
        f"num_bits {shown_int(bits)} makes no working {kind} integer quantizer: use {low} to "
        f"{high} ({why})."
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_block_size(key: int, size: Any) -> None:
    """An axis key's block size: a positive int, or null (the whole axis)."""
    if size is None:
        return
    if not _is_int(size):
        raise ValueError(f"block_sizes[{key}] must be an int block size or null, got {size!r}.")
    if size < 1:
        raise ValueError(
            f"block_sizes[{key}] must be a positive block size or null (the whole axis), got "
            f"{shown_int(size)}: Model Optimizer divides by it or reshapes to it at the first "
            "forward."
        )
    if size > MAX_BLOCK_SIZE:
        raise ValueError(
            f"block_sizes[{key}] must be a positive block size of at most {MAX_BLOCK_SIZE:,}, "
            f"got {shown_int(size)}: static blocks pad every row to a multiple of the block "
            "(null blocks the whole axis)."
        )


def _check_scale_bits(value: Any) -> None:
    """``scale_bits``: null, an int bit count (NF4 double quantization) or a scale format."""
    low, high = int_bits_range(False)
    if value is None or (_is_int(value) and low <= value <= high) or value in SCALE_FORMATS:
        return
    formats = ", ".join(f"[{e}, {m}]" for e, m in SCALE_FORMATS)
    shown = shown_int(value) if _is_int(value) else repr(value)
    raise ValueError(
        f"block_sizes['scale_bits'] must be null, an integer bit count from {low} to {high}, or "
        f"a scale format ({formats}; e4m3/e8m0 in files), got {shown}."
    )


def _check_scale_block_sizes(value: Any) -> None:
    """``scale_block_sizes``: ``{axis: positive size}`` (a 0 divides by zero in NF4's
    double quantization)."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise ValueError(
            f"block_sizes['scale_block_sizes'] must be a mapping {{axis: size}}, got {value!r}."
        )
    for key, size in value.items():
        if not _is_int(key) or not _is_int(size) or not 1 <= size <= MAX_BLOCK_SIZE:
            shown = shown_int(size) if _is_int(size) else repr(size)
            raise ValueError(
                "block_sizes['scale_block_sizes'] maps int axes to positive block sizes (at "
                f"most {MAX_BLOCK_SIZE:,}), got "
                f"{key!r}: {shown}."
            )


def _check_block_special(key: str, value: Any) -> None:
    """The format keys of ``block_sizes``. Model Optimizer reads ``type`` as "dynamic or
    anything else" and ``four_over_six`` by truth value, so ``dynmic`` silently means static and
    ``"no"`` switches 4/6 scaling on; we accept only the values that mean what they say."""
    if key == "type" and value not in ("static", "dynamic"):
        raise ValueError(
            f"block_sizes['type'] must be 'static' or 'dynamic', got {value!r} (Model "
            "Optimizer would silently treat it as static)."
        )
    if key == "scale_bits":
        _check_scale_bits(value)
    elif key == "scale_block_sizes":
        _check_scale_block_sizes(value)
    elif key == "four_over_six" and (not isinstance(value, int) or value not in (0, 1)):
        raise ValueError(
            f"block_sizes['four_over_six'] must be true or false, got {value!r} (Model "
            "Optimizer reads any non-empty value as true)."
        )


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

    @field_validator("block_sizes", mode="before")
    @classmethod
    def _v5_scale_bits_shape(cls, v: Any) -> Any:
        # before pydantic tries every member of the value union on a mapping and reports three
        # type errors that never say what scale_bits may be
        if isinstance(v, dict) and isinstance(v.get("scale_bits"), dict):
            _check_scale_bits(v["scale_bits"])
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
        for key, value in v.items():
            if isinstance(key, str):
                if key not in BLOCK_SPECIAL_KEYS:
                    raise ValueError(
                        f"Unknown block_sizes key {key!r}: expected an int axis or one of "
                        f"{list(BLOCK_SPECIAL_KEYS)}."
                    )
                _check_block_special(key, value)
            else:
                _check_block_size(key, value)
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
        if isinstance(v, tuple) and not (v and callable(v[0]) and len(v) <= 3):
            # Model Optimizer calls v[0](*v[1], **v[2]) when the quantizer is built: a tuple
            # written in a file (["max"]) can only fail there
            raise ValueError(
                "calibrator must be 'max', 'histogram', a calibrator class or a (class, args, "
                f"kwargs) tuple from Python, got {v!r}."
            )
        return v

    @field_validator("constant_amax")
    @classmethod
    def _v8_constant_amax(cls, v: float | None) -> float | None:
        # ``not v > 0`` (rather than ``v <= 0``) also rejects NaN, as Model Optimizer does.
        if v is not None and not v > 0:
            raise ValueError("constant_amax must be a positive value.")
        if v is not None and not v <= FLOAT32_MAX:
            raise ValueError(
                f"constant_amax must be a finite float32 value (at most {FLOAT32_MAX:.7g}), got "
                f"{v!r}: Model Optimizer stores amax in float32, where it becomes inf and every "
                "output NaN."
            )
        return v

    @model_validator(mode="after")
    def _v2_num_bits(self) -> "QuantizerAttributeConfig":
        if self.backend is not None:  # custom backends define their own formats
            return self
        bits = self.num_bits
        if isinstance(bits, str):
            raise ValueError(
                f"num_bits {bits!r} is not a number format: write integer bits (8), an [E, M] "
                "pair ([4, 3]) or, in YAML/JSON files, an ExMy string (e4m3); format names are "
                "for a custom `backend` (Model Optimizer accepts the name and fails at the first "
                "forward)."
            )
        if isinstance(bits, int):
            problem = _int_bits_problem(bits, self.unsigned)
            if problem:
                raise ValueError(problem)
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
