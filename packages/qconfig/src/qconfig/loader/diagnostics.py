"""pydantic validation errors → located diagnostics (``QC003``).

pydantic reports errors at paths of the *validated* value; a legacy ``quant_cfg`` form is
normalized before validation, so its paths are mapped back to the element the user wrote
before the location is looked up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from qconfig.errors import format_path
from qconfig.loader.convert import is_model
from qconfig.loader.locations import VALIDATION_ERROR, JsonPath, Loc, Locations

if TYPE_CHECKING:
    from qconfig.diagnostic import Diagnostic


def _walk(node: Any, path: JsonPath, parts: tuple) -> JsonPath:
    """Follow pydantic ``loc`` parts through the raw data, skipping union tags it added."""
    for part in parts:
        if isinstance(node, Mapping) and not is_model(node):
            if part in node:
                node = node[part]
                path += (part,)
        elif (
            isinstance(node, (list, tuple))
            and isinstance(part, int)
            and not isinstance(part, bool)
            and 0 <= part < len(node)
        ):
            node = node[part]
            path += (part,)
    return path


def _get(data: Any, path: JsonPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _entry_path(raw: Any, index: int, rest: tuple) -> JsonPath | None:
    """Path (below ``quant_cfg``) of the element that normalized entry ``index`` came from (a
    legacy form expands to several entries; docs/writing-configs.md)."""
    from qconfig.normalize import expand_quant_cfg

    try:
        expanded = expand_quant_cfg(raw, warn=False)
    except ValueError:
        return None
    if index >= len(expanded):
        return None
    entry = expanded[index]
    base: JsonPath = entry.source
    if not entry.legacy:
        return _walk(_get(raw, base), base, rest)
    # legacy {pattern: cfg} or {"nn.X": {pattern: cfg}}: walk into the pattern's value (an
    # int part is a list index, unless the flat dict's key itself is an int: {1: 8})
    if isinstance(base[-1], int) and isinstance(_get(raw, base[:-1]), (list, tuple)):
        (key,) = _get(raw, base).keys()
        base += (key,)
    parent = base
    if isinstance(base[-1], str) and base[-1].startswith("nn."):
        base += (entry.value["quantizer_name"],)
    value = _get(raw, base)
    field_name, rest = (rest[0], rest[1:]) if rest else (None, ())
    if field_name == "cfg":
        return _walk(value, base, rest)
    if field_name == "enable" and isinstance(value, Mapping) and "enable" in value:
        return (*base, "enable")
    if field_name == "parent_class":
        return parent
    return base


def _shape_error_path(raw: Any) -> JsonPath:
    """The ``quant_cfg`` element that a whole-list shape error is about."""
    from qconfig.normalize import expand_quant_cfg

    if isinstance(raw, Mapping):
        items = [((k,), {k: v}) for k, v in raw.items()]
    elif isinstance(raw, (list, tuple)):
        items = [((i,), element) for i, element in enumerate(raw)]
    else:
        return ()
    for path, element in items:
        try:
            expand_quant_cfg([element], warn=False)
        except ValueError:
            return path
    return ()


def _map_loc(loc: tuple, data: Any, quantize: bool) -> JsonPath:
    """The raw-data path of a pydantic error. Mapping through the legacy forms must never turn
    a validation error into a crash: on malformed input it falls back to the plain walk."""
    try:
        return _map_quantize_loc(loc, data, quantize)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return _walk(data, (), tuple(loc))


def _map_quantize_loc(loc: tuple, data: Any, quantize: bool) -> JsonPath:
    if quantize and loc and loc[0] == "quant_cfg" and isinstance(data, Mapping):
        raw = data.get("quant_cfg")
        if len(loc) == 1:
            return ("quant_cfg", *_shape_error_path(raw))
        if isinstance(loc[1], int):
            mapped = _entry_path(raw, loc[1], tuple(loc[2:]))
            if mapped is not None:
                return ("quant_cfg", *mapped)
    return _walk(data, (), tuple(loc))


def _message(error: dict) -> str:
    kind = error["type"]
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    if kind == "extra_forbidden":
        return _shorten(f"Unknown field {error['loc'][-1]!r} (not allowed here).")
    if kind == "missing":
        return f"Missing required field {error['loc'][-1]!r}."
    return _shorten(message)


# A quoted value longer than a line, as validators echo what they got ('xxx...' of 100 KB).
_LONG_QUOTED = re.compile(r"'[^'\n]{120,}'|\"[^\"\n]{120,}\"")


def _shorten(message: str) -> str:
    """Validators quote the offending value whole; a 100 KB string must not make a 100 KB
    diagnostic (the position already says where it is), so long quoted values are cut."""
    if len(message) < 240:
        return message
    return _LONG_QUOTED.sub(
        lambda m: f"{m.group()[:60]}...{m.group()[0]} ({len(m.group()) - 2:,} characters)",
        message,
    )


def _shown_input(error: dict) -> str | None:
    """The offending scalar, for type errors whose message does not show it."""
    value = error.get("input")
    if error["type"] in ("value_error", "assertion_error", "extra_forbidden", "missing"):
        return None
    if isinstance(value, (str, int, float, bool, type(None))):
        return _shorten(repr(value))
    return None


def validation_diagnostics(
    exc: Exception,
    data: Any,
    locs: Locations,
    schema: Any,
    *,
    prefix: JsonPath = (),
    file: str | None = None,
) -> list[Diagnostic]:
    """One diagnostic per location; alternatives of a union at one place are joined by "or"."""
    from pydantic import ValidationError

    from qconfig.quantize import QuantizeConfig

    if not isinstance(exc, ValidationError):
        loc = locs.locate(prefix, True)
        return [_diagnostic(str(exc), loc, prefix, file)]
    grouped: dict[JsonPath, tuple[list[str], list[str]]] = {}
    for error in exc.errors(include_url=False):
        path = _map_loc(tuple(error["loc"]), data, schema is QuantizeConfig)
        messages, inputs = grouped.setdefault(path, ([], []))
        message, shown = _message(error), _shown_input(error)
        if message not in messages:
            messages.append(message)
        if shown is not None and shown not in inputs:
            inputs.append(shown)
    out = []
    for path, (messages, inputs) in grouped.items():
        node = value_at(data, path)
        prefer_key = isinstance(node, (dict, list)) or any(
            m.startswith("Unknown field") for m in messages
        )
        loc = locs.locate(prefix + path, prefer_key)
        text = "; or ".join(messages) + (f" (got {inputs[0]})" if len(inputs) == 1 else "")
        out.append(_diagnostic(text, loc, prefix + path, file))
    return out


def value_at(data: Any, path: JsonPath) -> Any:
    try:
        return _get(data, path)
    except (KeyError, IndexError, TypeError):
        return None


def _diagnostic(message: str, loc: Loc | None, path: JsonPath, file: str | None) -> Diagnostic:
    from qconfig.diagnostic import Diagnostic  # made only for errors (qconfig.errors)

    file_, line, column = loc if loc is not None else (file, None, None)
    return Diagnostic(
        VALIDATION_ERROR, "error", message, file_, line, column, format_path(list(path))
    )
