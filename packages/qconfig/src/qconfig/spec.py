"""``QuantizerSpec``: one quantizer's attributes resolved into a frozen, typed value.

Why it exists: a ``QuantizerAttributeConfig`` is what a user writes — loosely typed (``num_bits``
is an int, a pair or a string; ``block_sizes`` mixes axis keys with format keys; ``rotate`` is a
bool or a model), validated, and kept verbatim so plans and saved states show what was asked.
Everything that *computes* — the torch reference numerics, the Triton kernels, the quantizer
modules, calibration — needs the same facts in one settled form: which format family, which
granularity (tensor, channel, block, token), static or dynamic, the block shape, the scale
format, the affine bias, the rotation. ``resolve_spec`` derives them once, with Model
Optimizer 0.47.0's defaults for absent keys (docs/model-optimizer-rules.md, 'Quantizer
attributes'; docs/numerics.md), and every layer reads the result
instead of re-parsing dictionaries by string key.

The module is pure Python (the plan carries specs, and qconfig never imports torch) and reads its
source by duck typing, so it accepts a ``QuantizerAttributeConfig``, a plain dict (missing keys
take the defaults, as a quantizer built from a partial dict does) or a spec.
"""

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from qconfig.blocks import BLOCK_SPECIAL_KEYS, block_axes, is_mx_format
from qconfig.keys import int_key

__all__ = [
    "BLOCK_SPECIAL_KEYS",
    "NO_ROTATION",
    "Family",
    "QuantizerSpec",
    "RotationSpec",
    "Strategy",
    "block_axes",
    "is_mx_format",
    "resolve_rotation",
    "resolve_spec",
]

#: Number format families the numerics implement (docs/numerics.md).
Family = Literal["int", "fp", "nvfp4", "mx"]
#: Granularity of the scale: one per tensor, per kept channel(s), per block, or per token
#: (``block_sizes`` whose axes all span their whole dimension).
Strategy = Literal["tensor", "channel", "block", "token"]

_FP8_SCALE = (4, 3)  # E4M3 block scales (NVFP4)


@dataclass(frozen=True)
class RotationSpec:
    """The Hadamard rotation applied to a quantizer's input (``rotate: bool | RotateConfig``)."""

    enable: bool = False
    mode: str = "rotate"
    rotate_fp32: bool = False
    block_size: int | None = None

    @property
    def rotate_back(self) -> bool:
        """The transform is applied again after quantizing (it is its own inverse)."""
        return self.enable and self.mode == "rotate_back"


NO_ROTATION = RotationSpec()


@dataclass(frozen=True)
class QuantizerSpec:
    """Every attribute that decides what a quantizer computes, settled (module docstring).

    ``block_sizes`` and ``bias`` stay mappings (integer axes plus the format keys) because the
    block reshape and the bias reduction index them by axis; their keys are ints and
    ``scale_bits`` a pair whatever the source spelled. ``calibrator`` is carried as configured
    (``"max"``, a class, or ``(class, args, kwargs)``) for the calibration layer.
    """

    enable: bool = True
    num_bits: int | tuple[int, int] = 8
    axis: int | tuple[int, ...] | None = None
    fake_quant: bool = True
    unsigned: bool = False
    narrow_range: bool = False
    type: str = "static"
    block_sizes: Mapping[int | str, Any] | None = None
    bias: Mapping[int | str, Any] | None = None
    rotate: RotationSpec = NO_ROTATION
    pass_through_bwd: bool = True
    use_constant_amax: bool = False
    constant_amax: float | None = None
    calibrator: Any = "max"

    # ---- the resolved views ---------------------------------------------------------------
    @property
    def is_dynamic(self) -> bool:
        """amax computed from every input instead of calibrated (``type: dynamic``)."""
        return self.type == "dynamic"

    @property
    def block_type(self) -> str | None:
        """``block_sizes["type"]``: "dynamic" blocks are laid out by the format itself."""
        if self.block_sizes is None:
            return None
        return self.block_sizes.get("type")

    @property
    def scale_bits(self) -> Any:
        """Scale format of block formats: (8, 0) = E8M0 (MX), (4, 3) = E4M3 (NVFP4)."""
        if self.block_sizes is None:
            return None
        return self.block_sizes.get("scale_bits")

    @property
    def block_axes(self) -> dict[int, int | None]:
        """The block shape: axis → block size (None = the whole dimension)."""
        return block_axes(self.block_sizes) or {}

    @property
    def is_dynamic_block(self) -> bool:
        """Dynamic block formats (NVFP4, MX) are laid out by their kernels, not reshaped."""
        return self.block_sizes is not None and self.block_type == "dynamic"

    @property
    def is_static_block(self) -> bool:
        """Static block quantization: pad and reshape into blocks before quantizing."""
        return self.block_sizes is not None and self.block_type != "dynamic"

    @property
    def is_mx(self) -> bool:
        return is_mx_format(self.block_sizes)

    @property
    def family(self) -> Family | None:
        """The number format family, or None for a combination no format implements (e.g.
        dynamic blocks without an E4M3 or E8M0 scale)."""
        if self.is_mx:
            return "mx"
        if self.scale_bits == _FP8_SCALE and (
            self.is_dynamic_block or (self.is_static_block and self.num_bits == (2, 1))
        ):
            return "nvfp4"
        if self.is_dynamic_block:
            return None
        return "int" if isinstance(self.num_bits, int) else "fp"

    @property
    def strategy(self) -> Strategy:
        axes = self.block_axes
        if self.block_sizes is not None and axes:
            return "token" if all(v is None for v in axes.values()) else "block"
        if self.block_sizes is not None:
            return "block"
        return "tensor" if self.axis is None else "channel"

    def dynamic_block_size(self, ndim: int) -> int | None:
        """Block size of a dynamic block format: ``block_sizes[-1]`` or ``[ndim - 1]``."""
        assert self.block_sizes is not None
        return self.block_sizes.get(-1) or self.block_sizes.get(ndim - 1)

    def replace(self, **changes: Any) -> "QuantizerSpec":
        """A copy with some fields changed (specs are immutable)."""
        values = {name: getattr(self, name) for name in _FIELD_NAMES}
        values.update(changes)
        return QuantizerSpec(**values)

    def describe(self) -> dict[str, Any]:
        """The resolved facts as plain JSON-able data (plan files show them beside the
        attributes they came from)."""
        bits = self.num_bits
        return {
            "family": self.family,
            "bits": _json_pair(bits),
            "strategy": self.strategy,
            "dynamic": self.is_dynamic or self.is_dynamic_block,
            "block": {str(k): v for k, v in self.block_axes.items()} or None,
            "scale_bits": _json_pair(self.scale_bits),
            "bias": self.bias is not None,
            "rotate": self.rotate.mode if self.rotate.enable else None,
        }


