"""``qconfig migrate``: rewrite legacy ``quant_cfg`` forms as list entries, comments kept.

Why a tool: Model Optimizer 0.44 changed ``quant_cfg`` from a dict to an ordered list and still
accepts the old forms with a deprecation warning, converting them with sharp edges (config
semantics §6.1): ``"default"`` becomes ``"*"`` *where it stands* (placed last it switches off
everything before it), and ``{"nn.Linear": {pattern: cfg}}`` becomes one entry per pattern with
``parent_class``. Rewriting by hand is where those semantics get lost. This module applies
exactly the conversion of :func:`qconfig.normalize.expand_quant_cfg` to the *file*:

* a legacy flat dict ``quant_cfg: {pattern: cfg, ...}`` becomes a list, in dict order;
* single-key list entries ``- "*weight_quantizer": {num_bits: 8}`` and ``nn.*``-scoped entries
  become ``{quantizer_name, parent_class, cfg, enable}`` entries;
* ``"default"`` becomes ``"*"`` in place (never moved first: that would change the result);
* list-form entries, ``$import`` elements and everything outside ``quant_cfg`` stay as written.

YAML is edited with ruamel.yaml's round-trip loader so comments survive, and the result is
spliced into the original text element by element, so lines that did not need to change stay
byte-identical (ruamel would otherwise re-space every flow mapping in the file). Whatever the
text says, the result is checked before it is returned: it must load to exactly the config the
original loads to (``MigrationError`` otherwise), so the compiled plan cannot change.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Migration", "MigrationError", "migrate_file", "migrate_text"]

_IMPORT = "$import"


class MigrationError(ValueError):
    """The file cannot be migrated safely (it does not load, or the result would differ)."""


@dataclass(frozen=True)
class Migration:
    """The migrated text and what changed: ``converted`` legacy elements → ``entries`` entries."""

    text: str
    converted: int
    entries: int

    @property
    def changed(self) -> bool:
        return self.converted > 0


# --------------------------------------------------------------------------------------------
# ruamel comment plumbing (every helper is a no-op on plain dicts/lists, i.e. for JSON)
#
# ruamel keeps the comment printed after an item on that item: ``map.ca.items[key][2]`` or
# ``seq.ca.items[index][0]``; its text is the end-of-line comment (or nothing) and a line
# break, then any full-line comments up to the next item. Moving an entry therefore means
# moving those texts: the end-of-line part stays with its line, the full lines stay with the
# *end* of the entry, so that a comment written above the next entry still sits above it.
# --------------------------------------------------------------------------------------------
@dataclass
class _After:
    """A comment after an item: an end-of-line token (or None) and the full lines after it."""

    eol: Any = None  # a ruamel CommentToken whose value is "# text\n"
    lines: str = ""

    def __bool__(self) -> bool:
        return self.eol is not None or bool(self.lines)

    def then(self, other: _After) -> _After:
        """This comment followed by ``other`` (an end-of-line of ``other`` becomes a line)."""
        if self.eol is None and not self.lines:
            return other
        if self.eol is None:  # lines came between: ``other``'s end-of-line becomes a line
            extra = _as_lines(other.eol) if other.eol is not None else ""
            return _After(None, self.lines + extra + other.lines)
        extra = _as_lines(other.eol) if other.eol is not None else ""
        return _After(self.eol, self.lines + extra + other.lines)


def _is_flow(node: Any) -> bool:
    fa = getattr(node, "fa", None)
    return bool(fa is not None and fa.flow_style())


def _is_block_container(node: Any) -> bool:
    return isinstance(node, (dict, list)) and bool(node) and not _is_flow(node)


def _slot_index(node: Any) -> int:
    return 0 if isinstance(node, list) else 2


def _pop_after(node: Any, key: Any) -> _After:
    """Detach the comment after ``node[key]``."""
    ca = getattr(node, "ca", None)
    comments = None if ca is None else ca.items.get(key)
    index = _slot_index(node)
    if not comments or len(comments) <= index or comments[index] is None:
        return _After()
    token = comments[index]
    comments[index] = None
    return _pop_after_token(token)


def _pop_before(node: Any, key: Any) -> str:
    """Detach the full-line comments ruamel keeps *before* ``node[key]`` (slot 1)."""
    ca = getattr(node, "ca", None)
    comments = None if ca is None else ca.items.get(key)
    if not comments or len(comments) < 2 or not comments[1]:
        return ""
    tokens = comments[1]
    comments[1] = None
    return "".join(_as_lines(t) for t in tokens)


def _pop_after_token(token: Any) -> _After:
    """A detached comment token as an :class:`_After`."""
    head, sep, rest = token.value.partition("\n")
    if not head.strip():
        return _After(None, rest)
    eol = copy.copy(token)
    eol.value = head + sep
    return _After(eol, rest)


def _set_after(node: Any, key: Any, after: _After) -> None:
    """Attach ``after`` to ``node[key]``, after the comment already there."""
    if not after or not hasattr(node, "ca"):
        return
    after = _pop_after(node, key).then(after)
    comments = node.ca.items.setdefault(key, [None, None, None, None])
    while len(comments) < 4:
        comments.append(None)
    if after.eol is not None:
        token = copy.copy(after.eol)
        token.value = after.eol.value + after.lines
    else:
        token = _token("\n" + after.lines)
    comments[_slot_index(node)] = token


def _token(text: str, column: int = 0) -> Any:
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.tokens import CommentToken

    return CommentToken(text, CommentMark(column), None)


def _last_slot(node: Any) -> tuple[Any, Any] | None:
    """The (container, key) whose trailing comment is printed last for a block ``node``."""
    if not _is_block_container(node):
        return None
    key = next(reversed(node)) if isinstance(node, dict) else len(node) - 1
    inner = _last_slot(node[key])
    return inner if inner is not None else (node, key)


def _take_tail(node: Any) -> str:
    """Detach the full-line comments printed after the last line of block ``node``."""
    slot = _last_slot(node)
    if slot is None:
        return ""
    after = _pop_after(*slot)
    _set_after(*slot, _After(after.eol))
    return after.lines


def _take_pre(node: Any) -> str:
    """Detach the full-line comments between a block container's key line and its first item
    (and ruamel's copy of the key's end-of-line comment, which the caller moves itself)."""
    ca = getattr(node, "ca", None)
    if ca is None or not ca.comment:
        return ""
    tokens = ca.comment[1] if len(ca.comment) > 1 else None
    ca.comment = None
    return "".join(_as_lines(t) for t in tokens or ())


def _as_lines(token: Any) -> str:
    """A comment token as full lines at its own column (ruamel strips the indentation)."""
    value = token.value
    if value.startswith("#"):
        value = " " * (token.column or 0) + value
    return value if value.endswith("\n") else value + "\n"


# --------------------------------------------------------------------------------------------
# the conversion
# --------------------------------------------------------------------------------------------
@dataclass
class _Out:
    """One element of the new list and where it came from.

    ``origin`` is the index of the old list element it replaces (None for a flat dict);
    ``seq_comments`` are ruamel's sequence-item comments of a kept element; ``after`` and
    ``before`` are the comments printed after and before a converted element.
    """

    node: Any
    converted: bool
    origin: int | None = None
    seq_comments: list | None = None
    after: _After = field(default_factory=_After)
    before: str = ""  # full comment lines printed before the element


def _new_map(flow: bool, like: Any) -> Any:
    if not hasattr(like, "ca") and not hasattr(like, "fa"):
        return {}
    from ruamel.yaml.comments import CommentedMap

    out = CommentedMap()
    if flow:
        out.fa.set_flow_style()
    else:
        out.fa.set_block_style()
    return out


def _entry(parent_class: Any, pattern: Any, value: Any, parent: Any) -> _Out:
    """The legacy pair ``parent[pattern] = value`` as a list-form entry (as ``_legacy_pair``)."""
    before = _pop_before(parent, pattern)
    key_after = _pop_after(parent, pattern)
    block = _is_block_container(value)
    after = _After()
    quantizer_eol = None
    inner = ""
    if isinstance(value, (dict, list)):
        # ruamel keeps a copy of the comment after the key on the value; the parent's copy is
        # missing when it is the last thing before a following document-level comment
        ca = getattr(value, "ca", None)
        copy_after = ca.comment[0] if ca is not None and ca.comment else None
        if not key_after and copy_after is not None:
            key_after = _pop_after_token(copy_after)
        inner = _take_pre(value)  # comment lines between the key and the value's first item
    if block:
        quantizer_eol = key_after.eol  # written on the key's line, which becomes this one
        after = _After(None, key_after.lines + _take_tail(value))
    else:
        after = key_after
    entry = _new_map(not block, parent)
    entry["quantizer_name"] = _star(parent) if pattern == "default" else pattern
    if parent_class is not None:
        entry["parent_class"] = parent_class
    enable: Any = None
    enable_after = _After()
    if isinstance(value, Mapping):
        if "enable" in value:
            enable = value["enable"]
            enable_after = _pop_after(value, "enable")
            if hasattr(value, "ca"):
                value.ca.items.pop("enable", None)
            del value["enable"]
        cfg = value if value else None
    else:
        cfg = value  # a list (a sequential quantizer) or None
    if cfg is not None:
        entry["cfg"] = cfg
    if enable is not None or cfg is None:
        # {pattern: {}} / {pattern: None}: cfg None, enable left at its default (True)
        entry["enable"] = True if enable is None else enable
    if quantizer_eol is not None:
        _set_after(entry, "quantizer_name", _After(quantizer_eol))
    if inner:  # printed where they were: between the pattern's line and its attributes
        _set_after(
            entry,
            "parent_class" if "parent_class" in entry else "quantizer_name",
            _After(None, inner),
        )
    if block:
        _set_after(entry, "enable", _After(enable_after.eol))
        after = _After(None, enable_after.lines).then(after)
    else:
        after = enable_after.then(after)
    return _Out(entry, True, after=after, before=before)


def _star(like: Any) -> Any:
    """``"*"`` for the renamed ``default`` key, double-quoted in YAML (it must be quoted)."""
    if not hasattr(like, "ca"):
        return "*"
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    return DoubleQuotedScalarString("*")


def _pairs(parent: Any, key: Any) -> tuple[list[_Out], str]:
    """A legacy pair → entries, plus comment lines that go before them.

    ``nn.*`` keys scope a mapping of patterns: one entry per pattern with ``parent_class``.
    """
    value = parent[key]
    if not (isinstance(key, str) and key.startswith("nn.")):
        return [_entry(None, key, value, parent)], ""
    if not isinstance(value, Mapping) or not value:
        raise MigrationError(f"quant_cfg: the value of {key!r} must be a mapping of patterns")
    before = _pop_before(parent, key)
    key_after = _pop_after(parent, key)
    before += _take_pre(value) if _is_block_container(value) else ""
    out = [_entry(key, pattern, value[pattern], value) for pattern in list(value)]
    first = out[0]
    if key_after.eol is not None and not _is_flow(first.node) and hasattr(first.node, "ca"):
        _set_after(first.node, "quantizer_name", _After(key_after.eol))
    elif key_after.eol is not None:
        first.after = _After(key_after.eol).then(first.after)
    out[-1].after = out[-1].after.then(_After(None, key_after.lines))
    return out, before


def _convert(raw: Any) -> list[_Out]:
    """``quant_cfg`` (a legacy dict, or a list with legacy elements) → the new elements."""
    out: list[_Out] = []
    if isinstance(raw, Mapping):
        if _IMPORT in raw:
            raise MigrationError(
                "quant_cfg is a legacy dict that uses $import; write it as a list by hand "
                "(the legacy form does not say where the imported entries go)"
            )
        for key in list(raw):
            entries, before = _pairs(raw, key)
            entries[0].before = before + entries[0].before
            out += entries
        return out
    for index, element in enumerate(raw):
        seq_comments = raw.ca.items.get(index) if hasattr(raw, "ca") else None
        if not isinstance(element, Mapping) or "quantizer_name" in element or _IMPORT in element:
            out.append(_Out(element, False, index, seq_comments))
            continue
        if len(element) == 1:
            entries, before = _pairs(element, next(iter(element)))
        elif any(isinstance(k, str) and k.startswith("nn.") for k in element):
            entries, before = [], ""
            for key in list(element):
                more, more_before = _pairs(element, key)
                if entries:
                    more[0].before = more_before + more[0].before
                else:
                    before = more_before
                entries += more
        else:  # not a legacy form either: left for the loader to report
            out.append(_Out(element, False, index, seq_comments))
            continue
        entries[-1].after = entries[-1].after.then(_pop_after(raw, index))
        entries[0].before = _pop_before(raw, index) + before + entries[0].before
        for entry in entries:
            entry.origin = index
        out += entries
    return out


def _attach(seq: Any, elements: list[_Out]) -> None:
    """Put each converted element's comments where ruamel prints them (``seq`` holds them)."""
    for index, element in enumerate(elements):
        if element.seq_comments is not None:
            seq.ca.items[index] = element.seq_comments
        if element.before and index:
            previous = elements[index - 1].node
            _set_after(*(_last_slot(previous) or (seq, index - 1)), _After(None, element.before))
        elif element.before:
            seq.ca.comment = [None, [*_pre_tokens(seq), _token(element.before)]]
        _set_after(*(_last_slot(element.node) or (seq, index)), element.after)


