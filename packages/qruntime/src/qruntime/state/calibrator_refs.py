"""How calibrators given as a class or ``(class, args, kwargs)`` are written to a state file's
``calibrators`` metadata and read back from it.

Why a module: the plan JSON names only "max" and "histogram"; a constructor is written there as
"max" and described beside the plan by a reference (``module:Class``, form, tagged JSON
arguments). Reading one never imports code: the class must already be loaded and be a
calibrator, and it is constructed once so a bad reference fails with its place named.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

from qconfig.attributes import QuantizerAttributeConfig
from qconfig.errors import DocumentError
from qconfig.plan import Plan

from qruntime.state.file import metadata_json

__all__ = ["restore_calibrators", "split_calibrators"]

#: ``calibrator`` values the plan JSON can hold; a constructor is written as "max" in the plan
#: and rebuilt from the ``calibrators`` metadata.
_NAMED_CALIBRATORS = ("max", "histogram")
_CALIBRATOR_METHODS = ("collect", "compute_amax", "reset")


def split_calibrators(plan: Plan) -> tuple[Plan, dict[str, list[Any]]]:
    """The plan with constructor calibrators written as "max", and per quantizer the
    constructors (one entry per element, None where the element names its calibrator)."""
    calibrators: dict[str, list[Any]] = {}
    replaced: dict[int, QuantizerAttributeConfig] = {}
    quantizers = {}
    for name, q in plan.quantizers.items():
        elements = q.attributes if isinstance(q.attributes, tuple) else (q.attributes,)
        refs = [_calibrator_ref(name, a.calibrator) for a in elements]
        if not any(r is not None for r in refs):
            quantizers[name] = q
            continue
        calibrators[name] = refs
        plain = tuple(_named_calibrator(a, replaced) for a in elements)
        quantizers[name] = dataclasses.replace(q, attributes=plain if q.is_sequential else plain[0])
    return dataclasses.replace(plan, quantizers=quantizers), calibrators


def _named_calibrator(
    attrs: QuantizerAttributeConfig, cache: dict[int, QuantizerAttributeConfig]
) -> QuantizerAttributeConfig:
    if isinstance(attrs.calibrator, str):
        return attrs
    if id(attrs) not in cache:
        cache[id(attrs)] = attrs.model_copy(update={"calibrator": "max"})
    return cache[id(attrs)]


def _calibrator_ref(name: str, value: Any) -> dict[str, Any] | None:
    """How a file names a constructor calibrator (None for a named one)."""
    if isinstance(value, str):
        return None
    parts = value if isinstance(value, tuple) else (value,)
    target = parts[0] if parts else None
    if not 1 <= len(parts) <= 3 or not isinstance(target, type):
        raise ValueError(
            f"{name}: calibrator {value!r} cannot be saved: a state file restores a calibrator "
            "class, alone or as (class, args, kwargs)"
        )
    ref = f"{target.__module__}:{target.__qualname__}"
    if _lookup_class(ref) is not target:
        raise ValueError(
            f"{name}: calibrator class {ref} cannot be saved: it cannot be found again by that "
            "name (define it at the top level of a module)"
        )
    try:
        args = [_encode(p) for p in parts[1:]]
    except TypeError as exc:
        raise ValueError(f"{name}: calibrator {value!r} cannot be saved: {exc}") from None
    return {"class": ref, "form": len(parts) if isinstance(value, tuple) else 0, "args": args}


def _encode(value: Any) -> Any:
    """JSON with tuples, lists and dicts tagged, so that they come back as they were."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise TypeError(f"{value!r} is not a finite number")
        return value
    if isinstance(value, tuple):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return {"list": [_encode(v) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[_encode(k), _encode(v)] for k, v in value.items()]}
    raise TypeError(f"an argument of type {type(value).__name__} cannot be written to a file")


def _lookup_class(ref: str) -> Any:
    """The object ``module:qualname`` names, from modules already imported (a state file never
    makes Python import anything: importing runs code), or None."""
    module_name, _, qualname = ref.partition(":")
    obj: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        if obj is None or not part.isidentifier():
            return None
        obj = getattr(obj, part, None)
    return obj


