"""YAML: a round trip through ruamel.yaml, then spliced into the original text.

ruamel re-spaces every flow mapping it writes, so only the new ``quant_cfg`` elements are taken
from its output and spliced into the original lines; lines that did not need to change stay
byte-identical, and comments beside replaced lines are carried over.
"""

from __future__ import annotations

import io
import itertools
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from qconfig.migrate.comments import is_flow
from qconfig.migrate.convert import (
    NewElement,
    attach_elements,
    convert_elements,
    count_changes,
    migrate_tree,
    quant_cfg_parent,
)
from qconfig.migrate.outcome import MigrationError


def _yaml(text: str | None = None) -> Any:
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long lines
    # `axis: null` stays `axis: null` (ruamel would write `axis:`)
    yaml.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    if text is not None:
        mapping, offset = _guess_indent(text)
        yaml.indent(mapping=mapping, sequence=offset + 2, offset=offset)
    return yaml


_KEY_LINE = re.compile(r"^( *)([^\s#-][^#]*|-\S[^#]*):\s*(#.*)?$")
_DASH_LINE = re.compile(r"^( *)- ")


def _guess_indent(text: str) -> tuple[int, int]:
    """(mapping indent, dash offset) as this file writes them; defaults 2 and 2.

    The dash offset is how far a block sequence's ``-`` sits right of its key (the example
    configs write ``  - quantizer_name: ...`` under ``quant_cfg:``, offset 2).
    """
    mapping = offset = None
    parent: int | None = None  # indent of the previous line if it was a bare `key:` line
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("---"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        dash = _DASH_LINE.match(line)
        if parent is not None and indent > parent:
            if dash and offset is None:
                offset = indent - parent
            elif not dash and mapping is None:
                mapping = indent - parent
        parent = indent if (_KEY_LINE.match(line) and not dash) else None
        if mapping is not None and offset is not None:
            break
    return mapping or 2, 2 if offset is None else offset


def _load_all(text: str) -> list[Any]:
    from ruamel.yaml.error import YAMLError

    try:
        return list(_yaml().load_all(text))
    except YAMLError as exc:
        raise MigrationError(f"YAML syntax error: {exc}") from None


@dataclass
class _Layout:
    """Where quant_cfg's block value sits in the original text (0-based lines)."""

    key_column: int  # column of the `quant_cfg` key
    first: int  # first line of the value's first key or element
    end: int  # line after the value (the next key of an enclosing mapping, or EOF)
    starts: list[int]  # for a list: the first line of each element, then `end`
    dashes: list[int]  # for a list: the column of each element's dash


def _layout(body: Any, lines: list[str]) -> _Layout | None:
    """The text layout of quant_cfg, or None when it is not block style line by line."""
    where = quant_cfg_parent(body)
    if where is None:
        return None
    container, key = where
    raw = container[key]
    if any(is_flow(node) for node in (body, container, raw)) or not raw:
        return None
    key_line, key_column = container.lc.key(key)
    end = _next_key_line(container, key)
    if end is None and container is not body:
        end = _next_key_line(body, "quantize")
    if end is None:
        # comments at the end of the document belong to it, not to quant_cfg's last item
        # (ruamel files them on the body, the recipe section or the quant_cfg value itself)
        tail = [t for n in (body, container, raw) for t in getattr(n.ca, "end", None) or []]
        marks = [t.start_mark.line for t in tail if getattr(t, "start_mark", None) is not None]
        end = min(marks) if marks else len(lines)
    if isinstance(raw, dict):
        return _Layout(key_column, raw.lc.key(next(iter(raw)))[0], end, [], [])
    # an element's lines start at the comments ruamel files *before* it (sequence slot 1), so
    # that they are rendered with it when it is converted and kept with it when it is not
    starts = [min([raw.lc.item(i)[0], *_pre_lines(raw, i)]) for i in range(len(raw))]
    dashes = []
    for line, column in (raw.lc.item(i) for i in range(len(raw))):
        match = re.match(r"^( *)- +", lines[line])
        if match is None or match.end() != column:
            return None  # a dash on a line of its own, or several elements on one line
        dashes.append(len(match.group(1)))
    starts.append(end)
    if any(b <= a for a, b in itertools.pairwise(starts)) or starts[0] <= key_line:
        return None
    return _Layout(key_column, starts[0], end, starts, dashes)


def _pre_lines(seq: Any, index: int) -> list[int]:
    comments = seq.ca.items.get(index)
    if not comments or len(comments) < 2 or not comments[1]:
        return []
    return [t.start_mark.line for t in comments[1] if getattr(t, "start_mark", None) is not None]


def _next_key_line(container: Any, key: Any) -> int | None:
    """First line of the key after ``key``, counting the comments ruamel files before it."""
    keys = list(container)
    index = keys.index(key)
    if index + 1 >= len(keys):
        return None
    following = keys[index + 1]
    return min([container.lc.key(following)[0], *_pre_lines(container, following)])


def _render(elements: list[NewElement], dash_column: int, text: str) -> list[str]:
    """Converted elements as block-sequence lines whose dashes sit at ``dash_column``.

    Each group is dumped on its own (under a throw-away key) rather than as part of the whole
    document: ruamel's emitter misplaces a line break when a new block mapping follows a
    flow-style item with a comment in a sequence that has leading comments.
    """
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    seq = CommentedSeq([e.node for e in elements])
    seq.fa.set_block_style()
    first_before = elements[0].before
    elements[0].before = ""
    attach_elements(seq, elements)
    holder = CommentedMap()
    holder["quant_cfg"] = seq
    yaml = _yaml(text)  # the file's indentation; nested sequences (list cfg) follow it too
    _, offset = _guess_indent(text)
    stream = io.StringIO()
    yaml.dump(holder, stream)
    out = first_before.splitlines(keepends=True)
    for line in stream.getvalue().splitlines(keepends=True)[1:]:
        if line.lstrip().startswith("#") or not line.strip():
            out.append(line)  # comment lines keep the indentation they were written with
        else:
            out.append(" " * dash_column + line[offset:])
    return out


_COMMENT = re.compile(r"(?:^|\s)(#.*)$")


def _comment_of(line: str) -> str | None:
    match = _COMMENT.search(line.rstrip("\n"))
    return match.group(1).rstrip() if match else None


def _keep_comments(old: list[str], new: list[str], dash_column: int) -> list[str]:
    """``new`` plus, as full lines at its end, any comment of ``old`` that it lost.

    A safety net: ruamel drops a few comments on the floor (one after an empty flow mapping
    ``{}``, for instance). A comment that moved is better than a comment that vanished.
    """
    missing = Counter(c for c in map(_comment_of, old) if c)
    missing.subtract(c for c in map(_comment_of, new) if c)
    out = list(new)
    for line in old:
        comment = _comment_of(line)
        if comment and missing[comment] > 0:
            missing[comment] -= 1
            full_line = line.lstrip().startswith("#")
            out.append(line if full_line else " " * dash_column + comment + "\n")
    return out


def _splice(text: str, layout: _Layout, elements: list[NewElement]) -> str:
    """``text`` with only the converted elements' lines replaced.

    ruamel re-spaces every flow mapping it writes; splicing keeps every line that did not
    need to change byte-identical.
    """
    lines = text.splitlines(keepends=True)
    if not text.endswith("\n") and lines:
        lines[-1] += "\n"
    head, tail = lines[: layout.first], lines[layout.end :]
    if not layout.starts:  # a flat dict, converted as a whole
        _, offset = _guess_indent(text)
        dash = layout.key_column + offset
        body = _render(elements, dash, text)
        return "".join(head + _keep_comments(lines[layout.first : layout.end], body, dash) + tail)
    out: list[str] = []
    index = 0
    while index < len(elements):
        origin = elements[index].origin
        assert origin is not None
        end = index
        while end < len(elements) and elements[end].origin == origin:
            end += 1
        old = lines[layout.starts[origin] : layout.starts[origin + 1]]
        if elements[index].converted:
            dash = layout.dashes[origin]
            out += _keep_comments(old, _render(elements[index:end], dash, text), dash)
        else:
            out += old
        index = end
    return "".join(head + out + tail)


def migrate_yaml(text: str) -> tuple[str, int, int]:
    docs = _load_all(text)
    if not docs:
        return text, 0, 0
    layout = _layout(docs[-1], text.splitlines(keepends=True))
    if layout is not None:
        where = quant_cfg_parent(docs[-1])
        assert where is not None
        elements = convert_elements(where[0][where[1]])
        if not any(e.converted for e in elements):
            return text, 0, 0
        return _splice(text, layout, elements), *count_changes(elements)
    # flow style or a list snippet: ruamel writes the whole document
    new_body, converted = migrate_tree(docs[-1])
    if converted is None:
        return text, 0, 0
    docs[-1] = new_body
    stream = io.StringIO()
    yaml = _yaml(text)
    if len(docs) == 1 and not text.lstrip().startswith("---"):
        yaml.dump(docs[0], stream)
    else:
        yaml.explicit_start = True
        yaml.dump_all(docs, stream)
    return stream.getvalue(), *count_changes(converted)
