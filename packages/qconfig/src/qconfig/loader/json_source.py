"""JSON source: ``json.loads`` for the values, a small scanner for their positions.

The standard library keeps no positions, so a second pass over text that ``json.loads`` already
accepted records where each key and value starts, and names both places of a duplicate key.
A first pass over the tokens (:func:`_prescan`) refuses, with a position, what ``json`` would
build too much of, recurse too deep into, or fail on with a bare ``ValueError``
(:mod:`qconfig.loader.limits`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from qconfig.errors import ConfigError
from qconfig.loader.convert import convert_key, convert_tree
from qconfig.loader.limits import (
    MAX_DEPTH,
    MAX_INT_DIGITS,
    LoadBudget,
    depth_error,
    has_surrogate,
    int_error,
    surrogate_error,
)
from qconfig.loader.locations import (
    SYNTAX_ERROR,
    JsonPath,
    Loc,
    Locations,
    Parsed,
    finish_parse,
    located_error,
)

# A string, an opening or closing bracket, or an atom (number, true, false, null).
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[{]|[\]}]|[^\s,:\[\]{}"]+', re.DOTALL)
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")


class _DuplicateJsonKey(Exception):
    pass


class JsonSyntaxError(ConfigError):
    """Text that is not JSON (``parse_text`` then tries YAML for unsuffixed text); a limit or a
    duplicate key in valid JSON is a plain ``ConfigError`` and is not retried."""


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateJsonKey(key)
        out[key] = value
    return out


def _offset_loc(text: str, file: str | None, index: int) -> Loc:
    line = text.count("\n", 0, index) + 1
    return (file, line, index - (text.rfind("\n", 0, index) + 1) + 1)


def _check_number(atom: str, text: str, file: str | None, index: int) -> None:
    """Refuse the numbers ``json`` cannot or should not read: an integer beyond Python's
    4,300-digit limit (``json.loads`` raises a bare ``ValueError``) and a float literal that
    overflows to infinity (``1e999``; no config value is meant that way)."""
    match = _NUMBER.fullmatch(atom)
    if match is None:
        return
    if match.group(1) is None and match.group(2) is None:
        digits = len(atom) - atom.startswith("-")
        if digits > MAX_INT_DIGITS:
            raise int_error(digits, _offset_loc(text, file, index))
    elif math.isinf(float(atom)):
        shown = atom if len(atom) <= 40 else atom[:40] + "..."
        raise located_error(
            SYNTAX_ERROR,
            f"Number too large: {shown} does not fit a float (it would be read as infinity).",
            _offset_loc(text, file, index),
        )


def _check_string(token: str, text: str, file: str | None, index: int) -> None:
    """Refuse a string that holds a lone surrogate, written raw or as a ``\ud800`` escape
    (``json`` accepts both; the first ``print`` of it would fail)."""
    if "\\u" not in token and not has_surrogate(token):
        return
    import json

    try:
        value = json.loads(token)
    except ValueError:
        return  # not a valid string: json.loads reports it
    if has_surrogate(value):
        raise surrogate_error(value, _offset_loc(text, file, index))


def _prescan(text: str, file: str | None, budget: LoadBudget) -> None:
    """Count values, nesting and numbers from the tokens before ``json.loads`` builds anything:
    a deep or huge document is one located error, not a ``RecursionError`` or a traceback, and
    costs no more than a pass over its text."""
    left = budget.values_left()
    count = depth = 0
    for match in _TOKEN.finditer(text):
        char = text[match.start()]
        if char in "]}":
            depth -= 1
            continue
        count += 1
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise depth_error(_offset_loc(text, file, match.start()))
        elif char == '"':
            _check_string(match.group(), text, file, match.start())
        elif char == "-" or char.isdigit():
            _check_number(match.group(), text, file, match.start())
        if count > left:
            earlier = budget.values
            also = f" besides the {earlier:,} built from other files" if earlier else ""
            budget.charge_values(
                count,
                _offset_loc(text, file, match.start()),
                f"this file has more than {left:,} values{also}",
            )
    budget.charge_values(count, None, "")


def parse_json(
    text: str, file: str | None, base_dir: Path, budget: LoadBudget | None = None
) -> Parsed:
    import json

    _prescan(text, file, budget if budget is not None else LoadBudget())
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as exc:
        where = (file, exc.lineno, exc.colno)
        error = located_error(SYNTAX_ERROR, f"JSON syntax error: {exc.msg}", where)
        raise JsonSyntaxError(error.diagnostics) from None
    except _DuplicateJsonKey:
        data = None  # the scanner below finds both occurrences and raises
    except RecursionError:  # not expected after _prescan; kept as the last line of defence
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
