"""YAML source: parse with positions, reject duplicate keys, refuse what cannot be a config.

We walk PyYAML's composed node graph ourselves (scalars are still built by its safe
constructor) because only the walk knows each node's JSON path. Deliberate differences from
``yaml.safe_load``: a duplicate key is an error, not a silent overwrite; a tag other than the
plain YAML types (``!foo``, ``!!python/...``, ``!!binary``, ``!!set``) and a value its tag
cannot read (``!!int abc``, ``2001-13-01`` read as a date) are located errors, not tracebacks;
mapping keys must be strings or integers; and the file is measured from its event stream
before anything is composed (:func:`_prescan`), so an alias bomb ("billion laughs"), a
document with too many values or nested too deep is refused in milliseconds
(:mod:`qconfig.loader.limits`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from qconfig.errors import ConfigError
from qconfig.loader.convert import convert_key, convert_scalar
from qconfig.loader.limits import (
    MAX_DEPTH,
    MAX_INT_DIGITS,
    LoadBudget,
    depth_error,
    has_surrogate,
    int_error,
    int_too_large,
    surrogate_error,
)
from qconfig.loader.locations import (
    SHAPE_ERROR,
    SYNTAX_ERROR,
    JsonPath,
    Loc,
    Locations,
    Parsed,
    drop_schema_key,
    finish_parse,
    kind_of,
    located_error,
)
from qconfig.loader.schemas import canonical_schema

_SCHEMA_COMMENT_RE = re.compile(r"^\s*#\s*modelopt-schema:\s*(\S+)\s*$")
_TAG = "tag:yaml.org,2002:"
_COLLECTION_TAGS = frozenset({_TAG + "map", _TAG + "seq"})
_SCALAR_TAGS = frozenset(_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp"))
_DIGITS_RE = re.compile(r"[0-9]")


def _yaml_loader_class():
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _mark_loc(mark: Any, file: str | None) -> Loc:
    return (file, mark.line + 1, mark.column + 1)


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


def _unsupported_tag(tag: str, loc: Loc) -> ConfigError:
    # PyYAML's wording and form (no JSON path) for the refusal of a scalar tag, now for all
    return located_error(
        SYNTAX_ERROR,
        f"YAML syntax error: could not determine a constructor for the tag {_short_tag(tag)!r} "
        "(configs use plain YAML: mappings, lists, strings, numbers, booleans and null).",
        loc,
    )


def _too_many(unique: int, left: int, earlier: int) -> str:
    what = (
        f"this file has more than {left:,} values"
        if unique > left
        else f"expanding this file's YAML aliases builds more than {left:,} values"
    )
    return what + (f" besides the {earlier:,} built from other files" if earlier else "")


def _prescan(text: str, file: str | None, budget: LoadBudget) -> None:
    """Measure the document from its events before composing it: values built (aliases
    expanded, charged to ``budget``), nesting depth, recursive aliases and the number of
    documents. Nothing is built and no alias is expanded, so a bomb costs its own size."""
    import yaml

    loader = _yaml_loader_class()(text)
    # the event classes as locals: this loop runs once per YAML event of every file loaded
    stream_end, document_start = yaml.StreamEndEvent, yaml.DocumentStartEvent
    scalar, alias = yaml.ScalarEvent, yaml.AliasEvent
    opening = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
    closing = (yaml.SequenceEndEvent, yaml.MappingEndEvent)
    get_event = loader.get_event
    anchors: dict[str, tuple[int, int]] = {}  # name -> (values, depth) of the anchored node
    stack: list[tuple[Any, int, list[int]]] = []  # open collections: anchor, start, [depth]
    open_anchors: set[str] = set()
    total = unique = docs = 0
    left = budget.values_left()
    try:
        while True:
            event = get_event()
            kind = type(event)
            if kind is stream_end:
                break
            if kind is document_start:
                docs += 1
                anchors.clear()  # anchors are per document, as in PyYAML's composer
                if docs > 2:
                    raise located_error(
                        SHAPE_ERROR,
                        "Expected 1 or 2 YAML documents (an optional header with 'imports', "
                        "then the body), got more.",
                        _mark_loc(loader.peek_event().start_mark, file),
                    )
                continue
            anchor = getattr(event, "anchor", None)
            if kind is not alias and anchor is not None:
                if anchor in anchors or anchor in open_anchors:
                    break  # a duplicate anchor: the composer reports it, at both places
            if kind is scalar:
                total, unique, height = total + 1, unique + 1, 0
                if anchor is not None:
                    anchors[anchor] = (1, 0)
            elif kind in opening:
                total, unique = total + 1, unique + 1
                stack.append((anchor, total, [0]))
                if anchor is not None:
                    open_anchors.add(anchor)
                if len(stack) > MAX_DEPTH:
                    raise depth_error(_mark_loc(event.start_mark, file))
                height = None  # known at the end event
            elif kind in closing:
                anchor, start, inner = stack.pop()  # the anchor of the collection it closes
                height = inner[0] + 1
                if anchor is not None:
                    anchors[anchor] = (total - start + 1, height)
                    open_anchors.discard(anchor)
            elif kind is alias:
                if event.anchor in open_anchors:
                    raise located_error(
                        SYNTAX_ERROR, "Recursive YAML alias.", _mark_loc(event.start_mark, file)
                    )
                size, height = anchors.get(event.anchor, (1, 0))  # undefined: the composer says
                total += size
                if len(stack) + height > MAX_DEPTH:
                    raise depth_error(_mark_loc(event.start_mark, file))
            else:
                continue
            if height is not None and stack:
                stack[-1][2][0] = max(stack[-1][2][0], height)
            if total > left:
                budget.charge_values(
                    total,
                    _mark_loc(event.start_mark, file),
                    _too_many(unique, left, budget.values),
                )
    finally:
        loader.dispose()
    budget.charge_values(total, None, "")


class _YamlBuilder:
    """Turns composed YAML nodes into Python data, recording locations and rejecting duplicates.

    We walk the node graph ourselves instead of subclassing the constructor because only the
    walk knows each node's JSON path; scalars are still built by PyYAML's safe constructor.
    The recursion is bounded: :func:`_prescan` refused documents nested beyond ``MAX_DEPTH``.
    """

    def __init__(
        self, loader: Any, file: str | None, locs: Locations, escapes: bool = True
    ) -> None:
        self.loader = loader
        self.file = file
        self.locs = locs
        self.active: set[int] = set()
        # Strings are checked for lone surrogates only when the text has escapes that can make
        # one, and each node once: an alias of a long string may be used thousands of times.
        self.escapes = escapes
        self.checked: set[int] = set()

    def loc(self, node: Any) -> Loc:
        return (self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: Any, path: JsonPath, key: Any = None) -> Any:
        import yaml

        self.locs.values[path] = self.loc(node)
        if isinstance(node, yaml.ScalarNode):
            return convert_scalar(key, self.scalar(node, path))
        if node.tag not in _COLLECTION_TAGS:
            raise _unsupported_tag(node.tag, self.loc(node))
        if id(node) in self.active:
            raise located_error(SYNTAX_ERROR, "Recursive YAML alias.", self.loc(node), path)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
            return self.build_mapping(node, path, key)
        finally:
            self.active.discard(id(node))

    def scalar(self, node: Any, path: JsonPath) -> Any:
        """The value of a scalar node; a tag we do not read, or a value its tag cannot read, is
        a located error (PyYAML's constructors raise whatever Python raised inside them)."""
        import yaml

        tag = node.tag
        if tag == "tag:yaml.org,2002:str":
            if self.escapes and id(node) not in self.checked:
                self.checked.add(id(node))
                if has_surrogate(node.value):  # from a "\ud800" escape
                    raise surrogate_error(node.value, self.loc(node), path)
            return node.value
        if tag not in _SCALAR_TAGS:
            raise _unsupported_tag(tag, self.loc(node))
        if tag == "tag:yaml.org,2002:int" and len(node.value) > MAX_INT_DIGITS:
            digits = len(_DIGITS_RE.findall(node.value))
            if digits > MAX_INT_DIGITS:
                raise int_error(digits, self.loc(node), path)
        try:
            value = self.loader.construct_object(node)
        except yaml.YAMLError as exc:
            raise _yaml_error(exc, self.file) from None
        except Exception as exc:  # ValueError, KeyError, AttributeError (!!timestamp x), ...
            raise self.bad_scalar(node, path, exc) from None
        if isinstance(value, int) and not isinstance(value, bool) and int_too_large(value):
            raise int_error(0, self.loc(node), path)  # written in hex, octal or base 60
        if isinstance(value, float) and math.isinf(value) and "inf" not in node.value.lower():
            raise located_error(
                SYNTAX_ERROR,
                f"Number too large: {_preview(node.value)} does not fit a float (it would be "
                "read as infinity; write .inf if that is meant).",
                self.loc(node),
                path,
            )
        return value

    def bad_scalar(self, node: Any, path: JsonPath, exc: Exception) -> ConfigError:
        # Python's own reason only where it adds something ("month must be in 1..12")
        # (a ValueError; PyYAML's own failures on a non-date, e.g. an AttributeError, say nothing)
        useful = node.tag.endswith(":timestamp") and isinstance(exc, ValueError) and str(exc)
        reason = f": {exc}" if useful else ""
        return located_error(
            SYNTAX_ERROR,
            f"YAML value {_preview(node.value)} is not a valid {_short_tag(node.tag)}{reason} "
            "(quote it if it is meant as a string).",
            self.loc(node),
            path,
        )

    def key(self, key_node: Any, path: JsonPath, container_key: Any) -> Any:
        """A mapping key: a string, or an integer (axis keys such as ``block_sizes: {-1: 16}``).
        YAML reads ``null``, ``on``, ``1.5`` or a date as other types; those are refused here,
        where the key was written, rather than failing later without a usable path."""
        import yaml

        if not isinstance(key_node, yaml.ScalarNode):
            raise located_error(
                SYNTAX_ERROR, "Mapping keys must be scalars.", self.loc(key_node), path
            )
        key = self.scalar(key_node, path)
        if isinstance(key, str) or (isinstance(key, int) and not isinstance(key, bool)):
            return convert_key(container_key, key)
        raise located_error(
            SYNTAX_ERROR,
            f"Mapping key {_preview(key_node.value)} is read by YAML as {kind_of(key)} "
            f"({key!r}); keys must be strings (quote it) or integers.",
            self.loc(key_node),
            path,
        )

    def build_mapping(self, node: Any, path: JsonPath, container_key: Any) -> dict:
        import yaml

        out: dict = {}
        first: dict[Any, Loc] = {}
        merges: list[Any] = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                merges.extend(
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                continue
            key = self.key(key_node, path, container_key)
            self.locs.add_member(first, key, self.loc(key_node), path)
            out[key] = self.build(value_node, (*path, key), key)
        # YAML merge keys ('<<'): explicit keys win, and among merged mappings the first wins.
        for source in merges:
            own, self.locs = self.locs, Locations()
            try:
                value = self.build(source, (), container_key)
            finally:
                merged_locs, self.locs = self.locs, own
            if not isinstance(value, dict):
                raise located_error(
                    SYNTAX_ERROR, "A YAML merge key ('<<') needs mappings.", self.loc(source), path
                )
            moves = {}
            for key, item in value.items():
                if key not in out:
                    out[key] = item
                    moves[key] = (*path, key)
            self.locs.graft_children(merged_locs, moves)
        return out


def _preview(value: str, limit: int = 40) -> str:
    """``repr`` of a written value, shortened: a 5,000-digit literal need not be repeated."""
    if len(value) <= limit:
        return repr(value)
    return repr(value[:limit]) + f"... ({len(value):,} characters)"


class YamlSyntaxError(ConfigError):
    """Text PyYAML cannot parse; for unsuffixed text that looked like JSON, ``parse_text``
    reports the JSON error instead (a refused tag or limit is reported as itself)."""


def _yaml_error(exc: Exception, file: str | None, text: str | None = None) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    loc = (file, mark.line + 1, mark.column + 1) if mark is not None else None
    if mark is None and text is not None and hasattr(exc, "reason"):
        loc, message = _reader_error(exc, file, text)
    return YamlSyntaxError(located_error(SYNTAX_ERROR, message, loc, file=file).diagnostics)


# What PyYAML's reader refuses (yaml.reader.Reader.NON_PRINTABLE): a control character.
_NON_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


def _reader_error(exc: Any, file: str | None, text: str) -> tuple[Loc | None, str]:
    """A character PyYAML's reader refuses carries an offset, no line: bytes for libyaml,
    characters for the Python reader. The character itself is found again in the text."""
    found = _NON_PRINTABLE.search(text)
    if found is None:
        return None, f"YAML syntax error: {exc.reason}"
    index = found.start()
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return (file, line, column), (
        f"YAML syntax error: unacceptable character {ord(found.group()):#06x}: {exc.reason}"
    )


def _parse_schema_comment(text: str, file: str | None) -> tuple[str | None, Loc | None]:
    """``# modelopt-schema: X`` in the leading comment block (blank lines allowed), and where."""
    found: str | None = None
    where: Loc | None = None
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
            raise located_error(
                SHAPE_ERROR, "More than one modelopt-schema comment.", loc, file=file
            )
        found, where = canonical_schema(match.group(1), loc), loc
    return found, where


def _empty_error(schema: str | None, loc: Loc, where: str = "the document") -> ConfigError:
    """Nothing written (empty, comments only, ``---`` or ``null``): Model Optimizer loads that as
    its default config, INT8 on every quantizer, output quantizers included — never what an
    emptied or wrong file means, so it is refused (docs/differences.md)."""
    if schema is not None:
        return located_error(
            SHAPE_ERROR, f"Empty document: {where} has no content (a {schema} snippet).", loc
        )
    return located_error(
        SHAPE_ERROR,
        f"Empty config: {where} has no content (nothing but comments, '---' or null), so there "
        "is nothing to quantize; Model Optimizer would read it as its default config (INT8 on "
        "every quantizer). Write 'quant_cfg: []' for a config that quantizes nothing, or start "
        "from a preset ('qconfig presets').",
        loc,
    )


def parse_yaml(
    text: str, file: str | None, base_dir: Path, budget: LoadBudget | None = None
) -> Parsed:
    import yaml

    schema, schema_loc = _parse_schema_comment(text, file)
    locs = Locations()
    loader = None
    try:
        _prescan(text, file, budget if budget is not None else LoadBudget())
        loader = _yaml_loader_class()(text)
        nodes = []
        while loader.check_node():  # _prescan refused a third document
            nodes.append(loader.get_node())
        builder = _YamlBuilder(loader, file, locs, "\\u" in text or "\\U" in text)
        docs = [builder.build(node, ()) for node in nodes]
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, file, text) from None
    except UnicodeEncodeError as exc:  # Python text with a lone surrogate: libyaml reads UTF-8
        index = exc.start
        line = text.count("\n", 0, index) + 1
        column = index - (text.rfind("\n", 0, index) + 1) + 1
        raise surrogate_error(text[index : index + 1], (file, line, column)) from None
    finally:
        if loader is not None:
            loader.dispose()
    if not docs or docs[-1] is None:
        where = "the document after the header" if len(docs) == 2 else "the document"
        raise _empty_error(schema, _root_loc(nodes[-1], file) if nodes else (file, 1, 1), where)
    if len(docs) == 2:
        # The body's locations were recorded last, under the same root; the header's keys
        # survive where the body does not redefine them.
        header, body = docs
        if header is None:
            header = {}
        if not isinstance(header, dict):
            raise located_error(
                SHAPE_ERROR,
                "The first of two YAML documents must be a mapping.",
                _root_loc(nodes[0], file),
            )
        drop_schema_key(header, locs, file)
        if isinstance(body, dict):
            body = {**header, **body}
        elif isinstance(body, list):
            locs.values[()] = _root_loc(nodes[1], file)
            imports = header.get("imports")
            return Parsed(body, imports, locs, file, base_dir, schema, schema_loc)
        else:
            raise located_error(
                SHAPE_ERROR,
                f"The second YAML document must be a mapping or a list, got {kind_of(body)}.",
                _root_loc(nodes[1], file),
            )
    else:
        body = docs[0]
    return finish_parse(body, locs, file, base_dir, schema, schema_loc)


def _root_loc(node: Any, file: str | None) -> Loc:
    return (file, node.start_mark.line + 1, node.start_mark.column + 1)
