"""Reading the JSON documents qconfig writes (manifests, plans) without trusting them.

A manifest or plan may be edited by hand, truncated, or be some other file given by mistake,
and qruntime reads plans inside long training jobs. So every way such a document can be wrong
is one :class:`~qconfig.errors.DocumentError` that names the file and the JSON path of the
offending value (``states[3].attributes``), never a ``KeyError``, a ``RecursionError``, a hang
or a silently different result:

* JSON syntax errors say the line and column;
* values that no field of these formats can hold are refused where they are: ``NaN`` and
  ``Infinity`` (and numbers that overflow to it), integer literals of more than
  :data:`MAX_INT_DIGITS` digits (Python would refuse them with a bare ``ValueError``, or, with
  the int-string limit lifted, spend quadratic time on them), and an object that names a key
  twice (``json`` keeps the last one silently; for a plan's ``quantizers`` that would drop a
  quantizer);
* nesting deeper than :data:`MAX_DEPTH` is refused (the deepest value of a valid document is
  about 8 levels down; ``json`` itself raises ``RecursionError`` near 1,000).

The checks cost nothing on a valid document: the parser's hooks only record that something was
wrong, and the document is walked to find *where* only then.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from qconfig.errors import DocumentError, format_path

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "DocumentReader",
    "check_tree",
    "describe",
    "json_tuples",
    "parse_json",
    "validation_error",
]

MAX_DEPTH = 64
"""Deepest nesting accepted in a manifest or plan (valid ones stay under 10 levels)."""

MAX_INT_DIGITS = 100
"""Longest integer literal accepted (no field of these formats needs more than 20 digits)."""

JSONPath = tuple[int | str, ...]


class _Refused:
    """What the parser returns for a value no field can hold; the walk reports it by path."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class _DuplicateKeys(dict):
    """An object that named a key twice (``json`` would keep only the last value)."""

    duplicates: list[str]


def parse_json(text: str | bytes, *, file: str | None = None) -> Any:
    """The parsed document, or a DocumentError saying where it is malformed (module docstring)."""
    text = _as_text(text, file)
    refused: list[bool] = []
    try:
        doc = json.loads(
            text,
            object_pairs_hook=_object_hook(refused),
            parse_constant=_constant_hook(refused),
            parse_float=_float_hook(refused),
            parse_int=_int_hook(refused),
        )
    except json.JSONDecodeError as exc:
        raise DocumentError(
            f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", file=file
        ) from None
    except RecursionError:
        where = _too_deep_at(text)
        message = (
            f"nested more than {MAX_DEPTH} levels deep at line {where[0]}, column {where[1]}"
            if where
            else "nested too deeply for Python's recursion limit"  # called from deep recursion
        )
        raise DocumentError(message, file=file) from None
    if refused:
        check_tree(doc, (), file=file)
    return doc


def _as_text(text: str | bytes, file: str | None) -> str:
    """Bytes as UTF-8 (a leading BOM dropped, as ``qconfig.fileio.read_text`` does)."""
    if isinstance(text, str):
        return text.removeprefix("\ufeff")
    data = bytes(text)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DocumentError(
            f"not valid UTF-8 at line {line}, column {column} "
            f"(byte 0x{data[exc.start]:02x} at offset {exc.start})",
            file=file,
        ) from None


def _object_hook(refused: list[bool]) -> Callable[[list[tuple[str, Any]]], dict]:
    def hook(pairs: list[tuple[str, Any]]) -> dict:
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        refused.append(True)
        duplicated = _DuplicateKeys(obj)
        duplicated.duplicates = []
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                duplicated.duplicates.append(key)
            seen.add(key)
        return duplicated

    return hook


def _constant_hook(refused: list[bool]) -> Callable[[str], _Refused]:
    def hook(name: str) -> _Refused:
        refused.append(True)
        return _Refused(f"{name} is not a number these files can hold (only finite numbers)")

    return hook


def _float_hook(refused: list[bool]) -> Callable[[str], float | _Refused]:
    def hook(literal: str) -> float | _Refused:
        value = float(literal)
        if math.isfinite(value):
            return value
        refused.append(True)
        return _Refused(f"the number {_clip(literal)} is out of range (it overflows to infinity)")

    return hook


