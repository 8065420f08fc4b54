"""Load quantization configs from YAML/JSON files, text or mappings (config-semantics §13).

Why not ``yaml.safe_load`` + ``QuantizeConfig(**data)``: users need to know *where* a config is
wrong. While parsing we record the line and column of every key and value, so a pydantic error at
``quant_cfg[3].cfg.block_sizes`` is reported as ``int4.yaml:14:9``, including errors inside
imported files. Two behaviours of Model Optimizer's loader are deliberately not copied: a
duplicate key is an error here (PyYAML silently keeps the last one), and ``imports`` resolve
relative to the *importing file*, never the current directory (§13.3 lets a stray file in the
CWD shadow a packaged snippet, even while the preset constants are being built).

File format (as Model Optimizer's, §13.2): one YAML document (mapping or list) or two (a header
mapping carrying ``imports:`` and a body); an optional ``# modelopt-schema: <path>`` comment in
the leading comment block names the snippet's type; ``imports: {alias: path}`` plus
``$import: alias`` references (in a mapping: merged, inline keys win; as a sole-key list element:
spliced when the snippet is a list of the list's element type, appended when it is one element).
Schema paths may be Model Optimizer's (``modelopt.torch.quantization.config.QuantizerCfgEntry``)
or ours (``qconfig.QuantizerCfgEntry``); ``QuantizerCfgListConfig`` is ``list[QuantizerCfgEntry]``.

Import paths are looked up in this order:

1. ``qconfig/<rest>``: a file shipped in this package under ``qconfig/presets/<rest>``, e.g.
   ``qconfig/units/default_disabled_quantizers`` or ``qconfig/int8_default``. Never shadowed.
2. An absolute path, or a path relative to the directory of the importing file (for text and
   mappings, relative to ``base_dir``, which defaults to the current directory since there is
   no file).
3. Model Optimizer's built-in names ``configs/numerics/<x>`` and ``configs/ptq/units/<x>``, when
   no such file exists under rule 2, map to our packaged ``qconfig/units/<x>``, so recipes written
   for Model Optimizer load unchanged.

A path without ``.yml``/``.yaml``/``.json`` suffix tries ``.yml`` then ``.yaml``.

Every failure raises :class:`qconfig.ConfigError` whose diagnostics carry a code, the file, the
1-based line and column, and the JSON path: ``QC001`` syntax, ``QC002`` duplicate key, ``QC003``
validation, ``QC004`` import, ``QC005`` I/O, ``QC006`` document shape (root type, number of
documents, schema comment, recipe sections).
"""

from __future__ import annotations

import functools
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qconfig.errors import ConfigError, Diagnostic, format_path

if TYPE_CHECKING:  # the models are imported lazily; annotations only
    from qconfig.quantize import QuantizeConfig

__all__ = [
    "DUPLICATE_KEY",
    "IMPORT_ERROR",
    "IO_ERROR",
    "PRESETS_DIR",
    "SHAPE_ERROR",
    "SYNTAX_ERROR",
    "VALIDATION_ERROR",
    "Document",
    "Recipe",
    "load_config",
    "load_document",
    "load_recipe",
    "load_snippet",
]

SYNTAX_ERROR = "QC001"
DUPLICATE_KEY = "QC002"
VALIDATION_ERROR = "QC003"
IMPORT_ERROR = "QC004"
IO_ERROR = "QC005"
SHAPE_ERROR = "QC006"

#: Directory of the packaged presets and units (``qconfig/...`` import names resolve here).
PRESETS_DIR = Path(__file__).resolve().parent / "presets"

_PACKAGED_PREFIX = "qconfig/"
_MODELOPT_BUILTIN_PREFIXES = ("configs/numerics/", "configs/ptq/units/")
_SUFFIXES = (".yml", ".yaml", ".json")
_IMPORT = "$import"
_JSON_SCHEMA_KEY = "$schema"
_EXMY_RE = re.compile(r"^[Ee](\d+)[Mm](\d+)$")
_EXMY_KEYS = frozenset({"num_bits", "scale_bits"})
_INT_KEY_RE = re.compile(r"^-?(?:0|[1-9][0-9]*)$")
_INT_KEY_PARENTS = frozenset({"block_sizes", "bias", "scale_block_sizes"})
_SCHEMA_COMMENT_RE = re.compile(r"^\s*#\s*modelopt-schema:\s*(\S+)\s*$")
_MAX_NODES = 1_000_000  # guards against alias bombs ("billion laughs")

_Path = tuple[Any, ...]
_Loc = tuple[str | None, int, int]  # file, 1-based line, 1-based column


# --------------------------------------------------------------------------------------------
# Raw-value conversions shared by every source (YAML, JSON, mappings)
# --------------------------------------------------------------------------------------------
def _convert_key(container_key: Any, key: Any) -> Any:
    """``"-1"`` → ``-1`` for axis keys: JSON cannot write int keys, the models need them (§15.20)."""
    if container_key in _INT_KEY_PARENTS and isinstance(key, str) and _INT_KEY_RE.match(key):
        return int(key)
    return key


def _convert_scalar(key: Any, value: Any) -> Any:
    """``num_bits: e4m3`` → ``(4, 3)``, as Model Optimizer's YAML loader does (§13.3)."""
    if key in _EXMY_KEYS and isinstance(value, str):
        match = _EXMY_RE.match(value)
        if match:
            return (int(match.group(1)), int(match.group(2)))
    return value


