"""Where things were written: JSON path → file, line and column, and located errors.

Every source records the position of each key and value while it parses, so that a validation
error deep inside an imported file can still be reported as ``file:line:col``. ``Parsed`` is one
file or text after parsing and before its imports are resolved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qconfig.errors import ConfigError, format_path

SYNTAX_ERROR = "QC001"
DUPLICATE_KEY = "QC002"
VALIDATION_ERROR = "QC003"
IMPORT_ERROR = "QC004"
IO_ERROR = "QC005"
SHAPE_ERROR = "QC006"
JSON_SCHEMA_KEY = "$schema"
JsonPath = tuple[Any, ...]
Loc = tuple[str | None, int, int]  # file, 1-based line, 1-based column


class Locations:
    """JSON path → where its value starts and, for mapping members, where its key is."""

    __slots__ = ("keys", "values")

    def __init__(self) -> None:
        self.values: dict[JsonPath, Loc] = {}
        self.keys: dict[JsonPath, Loc] = {}

    def graft(self, other: Locations, dst: JsonPath) -> None:
        """Copy all of ``other``'s locations below ``dst`` (imported content keeps its file)."""
        for table, out in ((other.values, self.values), (other.keys, self.keys)):
            for path, loc in table.items():
                out[dst + path] = loc

    def graft_children(self, other: Locations, moves: dict[Any, JsonPath]) -> None:
        """Copy the locations under each top-level key/index ``k`` of ``other`` to ``moves[k]``.

        One pass over ``other`` for all children: a unit of 24 entries is spliced in linear time.
        """
        for table, out in ((other.values, self.values), (other.keys, self.keys)):
            for path, loc in table.items():
                if path and path[0] in moves:
                    out[moves[path[0]] + path[1:]] = loc

    def add_member(self, first: dict[Any, Loc], member: Any, where: Loc, path: JsonPath) -> None:
        """Record mapping member ``member`` of the mapping at ``path``, whose key is at
        ``where``; ``first`` holds the members seen so far in that mapping. A member seen before
        is a duplicate key, an error in YAML and JSON files alike."""
        if member in first:
            _, line, column = first[member]
            raise located_error(
                DUPLICATE_KEY,
                f"Duplicate key {member!r} (first defined at line {line}, column {column}).",
                where,
                (*path, member),
            )
        first[member] = where
        self.keys[(*path, member)] = where

    def locate(self, path: JsonPath, prefer_key: bool) -> Loc | None:
        """The location of ``path``, else of its nearest recorded ancestor (by its key)."""
        if prefer_key and path in self.keys:
            return self.keys[path]
        if path in self.values:
            return self.values[path]
        while path:
            path = path[:-1]
            loc = self.keys.get(path) or self.values.get(path)
            if loc is not None:
                return loc
        return None


def located_error(
    code: str, message: str, loc: Loc | None, path: JsonPath = (), file: str | None = None
):
    from qconfig.diagnostic import Diagnostic  # made only for errors (qconfig.errors)

    file_, line, column = loc if loc is not None else (file, None, None)
    return ConfigError(
        [Diagnostic(code, "error", message, file_, line, column, format_path(list(path)))]
    )


class Parsed:
    """One file or text, parsed but not yet import-resolved.

    (Plain classes rather than dataclasses here: building a dataclass costs import time, and
    this module sits on the path of every ``load_config`` cold start.)
    """

    __slots__ = ("base_dir", "body", "file", "imports", "locs", "schema", "schema_loc")

    def __init__(
        self,
        body: Any,  # dict or list (``imports`` removed)
        imports: Any,  # the ``imports`` value, or None
        locs: Locations,
        file: str | None,
        base_dir: Path,
        schema: str | None = None,  # declared schema (canonical short name)
        schema_loc: Loc | None = None,  # where the schema comment is
    ) -> None:
        self.body = body
        self.imports = imports
        self.locs = locs
        self.file = file
        self.base_dir = base_dir
        self.schema = schema
        self.schema_loc = schema_loc


def drop_schema_key(mapping: dict, locs: Locations, file: str | None) -> None:
    """Remove ``$schema`` (for editors, not config); it must be a string, as the published
    schema says, so that lint is never laxer than an editor."""
    if JSON_SCHEMA_KEY not in mapping:
        return
    value = mapping.pop(JSON_SCHEMA_KEY)
    if not isinstance(value, str):
        path = (JSON_SCHEMA_KEY,)
        raise located_error(
            SHAPE_ERROR,
            f"'$schema' must be a string (a URL or a path to a JSON Schema), got {kind_of(value)}.",
            locs.values.get(path) or locs.values.get(()) or (file, 1, 1),
            path,
        )


def finish_parse(
    body: Any,
    locs: Locations,
    file: str | None,
    base_dir: Path,
    schema: str | None = None,
    schema_loc: Loc | None = None,
) -> Parsed:
    if isinstance(body, dict):
        drop_schema_key(body, locs, file)  # JSON Schema declarations for editors, not config
        imports = body.pop("imports", None)
    elif isinstance(body, list):
        imports = None
    else:
        raise located_error(
            SHAPE_ERROR,
            f"A config must be a mapping or a list, got {kind_of(body)}.",
            locs.values.get(()) or (file, 1, 1),
        )
    return Parsed(body, imports, locs, file, base_dir, schema, schema_loc)


def kind_of(value: Any) -> str:
    return "null" if value is None else type(value).__name__
