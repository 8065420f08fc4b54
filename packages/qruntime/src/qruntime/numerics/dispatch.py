"""Registry mapping an attribute set to the torch function of its number format.

Each format module registers one entry with a predicate over :class:`QuantizerSpec`; adding a
format means adding a module that calls :func:`register_format`, never editing a chain of ``if``s
here. Exactly one registered format must claim an attribute set; zero or several is an error.
The pipeline (:mod:`.pipeline`) owns everything that is common to all formats (amax resolution,
static block reshape, bias, STE); a format function only maps a tensor in its working layout to
its fake-quantized values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from qconfig.spec import QuantizerSpec

__all__ = [
    "FormatEntry",
    "FormatFn",
    "SpecCheck",
    "formats",
    "register_format",
    "resolve_format",
]


class FormatFn(Protocol):
    """``fn(x, amax, attrs, *, global_amax) -> y`` in the working (block-reshaped) layout."""

    def __call__(
        self,
        x: torch.Tensor,
        amax: torch.Tensor | None,
        attrs: QuantizerSpec,
        *,
        global_amax: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


class SpecCheck(Protocol):
    """``check(spec, ndim)``: raise ``ValueError`` for an attribute set the format claims but
    cannot run (``ndim``: the rank of the tensor it will see, None when unknown)."""

    def __call__(self, attrs: QuantizerSpec, ndim: int | None) -> None: ...


@dataclass(frozen=True)
class FormatEntry:
    """One registered format.

    ``uses_amax``: False for formats that never read an amax (MX), so none is computed.
    ``uses_bias``: False where fake quant ignores the affine bias (NVFP4/MX; docs/numerics.md,
    'Affine bias').
    ``check``: what the format refuses, decided from the spec before any forward (Model
    Optimizer raises the same at the first forward, or returns NaN): see
    :func:`qruntime.numerics.checks.check_spec`.
    """

    name: str
    matches: Callable[[QuantizerSpec], bool]
    fn: FormatFn
    uses_amax: bool = True
    uses_bias: bool = True
    check: SpecCheck | None = None


_REGISTRY: dict[str, FormatEntry] = {}


def register_format(
    name: str,
    *,
    matches: Callable[[QuantizerSpec], bool],
    uses_amax: bool = True,
    uses_bias: bool = True,
    check: SpecCheck | None = None,
) -> Callable[[FormatFn], FormatFn]:
    """Decorator registering ``fn`` as the torch implementation of format ``name``
    (``check``: see :class:`FormatEntry`)."""

    def deco(fn: FormatFn) -> FormatFn:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"format {name!r} is already registered")
        _REGISTRY[name] = FormatEntry(name, matches, fn, uses_amax, uses_bias, check)
        return fn

    return deco


def formats() -> dict[str, FormatEntry]:
    """The registered formats by name (a copy)."""
    return dict(_REGISTRY)


def resolve_format(attrs: QuantizerSpec) -> FormatEntry:
    """The single registered format claiming ``attrs`` (ValueError if none or several)."""
    hits = [e for e in _REGISTRY.values() if e.matches(attrs)]
    if len(hits) == 1:
        return hits[0]
    what = f"num_bits={attrs.num_bits!r}, block_sizes={attrs.block_sizes!r}"
    if not hits:
        raise ValueError(
            f"no fake-quant format for {what}; registered formats: {sorted(_REGISTRY)}"
        )
    raise ValueError(f"ambiguous fake-quant format for {what}: {[e.name for e in hits]}")