def _convert_tree(obj: Any, key: Any = None) -> Any:
    """Apply both conversions to plain Python data (JSON and mapping sources); copies containers."""
    if isinstance(obj, Mapping) and not _is_model(obj):
        return {_convert_key(key, k): _convert_tree(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_convert_tree(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_convert_tree(v) for v in obj)
    return _convert_scalar(key, obj)


def _is_model(obj: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(obj, BaseModel)


def _copy_tree(obj: Any) -> Any:
    """Imported data is shared by every place that imports it; each place gets its own copy."""
    if isinstance(obj, dict):
        return {k: _copy_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy_tree(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------------------------
class _Locs:
    """JSON path → where its value starts and, for mapping members, where its key is."""

    __slots__ = ("keys", "values")

    def __init__(self) -> None:
        self.values: dict[_Path, _Loc] = {}
        self.keys: dict[_Path, _Loc] = {}

    def graft(self, other: _Locs, dst: _Path) -> None:
        """Copy all of ``other``'s locations below ``dst`` (imported content keeps its file)."""
        for table, out in ((other.values, self.values), (other.keys, self.keys)):
            for path, loc in table.items():
                out[dst + path] = loc

    def graft_children(self, other: _Locs, moves: dict[Any, _Path]) -> None:
        """Copy the locations under each top-level key/index ``k`` of ``other`` to ``moves[k]``.

        One pass over ``other`` for all children: a unit of 24 entries is spliced in linear time.
        """
        for table, out in ((other.values, self.values), (other.keys, self.keys)):
            for path, loc in table.items():
                if path and path[0] in moves:
                    out[moves[path[0]] + path[1:]] = loc

    def locate(self, path: _Path, prefer_key: bool) -> _Loc | None:
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


def _error(code: str, message: str, loc: _Loc | None, path: _Path = (), file: str | None = None):
    file_, line, column = loc if loc is not None else (file, None, None)
    return ConfigError(
        [Diagnostic(code, "error", message, file_, line, column, format_path(list(path)))]
    )


# --------------------------------------------------------------------------------------------
# Parsing: YAML
# --------------------------------------------------------------------------------------------
class _Parsed:
    """One file or text, parsed but not yet import-resolved.

    (Plain classes rather than dataclasses here: building a dataclass costs import time, and
    this module sits on the path of every ``load_config`` cold start.)
    """

    __slots__ = ("base_dir", "body", "file", "imports", "locs", "schema")

    def __init__(
        self,
        body: Any,  # dict or list (``imports`` removed)
        imports: Any,  # the ``imports`` value, or None
        locs: _Locs,
        file: str | None,
        base_dir: Path,
        schema: str | None = None,  # declared schema (canonical short name)
    ) -> None:
        self.body = body
        self.imports = imports
        self.locs = locs
        self.file = file
        self.base_dir = base_dir
        self.schema = schema


def _yaml_loader_class():
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _YamlBuilder:
    """Turns composed YAML nodes into Python data, recording locations and rejecting duplicates.

    We walk the node graph ourselves instead of subclassing the constructor because only the
    walk knows each node's JSON path; scalars are still built by PyYAML's safe constructor.
    """

    def __init__(self, loader: Any, file: str | None, locs: _Locs) -> None:
        self.loader = loader
        self.file = file
        self.locs = locs
        self.nodes = 0
        self.active: set[int] = set()

    def loc(self, node: Any) -> _Loc:
        return (self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: Any, path: _Path, key: Any = None) -> Any:
        import yaml

        self.nodes += 1
        if self.nodes > _MAX_NODES:
            raise _error(SYNTAX_ERROR, "Document too large (alias expansion).", self.loc(node))
        self.locs.values[path] = self.loc(node)
        if isinstance(node, yaml.ScalarNode):
            return _convert_scalar(key, self.scalar(node))
        if id(node) in self.active:
            raise _error(SYNTAX_ERROR, "Recursive YAML alias.", self.loc(node), path)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
            return self.build_mapping(node, path, key)
        finally:
            self.active.discard(id(node))

    def scalar(self, node: Any) -> Any:
        import yaml

        if node.tag == "tag:yaml.org,2002:str":
            return node.value
        try:
            return self.loader.construct_object(node)
        except yaml.YAMLError as exc:
            raise _yaml_error(exc, self.file) from None

    def build_mapping(self, node: Any, path: _Path, container_key: Any) -> dict:
        import yaml

        out: dict = {}
        first: dict[Any, _Loc] = {}
        merges: list[Any] = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merges.extend(
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise _error(
                    SYNTAX_ERROR, "Mapping keys must be scalars.", self.loc(key_node), path
                )
            key = _convert_key(container_key, self.scalar(key_node))
            where = self.loc(key_node)
            if key in first:
                _, line, column = first[key]
                raise _error(
                    DUPLICATE_KEY,
                    f"Duplicate key {key!r} (first defined at line {line}, column {column}).",
                    where,
                    (*path, key),
                )
            first[key] = where
            self.locs.keys[(*path, key)] = where
            out[key] = self.build(value_node, (*path, key), key)
        # YAML merge keys ('<<'): explicit keys win, and among merged mappings the first wins.
        for source in merges:
            own, self.locs = self.locs, _Locs()
            try:
                value = self.build(source, (), container_key)
            finally:
                merged_locs, self.locs = self.locs, own
            if not isinstance(value, dict):
                raise _error(
                    SYNTAX_ERROR, "A YAML merge key ('<<') needs mappings.", self.loc(source), path
                )
            moves = {}
            for key, item in value.items():
                if key not in out:
                    out[key] = item
                    moves[key] = (*path, key)
            self.locs.graft_children(merged_locs, moves)
        return out


def _yaml_error(exc: Exception, file: str | None) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    loc = (file, mark.line + 1, mark.column + 1) if mark is not None else None
    return _error(SYNTAX_ERROR, message, loc, file=file)


def _parse_schema_comment(text: str, file: str | None) -> str | None:
    """``# modelopt-schema: X`` in the leading comment block (blank lines allowed, §13.2)."""
    found: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break
        match = _SCHEMA_COMMENT_RE.match(line)
        if not match:
            continue
        loc = (file, number, line.index("#") + 1)
        if found is not None:
            raise _error(SHAPE_ERROR, "More than one modelopt-schema comment.", loc, file=file)
        found = _canonical_schema(match.group(1), loc)
    return found


def _parse_yaml(text: str, file: str | None, base_dir: Path) -> _Parsed:
    import yaml

    schema = _parse_schema_comment(text, file)
    locs = _Locs()
    loader = _yaml_loader_class()(text)
    try:
        nodes = []
        while loader.check_node():
            nodes.append(loader.get_node())
            if len(nodes) > 2:
                raise _error(
                    SHAPE_ERROR,
                    "Expected 1 or 2 YAML documents (an optional header with 'imports', then "
                    "the body), got more.",
                    (file, nodes[-1].start_mark.line + 1, nodes[-1].start_mark.column + 1),
                )
        builder = _YamlBuilder(loader, file, locs)
        docs = [builder.build(node, ()) for node in nodes]
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, file) from None
    finally:
        loader.dispose()
    if len(docs) == 2:
        # The body's locations were recorded last, under the same root; the header's keys
        # survive where the body does not redefine them.
        header, body = docs
        if header is None:
            header = {}
        if not isinstance(header, dict):
            raise _error(
                SHAPE_ERROR,
                "The first of two YAML documents must be a mapping.",
                _root_loc(nodes[0], file),
            )
        header.pop(_JSON_SCHEMA_KEY, None)
        if body is None:
            body = {}
        if isinstance(body, dict):
            body = {**header, **body}
        elif isinstance(body, list):
            locs.values[()] = _root_loc(nodes[1], file)
            return _Parsed(body, header.get("imports"), locs, file, base_dir, schema)
        else:
            raise _error(
                SHAPE_ERROR,
                f"The second YAML document must be a mapping or a list, got {_kind(body)}.",
                _root_loc(nodes[1], file),
            )
    else:
        body = docs[0] if docs else None
        if body is None:
            body = {}
            locs.values[()] = (file, 1, 1)
    return _finish(body, locs, file, base_dir, schema)


def _root_loc(node: Any, file: str | None) -> _Loc:
    return (file, node.start_mark.line + 1, node.start_mark.column + 1)


def _finish(
    body: Any,
    locs: _Locs,
    file: str | None,
    base_dir: Path,
    schema: str | None = None,
) -> _Parsed:
    if isinstance(body, dict):
        body.pop(_JSON_SCHEMA_KEY, None)  # JSON Schema declarations for editors, not config
        imports = body.pop("imports", None)
    elif isinstance(body, list):
        imports = None
    else:
        raise _error(
            SHAPE_ERROR,
            f"A config must be a mapping or a list, got {_kind(body)}.",
            locs.values.get(()) or (file, 1, 1),
        )
    return _Parsed(body, imports, locs, file, base_dir, schema)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# --------------------------------------------------------------------------------------------
# Parsing: JSON
# --------------------------------------------------------------------------------------------
class _DuplicateJsonKey(Exception):
    pass


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateJsonKey(key)
        out[key] = value
    return out


def _parse_json(text: str, file: str | None, base_dir: Path) -> _Parsed:
    import json

    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as exc:
        raise _error(
            SYNTAX_ERROR, f"JSON syntax error: {exc.msg}", (file, exc.lineno, exc.colno)
        ) from None
    except _DuplicateJsonKey:
        data = None  # the scanner below finds both occurrences and raises
    except RecursionError:
        raise _error(SYNTAX_ERROR, "JSON nesting too deep.", None, file=file) from None
    locs = _Locs()
    _JsonScanner(text, file, locs).scan()
    return _finish(_convert_tree(data), locs, file, base_dir)


class _JsonScanner:
    """Records where each JSON value and key starts (``json`` keeps no positions).

    Runs only on text that ``json.loads`` accepted (or rejected for a duplicate key), so it can
    trust the grammar and stay small.
    """

    _WS = re.compile(r"[ \t\n\r]*")
    _STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
    _ATOM = re.compile(r"[^\s,\]}]+")

    def __init__(self, text: str, file: str | None, locs: _Locs) -> None:
        self.text = text
        self.file = file
        self.locs = locs
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def loc(self, index: int) -> _Loc:
        from bisect import bisect_right

        line = bisect_right(self.line_starts, index)
        return (self.file, line, index - self.line_starts[line - 1] + 1)

    def ws(self, i: int) -> int:
        return self._WS.match(self.text, i).end()  # type: ignore[union-attr]

    def scan(self) -> None:
        self.value(self.ws(0), (), None)

    def value(self, i: int, path: _Path, key: Any) -> int:
        import json

        text = self.text
        self.locs.values[path] = self.loc(i)
        char = text[i]
        if char == "{":
            i = self.ws(i + 1)
            first: dict[Any, _Loc] = {}
            if text[i] == "}":
                return i + 1
            while True:
                match = self._STRING.match(text, i)
                assert match is not None
                member = _convert_key(key, json.loads(match.group()))
                where = self.loc(i)
                if member in first:
                    _, line, column = first[member]
                    raise _error(
                        DUPLICATE_KEY,
                        f"Duplicate key {member!r} (first defined at line {line}, column {column}).",
                        where,
                        (*path, member),
                    )
                first[member] = where
                self.locs.keys[(*path, member)] = where
                i = self.ws(match.end()) + 1  # past ':'
                i = self.ws(self.value(self.ws(i), (*path, member), member))
                if text[i] == "}":
                    return i + 1
                i = self.ws(i + 1)  # past ','
        if char == "[":
            i = self.ws(i + 1)
            index = 0
            if text[i] == "]":
                return i + 1
            while True:
                i = self.ws(self.value(i, (*path, index), None))
                index += 1
                if text[i] == "]":
                    return i + 1
                i = self.ws(i + 1)
        match = (self._STRING if char == '"' else self._ATOM).match(text, i)
        assert match is not None
        return match.end()


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------
def _read(path: Path, file: str, loc: _Loc | None = None) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise _error(IO_ERROR, f"No such file: {file}", loc, file=None if loc else file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(
            IO_ERROR, f"Cannot read {file}: {exc}", loc, file=None if loc else file
        ) from None


def _parse_text(text: str, file: str | None, base_dir: Path, suffix: str = "") -> _Parsed:
    if suffix == ".json":
        return _parse_json(text, file, base_dir)
    if suffix in (".yaml", ".yml"):
        return _parse_yaml(text, file, base_dir)
    if text.lstrip()[:1] in ("{", "["):
        # JSON is tried first so that JSON-only spellings (1e5, duplicate checks with JSON
        # positions) behave as JSON; YAML flow syntax such as {quant_cfg: []} falls back.
        try:
            return _parse_json(text, file, base_dir)
        except ConfigError as json_error:
            if json_error.diagnostics[0].code != SYNTAX_ERROR:
                raise
            try:
                return _parse_yaml(text, file, base_dir)
            except ConfigError as yaml_error:
                if yaml_error.diagnostics[0].code != SYNTAX_ERROR:
                    raise
                raise json_error from None
    return _parse_yaml(text, file, base_dir)


def _looks_like_path(src: str) -> bool:
    return "\n" not in src and (src.endswith(_SUFFIXES) or os.path.isfile(src))


def _parse_source(src: Any, base_dir: str | os.PathLike | None) -> _Parsed:
    if isinstance(src, (str, os.PathLike)) and (not isinstance(src, str) or _looks_like_path(src)):
        path = Path(src)
        file = os.fspath(src)
        return _parse_text(_read(path, file), file, path.parent, path.suffix.lower())
    root = Path(base_dir) if base_dir is not None else Path.cwd()
    if isinstance(src, str):
        return _parse_text(src, None, root)
    if isinstance(src, Mapping):
        locs = _Locs()
        return _finish(_convert_tree(src), locs, None, root)
    raise TypeError(
        f"load_config expects a path, YAML/JSON text or a mapping, got {type(src).__name__}"
    )


# --------------------------------------------------------------------------------------------
# Schemas (for snippet validation and list splice/append decisions, §13.3)
# --------------------------------------------------------------------------------------------
_RECIPE = "recipe"  # pseudo-schema of a PTQ recipe: {metadata, quantize: QuantizeConfig}


@functools.cache
def _schemas() -> dict[str, Any]:
    import qconfig.algorithms as algorithms
    from qconfig.attributes import QuantizerAttributeConfig, RotateConfig
    from qconfig.entries import QuantizerCfgEntry
    from qconfig.quantize import CompressConfig, QuantizeConfig

    table: dict[str, Any] = {
        "QuantizeConfig": QuantizeConfig,
        "QuantizerCfgEntry": QuantizerCfgEntry,
        "QuantizerCfgListConfig": list[QuantizerCfgEntry],
        "QuantizeQuantCfgType": list[QuantizerCfgEntry],
        "QuantizerAttributeConfig": QuantizerAttributeConfig,
        "RotateConfig": RotateConfig,
        "CompressConfig": CompressConfig,
    }
    for name in algorithms.__all__:
        value = getattr(algorithms, name)
        if isinstance(value, type):
            table[name] = value
    return table


def _canonical_schema(declared: str, loc: _Loc | None) -> str:
    """``modelopt.torch.quantization.config.X`` / ``qconfig.X`` → ``X`` (a known schema)."""
    if not declared.startswith(("modelopt.", "qconfig.")):
        raise _error(
            SHAPE_ERROR,
            f"Unsupported modelopt-schema {declared!r}: it must start with 'modelopt.' or "
            "'qconfig.'.",
            loc,
        )
    name = declared.rpartition(".")[2]
    known = _schemas()
    if name not in known:
        raise _error(
            SHAPE_ERROR,
            f"Unknown modelopt-schema {declared!r}; known types: {', '.join(sorted(known))}.",
            loc,
        )
    return name


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``Optional`` wrappers that do not change a value's shape."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in map(_unwrap, typing.get_args(tp)) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
            return typing.Union[tuple(args)]  # noqa: UP007 - built from a runtime tuple
        return tp


@functools.lru_cache(maxsize=1024)
def _child_schema(schema: Any, key: Any) -> Any:
    if schema == _RECIPE:
        return _schemas()["QuantizeConfig"] if key == "quantize" else None
    fields = getattr(schema, "model_fields", None)
    if fields and isinstance(key, str) and key in fields:
        return _unwrap(fields[key].annotation)
    if typing.get_origin(schema) is dict:
        args = typing.get_args(schema)
        return _unwrap(args[1]) if len(args) == 2 else None
    return None


@functools.lru_cache(maxsize=256)
def _element_schema(schema: Any) -> Any:
    """``T`` of the one ``list[T]`` in ``schema`` (a union may hold one list type)."""
    schema = _unwrap(schema)
    origin = typing.get_origin(schema)
    if origin in (typing.Union, types.UnionType):
        found = [e for e in map(_element_schema, typing.get_args(schema)) if e is not None]
        unique = [e for i, e in enumerate(found) if e not in found[:i]]
        return unique[0] if len(unique) == 1 else None
    if origin is list:
        args = typing.get_args(schema)
        return _unwrap(args[0]) if len(args) == 1 and args[0] is not Any else None
    return None


def _validate_schema(schema: Any, data: Any) -> Any:
    """Validate ``data`` as ``schema``; raises pydantic's ``ValidationError``."""
    if isinstance(schema, type):
        return schema.model_validate(data)
    from qconfig.normalize import _ENTRY_LIST

    return _ENTRY_LIST.validate_python(data)  # the only list schema is list[QuantizerCfgEntry]


# --------------------------------------------------------------------------------------------
# Import resolution
# --------------------------------------------------------------------------------------------
class _Snippet:
    """An imported file, resolved and validated against its declared schema."""

    __slots__ = ("data", "file", "locs", "schema")

    def __init__(self, data: Any, locs: _Locs, schema: str, file: str) -> None:
        self.data = data
        self.locs = locs
        self.schema = schema
        self.file = file


class _Session:
    """State of one load: the import chain (cycle detection) and files already resolved."""

    def __init__(self, root_dir: Path) -> None:
        self.root_dir = root_dir
        self.chain: list[tuple[str, str]] = []  # (canonical key, display name)
        self.cache: dict[str, _Snippet] = {}

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
                if target.endswith(_SUFFIXES)
                else [candidate.with_name(candidate.name + suffix) for suffix in (".yml", ".yaml")]
            )
            for name in names:
                if name.is_file():
                    return name, os.path.normpath(name)
        return None

    def load_import(self, alias: Any, target: Any, site: _Loc | None, parsed: _Parsed) -> _Snippet:
        if not isinstance(target, str) or not target:
            raise _error(
                IMPORT_ERROR,
                f"Import {alias!r} must be a non-empty path string, got {target!r}.",
                site,
                ("imports", alias),
            )
        found = self.find(target, parsed.base_dir)
        if found is None:
            raise _error(
                IMPORT_ERROR,
                f"Cannot find import {alias!r}: {target!r} (looked relative to "
                f"{os.path.normpath(parsed.base_dir)!s}; packaged files are named "
                "'qconfig/units/<name>').",
                site,
                ("imports", alias),
            )
        path, file = found
        key = os.path.normcase(str(path.resolve()))
        keys = [k for k, _ in self.chain]
        if key in keys:
            cycle = [display for _, display in self.chain[keys.index(key) :]] + [self.display(file)]
            raise _error(
                IMPORT_ERROR, f"Circular import: {' -> '.join(cycle)}", site, ("imports", alias)
            )
        if key in self.cache:
            return self.cache[key]
        snippet_parsed = _parse_text(
            _read(path, file, site), file, path.parent, path.suffix.lower()
        )
        if snippet_parsed.schema is None:
            raise _error(
                IMPORT_ERROR,
                f"Import {alias!r} ({file}) must reference a snippet with a modelopt-schema "
                "comment naming its type, e.g. '# modelopt-schema: qconfig.QuantizerCfgEntry'.",
                site,
                ("imports", alias),
            )
        schema_type = _schemas()[snippet_parsed.schema]
        self.chain.append((key, self.display(file)))
        try:
            data, locs = self.resolve(snippet_parsed, schema_type)
        finally:
            self.chain.pop()
        try:
            _validate_schema(schema_type, data)
        except ValueError as exc:
            raise ConfigError(
                _validation_diagnostics(exc, data, locs, schema_type, file=file)
            ) from None
        snippet = _Snippet(data, locs, snippet_parsed.schema, file)
        self.cache[key] = snippet
        return snippet

    def resolve(self, parsed: _Parsed, schema: Any) -> tuple[Any, _Locs]:
        """Resolve ``imports``/``$import`` of one parsed file; returns data and its locations."""
        imports: dict[str, _Snippet] = {}
        if parsed.imports is not None:
            if not isinstance(parsed.imports, dict):
                raise _error(
                    IMPORT_ERROR,
                    f"'imports' must map names to config paths, got {_kind(parsed.imports)}.",
                    parsed.locs.locate(("imports",), True),
                    ("imports",),
                    file=parsed.file,
                )
            for alias, target in parsed.imports.items():
                site = parsed.locs.values.get(("imports", alias))
                imports[alias] = self.load_import(alias, target, site, parsed)
        out = _Locs()
        resolver = _Resolver(imports, parsed, out)
        return resolver.value(parsed.body, (), schema, ()), out


class _Resolver:
    """Rebuilds one file's body with every ``$import`` replaced, carrying locations along."""

    def __init__(self, imports: dict[str, _Snippet], parsed: _Parsed, out: _Locs) -> None:
        self.imports = imports
        self.parsed = parsed
        self.src = parsed.locs
        self.out = out

    def lookup(self, name: Any, where: _Path) -> _Snippet:
        snippet = self.imports.get(name) if isinstance(name, str) else None
        if snippet is None:
            available = ", ".join(repr(a) for a in self.imports) or "none are declared"
            raise _error(
                IMPORT_ERROR,
                f"Unknown $import reference {name!r}; available imports: {available}.",
                self.src.values.get((*where, _IMPORT)) or self.src.locate(where, False),
                (*where, _IMPORT),
                file=self.parsed.file,
            )
        return snippet

    def value(self, obj: Any, src: _Path, schema: Any, dst: _Path) -> Any:
        if src in self.src.values:
            self.out.values[dst] = self.src.values[src]
        if src in self.src.keys:
            self.out.keys[dst] = self.src.keys[src]
        if isinstance(obj, dict):
            if _IMPORT in obj:
                return self.merge_import(obj, src, schema, dst)
            return {
                k: self.value(v, (*src, k), _child_schema(schema, k), (*dst, k))
                for k, v in obj.items()
            }
        if isinstance(obj, list):
            element = _element_schema(schema)
            out: list = []
            for i, item in enumerate(obj):
                if isinstance(item, dict) and len(item) == 1 and _IMPORT in item:
                    snippet, splice = self.list_import(item[_IMPORT], (*src, i), schema)
                    if splice:
                        moves = {j: (*dst, len(out) + j) for j in range(len(snippet.data))}
                        self.out.graft_children(snippet.locs, moves)
                        out.extend(_copy_tree(snippet.data))
                    else:
                        self.out.graft(snippet.locs, (*dst, len(out)))
                        out.append(_copy_tree(snippet.data))
                else:
                    out.append(self.value(item, (*src, i), element, (*dst, len(out))))
            return out
        return obj

    def merge_import(self, obj: dict, src: _Path, schema: Any, dst: _Path) -> dict:
        """``{$import: a, key: v}``: the snippet(s) merged left to right, inline keys win."""
        refs = obj[_IMPORT]
        merged: dict[Any, tuple[_Snippet | None, Any]] = {}
        for name in refs if isinstance(refs, list) else [refs]:
            snippet = self.lookup(name, src)
            if not isinstance(snippet.data, dict):
                raise _error(
                    IMPORT_ERROR,
                    f"$import {name!r} in a mapping must resolve to a mapping, got "
                    f"{_kind(snippet.data)} ({snippet.schema}).",
                    self.src.values.get((*src, _IMPORT)),
                    (*src, _IMPORT),
                )
            for key in snippet.data:
                merged[key] = (snippet, None)
        for key, value in obj.items():
            if key != _IMPORT:
                merged[key] = (None, value)
        out = {}
        moves: dict[int, tuple[_Snippet, dict[Any, _Path]]] = {}
        for key, (snippet, value) in merged.items():
            if snippet is not None:
                moves.setdefault(id(snippet), (snippet, {}))[1][key] = (*dst, key)
                out[key] = _copy_tree(snippet.data[key])
            else:
                out[key] = self.value(value, (*src, key), _child_schema(schema, key), (*dst, key))
        for snippet, snippet_moves in moves.values():
            self.out.graft_children(snippet.locs, snippet_moves)
        return out

    def list_import(self, name: Any, src: _Path, list_schema: Any) -> tuple[_Snippet, bool]:
        """A sole-key ``{$import: a}`` list element: the snippet, and whether it is spliced
        (a list of the list's element type) rather than appended (one element)."""
        snippet = self.lookup(name, src)
        element = _element_schema(list_schema)
        site = self.src.values.get((*src, _IMPORT))
        snippet_type = _schemas()[snippet.schema]
        if element is None:
            raise _error(
                IMPORT_ERROR,
                f"$import {name!r} inside a list needs a list of known element type here.",
                site,
                (*src, _IMPORT),
            )
        if snippet_type == _unwrap(list_schema):
            return snippet, True
        if snippet_type == element or (
            isinstance(snippet.data, dict) and typing.get_origin(element) is dict
        ):
            return snippet, False
        raise _error(
            IMPORT_ERROR,
            f"$import {name!r} has schema {snippet.schema}; this list takes "
            f"{_schema_name(element)} elements (appended) or a list of them (spliced).",
            site,
            (*src, _IMPORT),
        )


def _schema_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or repr(tp)


# --------------------------------------------------------------------------------------------
# Validation errors → diagnostics
# --------------------------------------------------------------------------------------------
def _walk(node: Any, path: _Path, parts: tuple) -> _Path:
    """Follow pydantic ``loc`` parts through the raw data, skipping union tags it added."""
    for part in parts:
        if isinstance(node, Mapping) and not _is_model(node):
            if part in node:
                node = node[part]
                path += (part,)
        elif (
            isinstance(node, (list, tuple))
            and isinstance(part, int)
            and not isinstance(part, bool)
            and 0 <= part < len(node)
        ):
            node = node[part]
            path += (part,)
    return path


def _get(data: Any, path: _Path) -> Any:
    for part in path:
        data = data[part]
    return data


def _entry_path(raw: Any, index: int, rest: tuple) -> _Path | None:
    """Path (below ``quant_cfg``) of what normalized entry ``index`` came from (§6)."""
    from qconfig.normalize import expand_quant_cfg

    try:
        expanded = expand_quant_cfg(raw, warn=False)
    except ValueError:
        return None
    if index >= len(expanded):
        return None
    entry = expanded[index]
    base: _Path = entry.source
    if not entry.legacy:
        return _walk(_get(raw, base), base, rest)
    # legacy {pattern: cfg} or {"nn.X": {pattern: cfg}}: walk into the pattern's value
    if isinstance(base[-1], int):
        (key,) = _get(raw, base).keys()
        base += (key,)
    parent = base
    if isinstance(base[-1], str) and base[-1].startswith("nn."):
        base += (entry.value["quantizer_name"],)
    value = _get(raw, base)
    field_name, rest = (rest[0], rest[1:]) if rest else (None, ())
    if field_name == "cfg":
        return _walk(value, base, rest)
    if field_name == "enable" and isinstance(value, Mapping) and "enable" in value:
        return (*base, "enable")
    if field_name == "parent_class":
        return parent
    return base


def _shape_error_path(raw: Any) -> _Path:
    """The ``quant_cfg`` element that a whole-list shape error (§6.1) is about."""
    from qconfig.normalize import expand_quant_cfg

    if isinstance(raw, Mapping):
        items = [((k,), {k: v}) for k, v in raw.items()]
    elif isinstance(raw, (list, tuple)):
        items = [((i,), element) for i, element in enumerate(raw)]
    else:
        return ()
    for path, element in items:
        try:
            expand_quant_cfg([element], warn=False)
        except ValueError:
            return path
    return ()


def _map_loc(loc: tuple, data: Any, quantize: bool) -> _Path:
    if quantize and loc and loc[0] == "quant_cfg" and isinstance(data, Mapping):
        raw = data.get("quant_cfg")
        if len(loc) == 1:
            return ("quant_cfg", *_shape_error_path(raw))
        if isinstance(loc[1], int):
            mapped = _entry_path(raw, loc[1], tuple(loc[2:]))
            if mapped is not None:
                return ("quant_cfg", *mapped)
    return _walk(data, (), tuple(loc))


def _message(error: dict) -> str:
    kind = error["type"]
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    if kind == "extra_forbidden":
        return f"Unknown field {error['loc'][-1]!r} (not allowed here)."
    if kind == "missing":
        return f"Missing required field {error['loc'][-1]!r}."
    return message


def _shown_input(error: dict) -> str | None:
    """The offending scalar, for type errors whose message does not show it."""
    value = error.get("input")
    if error["type"] in ("value_error", "assertion_error", "extra_forbidden", "missing"):
        return None
    if isinstance(value, (str, int, float, bool, type(None))):
        return repr(value)
    return None


def _validation_diagnostics(
    exc: Exception,
    data: Any,
    locs: _Locs,
    schema: Any,
    *,
    prefix: _Path = (),
    file: str | None = None,
) -> list[Diagnostic]:
    """One diagnostic per location; alternatives of a union at one place are joined by "or"."""
    from pydantic import ValidationError

    from qconfig.quantize import QuantizeConfig

    if not isinstance(exc, ValidationError):
        loc = locs.locate(prefix, True)
        return [_diagnostic(str(exc), loc, prefix, file)]
    grouped: dict[_Path, tuple[list[str], list[str]]] = {}
    for error in exc.errors(include_url=False):
        path = _map_loc(tuple(error["loc"]), data, schema is QuantizeConfig)
        messages, inputs = grouped.setdefault(path, ([], []))
        message, shown = _message(error), _shown_input(error)
        if message not in messages:
            messages.append(message)
        if shown is not None and shown not in inputs:
            inputs.append(shown)
    out = []
    for path, (messages, inputs) in grouped.items():
        node = _get_or_none(data, path)
        prefer_key = isinstance(node, (dict, list)) or any(
            m.startswith("Unknown field") for m in messages
        )
        loc = locs.locate(prefix + path, prefer_key)
        text = "; or ".join(messages) + (f" (got {inputs[0]})" if len(inputs) == 1 else "")
        out.append(_diagnostic(text, loc, prefix + path, file))
    return out


def _get_or_none(data: Any, path: _Path) -> Any:
    try:
        return _get(data, path)
    except (KeyError, IndexError, TypeError):
        return None


def _diagnostic(message: str, loc: _Loc | None, path: _Path, file: str | None) -> Diagnostic:
    file_, line, column = loc if loc is not None else (file, None, None)
    return Diagnostic(
        VALIDATION_ERROR, "error", message, file_, line, column, format_path(list(path))
    )


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Document:
    """A loaded file with imports resolved and ExMy/int-key conversions applied, not validated.

    ``schema`` is the declared or implied type name (``"QuantizeConfig"``, ``"recipe"``, a
    snippet type); :meth:`locate` answers where a JSON path was written, for tools (lint) that
    report their own findings.
    """

    data: Any
    schema: str
    file: str | None
    _locs: _Locs = field(repr=False, compare=False)

    def locate(self, path: tuple[int | str, ...]) -> tuple[str | None, int | None, int | None]:
        """``(file, line, column)`` where ``path`` (or its nearest ancestor) was written."""
        node = _get_or_none(self.data, tuple(path))
        loc = self._locs.locate(tuple(path), isinstance(node, (dict, list)))
        return loc if loc is not None else (self.file, None, None)

    def validate(self) -> Any:
        """Validate ``data`` as ``schema``; errors raise ``ConfigError`` with locations."""
        if self.schema == _RECIPE:
            return _validate_recipe(self)
        schema = _schemas()[self.schema]
        try:
            return _validate_schema(schema, self.data)
        except ValueError as exc:
            raise ConfigError(
                _validation_diagnostics(exc, self.data, self._locs, schema, file=self.file)
            ) from None


@dataclass(frozen=True)
class Recipe:
    """A PTQ recipe (``metadata`` + ``quantize``, §13.1) as Model Optimizer's ``load_recipe``."""

    metadata: dict[str, Any]  # recipe_type ("ptq") and description (default filled in)
    quantize: QuantizeConfig

    @property
    def recipe_type(self) -> str:
        return self.metadata["recipe_type"]

    @property
    def description(self) -> str:
        return self.metadata["description"]


_RECIPE_TYPES = (
    "ptq",
    "auto_quantize",
    "speculative_eagle",
    "speculative_dflash",
    "speculative_medusa",
)
_DEFAULT_DESCRIPTION = "Model optimization recipe."


def _root_schema(parsed: _Parsed) -> str:
    """Declared schema, else a recipe when it has recipe sections, else a QuantizeConfig."""
    if parsed.schema is not None:
        return parsed.schema
    if isinstance(parsed.body, dict) and ("metadata" in parsed.body or "quantize" in parsed.body):
        return _RECIPE
    return "QuantizeConfig"


def load_document(
    src: str | os.PathLike | Mapping[str, Any], *, base_dir: str | os.PathLike | None = None
) -> Document:
    """Parse ``src`` and resolve its imports without validating it.

    Files without a schema comment are taken as a ``QuantizeConfig`` (or a recipe when they
    have ``metadata``/``quantize`` sections). ``base_dir`` anchors relative imports of text and
    mappings (default: the current directory); files always use their own directory.
    """
    parsed = _parse_source(src, base_dir)
    schema = _root_schema(parsed)
    session = _Session(parsed.base_dir)
    if parsed.file is not None:
        key = os.path.normcase(str(Path(parsed.file).resolve()))
        session.chain.append((key, session.display(parsed.file)))
    schema_type = _RECIPE if schema == _RECIPE else _schemas()[schema]
    data, locs = session.resolve(parsed, schema_type)
    return Document(data, schema, parsed.file, locs)


def _validate_recipe(doc: Document) -> Recipe:
    data, locs = doc.data, doc._locs
    where = locs.locate((), True)
    if not isinstance(data, dict):
        raise _error(SHAPE_ERROR, "A recipe must be a mapping.", where, file=doc.file)
    for key in data:
        if key not in ("metadata", "quantize"):
            raise _error(
                VALIDATION_ERROR,
                f"Unknown recipe section {key!r}; a PTQ recipe has 'metadata' and 'quantize'.",
                locs.locate((key,), True),
                (key,),
                file=doc.file,
            )
    metadata = data.get("metadata")
    if not isinstance(metadata, dict):
        raise _error(
            SHAPE_ERROR,
            "A recipe needs a 'metadata' mapping with 'recipe_type: ptq'.",
            locs.locate(("metadata",), True),
            ("metadata",),
            file=doc.file,
        )
    for key in metadata:
        if key not in ("recipe_type", "description"):
            raise _error(
                VALIDATION_ERROR,
                f"Unknown metadata field {key!r}; expected 'recipe_type' and 'description'.",
                locs.locate(("metadata", key), True),
                ("metadata", key),
                file=doc.file,
            )
    recipe_type = metadata.get("recipe_type")
    if recipe_type != "ptq":
        problem = (
            "is missing"
            if recipe_type is None
            else f"is {recipe_type!r}, which qconfig does not load (only 'ptq')"
            if recipe_type in _RECIPE_TYPES
            else f"is {recipe_type!r}; expected one of {', '.join(_RECIPE_TYPES)}"
        )
        raise _error(
            VALIDATION_ERROR,
            f"metadata.recipe_type {problem}.",
            locs.locate(("metadata", "recipe_type"), False),
            ("metadata", "recipe_type"),
            file=doc.file,
        )
    description = metadata.get("description", _DEFAULT_DESCRIPTION)
    if not isinstance(description, str):
        raise _error(
            VALIDATION_ERROR,
            f"metadata.description must be a string, got {_kind(description)}.",
            locs.locate(("metadata", "description"), False),
            ("metadata", "description"),
            file=doc.file,
        )
    if "quantize" not in data:
        raise _error(
            SHAPE_ERROR,
            "A PTQ recipe must contain a 'quantize' section.",
            where,
            file=doc.file,
        )
    from qconfig.quantize import QuantizeConfig

    try:
        quantize = QuantizeConfig.model_validate(data["quantize"])
    except ValueError as exc:
        diagnostics = _validation_diagnostics(
            exc, data["quantize"], locs, QuantizeConfig, prefix=("quantize",), file=doc.file
        )
        raise ConfigError(diagnostics) from None
    return Recipe({"recipe_type": "ptq", "description": description}, quantize)


def load_config(
    src: str | os.PathLike | Mapping[str, Any] | QuantizeConfig,
    *,
    base_dir: str | os.PathLike | None = None,
) -> QuantizeConfig:
    """Load a ``QuantizeConfig`` from a path, YAML/JSON text or a mapping.

    Returns a validated ``qconfig.QuantizeConfig`` (a recipe file yields its ``quantize``
    section; use :func:`load_recipe` to keep ``metadata``). A ``QuantizeConfig`` passed in is
    returned as is. Raises ``ConfigError`` with located diagnostics.
    """
    from qconfig.quantize import QuantizeConfig

    if isinstance(src, QuantizeConfig):
        return src
    doc = load_document(src, base_dir=base_dir)
    if doc.schema == _RECIPE:
        return _validate_recipe(doc).quantize
    if doc.schema != "QuantizeConfig":
        raise _error(
            SHAPE_ERROR,
            f"This file is a {doc.schema} snippet; load_config reads a QuantizeConfig or a "
            "recipe (use load_snippet for snippets).",
            None,
            file=doc.file,
        )
    return doc.validate()


def load_recipe(
    src: str | os.PathLike | Mapping[str, Any], *, base_dir: str | os.PathLike | None = None
) -> Recipe:
    """Load a PTQ recipe (``metadata`` + ``quantize``) with its metadata."""
    doc = load_document(src, base_dir=base_dir)
    if doc.schema != _RECIPE:
        raise _error(
            SHAPE_ERROR,
            "Not a recipe: expected top-level 'metadata' and 'quantize' sections.",
            None,
            file=doc.file,
        )
    return _validate_recipe(doc)


def load_snippet(
    src: str | os.PathLike | Mapping[str, Any], *, base_dir: str | os.PathLike | None = None
) -> Any:
    """Load a file of any declared schema (a unit, a numerics snippet, a preset).

    The result is what the schema validates to: a model instance, or a list of
    ``QuantizerCfgEntry`` for ``QuantizerCfgListConfig``. Undeclared files are read as a
    ``QuantizeConfig`` (or a recipe).
    """
    doc = load_document(src, base_dir=base_dir)
    return doc.validate()