def _int_hook(refused: list[bool]) -> Callable[[str], int | _Refused]:
    def hook(literal: str) -> int | _Refused:
        if len(literal.lstrip("-")) <= MAX_INT_DIGITS:
            return int(literal)
        refused.append(True)
        return _Refused(
            f"an integer literal of {len(literal.lstrip('-')):,} digits is out of range "
            f"(at most {MAX_INT_DIGITS} digits)"
        )

    return hook


_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[{]|[\]}]', re.DOTALL)


def _too_deep_at(text: str) -> tuple[int, int] | None:
    """Line and column of the first bracket nested deeper than :data:`MAX_DEPTH`."""
    depth = 0
    for match in _BRACKETS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                start = match.start()
                return text.count("\n", 0, start) + 1, start - text.rfind("\n", 0, start)
        elif token in "]}":
            depth -= 1
    return None


def check_tree(value: Any, path: JSONPath, *, file: str | None = None) -> None:
    """Refuse, at its JSON path, the first value under ``value`` that the parser refused, an
    object with a duplicate key, or nesting deeper than :data:`MAX_DEPTH` (iterative, so any
    depth is safe). For free-form parts of a document (attribute sets) before recursive code
    reads them."""
    stack: list[tuple[Any, JSONPath]] = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, _Refused):
            raise DocumentError(node.message, file=file, path=where)
        if isinstance(node, _DuplicateKeys):
            key = node.duplicates[0]
            raise DocumentError(
                f"the key {key!r} appears more than once in this object (each key may appear "
                "once; a JSON reader would silently keep only the last)",
                file=file,
                path=where,
            )
        if isinstance(node, (dict, list)):
            if len(where) >= MAX_DEPTH:
                raise DocumentError(
                    f"nested more than {MAX_DEPTH} levels deep", file=file, path=where[:MAX_DEPTH]
                )
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((child, (*where, key)) for key, child in reversed(list(items)))


#: Attribute fields that are tuples in the models and lists in JSON.
TUPLE_FIELDS = frozenset({"num_bits", "scale_bits", "axis", "calibrator"})


def json_tuples(value: Any) -> Any:
    """A copy of an attribute set read from JSON with the :data:`TUPLE_FIELDS` lists made
    tuples again (at any depth: ``block_sizes.scale_bits``), so that it validates strictly."""
    if isinstance(value, Mapping):
        return {
            k: tuple(v) if k in TUPLE_FIELDS and isinstance(v, list) else json_tuples(v)
            for k, v in value.items()
        } | (
            {"bias": _bias_tuples(value["bias"])} if isinstance(value.get("bias"), Mapping) else {}
        )
    return value


def _bias_tuples(bias: Mapping) -> dict:
    """``bias`` axis keys hold any value (Model Optimizer ignores it); a tuple written as a JSON
    array must come back a tuple for the plan to equal the one written."""
    return {
        k: tuple(v) if isinstance(v, list) and k.lstrip("-").isdigit() else v
        for k, v in bias.items()
    }


# -- messages -------------------------------------------------------------------------------------
def describe(value: Any) -> str:
    """What a JSON value is, for a message: ``the string "max"``, ``an array``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {json.dumps(value)}"
    if isinstance(value, int):
        return f"the integer {_clip(str(value))}"
    if isinstance(value, float):
        return f"the number {_clip(repr(value))}"
    if isinstance(value, str):
        return f"the string {_clip(json.dumps(value, ensure_ascii=False))}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


# -- pydantic errors ------------------------------------------------------------------------------
#: Errors after the first that a message lists (a manifest of 100k wrong modules has 100k).
_MORE_ERRORS = 5


def validation_error(
    exc: ValidationError, raw: Any, *, file: str | None = None, path: JSONPath = ()
) -> DocumentError:
    """A pydantic ``ValidationError`` as one DocumentError at the JSON path of its first error.

    pydantic locations name union members (``num_bits.int``) and int keys the JSON spells as
    strings (``block_sizes.-1``): the path is the location followed through ``raw`` (what was
    validated) as far as ``raw`` goes. The message has the first error and up to five more;
    ``errors`` on the returned exception lists every one as ``(json path, message)``.
    """
    groups: dict[JSONPath, list[str]] = {}
    found: dict[JSONPath, Any] = {}
    for err in exc.errors(include_url=False):
        where, value = _follow(raw, err["loc"])
        message = " ".join(str(err["msg"]).split())  # one line
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if err["type"] == "missing" and len(where) == len(err["loc"]) - 1:
            message = f"missing required key {err['loc'][-1]!r}"
        else:
            found.setdefault(where, value)
        messages = groups.setdefault(where, [])
        if message not in messages:
            messages.append(message)
    (first, messages), *rest = groups.items()
    text = _alternatives(messages)
    if first in found and _wants_value(messages):
        text += f" (found {describe(found[first])})"
    if rest:
        more = "; ".join(
            f"{format_path((*path, *p)) or '(top)'}: {_alternatives(m)}"
            for p, m in rest[:_MORE_ERRORS]
        )
        text += f". Also: {more}"
        if len(rest) > _MORE_ERRORS:
            text += f"; and {len(rest) - _MORE_ERRORS} more"
    error = DocumentError(text, file=file, path=(*path, *first))
    error.errors = [((*path, *p), _alternatives(m)) for p, m in groups.items()]  # type: ignore[attr-defined]
    return error


def _alternatives(messages: list[str]) -> str:
    """pydantic's one message per union member, as one: "Input should be a valid integer, a
    valid tuple or a valid string"."""
    prefix = "Input should be "
    if len(messages) > 1 and all(m.startswith(prefix) for m in messages):
        options = [m.removeprefix(prefix) for m in messages]
        return prefix + ", ".join(options[:-1]) + " or " + options[-1]
    return "; ".join(messages)


