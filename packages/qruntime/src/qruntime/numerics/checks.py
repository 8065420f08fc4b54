"""Which attribute sets the numerics can run, decided from the spec alone, before any forward.

Why: Model Optimizer 0.47.0 accepts attribute sets it cannot compute and only finds out in the
first forward — a ``NotImplementedError`` for E2M1 outside dynamic blocks, a
``ZeroDivisionError`` for a block size 0 — or never finishes (``num_bits`` 10**30: the first
forward computes ``2 ** (num_bits - 1)``), or returns NaN (one signed bit, an infinite
``constant_amax``), or silently quantizes per tensor (an ``axis`` the tensor does not have).
``apply_plan`` runs :func:`check_spec` on every enabled quantizer before the model is touched
(docs/differences.md); the quantizer runs :func:`check_layout` on each input, because the rank
of an activation is only known then. The formats refuse what is theirs to refuse through
``register_format(..., check=...)``; this module holds what every format shares.
"""

from __future__ import annotations

import math
from typing import Any

from qconfig.blocks import MAX_BLOCK_SIZE
from qconfig.spec import QuantizerSpec, RotationSpec

from .amax import per_channel_axis
from .dispatch import resolve_format
from .floats import FLT_MAX
from .integer import MAX_INT_BITS
from .real_quant import real_quant_error
from .rotation import hadamard_block_size

__all__ = ["check_input", "check_layout", "check_rotation", "check_spec"]

_BLOCK_TYPES = ("static", "dynamic")
_BIAS_TYPES = ("static", "dynamic")
_BIAS_METHODS = ("mean", "max_min")


def check_spec(spec: QuantizerSpec, shape: tuple[int, ...] | None = None) -> None:
    """Raise ``ValueError`` (one sentence, no quantizer name) unless ``spec`` can run.

    ``shape`` is the shape of the tensor the quantizer will see (a weight's), None when it is
    only known at the first forward; with it, :func:`check_input` runs too.
    """
    _check_bits(spec.num_bits)
    _check_block_sizes(spec.block_sizes)
    _check_constant_amax(spec.constant_amax)
    _check_rotation(spec)
    _check_bias(spec.bias)
    if shape is not None:
        check_rotation(spec.rotate, shape)
        check_input(spec, shape)
        return
    if not spec.fake_quant:
        _raise(real_quant_error(spec))
    work = _working_spec(spec, None)
    entry = resolve_format(work)
    if entry.check is not None and spec.fake_quant:
        entry.check(work, None)


def check_input(spec: QuantizerSpec, shape: tuple[int, ...], *, formats: bool = True) -> None:
    """What the shape of the input decides (``spec`` passed :func:`check_spec`): the axes exist
    on it (:func:`check_layout`), the packing of real quantization and, with ``formats``, the
    format's own rules (for dynamic blocks: the block size along the last dim). A quantizer's
    forward passes ``formats`` only for dynamic blocks, so that a format error that does not
    depend on the input stays the one Model Optimizer raises there."""
    ndim = len(shape)
    check_layout(spec, ndim)
    if not spec.fake_quant:
        _raise(real_quant_error(spec, shape))
        return
    if not formats:
        return
    work = _working_spec(spec, ndim)
    entry = resolve_format(work)
    if entry.check is not None:
        entry.check(work, ndim)


def check_rotation(rotation: RotationSpec, shape: tuple[int, ...]) -> None:
    """A rotation needs a last dim it can split into power-of-2 blocks (Model Optimizer raises
    a ``RuntimeError`` at that forward; a pooled ``(N, C, 1, 1)`` output has none)."""
    if not rotation.enable or not shape:
        return
    try:
        hadamard_block_size(shape[-1], rotation.block_size)
    except RuntimeError as exc:
        raise ValueError(str(exc)) from None


def _raise(error: str | None) -> None:
    if error is not None:
        raise ValueError(error)


