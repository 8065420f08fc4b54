"""The limits of one load: bytes read, values built, nesting depth, import depth.

Why one budget per load and not per file: an alias bomb needs one file, but an import bomb needs
none — 23 tiny files that each import the previous one twice double the data 23 times. So every
file a load reads and every value it builds (alias expansions and import copies included) is
charged to one :class:`LoadBudget`, and the charge is made *before* the work: YAML files are
measured from their event stream and JSON files from their tokens before anything is built, and
an import is charged its snippet's size before it is copied. Rejecting a bomb therefore costs
milliseconds, not the memory it asks for. The numbers are far above what a config needs (the
largest shipped preset has 350 values and nests 6 deep) and are documented in
docs/writing-configs.md ("Limits").
"""

from __future__ import annotations

from typing import Any

from qconfig.loader.locations import IO_ERROR, SYNTAX_ERROR, JsonPath, Loc, located_error

#: Values (mappings, lists, keys and scalars) one load may build, aliases and imports expanded.
MAX_VALUES = 100_000
#: Bytes one load may read: the file or text and all its imports together.
MAX_BYTES = 4 * 1024 * 1024
#: Mappings and lists nested in one another, imports spliced in included.
MAX_DEPTH = 64
#: Files in one chain of imports (the importing file included).
MAX_IMPORT_DEPTH = 16
#: Decimal digits of the longest integer (Python's own int-string limit).
MAX_INT_DIGITS = 4300
_INT_BOUND = 10**MAX_INT_DIGITS  # the smallest integer with one digit too many


class LoadBudget:
    """What one load has read and built so far; a charge over a limit raises ``ConfigError``."""

    __slots__ = ("bytes", "values")

    def __init__(self) -> None:
        self.bytes = 0
        self.values = 0

    def values_left(self) -> int:
        return MAX_VALUES - self.values

    def charge_bytes(
        self, size: int, file: str | None, loc: Loc | None, path: JsonPath = ()
    ) -> None:
        """``size`` more bytes were read from ``file`` (imported at ``loc``, when imported)."""
        self.bytes += size
        if self.bytes <= MAX_BYTES:
            return
        earlier = self.bytes - size
        also = f" after {earlier:,} bytes of other files" if earlier else ""
        raise located_error(
            IO_ERROR,
            f"{file or 'The config'} is {size:,} bytes{also}: more than the {MAX_BYTES:,} "
            "bytes a config and its imports may read together.",
            loc,
            path,
            file=None if loc else file,
        )

    def charge_values(self, count: int, loc: Loc | None, what: str, path: JsonPath = ()) -> None:
        """``count`` more values are about to be built; over the limit, ``what`` says what hit
        it (a large file, its aliases, an import), for the message."""
        self.values += count
        if self.values <= MAX_VALUES:
            return
        raise located_error(
            SYNTAX_ERROR,
            f"Too many values: {what}; the limit for a config and everything it imports is "
            f"{MAX_VALUES:,} values (keys included, with YAML aliases and imports expanded).",
            loc,
            path,
        )


def depth_error(loc: Loc | None, path: JsonPath = (), file: str | None = None) -> Exception:
    """Nesting beyond ``MAX_DEPTH``: refused before anything recursive (the builders, pydantic)
    sees it, so a deep document is one located error instead of a ``RecursionError``."""
    return located_error(
        SYNTAX_ERROR,
        f"Nesting too deep: more than {MAX_DEPTH} mappings and lists inside one another "
        "(a config nests fewer than 10).",
        loc,
        path,
        file=file,
    )


def int_error(digits: int, loc: Loc | None, path: JsonPath = (), file: str | None = None):
    """An integer Python cannot print (``str()`` raises beyond 4,300 digits): refused where it
    is written rather than crashing the first message that shows it."""
    about = f"{digits:,} decimal digits" if digits else f"more than {MAX_INT_DIGITS:,} digits"
    return located_error(
        SYNTAX_ERROR,
        f"Integer too large: {about}; integers are limited to {MAX_INT_DIGITS:,} digits "
        "(no config value needs more than a few).",
        loc,
        path,
        file=file,
    )


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds half of a UTF-16 surrogate pair on its own: a Python string can
    (from a JSON or YAML ``\ud800`` escape, or Python text), UTF-8 cannot, so printing it
    would crash later. Surrogates are exactly what strict UTF-8 cannot encode; asking the codec
    is C-speed and, unlike a compiled character class, costs nothing at import."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def surrogate_error(text: str, loc: Loc | None, path: JsonPath = ()) -> Exception:
    """A string with a lone surrogate, refused where it is written."""
    code = next((ord(ch) for ch in text if "\ud800" <= ch <= "\udfff"), 0)
    return located_error(
        SYNTAX_ERROR,
        f"Invalid text: a lone surrogate (\\u{code:04x}) is not a Unicode character; write the "
        "character itself, or a complete surrogate pair in JSON.",
        loc,
        path,
    )


def int_too_large(value: int) -> bool:
    """Whether ``value`` has more than ``MAX_INT_DIGITS`` decimal digits (compared, never
    converted: ``str()`` is what raises)."""
    return value.bit_length() > 14_000 and abs(value) >= _INT_BOUND


def measure(data: Any) -> tuple[int, int]:
    """``(values, depth)`` of plain data: every dict, list, key and scalar counts one value;
    depth counts dicts and lists inside one another. Iterative, and it stops descending past
    ``MAX_DEPTH`` (reporting ``MAX_DEPTH + 1``), so a deep or self-referencing structure ends."""
    count, depth = 0, 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        obj, level = stack.pop()
        count += 1
        if level > MAX_DEPTH:
            depth = level
            continue
        if isinstance(obj, dict):
            level += 1
            count += len(obj)  # the keys
            stack.extend((v, level) for v in obj.values())
        elif isinstance(obj, (list, tuple)):
            level += 1
            stack.extend((v, level) for v in obj)
        depth = max(depth, level)
    return count, depth