def _pre_tokens(seq: Any) -> list:
    comment = seq.ca.comment
    return list(comment[1] or []) if comment and len(comment) > 1 else []


def _build_list(elements: list[_Out], raw: Any) -> Any:
    """The new ``quant_cfg`` list for a whole-document dump (JSON, or flow-style YAML)."""
    if not hasattr(raw, "ca"):
        return [e.node for e in elements]
    from ruamel.yaml.comments import CommentedSeq

    if isinstance(raw, list):  # keep the sequence: its leading comments are its parent's too
        seq = raw
        list.__delitem__(seq, slice(None))
        list.extend(seq, [e.node for e in elements])
        seq.ca.items.clear()
    else:
        seq = CommentedSeq([e.node for e in elements])
        seq.fa.set_block_style()
    _attach(seq, elements)
    return seq


# --------------------------------------------------------------------------------------------
# locating quant_cfg in a document
# --------------------------------------------------------------------------------------------
def _quant_cfg_parent(body: Any) -> tuple[Any, Any] | None:
    """(container, key) holding ``quant_cfg`` in a config or a recipe."""
    if isinstance(body, Mapping):
        if "quant_cfg" in body:
            return body, "quant_cfg"
        quantize = body.get("quantize")
        if isinstance(quantize, Mapping) and "quant_cfg" in quantize:
            return quantize, "quant_cfg"
    return None


