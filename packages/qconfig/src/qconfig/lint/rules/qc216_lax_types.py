"""QC216: a value of the wrong JSON type that pydantic converts and the JSON Schema rejects.

Model Optimizer's models validate in pydantic's lax mode, so ``enable: "false"``, ``enable: 1``,
``num_bits: true`` or ``effective_bits: "4.5"`` load as ``False``, ``True``, ``1`` and ``4.5``;
the published schema (schemas/qconfig-config.schema.json), editors and every other JSON tool see
a string or a number where a boolean belongs. Lint is at least as strict as the schema, so such
a file is an error here too — found without re-validating, by walking the document beside the
validated config and reporting every scalar whose JSON type changed on the way.
"""

from collections.abc import Iterator, Mapping
from typing import Any

from qconfig.lint.context import Finding, LintContext
from qconfig.lint.registry import rule

Path = tuple[int | str, ...]

#: Keys whose schema admits both a boolean and its 0/1 spelling (Model Optimizer stores ``true``
#: as ``1`` there).
_BOOL_OR_INT = frozenset({"four_over_six"})


def _kind(value: Any) -> str | None:
    """The JSON type of a scalar (numbers are one type: 4 and 4.0 are both fine for either)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _json(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


_FIELD_NAMES: dict[type, dict[str, str]] = {}


def _field_names(model: type) -> dict[str, str]:
    """Key as written (its alias) -> attribute name, once per model class."""
    names = _FIELD_NAMES.get(model)
    if names is None:
        fields = model.model_fields  # type: ignore[attr-defined]
        names = _FIELD_NAMES[model] = {info.alias or n: n for n, info in fields.items()}
    return names


def _pairs(raw: Any, validated: Any, path: Path) -> Iterator[tuple[Path, Any, Any]]:
    """(path, raw scalar, validated scalar) for every scalar of ``raw`` whose JSON type differs
    from what validation made of it. Containers are followed where both sides have them; a raw
    ``null`` is never a conversion (validators that turn it into a default are not lax typing).
    """
    from pydantic import BaseModel  # loaded by the models already

    stack: list[tuple[Any, Any, Path]] = [(raw, validated, path)]
    while stack:
        raw, validated, path = stack.pop()
        if raw is None:
            continue
        if isinstance(validated, BaseModel) and isinstance(raw, Mapping):
            fields = _field_names(type(validated))
            stack.extend(
                (value, getattr(validated, fields[key]), (*path, key))
                for key, value in raw.items()
                if key in fields
            )
        elif isinstance(validated, Mapping) and isinstance(raw, Mapping):
            stack.extend((v, validated[k], (*path, k)) for k, v in raw.items() if k in validated)
        elif isinstance(validated, (list, tuple)) and isinstance(raw, (list, tuple)):
            if len(raw) == len(validated):
                stack.extend(
                    (r, v, (*path, i)) for i, (r, v) in enumerate(zip(raw, validated, strict=True))
                )
        else:
            before, after = _kind(raw), _kind(validated)
            if before and after and before != after:
                if path and path[-1] in _BOOL_OR_INT and before == "boolean":
                    continue
                yield path, raw, validated


def _legacy_base(ctx: LintContext, index: int) -> Path:
    """Where the attributes of legacy entry ``index`` are written (``{pattern: attributes}``,
    possibly under ``nn.<Class>``), below ``quant_cfg``."""
    expanded = ctx.expanded[index]
    base: Path = expanded.source
    node = _at(ctx.raw["quant_cfg"], base)
    if isinstance(base[-1], int) and isinstance(node, Mapping) and len(node) == 1:
        base = (*base, next(iter(node)))
    if isinstance(base[-1], str) and base[-1].startswith("nn."):
        base = (*base, expanded.value["quantizer_name"])
    return base


def _at(data: Any, path: Path) -> Any:
    for part in path:
        data = data[part]
    return data


def _entries(ctx: LintContext) -> Iterator[tuple[Path, Any, Any]]:
    quant_cfg = (*ctx.raw_path, "quant_cfg")
    for index, (expanded, entry) in enumerate(zip(ctx.expanded, ctx.config.quant_cfg, strict=True)):
        value = expanded.value
        if not isinstance(value, Mapping):
            continue
        if not expanded.legacy:
            yield from _pairs(value, entry, ctx.entry_path(index))
            continue
        base = (*quant_cfg, *_legacy_base(ctx, index))
        yield from _pairs(value.get("cfg"), entry.cfg, base)
        if value.get("enable") is not None:
            yield from _pairs(value["enable"], entry.enable, (*base, "enable"))


def _algorithms(ctx: LintContext) -> Iterator[tuple[Path, Any, Any]]:
    raw = ctx.raw.get("algorithm")
    forms = raw if isinstance(raw, list) else [raw]
    for index, form in enumerate(forms):
        if not isinstance(form, Mapping):
            continue
        from qconfig.quantize import resolve_algorithms  # only for mapping algorithms

        (validated,) = resolve_algorithms(form)
        path = (*ctx.raw_path, "algorithm", *((index,) if isinstance(raw, list) else ()))
        yield from _pairs(form, validated, path)


@rule(
    "QC216", "error", "value of the wrong JSON type (pydantic converts it, the schema rejects it)"
)
def check(ctx: LintContext):
    others = {k: v for k, v in ctx.raw.items() if k not in ("quant_cfg", "algorithm")}
    found = [
        *_entries(ctx),
        *_algorithms(ctx),
        *_pairs(others, ctx.config, ctx.raw_path),
    ]
    for path, raw, validated in sorted(found, key=lambda f: str(f[0])):
        yield Finding(
            f"{raw!r} is a {_kind(raw)}: pydantic's lax conversion reads it as {_json(validated)}, "
            f"but the JSON Schema (editors, other tools) wants a {_kind(validated)} here; write "
            f"{_json(validated)}.",
            path,
        )
