"""``quant_cfg`` input forms → ordered ``QuantizerCfgEntry`` list (docs/writing-configs.md).

Model Optimizer accepts the list form, legacy single-key entries, ``nn.*``-scoped entries and a
legacy flat dict, and converts them with a few sharp edges (``"default"`` is renamed to ``"*"``
*in place*, scoped values cannot be lists). We reproduce the conversion exactly; the ``expand``
step is separate so that lint and ``migrate`` can see where each entry came from.
"""

import functools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from pydantic import TypeAdapter

from qconfig.entries import QuantizerCfgEntry

__all__ = [
    "ExpandedEntry",
    "expand_quant_cfg",
    "need_calibration",
    "normalize_quant_cfg_list",
    "validate_entries",
]

LEGACY_WARNING = (
    "Passing quant_cfg in the legacy dict format is deprecated; use a list of "
    "{'quantizer_name': ..., 'cfg': ..., 'enable': ...} entries (run `qconfig migrate`)."
)


class ExpandedEntry(NamedTuple):
    """One list-form entry and where it came from in the raw input.

    ``source`` is the JSON path below ``quant_cfg`` of the raw element (``(3,)`` or, for a
    legacy flat dict, ``("*weight_quantizer",)``); ``legacy`` tells whether it was converted.
    A named tuple rather than a frozen dataclass: defining it costs every ``qconfig lint``
    start a quarter as much (docs/performance.md).
    """

    value: QuantizerCfgEntry | dict[str, Any]
    source: tuple[int | str, ...]
    legacy: bool


def _check_pattern(key: Any, scope: str | None = None) -> None:
    """A legacy pattern key must be a string: YAML reads ``1:``, ``null:``, ``1.5:`` or ``true:``
    as other types, which Model Optimizer would turn into an entry with a non-string
    ``quantizer_name`` and reject there, far from where the key was written."""
    if not isinstance(key, str):
        where = f" under {scope!r}" if scope else ""
        raise ValueError(
            f"a legacy pattern key{where} must be a string (a quantizer name pattern), got "
            f"{type(key).__name__} {key!r}; quote it in YAML."
        )


def _legacy_pair(key: Any, value: Any) -> list[dict[str, Any]]:
    """One ``{pattern: cfg}`` or ``{"nn.X": {pattern: cfg}}`` pair → list-form dicts."""
    _check_pattern(key)
    if key == "default":
        key = "*"  # kept in place, not moved first, as Model Optimizer does
    if isinstance(key, str) and key.startswith("nn."):
        if not isinstance(value, Mapping):
            raise ValueError(f"For 'nn.*' scoped format, value must be a mapping, got {value!r}")
        out = []
        for pattern, sub_cfg in value.items():
            _check_pattern(pattern, key)
            if not isinstance(sub_cfg, Mapping):
                raise ValueError(
                    f"For 'nn.*' scoped format, the config of {pattern!r} under {key!r} must be "
                    f"a mapping (sequential lists cannot be scoped), got {sub_cfg!r}"
                )
            rest = dict(sub_cfg)
            enable = rest.pop("enable", None)
            entry: dict[str, Any] = {"parent_class": key, "quantizer_name": pattern}
            entry["cfg"] = rest or None
            if enable is not None:
                entry["enable"] = enable
            out.append(entry)
        return out
    if isinstance(value, Mapping):
        cfg = {k: v for k, v in value.items() if k != "enable"} or None
        enable = value.get("enable")
    else:
        cfg, enable = value, None
    entry = {"quantizer_name": key, "cfg": cfg}
    if enable is not None:
        entry["enable"] = enable
    return [entry]