_FIELD_NAMES = tuple(f.name for f in fields(QuantizerSpec))
_DEFAULTS = QuantizerSpec()


def _get(source: Any, name: str) -> Any:
    if isinstance(source, Mapping):
        return source.get(name, getattr(_DEFAULTS, name))
    return getattr(source, name, getattr(_DEFAULTS, name))


def _json_pair(value: Any) -> Any:
    """A (E, M) pair as JSON spells it; an integer bit count (INT scales) stays a number."""
    return list(value) if isinstance(value, tuple) else value


def _pair(value: Any) -> Any:
    """JSON spells tuples (``num_bits``, ``scale_bits``, ``axis``) as lists."""
    return tuple(value) if isinstance(value, list) else value


def _block_sizes(value: Any) -> dict | None:
    if value is None:
        return None
    out: dict = {}
    for key, val in dict(value).items():
        key = int_key(key)
        if key == "scale_bits":
            val = _pair(val)
        elif key == "scale_block_sizes" and val is not None:
            val = {int_key(k): v for k, v in dict(val).items()}
        out[key] = val
    return out


def _bias(value: Any) -> dict | None:
    if value is None:
        return None
    return {int_key(k): v for k, v in dict(value).items()}


def resolve_rotation(value: Any) -> RotationSpec:
    """The rotation of a ``rotate`` attribute value (bool, ``RotateConfig``, dict or spec)."""
    if value is None or isinstance(value, bool):
        return RotationSpec(enable=bool(value)) if value else NO_ROTATION
    if isinstance(value, RotationSpec):
        return value

    def field(name: str, default: Any) -> Any:
        if isinstance(value, Mapping):
            return value.get(name, default)
        return getattr(value, name, default)

    return RotationSpec(
        enable=bool(field("enable", False)),
        mode=field("mode", "rotate"),
        rotate_fp32=bool(field("rotate_fp32", False)),
        block_size=field("block_size", None),
    )


def resolve_spec(attributes: Any) -> QuantizerSpec:
    """Resolve an attribute set (a ``QuantizerAttributeConfig``, a dict or a spec).

    Fields that never change what is computed (``trt_high_precision_dtype``, ``effective_bits``,
    ``backend_extra_args``, ...) are not part of the spec.
    """
    if isinstance(attributes, QuantizerSpec):
        return attributes
    if attributes is None:
        return _DEFAULTS
    return QuantizerSpec(
        enable=bool(_get(attributes, "enable")),
        num_bits=_pair(_get(attributes, "num_bits")),
        axis=_pair(_get(attributes, "axis")),
        fake_quant=bool(_get(attributes, "fake_quant")),
        unsigned=bool(_get(attributes, "unsigned")),
        narrow_range=bool(_get(attributes, "narrow_range")),
        type=_get(attributes, "type"),
        block_sizes=_block_sizes(_get(attributes, "block_sizes")),
        bias=_bias(_get(attributes, "bias")),
        rotate=resolve_rotation(_get(attributes, "rotate")),
        pass_through_bwd=bool(_get(attributes, "pass_through_bwd")),
        use_constant_amax=bool(_get(attributes, "use_constant_amax")),
        constant_amax=_get(attributes, "constant_amax"),
        calibrator=_get(attributes, "calibrator"),
    )