def check_layout(spec: QuantizerSpec, ndim: int) -> None:
    """``axis`` and the block axes must name dims of an ``ndim``-d tensor.

    Model Optimizer reduces over the dims an axis does *not* name, so an axis the tensor does
    not have silently makes the quantizer per tensor; here it is an error. With ``block_sizes``
    the axis is not the user's: the block layout sets it (on the block view, whose rank
    differs), so only the block axes are checked.
    """
    if spec.block_sizes is None:
        for axis in _axes(spec.axis):
            _check_dim("axis", axis, ndim)
    seen: dict[int, Any] = {}
    for axis in spec.block_axes:
        _check_dim("block_sizes axis", axis, ndim)
        dim = axis % ndim
        if dim in seen:
            raise ValueError(
                f"block_sizes axes {seen[dim]} and {axis} are the same dim of a {ndim}-d tensor; "
                "give each dim one block size"
            )
        seen[dim] = axis


def _axes(axis: Any) -> tuple[Any, ...]:
    if axis is None:
        return ()
    return tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)


def _check_dim(what: str, axis: Any, ndim: int) -> None:
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise ValueError(f"{what} {axis!r} is not an integer dimension")
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"{what} {axis} does not exist on a {ndim}-d tensor (valid: {-ndim}..{ndim - 1}); "
            "Model Optimizer would silently quantize per tensor"
        )


def _check_bits(num_bits: Any) -> None:
    """No computation may start on a huge bit count (``2 ** (num_bits - 1)`` never ends)."""
    parts = num_bits if isinstance(num_bits, tuple) else (num_bits,)
    for bits in parts:
        if isinstance(bits, bool) or not isinstance(bits, int):
            raise ValueError(f"num_bits {num_bits!r} must be an integer or a pair of integers")
        if not 0 <= bits <= MAX_INT_BITS:
            raise ValueError(f"num_bits {num_bits!r}: each value must be 0..{MAX_INT_BITS}")


def _check_block_sizes(block_sizes: Any) -> None:
    """Block sizes are positive integers (or None: the whole dim) on integer axes; the block
    ``type`` is static or dynamic (Model Optimizer treats any other string as static)."""
    if block_sizes is None:
        return
    kind = block_sizes.get("type")
    if kind is not None and kind not in _BLOCK_TYPES:
        raise ValueError(f"block_sizes type {kind!r} must be 'static' or 'dynamic'")
    for key, size in block_sizes.items():
        if key in ("type", "scale_bits", "scale_block_sizes", "four_over_six"):
            continue
        if isinstance(key, bool) or not isinstance(key, int):
            raise ValueError(f"block_sizes key {key!r} is not an integer axis")
        if size is not None and (
            isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_BLOCK_SIZE
        ):
            raise ValueError(
                f"block_sizes[{key}] = {size!r}: a block size is a positive integer of at most "
                f"{MAX_BLOCK_SIZE:,} (or null for the whole dimension); Model Optimizer fails at "
                "the first forward"
            )


def _check_constant_amax(value: Any) -> None:
    """It is stored as a float32 amax: it must be finite there and positive."""
    if value is None:
        return
    amax = float(value)
    if not (math.isfinite(amax) and 0 < amax <= FLT_MAX):
        raise ValueError(
            f"constant_amax {value!r} must be a positive finite float32 value (at most "
            f"{FLT_MAX:.7g}); Model Optimizer's outputs are NaN"
        )


def _check_rotation(spec: QuantizerSpec) -> None:
    rotation = spec.rotate
    if not rotation.enable:
        return
    size = rotation.block_size
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, int) or size < 1 or size & (size - 1)
    ):
        raise ValueError(f"rotate block_size {size!r} must be a power of 2")
    if rotation.rotate_back and not spec.fake_quant:
        raise ValueError("rotate_back mode is only supported with fake_quant=True")


def _check_bias(bias: Any) -> None:
    if bias is None:
        return
    kind = bias.get("type", "static")
    if kind not in _BIAS_TYPES:
        raise ValueError(f"bias type {kind!r} must be 'static' or 'dynamic'")
    method = bias.get("method", "mean")
    if method not in _BIAS_METHODS:
        raise ValueError(f"bias method {method!r} must be 'mean' or 'max_min'")


def _working_spec(spec: QuantizerSpec, ndim: int | None) -> QuantizerSpec:
    """Per-token ``block_sizes`` become an axis at the first forward; the format is chosen
    after that rewrite (the rank decides the axis; without it, any axis will do)."""
    if ndim is not None:
        return per_channel_axis(spec, ndim)
    if spec.strategy == "token":
        return spec.replace(block_sizes=None)
    return spec