def restore_calibrators(plan: Plan, text: str, file: str) -> Plan:
    """The plan with the constructors of the ``calibrators`` metadata ``text`` put back."""
    where: tuple[int | str, ...] = ("__metadata__", "calibrators")
    refs = metadata_json(text, file, where)
    if not isinstance(refs, dict):
        raise DocumentError(
            "must be a JSON object (quantizer → constructors)", file=file, path=where
        )
    quantizers = dict(plan.quantizers)
    built: dict[tuple[int, str], QuantizerAttributeConfig] = {}
    for name, row in refs.items():
        q = quantizers.get(name)
        elements = () if q is None else q.attributes if q.is_sequential else (q.attributes,)
        if not isinstance(row, list) or len(row) != len(elements):
            raise DocumentError(
                f"must list one constructor (or null) per element of quantizer {name!r} of the "
                f"plan, which has {len(elements)}",
                file=file,
                path=(*where, name),
            )
        new = []
        for index, (attrs, ref) in enumerate(zip(elements, row, strict=True)):
            if ref is None:
                new.append(attrs)
                continue
            key = (id(attrs), json.dumps(ref, sort_keys=True))
            if key not in built:
                value = _calibrator_from_ref(ref, file, (*where, name, index))
                built[key] = attrs.model_copy(update={"calibrator": value})
            new.append(built[key])
        assert q is not None
        quantizers[name] = dataclasses.replace(
            q, attributes=tuple(new) if q.is_sequential else new[0]
        )
    return dataclasses.replace(plan, quantizers=quantizers)


def _calibrator_from_ref(ref: Any, file: str, where: tuple[int | str, ...]) -> Any:
    """The constructor ``ref`` describes; its class must already be imported and be a
    calibrator (``collect``, ``compute_amax``, ``reset``): a file never names code to run."""
    if not (
        isinstance(ref, dict)
        and set(ref) == {"class", "form", "args"}
        and isinstance(ref["class"], str)
        and ref["form"] in (0, 1, 2, 3)
        and isinstance(ref["args"], list)
        and len(ref["args"]) == max(ref["form"] - 1, 0)
    ):
        raise DocumentError(
            'expected {"class": "module:Class", "form": 0-3, "args": [...]}', file=file, path=where
        )
    cls = _lookup_class(ref["class"])
    if cls is None:
        raise DocumentError(
            f"calibrator class {ref['class']} is not loaded: import its module before "
            "restore_state (a state file never imports code)",
            file=file,
            path=(*where, "class"),
        )
    if not isinstance(cls, type) or not all(
        callable(getattr(cls, m, None)) for m in _CALIBRATOR_METHODS
    ):
        raise DocumentError(
            f"{ref['class']} is not a calibrator class (collect, compute_amax, reset)",
            file=file,
            path=(*where, "class"),
        )
    try:
        args = [_decode(a) for a in ref["args"]]
    except (TypeError, ValueError) as exc:
        raise DocumentError(
            f"bad constructor arguments: {exc}", file=file, path=(*where, "args")
        ) from None
    if args and not isinstance(args[0], (tuple, list)):
        raise DocumentError("the args must be a tuple or list", file=file, path=(*where, "args", 0))
    if len(args) > 1 and not (
        isinstance(args[1], dict) and all(isinstance(k, str) for k in args[1])
    ):
        raise DocumentError(
            "the kwargs must be a dict with string keys", file=file, path=(*where, "args", 1)
        )
    try:  # what every quantizer built from it will do: fail here, with the place named
        cls(*(args[0] if args else ()), **(args[1] if len(args) > 1 else {}))
    except Exception as exc:
        raise DocumentError(
            f"{ref['class']} cannot be constructed with these arguments "
            f"({type(exc).__name__}: {exc})",
            file=file,
            path=where,
        ) from None
    return (cls, *args) if ref["form"] else cls


def _decode(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((tag, items),) = value.items()
        if tag in ("tuple", "list", "dict") and isinstance(items, list):
            if tag == "tuple":
                return tuple(_decode(v) for v in items)
            if tag == "list":
                return [_decode(v) for v in items]
            if all(isinstance(p, list) and len(p) == 2 for p in items):
                return {_hashable(_decode(k)): _decode(v) for k, v in items}
    raise ValueError(f"{str(value)[:60]} is not an encoded value")


def _hashable(key: Any) -> Any:
    hash(key)  # TypeError for a list or dict key
    return key
