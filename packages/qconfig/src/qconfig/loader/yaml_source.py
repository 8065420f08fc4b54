"""YAML source: parse with positions, reject duplicate keys, cap alias expansion.

We walk PyYAML's composed node graph ourselves (scalars are still built by its safe
constructor) because only the walk knows each node's JSON path. Two deliberate differences from
``yaml.safe_load``: a duplicate key is an error, not a silent overwrite, and the number of nodes
built is capped so that an alias bomb ("billion laughs") fails fast instead of exhausting memory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from qconfig.errors import ConfigError
from qconfig.loader.convert import convert_key, convert_scalar
from qconfig.loader.locations import (
    JSON_SCHEMA_KEY,
    SHAPE_ERROR,
    SYNTAX_ERROR,
    JsonPath,
    Loc,
    Locations,
    Parsed,
    finish_parse,
    kind_of,
    located_error,
)
from qconfig.loader.schemas import canonical_schema

_SCHEMA_COMMENT_RE = re.compile(r"^\s*#\s*modelopt-schema:\s*(\S+)\s*$")
_MAX_NODES = 1_000_000  # guards against alias bombs ("billion laughs")


def _yaml_loader_class():
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _YamlBuilder:
    """Turns composed YAML nodes into Python data, recording locations and rejecting duplicates.

    We walk the node graph ourselves instead of subclassing the constructor because only the
    walk knows each node's JSON path; scalars are still built by PyYAML's safe constructor.
    """

    def __init__(self, loader: Any, file: str | None, locs: Locations) -> None:
        self.loader = loader
        self.file = file
        self.locs = locs
        self.nodes = 0
        self.active: set[int] = set()

    def loc(self, node: Any) -> Loc:
        return (self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: Any, path: JsonPath, key: Any = None) -> Any:
        import yaml

        self.nodes += 1
        if self.nodes > _MAX_NODES:
            raise located_error(
                SYNTAX_ERROR, "Document too large (alias expansion).", self.loc(node)
            )
        self.locs.values[path] = self.loc(node)
        if isinstance(node, yaml.ScalarNode):
            return convert_scalar(key, self.scalar(node))
        if id(node) in self.active:
            raise located_error(SYNTAX_ERROR, "Recursive YAML alias.", self.loc(node), path)
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
            if not isinstance(key_node, yaml.ScalarNode):
                raise located_error(
                    SYNTAX_ERROR, "Mapping keys must be scalars.", self.loc(key_node), path
                )
            key = convert_key(container_key, self.scalar(key_node))
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


def _yaml_error(exc: Exception, file: str | None) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    loc = (file, mark.line + 1, mark.column + 1) if mark is not None else None
    return located_error(SYNTAX_ERROR, message, loc, file=file)


def _parse_schema_comment(text: str, file: str | None) -> str | None:
    """``# modelopt-schema: X`` in the leading comment block (blank lines allowed)."""
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
            raise located_error(
                SHAPE_ERROR, "More than one modelopt-schema comment.", loc, file=file
            )
        found = canonical_schema(match.group(1), loc)
    return found


def parse_yaml(text: str, file: str | None, base_dir: Path) -> Parsed:
    import yaml

    schema = _parse_schema_comment(text, file)
    locs = Locations()
    loader = _yaml_loader_class()(text)
    try:
        nodes = []
        while loader.check_node():
            nodes.append(loader.get_node())
            if len(nodes) > 2:
                raise located_error(
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
            raise located_error(
                SHAPE_ERROR,
                "The first of two YAML documents must be a mapping.",
                _root_loc(nodes[0], file),
            )
        header.pop(JSON_SCHEMA_KEY, None)
        if body is None:
            body = {}
        if isinstance(body, dict):
            body = {**header, **body}
        elif isinstance(body, list):
            locs.values[()] = _root_loc(nodes[1], file)
            return Parsed(body, header.get("imports"), locs, file, base_dir, schema)
        else:
            raise located_error(
                SHAPE_ERROR,
                f"The second YAML document must be a mapping or a list, got {kind_of(body)}.",
                _root_loc(nodes[1], file),
            )
    else:
        body = docs[0] if docs else None
        if body is None:
            body = {}
            locs.values[()] = (file, 1, 1)
    return finish_parse(body, locs, file, base_dir, schema)


def _root_loc(node: Any, file: str | None) -> Loc:
    return (file, node.start_mark.line + 1, node.start_mark.column + 1)
