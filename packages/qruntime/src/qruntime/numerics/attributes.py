"""Normalise a quantizer attribute set into one immutable, fully-defaulted record.

``fake_quant`` accepts either a ``QuantizerAttributeConfig``-like object (the pydantic model from
``qconfig``, used here only through duck typing so that this package never imports it) or a
plain dict. Missing keys take Model Optimizer 0.47.0's attribute defaults, which is also what a
``TensorQuantizer`` built from a partial dict sees (numerics.md §2.2: ``narrow_range`` defaults
to False, ``pass_through_bwd`` to True, ``type`` to "static").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BLOCK_SPECIAL_KEYS", "QuantAttributes", "RotateSpec", "as_attributes"]

#: Keys of ``block_sizes`` that are not block axes (numerics.md §3.2).
BLOCK_SPECIAL_KEYS = ("type", "scale_bits", "scale_block_sizes", "four_over_six")

_DEFAULTS: dict[str, Any] = {
    "enable": True,
    "num_bits": 8,
    "axis": None,
    "fake_quant": True,
    "unsigned": False,
    "narrow_range": False,
    "type": "static",
    "block_sizes": None,
    "bias": None,
    "rotate": False,
    "pass_through_bwd": True,
    "use_constant_amax": False,
    "constant_amax": None,
}


@dataclass(frozen=True)
class RotateSpec:
    """The rotation part of the attributes (numerics.md §10.3), ``rotate: bool | RotateConfig``."""

    enable: bool = False
    mode: str = "rotate"
    rotate_fp32: bool = False
    block_size: int | None = None

    @property
    def rotate_back(self) -> bool:
        """Whether the same transform is applied again after quantization (self-inverse)."""
        return self.enable and self.mode == "rotate_back"


@dataclass(frozen=True)
class QuantAttributes:
    """Every attribute that changes fake-quant numerics, with Model Optimizer defaults filled in.

    ``block_sizes`` and ``bias`` stay plain dicts (int axis keys plus the special string keys);
    tuples such as ``num_bits=(4, 3)`` arrive as tuples even when the source used lists (JSON).
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
    rotate: RotateSpec = RotateSpec()
    pass_through_bwd: bool = True
    use_constant_amax: bool = False
    constant_amax: float | None = None

    # ---- derived views used by the dispatcher -------------------------------------------------
    @property
    def block_type(self) -> str | None:
        """``block_sizes["type"]`` (None when absent); "dynamic" selects NVFP4/MX kernels (§2.1)."""
        if self.block_sizes is None:
            return None
        return self.block_sizes.get("type")

    @property
    def scale_bits(self) -> Any:
        """``block_sizes["scale_bits"]``: (8, 0) = E8M0 (MX), (4, 3) = E4M3 (NVFP4)."""
        if self.block_sizes is None:
            return None
        return self.block_sizes.get("scale_bits")

    @property
    def block_axes(self) -> dict[int, int | None]:
        """The integer-axis part of ``block_sizes`` (§3.2: special keys are not axes)."""
        if self.block_sizes is None:
            return {}
        return {k: v for k, v in self.block_sizes.items() if k not in BLOCK_SPECIAL_KEYS}

    @property
    def is_dynamic_block(self) -> bool:
        """Dynamic block formats are laid out by the kernels themselves (§3.3), not reshaped."""
        return self.block_sizes is not None and self.block_type == "dynamic"

    @property
    def is_static_block(self) -> bool:
        """Static block quantization: pad + reshape before quantizing (§2 step 6, §3.2)."""
        return self.block_sizes is not None and self.block_type != "dynamic"

    @property
    def is_mx(self) -> bool:
        """MX formats: dynamic blocks with E8M0 scales; amax is never used (§2.1, §7)."""
        return self.is_dynamic_block and self.scale_bits == (8, 0)

    def dynamic_block_size(self, ndim: int) -> int | None:
        """Block size of a dynamic block format: ``block_sizes[-1]`` or ``[ndim-1]`` (§2.1)."""
        assert self.block_sizes is not None
        return self.block_sizes.get(-1) or self.block_sizes.get(ndim - 1)

    def replace(self, **changes: Any) -> QuantAttributes:
        """A copy with some fields changed (the record itself is immutable)."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values.update(changes)
        return QuantAttributes(**values)


def _get(source: Any, name: str) -> Any:
    if isinstance(source, Mapping):
        return source.get(name, _DEFAULTS[name])
    return getattr(source, name, _DEFAULTS[name])


def _as_tuple_bits(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)
    return value


def _int_key(key: Any) -> Any:
    # JSON cannot hold int keys; "-1" written by a serialiser means the axis -1.
    if isinstance(key, str) and key.lstrip("-").isdigit():
        return int(key)
    return key


def _norm_block_sizes(value: Any) -> dict | None:
    if value is None:
        return None
    out: dict = {}
    for key, val in dict(value).items():
        key = _int_key(key)
        if key == "scale_bits":
            val = _as_tuple_bits(val)
        elif key == "scale_block_sizes" and val is not None:
            val = {_int_key(k): v for k, v in dict(val).items()}
        out[key] = val
    return out


def _norm_bias(value: Any) -> dict | None:
    if value is None:
        return None
    return {_int_key(k): v for k, v in dict(value).items()}


def _norm_axis(value: Any) -> int | tuple[int, ...] | None:
    if isinstance(value, list):
        return tuple(value)
    return value


def _norm_rotate(value: Any) -> RotateSpec:
    if value is None or isinstance(value, bool):
        return RotateSpec(enable=bool(value))
    if isinstance(value, RotateSpec):
        return value

    def field(name: str, default: Any) -> Any:
        if isinstance(value, Mapping):
            return value.get(name, default)
        return getattr(value, name, default)

    return RotateSpec(
        enable=bool(field("enable", False)),
        mode=field("mode", "rotate"),
        rotate_fp32=bool(field("rotate_fp32", False)),
        block_size=field("block_size", None),
    )


def as_attributes(attributes: Any) -> QuantAttributes:
    """Read a dict or a ``QuantizerAttributeConfig``-like object into :class:`QuantAttributes`.

    Unknown keys (``calibrator``, ``trt_high_precision_dtype``, ...) are ignored: they do not
    change the bits of fake quantization (numerics.md §2.2).
    """
    if isinstance(attributes, QuantAttributes):
        return attributes
    if attributes is None:
        attributes = {}
    return QuantAttributes(
        enable=bool(_get(attributes, "enable")),
        num_bits=_as_tuple_bits(_get(attributes, "num_bits")),
        axis=_norm_axis(_get(attributes, "axis")),
        fake_quant=bool(_get(attributes, "fake_quant")),
        unsigned=bool(_get(attributes, "unsigned")),
        narrow_range=bool(_get(attributes, "narrow_range")),
        type=_get(attributes, "type"),
        block_sizes=_norm_block_sizes(_get(attributes, "block_sizes")),
        bias=_norm_bias(_get(attributes, "bias")),
        rotate=_norm_rotate(_get(attributes, "rotate")),
        pass_through_bwd=bool(_get(attributes, "pass_through_bwd")),
        use_constant_amax=bool(_get(attributes, "use_constant_amax")),
        constant_amax=_get(attributes, "constant_amax"),
    )