def _migrate_tree(body: Any) -> tuple[Any, list[_Out] | None]:
    """Convert ``body``'s ``quant_cfg`` (or ``body`` itself, a list snippet) in place.

    Returns the new body and the new elements, or None for the elements when nothing is legacy.
    """
    where = _quant_cfg_parent(body)
    raw = body if where is None else where[0][where[1]]
    if not isinstance(raw, (dict, list)) or (where is None and not isinstance(raw, list)):
        return body, None
    elements = _convert(raw)
    if not any(e.converted for e in elements):
        return body, None
    new = _build_list(elements, raw)
    if where is None:
        return new, elements
    where[0][where[1]] = new
    return body, elements


# --------------------------------------------------------------------------------------------
# YAML: round trip, then splice into the original text
# --------------------------------------------------------------------------------------------
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
    where = _quant_cfg_parent(body)
    if where is None:
        return None
    container, key = where
    raw = container[key]
    if any(_is_flow(node) for node in (body, container, raw)) or not raw:
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


def _render(elements: list[_Out], dash_column: int, text: str) -> list[str]:
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
    _attach(seq, elements)
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


def _splice(text: str, layout: _Layout, elements: list[_Out]) -> str:
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


def _migrate_yaml(text: str) -> tuple[str, int, int]:
    docs = _load_all(text)
    if not docs:
        return text, 0, 0
    layout = _layout(docs[-1], text.splitlines(keepends=True))
    if layout is not None:
        where = _quant_cfg_parent(docs[-1])
        assert where is not None
        elements = _convert(where[0][where[1]])
        if not any(e.converted for e in elements):
            return text, 0, 0
        return _splice(text, layout, elements), *_counts(elements)
    # flow style or a list snippet: ruamel writes the whole document
    new_body, converted = _migrate_tree(docs[-1])
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
    return stream.getvalue(), *_counts(converted)


