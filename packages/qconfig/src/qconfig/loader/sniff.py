"""Is a YAML/JSON file a quantization config? Decided cheaply, for ``lint --skip-non-configs``.

Why not load it and look: pre-commit hands the hook every YAML/JSON file of a repository, and
loading an unrelated file (``yaml.load_all``) expands its aliases — a 600-byte alias bomb cost
51 s and 3 GB just to be skipped. Here a file is read only if it is a regular file (opened
without blocking, at most ``SNIFF_BYTES``), and only PyYAML's *event stream* is looked at, up
to ``SNIFF_EVENTS`` events: nothing is composed, no alias is expanded, no tag is constructed.
The decision reads the top-level keys of the last document, as the full load did:

* a ``modelopt-schema:`` comment or a qconfig ``$schema`` in the first 4 KiB: a config;
* a mapping with ``quant_cfg``, ``algorithm`` or ``quantize``: a config or recipe, unless its
  ``format`` is ``qconfig.*`` (a manifest or a plan; a plan has an ``algorithm`` key too);
* a list with a ``quantizer_name`` key in one of its elements: a list of entries;
* text that does not parse: a config if it mentions ``quant_cfg`` (lint then reports why).

A file cut short by a limit is judged by what was seen. A file that cannot be opened or read
counts as a config, so that lint reports why rather than skipping it silently; a FIFO or a
device is not one.
"""

from __future__ import annotations

import os
from typing import Any

from qconfig.fileio import InputFileError, read_prefix
from qconfig.loader.limits import MAX_BYTES

__all__ = ["CONFIG_KEYS", "SNIFF_BYTES", "SNIFF_EVENTS", "looks_like_config"]

CONFIG_KEYS = frozenset({"quant_cfg", "algorithm", "quantize"})
#: Bytes read at most: a config larger than this cannot be loaded anyway.
SNIFF_BYTES = MAX_BYTES
#: YAML events looked at at most (about 0.1 s).
SNIFF_EVENTS = 100_000
_HEAD = 4096
_MARKERS = ("modelopt-schema:", "qconfig-config.schema.json")


def looks_like_config(path: str | os.PathLike) -> bool:
    """Whether ``path`` should be linted as a config (see the module docstring)."""
    try:
        data, complete = read_prefix(path, SNIFF_BYTES)
    except InputFileError as exc:
        # a directory, FIFO or device is never a config; a missing or unreadable file is
        # linted so that lint says why
        return exc.kind != "not_regular"
    text = data.decode("utf-8-sig", errors="replace")
    if any(marker in text[:_HEAD] for marker in _MARKERS):
        return True
    shape, failed = _last_document(text)
    if failed and complete:
        return "quant_cfg" in text
    return shape.is_config()  # a scan cut short (limit, truncated text) judges what it saw


class _Shape:
    """What the scan saw of one document: its root kind and top-level keys."""

    __slots__ = ("entry", "format", "keys", "kind")

    def __init__(self) -> None:
        self.kind: str | None = None  # "mapping", "list" or "scalar"
        self.keys: set[str] = set()
        self.format: str | None = None
        self.entry = False  # a list element with a quantizer_name key

    def is_config(self) -> bool:
        if self.kind == "mapping":
            if self.format is not None and self.format.startswith("qconfig."):
                return False  # a manifest or a plan
            return bool(CONFIG_KEYS & self.keys)
        return self.kind == "list" and self.entry


def _last_document(text: str) -> tuple[_Shape, bool]:
    """``(shape of the last document, failed)`` from at most ``SNIFF_EVENTS`` events;
    ``failed`` when PyYAML could not parse the text (as far as it was read)."""
    import yaml

    node_events = (yaml.ScalarEvent, yaml.AliasEvent, yaml.MappingStartEvent)
    node_events += (yaml.SequenceStartEvent,)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    shape = _Shape()
    stack: list[list[Any]] = []  # open collections: [is_mapping, key_next, last_key]
    try:
        for _ in range(SNIFF_EVENTS):
            event = loader.get_event()
            kind = type(event)
            if kind is yaml.StreamEndEvent:
                break
            if kind is yaml.DocumentStartEvent:
                shape, stack = _Shape(), []
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                stack.pop()
            elif kind in node_events:
                _node(shape, stack, event, kind)
    except yaml.YAMLError:
        return shape, True
    finally:
        loader.dispose()
    return shape, False


def _node(shape: _Shape, stack: list[list[Any]], event: Any, kind: type) -> None:
    """Record one node event: a top-level key, the top-level ``format`` value, or a
    ``quantizer_name`` key in an element of a top-level list."""
    import yaml

    is_key = False
    if stack:
        frame = stack[-1]
        is_key = frame[0] and frame[1]
        if frame[0]:
            frame[1] = not frame[1]
    else:
        shape.kind = {yaml.MappingStartEvent: "mapping", yaml.SequenceStartEvent: "list"}.get(
            kind, "scalar"
        )
    if kind is yaml.ScalarEvent:
        value = event.value
        if is_key:
            stack[-1][2] = value
            if len(stack) == 1 and shape.kind == "mapping":
                shape.keys.add(value)
            elif len(stack) == 2 and shape.kind == "list" and value == "quantizer_name":
                shape.entry = True
        elif len(stack) == 1 and shape.kind == "mapping" and stack[0][2] == "format":
            shape.format = value
    elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
        stack.append([kind is yaml.MappingStartEvent, True, None])
