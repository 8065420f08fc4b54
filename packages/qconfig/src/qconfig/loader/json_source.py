"""JSON source: ``json.loads`` for the values, a small scanner for their positions.

The standard library keeps no positions, so a second pass over text that ``json.loads`` already
accepted records where each key and value starts, and names both places of a duplicate key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from qconfig.loader.convert import convert_key, convert_tree
from qconfig.loader.locations import (
    SYNTAX_ERROR,
    JsonPath,
    Loc,
    Locations,
    Parsed,
    finish_parse,
    located_error,
)


class _DuplicateJsonKey(Exception):
    pass


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateJsonKey(key)
        out[key] = value
    return out


def parse_json(text: str, file: str | None, base_dir: Path) -> Parsed:
    import json

    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as exc:
        raise located_error(
            SYNTAX_ERROR, f"JSON syntax error: {exc.msg}", (file, exc.lineno, exc.colno)
        ) from None
    except _DuplicateJsonKey:
        data = None  # the scanner below finds both occurrences and raises
    except RecursionError:
        raise located_error(SYNTAX_ERROR, "JSON nesting too deep.", None, file=file) from None
    locs = Locations()
    _JsonScanner(text, file, locs).scan()
    return finish_parse(convert_tree(data), locs, file, base_dir)


class _JsonScanner:
    """Records where each JSON value and key starts (``json`` keeps no positions).

    Runs only on text that ``json.loads`` accepted (or rejected for a duplicate key), so it can
    trust the grammar and stay small.
    """

    _WS = re.compile(r"[ \t\n\r]*")
    _STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
    _ATOM = re.compile(r"[^\s,\]}]+")

    def __init__(self, text: str, file: str | None, locs: Locations) -> None:
        self.text = text
        self.file = file
        self.locs = locs
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def loc(self, index: int) -> Loc:
        from bisect import bisect_right

        line = bisect_right(self.line_starts, index)
        return (self.file, line, index - self.line_starts[line - 1] + 1)

    def ws(self, i: int) -> int:
        return self._WS.match(self.text, i).end()  # type: ignore[union-attr]

    def scan(self) -> None:
        self.value(self.ws(0), (), None)

    def value(self, i: int, path: JsonPath, key: Any) -> int:
        import json

        text = self.text
        self.locs.values[path] = self.loc(i)
        char = text[i]
        if char == "{":
            i = self.ws(i + 1)
            first: dict[Any, Loc] = {}
            if text[i] == "}":
                return i + 1
            while True:
                match = self._STRING.match(text, i)
                assert match is not None
                member = convert_key(key, json.loads(match.group()))
                self.locs.add_member(first, member, self.loc(i), path)
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