def expand_quant_cfg(raw: Any, *, warn: bool = True) -> list[ExpandedEntry]:
    """Convert every input form to list-form entries (not yet validated)."""
    if isinstance(raw, Mapping):
        if warn:
            warnings.warn(LEGACY_WARNING, DeprecationWarning, stacklevel=3)
        items: list[tuple[tuple[int | str, ...], Any]] = [((k,), {k: v}) for k, v in raw.items()]
        flat_dict = True
    elif isinstance(raw, Sequence) and not isinstance(raw, (str, bytes)):
        items = [((i,), element) for i, element in enumerate(raw)]
        flat_dict = False
    else:
        raise ValueError(
            "quant_cfg must be a sequence of entries (or a legacy flat mapping), got "
            f"{type(raw).__name__}: {raw!r}."
        )
    out: list[ExpandedEntry] = []
    warned = False  # a flat dict warns once more at its first legacy pair, as 0.47.0 does
    for source, element in items:
        if isinstance(element, QuantizerCfgEntry):
            out.append(ExpandedEntry(element, source, False))
            continue
        if isinstance(element, Mapping) and "quantizer_name" in element:
            out.append(ExpandedEntry(dict(element), source, False))
            continue
        if isinstance(element, Mapping) and len(element) == 1:
            ((key, value),) = element.items()
            pairs = [(source, key, value)]
        elif (
            isinstance(element, Mapping)
            and len(element) > 1
            and any(isinstance(k, str) and k.startswith("nn.") for k in element)
        ):
            pairs = [((*source, k), k, v) for k, v in element.items()]
        else:
            where = f"quant_cfg[{source[0]!r}]" if flat_dict else f"quant_cfg[{source[0]}]"
            raise ValueError(
                f"Invalid quant_cfg entry at {where}: {element!r}. Expected "
                "{'quantizer_name': ..., 'cfg'/'enable': ...}, a single {pattern: cfg} pair, "
                "or {'nn.<Class>': {pattern: cfg}}."
            )
        if not warned and warn:
            warnings.warn(LEGACY_WARNING, DeprecationWarning, stacklevel=3)
        warned = True
        for pair_source, key, value in pairs:
            try:
                converted = _legacy_pair(key, value)
            except ValueError as exc:
                raise ValueError(f"quant_cfg{_format_path(pair_source)}: {exc}") from None
            out.extend(ExpandedEntry(d, pair_source, True) for d in converted)
    return out


def _format_path(path: tuple[int | str, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f"[{p!r}]" for p in path)


@functools.cache
def _entry_list() -> TypeAdapter:
    # built on first use, after the entry model itself so that its validator is reused
    QuantizerCfgEntry.model_rebuild()
    return TypeAdapter(list[QuantizerCfgEntry])


def validate_entries(data: Any) -> list[QuantizerCfgEntry]:
    """Validate already list-form entries as ``list[QuantizerCfgEntry]`` (pydantic errors)."""
    return _entry_list().validate_python(data)


def normalize_quant_cfg_list(raw: Any) -> list[QuantizerCfgEntry]:
    """Every accepted ``quant_cfg`` form → validated entries, in order.

    Shape errors raise ``ValueError`` naming the element; entry errors raise a pydantic
    ``ValidationError`` located at ``[index, field, ...]`` of the normalized list.
    """
    expanded = expand_quant_cfg(raw)
    return validate_entries([e.value for e in expanded])


def need_calibration(config: Mapping[str, Any]) -> bool:
    """Model Optimizer's heuristic: does this config need a calibration forward?

    Reproduced exactly, quirks included: weight entries are skipped by substring, only a
    top-level ``type: dynamic`` counts, and a mapping without ``algorithm`` raises ``KeyError``.
    """
    algorithm = config["algorithm"]
    if algorithm is not None and algorithm != "max":
        return True

    def static_and_on(attrs: Mapping[str, Any]) -> bool:
        return bool(attrs.get("enable", True)) and attrs.get("type", "") != "dynamic"

    for entry in normalize_quant_cfg_list(config.get("quant_cfg") or []):
        if "weight_quantizer" in entry.quantizer_name:
            continue
        if isinstance(entry.cfg, list):
            if any(static_and_on(element) for element in entry.cfg):
                return True
            continue
        attrs = dict(entry.cfg or {})
        attrs["enable"] = entry.enable
        if static_and_on(attrs):
            return True
    return False
