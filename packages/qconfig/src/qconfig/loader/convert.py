"""Raw-value conversions every source applies: ExMy strings and integer axis keys.

YAML, JSON and in-memory mappings all go through these, so a config means the same whatever it
was written in (docs/writing-configs.md, "YAML or JSON"). Axis keys follow the one rule in
:mod:`qconfig.keys`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from qconfig.keys import INT_KEY_PARENTS, int_key
from qconfig.loader.limits import (
    MAX_DEPTH,
    MAX_VALUES,
    LoadBudget,
    depth_error,
    has_surrogate,
    int_error,
    int_too_large,
    surrogate_error,
)
from qconfig.loader.locations import SYNTAX_ERROR, JsonPath, kind_of, located_error

_EXMY_RE = re.compile(r"^[Ee](\d+)[Mm](\d+)$")
_EXMY_KEYS = frozenset({"num_bits", "scale_bits"})


def convert_key(container_key: Any, key: Any) -> Any:
    """``"-1"`` → ``-1`` under an axis-keyed field: JSON cannot write int keys, the models need
    them. The spelling rule is :func:`qconfig.keys.int_key`'s, shared with manifests and plans."""
    return int_key(key) if container_key in INT_KEY_PARENTS else key


def convert_scalar(key: Any, value: Any) -> Any:
    """``num_bits: e4m3`` → ``(4, 3)``, as Model Optimizer's YAML loader does."""
    if key in _EXMY_KEYS and isinstance(value, str):
        match = _EXMY_RE.match(value)
        if match:
            return (int(match.group(1)), int(match.group(2)))
    return value


def convert_tree(obj: Any, key: Any = None) -> Any:
    """Apply both conversions to plain Python data (JSON and mapping sources); copies containers."""
    if isinstance(obj, Mapping) and not is_model(obj):
        return {convert_key(key, k): convert_tree(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [convert_tree(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(convert_tree(v) for v in obj)
    return convert_scalar(key, obj)


def convert_mapping(src: Mapping, budget: LoadBudget) -> Any:
    """A mapping passed from Python, converted as :func:`convert_tree` does, and held to the
    limits files are held to: nesting (a mapping that contains itself is infinitely deep),
    values (counted as they are converted: a list that holds itself ten times, ten levels
    deep, stops at the limit), keys that are strings or integers, integers Python can print,
    strings without lone surrogates. Errors carry the JSON path (there is no file)."""
    checker = _MappingChecker(budget.values_left())
    out = checker.convert(src, None, ())
    budget.charge_values(checker.count, None, "")
    return out


class _MappingChecker:
    """One walk over a Python mapping: conversion, limits, and strings checked once each."""

    def __init__(self, left: int) -> None:
        self.left = left
        self.count = 0
        self.seen: set[int] = set()  # ids of strings already checked (shared strings)

    def tick(self, path: JsonPath) -> None:
        self.count += 1
        if self.count > self.left:
            raise located_error(
                SYNTAX_ERROR,
                f"Too many values: the mapping has more than {self.left:,} values (keys "
                f"included, shared lists and mappings counted at every use); the limit for a "
                f"config and everything it imports is {MAX_VALUES:,}.",
                None,
                path,
            )

    def text(self, value: str, path: JsonPath) -> None:
        if id(value) not in self.seen:
            self.seen.add(id(value))
            if has_surrogate(value):
                raise surrogate_error(value, None, path)

    def convert(self, obj: Any, key: Any, path: JsonPath) -> Any:
        self.tick(path)
        mapping = isinstance(obj, Mapping) and not is_model(obj)
        if (mapping or isinstance(obj, (list, tuple))) and len(path) >= MAX_DEPTH:
            raise depth_error(None, path)
        if mapping:
            return self.mapping(obj, key, path)
        if isinstance(obj, list):
            return [self.convert(v, None, (*path, i)) for i, v in enumerate(obj)]
        if isinstance(obj, tuple):
            return tuple(self.convert(v, None, (*path, i)) for i, v in enumerate(obj))
        if isinstance(obj, int) and not isinstance(obj, bool) and int_too_large(obj):
            raise int_error(0, None, path)
        if isinstance(obj, str):
            self.text(obj, path)
        return convert_scalar(key, obj)

    def mapping(self, obj: Mapping, key: Any, path: JsonPath) -> dict:
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise located_error(
                    SYNTAX_ERROR,
                    f"Mapping key {k!r} is {kind_of(k)}; keys must be strings or integers.",
                    None,
                    path,
                )
            self.tick(path)
            if isinstance(k, str):
                self.text(k, path)
            k = convert_key(key, k)
            out[k] = self.convert(v, k, (*path, k))
        return out


def is_model(obj: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(obj, BaseModel)


def copy_tree(obj: Any) -> Any:
    """Imported data is shared by every place that imports it; each place gets its own copy."""
    if isinstance(obj, dict):
        return {k: copy_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [copy_tree(v) for v in obj]
    return obj
