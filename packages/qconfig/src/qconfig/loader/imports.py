"""``imports:`` and ``$import``: find, load, validate and splice snippets.

The lookup order is in :mod:`qconfig.loader`'s docstring. Each snippet is resolved once per load
(``ImportSession`` caches it and detects cycles) and copied wherever it is used, carrying its
own file's locations along so that errors inside it point into that file. Every copy is charged
to the load's :class:`~qconfig.loader.limits.LoadBudget` before it is made, and checked against
the nesting limit where it lands, so files that import each other many times over are refused
at the import that goes too far; chains of imports stop at ``MAX_IMPORT_DEPTH`` files.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any

from qconfig.errors import ConfigError
from qconfig.loader.convert import copy_tree
from qconfig.loader.diagnostics import validation_diagnostics
from qconfig.loader.limits import (
    MAX_DEPTH,
    MAX_IMPORT_DEPTH,
    LoadBudget,
    depth_error,
    measure,
)
from qconfig.loader.locations import (
    IMPORT_ERROR,
    JsonPath,
    Loc,
    Locations,
    Parsed,
    kind_of,
    located_error,
)
from qconfig.loader.schemas import (
    child_schema,
    element_schema,
    schema_name,
    schema_table,
    unwrap_type,
    validate_as,
)
from qconfig.loader.sources import SUFFIXES, parse_text, read_source

#: Directory of the packaged presets and units (``qconfig/...`` import names resolve here).
PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
_PACKAGED_PREFIX = "qconfig/"
_MODELOPT_BUILTIN_PREFIXES = ("configs/numerics/", "configs/ptq/units/")
_IMPORT = "$import"


class _Snippet:
    """An imported file, resolved and validated against its declared schema."""

    __slots__ = ("data", "depth", "file", "locs", "schema", "size")

    def __init__(self, data: Any, locs: Locations, schema: str, file: str) -> None:
        self.data = data
        self.locs = locs
        self.schema = schema
        self.file = file
        self.size, self.depth = measure(data)  # what each copy costs, how deep it nests


class ImportSession:
    """State of one load: the import chain (cycle detection) and files already resolved."""

    def __init__(self, root_dir: Path, budget: LoadBudget | None = None) -> None:
        self.root_dir = root_dir
        self.chain: list[tuple[str, str]] = []  # (canonical key, display name)
        self.cache: dict[str, _Snippet] = {}
        self.budget = budget if budget is not None else LoadBudget()
        self.level = 1  # files in the chain being resolved, the loaded file or text included

    def display(self, file: str) -> str:
        try:
            rel = os.path.relpath(file, self.root_dir)
        except ValueError:  # another drive on Windows
            return file
        return file if rel.startswith("..") else rel

    def find(self, target: str, base_dir: Path) -> tuple[Path, str] | None:
        """Locate an import target (see the module docstring for the order)."""
        if target.startswith(_PACKAGED_PREFIX):
            candidates = [PRESETS_DIR / target[len(_PACKAGED_PREFIX) :]]
        else:
            candidates = [base_dir / target]
            for prefix in _MODELOPT_BUILTIN_PREFIXES:
                if target.startswith(prefix):
                    candidates.append(PRESETS_DIR / "units" / target[len(prefix) :])
        for candidate in candidates:
            names = (
                [candidate]
                if target.endswith(SUFFIXES)
                else [candidate.with_name(candidate.name + suffix) for suffix in (".yml", ".yaml")]
            )
            for name in names:
                if _present(name):
                    return name, os.path.normpath(name)
        return None

    def load_import(self, alias: Any, target: Any, site: Loc | None, parsed: Parsed) -> _Snippet:
        if not isinstance(target, str) or not target:
            raise located_error(
                IMPORT_ERROR,
                f"Import {alias!r} must be a non-empty path string, got {target!r}.",
                site,
                ("imports", alias),
            )
        found = self.find(target, parsed.base_dir)
        if found is None:
            raise located_error(
                IMPORT_ERROR,
                f"Cannot find import {alias!r}: {target!r} (looked relative to "
                f"{os.path.normpath(parsed.base_dir)!s}; packaged files are named "
                "'qconfig/units/<name>').",
                site,
                ("imports", alias),
            )
        path, file = found
        key = canonical_key(path)
        keys = [k for k, _ in self.chain]
        if key in keys:
            cycle = [display for _, display in self.chain[keys.index(key) :]] + [self.display(file)]
            raise located_error(
                IMPORT_ERROR, f"Circular import: {' -> '.join(cycle)}", site, ("imports", alias)
            )
        if key in self.cache:
            return self.cache[key]
        if self.level >= MAX_IMPORT_DEPTH:
            raise self.too_deep(file, site, alias)
        text = read_source(path, file, site, self.budget, ("imports", alias))
        snippet_parsed = parse_text(text, file, path.parent, path.suffix.lower(), self.budget)
        if snippet_parsed.schema is None:
            raise located_error(
                IMPORT_ERROR,
                f"Import {alias!r} ({file}) must reference a snippet with a modelopt-schema "
                "comment naming its type, e.g. '# modelopt-schema: qconfig.QuantizerCfgEntry'.",
                site,
                ("imports", alias),
            )
        schema_type = schema_table()[snippet_parsed.schema]
        self.chain.append((key, self.display(file)))
        self.level += 1
        try:
            data, locs = self.resolve(snippet_parsed, schema_type)
        finally:
            self.chain.pop()
            self.level -= 1
        try:
            validate_as(schema_type, data)
        except ValueError as exc:
            raise ConfigError(
                validation_diagnostics(exc, data, locs, schema_type, file=file)
            ) from None
        snippet = _Snippet(data, locs, snippet_parsed.schema, file)
        self.cache[key] = snippet
        return snippet

    def too_deep(self, file: str, site: Loc | None, alias: Any) -> Exception:
        """Imports nested beyond ``MAX_IMPORT_DEPTH`` files: refused at the import that goes
        one further, naming the ends of the chain (a real recipe nests three)."""
        names = [display for _, display in self.chain] + [self.display(file)]
        shown = names if len(names) <= 6 else [*names[:3], "...", *names[-2:]]
        return located_error(
            IMPORT_ERROR,
            f"Imports nested too deep: more than {MAX_IMPORT_DEPTH} files in one chain of "
            f"imports ({' -> '.join(shown)}).",
            site,
            ("imports", alias),
        )

    def resolve(self, parsed: Parsed, schema: Any) -> tuple[Any, Locations]:
        """Resolve ``imports``/``$import`` of one parsed file; returns data and its locations."""
        imports: dict[str, _Snippet] = {}
        if parsed.imports is not None:
            if not isinstance(parsed.imports, dict):
                raise located_error(
                    IMPORT_ERROR,
                    f"'imports' must map names to config paths, got {kind_of(parsed.imports)}.",
                    parsed.locs.locate(("imports",), True),
                    ("imports",),
                    file=parsed.file,
                )
            for alias, target in parsed.imports.items():
                site = parsed.locs.values.get(("imports", alias))
                imports[alias] = self.load_import(alias, target, site, parsed)
        out = Locations()
        resolver = _Resolver(imports, parsed, out, self.budget)
        return resolver.value(parsed.body, (), schema, ()), out


def canonical_key(path: Path) -> str:
    """The one name of a file however it is reached (``realpath``, which, unlike
    ``Path.resolve``, never raises on a symlink loop)."""
    return os.path.normcase(os.path.realpath(path))


def _present(path: Path) -> bool:
    """Whether an import candidate exists: anything ``stat`` finds, and anything it may not
    look at (reading it then says "permission denied" at the import, where "cannot find" would
    mislead). ``Path.is_file`` would skip a FIFO or a directory silently, and raises
    ``PermissionError`` inside a directory we may not search."""
    try:
        os.stat(path)
    except PermissionError:
        return True
    except (OSError, ValueError):
        return False
    return True


class _Resolver:
    """Rebuilds one file's body with every ``$import`` replaced, carrying locations along."""

    def __init__(
        self, imports: dict[str, _Snippet], parsed: Parsed, out: Locations, budget: LoadBudget
    ) -> None:
        self.imports = imports
        self.parsed = parsed
        self.src = parsed.locs
        self.out = out
        self.budget = budget

    def use(self, snippet: _Snippet, name: Any, src: JsonPath, dst: JsonPath) -> None:
        """Charge a copy of ``snippet`` before it is made, and refuse it where it would nest
        too deep (``dst`` is where its top level lands)."""
        site = self.src.values.get((*src, _IMPORT)) or self.src.locate(src, False)
        if len(dst) + snippet.depth > MAX_DEPTH:
            raise depth_error(site, (*src, _IMPORT), file=self.parsed.file)
        total = self.budget.values + snippet.size
        self.budget.charge_values(
            snippet.size,
            site,
            f"importing {name!r} ({snippet.file}, {snippet.size:,} values) here brings the "
            f"values built by expanding aliases and imports to {total:,}",
            (*src, _IMPORT),
        )

    def lookup(self, name: Any, where: JsonPath) -> _Snippet:
        snippet = self.imports.get(name) if isinstance(name, str) else None
        if snippet is None:
            available = ", ".join(repr(a) for a in self.imports) or "none are declared"
            raise located_error(
                IMPORT_ERROR,
                f"Unknown $import reference {name!r}; available imports: {available}.",
                self.src.values.get((*where, _IMPORT)) or self.src.locate(where, False),
                (*where, _IMPORT),
                file=self.parsed.file,
            )
        return snippet

    def value(self, obj: Any, src: JsonPath, schema: Any, dst: JsonPath) -> Any:
        if src in self.src.values:
            self.out.values[dst] = self.src.values[src]
        if src in self.src.keys:
            self.out.keys[dst] = self.src.keys[src]
        if isinstance(obj, dict):
            if _IMPORT in obj:
                return self.merge_import(obj, src, schema, dst)
            return {
                k: self.value(v, (*src, k), child_schema(schema, k), (*dst, k))
                for k, v in obj.items()
            }
        if isinstance(obj, list):
            element = element_schema(schema)
            out: list = []
            for i, item in enumerate(obj):
                if isinstance(item, dict) and len(item) == 1 and _IMPORT in item:
                    snippet, splice = self.list_import(item[_IMPORT], (*src, i), schema)
                    self.use(snippet, item[_IMPORT], (*src, i), dst if splice else (*dst, 0))
                    if splice:
                        moves = {j: (*dst, len(out) + j) for j in range(len(snippet.data))}
                        self.out.graft_children(snippet.locs, moves)
                        out.extend(copy_tree(snippet.data))
                    else:
                        self.out.graft(snippet.locs, (*dst, len(out)))
                        out.append(copy_tree(snippet.data))
                else:
                    out.append(self.value(item, (*src, i), element, (*dst, len(out))))
            return out
        return obj

    def merge_import(self, obj: dict, src: JsonPath, schema: Any, dst: JsonPath) -> dict:
        """``{$import: a, key: v}``: the snippet(s) merged left to right, inline keys win."""
        refs = obj[_IMPORT]
        merged: dict[Any, tuple[_Snippet | None, Any]] = {}
        for name in refs if isinstance(refs, list) else [refs]:
            snippet = self.lookup(name, src)
            if not isinstance(snippet.data, dict):
                raise located_error(
                    IMPORT_ERROR,
                    f"$import {name!r} in a mapping must resolve to a mapping, got "
                    f"{kind_of(snippet.data)} ({snippet.schema}).",
                    self.src.values.get((*src, _IMPORT)),
                    (*src, _IMPORT),
                )
            self.use(snippet, name, src, dst)
            for key in snippet.data:
                merged[key] = (snippet, None)
        for key, value in obj.items():
            if key != _IMPORT:
                merged[key] = (None, value)
        out = {}
        moves: dict[int, tuple[_Snippet, dict[Any, JsonPath]]] = {}
        for key, (snippet, value) in merged.items():
            if snippet is not None:
                moves.setdefault(id(snippet), (snippet, {}))[1][key] = (*dst, key)
                out[key] = copy_tree(snippet.data[key])
            else:
                out[key] = self.value(value, (*src, key), child_schema(schema, key), (*dst, key))
        for snippet, snippet_moves in moves.values():
            self.out.graft_children(snippet.locs, snippet_moves)
        return out

    def list_import(self, name: Any, src: JsonPath, list_schema: Any) -> tuple[_Snippet, bool]:
        """A sole-key ``{$import: a}`` list element: the snippet, and whether it is spliced
        (a list of the list's element type) rather than appended (one element)."""
        snippet = self.lookup(name, src)
        element = element_schema(list_schema)
        site = self.src.values.get((*src, _IMPORT))
        snippet_type = schema_table()[snippet.schema]
        if element is None:
            raise located_error(
                IMPORT_ERROR,
                f"$import {name!r} inside a list needs a list of known element type here.",
                site,
                (*src, _IMPORT),
            )
        if snippet_type == unwrap_type(list_schema):
            return snippet, True
        if snippet_type == element or (
            isinstance(snippet.data, dict) and typing.get_origin(element) is dict
        ):
            return snippet, False
        raise located_error(
            IMPORT_ERROR,
            f"$import {name!r} has schema {snippet.schema}; this list takes "
            f"{schema_name(element)} elements (appended) or a list of them (spliced).",
            site,
            (*src, _IMPORT),
        )
