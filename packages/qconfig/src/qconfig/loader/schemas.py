"""The types a file or snippet can declare, and how to walk them.

A ``# modelopt-schema:`` comment names a model (Model Optimizer's path or ours); import
resolution uses the declared types to decide whether a list ``$import`` is spliced (a list of
the list's element type) or appended (one element). The models are imported on first use only.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from qconfig.loader.locations import SHAPE_ERROR, Loc, located_error

RECIPE = "recipe"  # pseudo-schema of a PTQ recipe: {metadata, quantize: QuantizeConfig}


@functools.cache
def schema_table() -> Mapping[str, Any]:
    """Declarable schema name → type. ``CompressConfig`` and the calibration configs other than
    ``max`` are imported when a file names one (see :mod:`qconfig.algorithms`), not to list
    the names."""
    from qconfig.algorithms import config_class_names
    from qconfig.attributes import QuantizerAttributeConfig, RotateConfig
    from qconfig.entries import QuantizerCfgEntry
    from qconfig.quantize import QuantizeConfig

    return _SchemaTable(
        {
            "QuantizeConfig": QuantizeConfig,
            "QuantizerCfgEntry": QuantizerCfgEntry,
            "QuantizerCfgListConfig": list[QuantizerCfgEntry],
            "QuantizeQuantCfgType": list[QuantizerCfgEntry],
            "QuantizerAttributeConfig": QuantizerAttributeConfig,
            "RotateConfig": RotateConfig,
        },
        {
            "CompressConfig": "qconfig.compress",
            **dict.fromkeys(config_class_names(), "qconfig.algorithms"),
        },
    )


class _SchemaTable(Mapping):
    """Name → type; the ``lazy`` names (name → defining module) are imported when looked up."""

    def __init__(self, models: dict[str, Any], lazy: dict[str, str]) -> None:
        self._models = models
        self._lazy = {n: module for n, module in lazy.items() if n not in models}
        self._names = [*models, *self._lazy]

    def __getitem__(self, name: str) -> Any:
        if name in self._models:
            return self._models[name]
        if name not in self._lazy:
            raise KeyError(name)
        import importlib

        return getattr(importlib.import_module(self._lazy[name]), name)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def canonical_schema(declared: str, loc: Loc | None) -> str:
    """``modelopt.torch.quantization.config.X`` / ``qconfig.X`` → ``X`` (a known schema)."""
    if not declared.startswith(("modelopt.", "qconfig.")):
        raise located_error(
            SHAPE_ERROR,
            f"Unsupported modelopt-schema {declared!r}: it must start with 'modelopt.' or "
            "'qconfig.'.",
            loc,
        )
    name = declared.rpartition(".")[2]
    known = schema_table()
    if name not in known:
        raise located_error(
            SHAPE_ERROR,
            f"Unknown modelopt-schema {declared!r}; known types: {', '.join(sorted(known))}.",
            loc,
        )
    return name


def unwrap_type(tp: Any) -> Any:
    """Strip ``Annotated`` and ``Optional`` wrappers that do not change a value's shape."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in map(unwrap_type, typing.get_args(tp)) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
            return typing.Union[tuple(args)]  # noqa: UP007 - built from a runtime tuple
        return tp


@functools.lru_cache(maxsize=1024)
def child_schema(schema: Any, key: Any) -> Any:
    if schema == RECIPE:
        return schema_table()["QuantizeConfig"] if key == "quantize" else None
    fields = getattr(schema, "model_fields", None)
    if fields and isinstance(key, str) and key in fields:
        return unwrap_type(fields[key].annotation)
    if typing.get_origin(schema) is dict:
        args = typing.get_args(schema)
        return unwrap_type(args[1]) if len(args) == 2 else None
    return None


@functools.lru_cache(maxsize=256)
def element_schema(schema: Any) -> Any:
    """``T`` of the one ``list[T]`` in ``schema`` (a union may hold one list type)."""
    schema = unwrap_type(schema)
    origin = typing.get_origin(schema)
    if origin in (typing.Union, types.UnionType):
        found = [e for e in map(element_schema, typing.get_args(schema)) if e is not None]
        unique = [e for i, e in enumerate(found) if e not in found[:i]]
        return unique[0] if len(unique) == 1 else None
    if origin is list:
        args = typing.get_args(schema)
        return unwrap_type(args[0]) if len(args) == 1 and args[0] is not Any else None
    return None


def validate_as(schema: Any, data: Any) -> Any:
    """Validate ``data`` as ``schema``; raises pydantic's ``ValidationError``."""
    if isinstance(schema, type):
        return schema.model_validate(data)
    from qconfig.normalize import validate_entries

    return validate_entries(data)  # the only list schema is list[QuantizerCfgEntry]


def schema_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or repr(tp)
