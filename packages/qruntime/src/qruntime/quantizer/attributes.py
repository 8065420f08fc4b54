"""How an attribute set is written onto a quantizer: full replacement or partial update.

Why a module of its own: these are Model Optimizer's rules for ``set_from_attribute_config``
(docs/model-optimizer-rules.md, "How a quantizer applies attributes"), and they decide the state
that plans, saved states and conformance tests compare. Kept apart from the module that runs
them, they are one pure function of (current state, what is written), testable on its own:

* a ``QuantizerAttributeConfig`` replaces every field; a dict writes only its keys (merged over
  the current configuration; a ``block_sizes`` written clears ``axis``);
* the runtime spec keeps the rewrites earlier forwards made (``block_sizes`` → ``axis``, the
  static block axis) for every layout field a partial update does not name;
* MX formats force the straight-through gradient.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qconfig.attributes import QuantizerAttributeConfig, RotateConfig
from qconfig.spec import QuantizerSpec, resolve_rotation, resolve_spec

__all__ = [
    "ATTRIBUTE_FIELDS",
    "DEFAULT_CONFIG",
    "DEFAULT_SPEC",
    "AttributeUpdate",
    "apply_attribute_set",
    "repoints_calibrator",
    "reported_rotate",
]

#: The ``QuantizerAttributeConfig`` fields in declaration order (the order Model Optimizer
#: writes them on a full replacement).
ATTRIBUTE_FIELDS: tuple[str, ...] = tuple(QuantizerAttributeConfig.model_fields)

DEFAULT_CONFIG = QuantizerAttributeConfig()
DEFAULT_SPEC = resolve_spec(DEFAULT_CONFIG)


@dataclass(frozen=True)
class AttributeUpdate:
    """The state after writing an attribute set: ``config`` as configured, ``spec`` as run.

    ``values`` are the fields that were written (all of them when ``full``).
    """

    config: QuantizerAttributeConfig
    spec: QuantizerSpec
    values: Mapping[str, Any]
    full: bool

    def writes(self, name: str) -> bool:
        return self.full or name in self.values


def apply_attribute_set(
    current: QuantizerAttributeConfig,
    current_spec: QuantizerSpec,
    update: QuantizerAttributeConfig | Mapping[str, Any],
    spec: QuantizerSpec | None = None,
) -> AttributeUpdate:
    """The quantizer state after writing ``update`` (``spec``: ``update`` already resolved)."""
    if isinstance(update, QuantizerAttributeConfig):
        config, values, full = update, update.__dict__, True
        if spec is None:
            spec = resolve_spec(config)
    else:
        unknown = set(update) - set(ATTRIBUTE_FIELDS)
        if unknown:
            raise AssertionError(f"{sorted(unknown)} is not a valid TensorQuantizer attribute")
        values, full = dict(update), False
        merged = {**current.__dict__, **values}
        if merged.get("block_sizes") is not None and "block_sizes" in values:
            merged["axis"] = None
        config = QuantizerAttributeConfig.model_construct(
            _fields_set=set(current.model_fields_set) | set(values), **merged
        )
        spec = resolve_spec(config)
        kept: dict[str, Any] = {}
        if "axis" not in values:
            kept["axis"] = current_spec.axis
        if "block_sizes" not in values:
            kept["block_sizes"] = current_spec.block_sizes
        elif spec.block_sizes is not None:
            kept["axis"] = None
        if "rotate" not in values:
            kept["rotate"] = current_spec.rotate
        spec = spec.replace(**kept)
    if spec.is_mx and not spec.pass_through_bwd:
        config = config.model_copy(update={"pass_through_bwd": True})
        spec = spec.replace(pass_through_bwd=True)
    return AttributeUpdate(config, spec, values, full)


def repoints_calibrator(values: Mapping[str, Any]) -> bool:
    """Whether a partial update moves the existing calibrator to the new axis.

    Model Optimizer writes a dict's keys in order, and its axis and block-size setters re-point
    the calibrator that exists at that moment; a calibrator built from a ``calibrator`` value
    keeps the arguments it was constructed with (a ``"max"`` one is built on the current axis).
    So a layout key re-points unless a ``calibrator`` key comes after it.
    """
    keys = list(values)
    layout = [keys.index(k) for k in ("axis", "block_sizes") if k in values]
    if not layout:
        return False
    return "calibrator" not in values or keys.index("calibrator") < max(layout)


def reported_rotate(config: QuantizerAttributeConfig, spec: QuantizerSpec) -> Any:
    """The ``rotate`` value a quantizer reports: as configured, or switched off keeping its type
    (a bool, a ``RotateConfig``, a dict) when ``{"enable": False}`` turned rotation off."""
    rotate = config.rotate
    if spec.rotate.enable or not resolve_rotation(rotate).enable:
        return rotate
    if isinstance(rotate, RotateConfig):
        return rotate.model_copy(update={"enable": False})
    if isinstance(rotate, Mapping):
        return dict(rotate, enable=False)
    return False
