"""The conversion itself: legacy ``quant_cfg`` forms → list entries, in place, element by element.

It applies exactly :func:`qconfig.normalize.expand_quant_cfg`'s conversion (``"default"`` becomes
``"*"`` where it stands, ``nn.*`` scopes become ``parent_class``), to the round-trip tree of the
file rather than to plain data, so that comments and quoting survive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qconfig.migrate.comments import (
    CommentsAfter,
    comment_token,
    is_block_container,
    is_flow,
    last_slot,
    pop_after,
    pop_after_token,
    pop_before,
    set_after,
    take_pre,
    take_tail,
)
from qconfig.migrate.outcome import MigrationError

IMPORT_KEY = "$import"


@dataclass
class NewElement:
    """One element of the new list and where it came from.

    ``origin`` is the index of the old list element it replaces (None for a flat dict);
    ``seq_comments`` are ruamel's sequence-item comments of a kept element; ``after`` and
    ``before`` are the comments printed after and before a converted element.
    """

    node: Any
    converted: bool
    origin: int | None = None
    seq_comments: list | None = None
    after: CommentsAfter = field(default_factory=CommentsAfter)
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


def _entry(parent_class: Any, pattern: Any, value: Any, parent: Any) -> NewElement:
    """The legacy pair ``parent[pattern] = value`` as a list-form entry (as ``_legacy_pair``)."""
    before = pop_before(parent, pattern)
    key_after = pop_after(parent, pattern)
    block = is_block_container(value)
    after = CommentsAfter()
    quantizer_eol = None
    inner = ""
    if isinstance(value, (dict, list)):
        # ruamel keeps a copy of the comment after the key on the value; the parent's copy is
        # missing when it is the last thing before a following document-level comment
        ca = getattr(value, "ca", None)
        copy_after = ca.comment[0] if ca is not None and ca.comment else None
        if not key_after and copy_after is not None:
            key_after = pop_after_token(copy_after)
        inner = take_pre(value)  # comment lines between the key and the value's first item
    if block:
        quantizer_eol = key_after.eol  # written on the key's line, which becomes this one
        after = CommentsAfter(None, key_after.lines + take_tail(value))
    else:
        after = key_after
    entry = _new_map(not block, parent)
    entry["quantizer_name"] = _star(parent) if pattern == "default" else pattern
    if parent_class is not None:
        entry["parent_class"] = parent_class
    enable: Any = None
    enable_after = CommentsAfter()
    if isinstance(value, Mapping):
        if "enable" in value:
            enable = value["enable"]
            enable_after = pop_after(value, "enable")
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
        set_after(entry, "quantizer_name", CommentsAfter(quantizer_eol))
    if inner:  # printed where they were: between the pattern's line and its attributes
        set_after(
            entry,
            "parent_class" if "parent_class" in entry else "quantizer_name",
            CommentsAfter(None, inner),
        )
    if block:
        set_after(entry, "enable", CommentsAfter(enable_after.eol))
        after = CommentsAfter(None, enable_after.lines).then(after)
    else:
        after = enable_after.then(after)
    return NewElement(entry, True, after=after, before=before)


def _star(like: Any) -> Any:
    """``"*"`` for the renamed ``default`` key, double-quoted in YAML (it must be quoted)."""
    if not hasattr(like, "ca"):
        return "*"
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    return DoubleQuotedScalarString("*")


def _pairs(parent: Any, key: Any) -> tuple[list[NewElement], str]:
    """A legacy pair → entries, plus comment lines that go before them.

    ``nn.*`` keys scope a mapping of patterns: one entry per pattern with ``parent_class``.
    """
    value = parent[key]
    if not (isinstance(key, str) and key.startswith("nn.")):
        return [_entry(None, key, value, parent)], ""
    if not isinstance(value, Mapping) or not value:
        raise MigrationError(f"quant_cfg: the value of {key!r} must be a mapping of patterns")
    before = pop_before(parent, key)
    key_after = pop_after(parent, key)
    before += take_pre(value) if is_block_container(value) else ""
    out = [_entry(key, pattern, value[pattern], value) for pattern in list(value)]
    first = out[0]
    if key_after.eol is not None and not is_flow(first.node) and hasattr(first.node, "ca"):
        set_after(first.node, "quantizer_name", CommentsAfter(key_after.eol))
    elif key_after.eol is not None:
        first.after = CommentsAfter(key_after.eol).then(first.after)
    out[-1].after = out[-1].after.then(CommentsAfter(None, key_after.lines))
    return out, before


def convert_elements(raw: Any) -> list[NewElement]:
    """``quant_cfg`` (a legacy dict, or a list with legacy elements) → the new elements."""
    out: list[NewElement] = []
    if isinstance(raw, Mapping):
        if IMPORT_KEY in raw:
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
        if not isinstance(element, Mapping) or "quantizer_name" in element or IMPORT_KEY in element:
            out.append(NewElement(element, False, index, seq_comments))
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
            out.append(NewElement(element, False, index, seq_comments))
            continue
        entries[-1].after = entries[-1].after.then(pop_after(raw, index))
        entries[0].before = pop_before(raw, index) + before + entries[0].before
        for entry in entries:
            entry.origin = index
        out += entries
    return out


def attach_elements(seq: Any, elements: list[NewElement]) -> None:
    """Put each converted element's comments where ruamel prints them (``seq`` holds them)."""
    for index, element in enumerate(elements):
        if element.seq_comments is not None:
            seq.ca.items[index] = element.seq_comments
        if element.before and index:
            previous = elements[index - 1].node
            set_after(
                *(last_slot(previous) or (seq, index - 1)), CommentsAfter(None, element.before)
            )
        elif element.before:
            seq.ca.comment = [None, [*_pre_tokens(seq), comment_token(element.before)]]
        set_after(*(last_slot(element.node) or (seq, index)), element.after)


def _pre_tokens(seq: Any) -> list:
    comment = seq.ca.comment
    return list(comment[1] or []) if comment and len(comment) > 1 else []


def _build_list(elements: list[NewElement], raw: Any) -> Any:
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
    attach_elements(seq, elements)
    return seq


def quant_cfg_parent(body: Any) -> tuple[Any, Any] | None:
    """(container, key) holding ``quant_cfg`` in a config or a recipe."""
    if isinstance(body, Mapping):
        if "quant_cfg" in body:
            return body, "quant_cfg"
        quantize = body.get("quantize")
        if isinstance(quantize, Mapping) and "quant_cfg" in quantize:
            return quantize, "quant_cfg"
    return None


def migrate_tree(body: Any) -> tuple[Any, list[NewElement] | None]:
    """Convert ``body``'s ``quant_cfg`` (or ``body`` itself, a list snippet) in place.

    Returns the new body and the new elements, or None for the elements when nothing is legacy.
    """
    where = quant_cfg_parent(body)
    raw = body if where is None else where[0][where[1]]
    if not isinstance(raw, (dict, list)) or (where is None and not isinstance(raw, list)):
        return body, None
    elements = convert_elements(raw)
    if not any(e.converted for e in elements):
        return body, None
    new = _build_list(elements, raw)
    if where is None:
        return new, elements
    where[0][where[1]] = new
    return body, elements


def count_changes(elements: list[NewElement]) -> tuple[int, int]:
    """(legacy elements converted, entries they became)."""
    converted = [e for e in elements if e.converted]
    origins = {e.origin for e in converted}
    return (len(origins) if None not in origins else len(converted)), len(converted)