def _counts(elements: list[_Out]) -> tuple[int, int]:
    """(legacy elements converted, entries they became)."""
    converted = [e for e in elements if e.converted]
    origins = {e.origin for e in converted}
    return (len(origins) if None not in origins else len(converted)), len(converted)


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------
def _migrate_json(text: str) -> tuple[str, int, int]:
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MigrationError(f"invalid JSON: {exc}") from None
    new_body, elements = _migrate_tree(body)
    if elements is None:
        return text, 0, 0
    dumped = json.dumps(new_body, indent=_json_indent(text), ensure_ascii=False) + "\n"
    return dumped, *_counts(elements)


def _json_indent(text: str) -> int:
    for line in text.splitlines()[1:]:
        stripped = line.lstrip(" ")
        if stripped and len(stripped) < len(line):
            return len(line) - len(stripped)
    return 2


# --------------------------------------------------------------------------------------------
# verification and public API
# --------------------------------------------------------------------------------------------
def _semantics(src: Any, base_dir: Path | None) -> Any:
    """What a document means: the validated config (or entry list) as plain data."""
    from qconfig.errors import ConfigError
    from qconfig.loader import Recipe, load_document

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            value = load_document(src, base_dir=base_dir).validate()
        except ConfigError as exc:
            raise MigrationError(f"does not load; fix these first:\n{exc}") from None
    if isinstance(value, Recipe):
        return ("recipe", value.metadata, value.quantize.model_dump())
    if isinstance(value, list):
        return [e.model_dump() for e in value]
    return value.model_dump()


def migrate_text(
    text: str,
    *,
    json_format: bool = False,
    base_dir: str | os.PathLike | None = None,
    file: str | None = None,
) -> Migration:
    """Migrate a config's text; raises ``MigrationError`` if it does not load or would change.

    ``base_dir`` resolves the config's relative imports (the file's directory); ``file`` is the
    path ``text`` was read from, if any, so that load errors name it with line and column.
    """
    root = Path(base_dir) if base_dir is not None else Path.cwd()
    original: Any = Path(file) if file is not None and Path(file).is_file() else text
    before = _semantics(original, root)
    new_text, converted, entries = (_migrate_json if json_format else _migrate_yaml)(text)
    if not converted:
        return Migration(text, 0, entries)
    after = _semantics(new_text, root)
    if after != before:
        raise MigrationError(
            "the migrated config would differ from the original; "
            "nothing was written (please report this as a qconfig bug)"
        )
    return Migration(new_text, converted, entries)


def migrate_file(path: str | os.PathLike) -> Migration:
    """Migrate the file at ``path`` (not written back; see ``qconfig migrate --write``)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    return migrate_text(
        text,
        json_format=path.suffix.lower() == ".json",
        base_dir=path.parent,
        file=os.fspath(path),
    )