def _wants_value(messages: Iterable[str]) -> bool:
    """Type errors ("Input should be ...") read better with what was found."""
    return any(m.startswith("Input should be") for m in messages)


def _follow(raw: Any, loc: Iterable[int | str]) -> tuple[JSONPath, Any]:
    where: list[int | str] = []
    node = raw
    for part in loc:
        if isinstance(node, Mapping):
            if part in node:
                key: int | str = part
            elif str(part) in node:
                key = str(part)
            else:
                break
            where.append(key)
            node = node[key]
        elif isinstance(node, (list, tuple)) and isinstance(part, int) and 0 <= part < len(node):
            where.append(part)
            node = node[part]
        else:
            break
    return tuple(where), node


# -- hand-written structure checks ----------------------------------------------------------------
class DocumentReader:
    """Typed access to a parsed document: each accessor returns the value or raises a
    DocumentError at its path. JSON types are exact: ``true`` is not an integer, ``"1"`` not a
    number."""

    def __init__(self, file: str | None = None) -> None:
        self.file = file

    def fail(self, path: JSONPath, message: str) -> NoReturn:
        raise DocumentError(message, file=self.file, path=path)

    def expect(self, value: Any, path: JSONPath, wanted: str) -> NoReturn:
        self.fail(path, f"expected {wanted}, found {describe(value)}")

    def object(
        self,
        value: Any,
        path: JSONPath,
        *,
        required: Iterable[str] = (),
        optional: Iterable[str] = (),
        what: str = "an object",
    ) -> dict[str, Any]:
        """An object with the ``required`` keys and no keys outside ``required`` + ``optional``."""
        if not isinstance(value, dict):
            self.expect(value, path, what)
        required = tuple(required)
        for key in required:
            if key not in value:
                self.fail(path, f"missing required key {key!r}")
        allowed = {*required, *optional}
        for key in value:
            if key not in allowed:
                self.fail(
                    (*path, key),
                    f"unknown key {key!r}; allowed here: {', '.join(sorted(allowed))}",
                )
        return value

    def array(self, value: Any, path: JSONPath) -> list[Any]:
        if not isinstance(value, list):
            self.expect(value, path, "an array")
        return value

    def string(self, value: Any, path: JSONPath) -> str:
        if not isinstance(value, str):
            self.expect(value, path, "a string")
        return value

    def boolean(self, value: Any, path: JSONPath) -> bool:
        if not isinstance(value, bool):
            self.expect(value, path, "true or false")
        return value

    def integer(self, value: Any, path: JSONPath, *, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.expect(value, path, "an integer")
        if minimum is not None and value < minimum:
            self.fail(path, f"expected an integer >= {minimum}, found {value}")
        return value

    def index(self, value: Any, path: JSONPath, size: int, table: str) -> int:
        """An index into a table of ``size`` rows (never negative: JSON has no 'from the end')."""
        if isinstance(value, bool) or not isinstance(value, int):
            self.expect(value, path, f"an index into {table!r} (an integer)")
        if not 0 <= value < size:
            rows = f"0 to {size - 1}" if size else "none: it is empty"
            self.fail(path, f"index {value} is not a row of {table!r} (rows: {rows})")
        return value
