"""Small schema builders shared by every part: references, documented fields, model objects.

The field list, descriptions and defaults come from the pydantic models (``model_object``), so
adding a field to a model adds it to the schema; the builders only convert pydantic's 2020-12
output to draft-07 and attach the hover and completion texts editors show.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel


DRAFT_07 = "http://json-schema.org/draft-07/schema#"

#: A JSON object key the loader turns back into an int axis (``"-1"`` → ``-1``), exactly as
#: :func:`qconfig.keys.int_key` matches it (no leading zeros: ``"01"`` stays a string and is
#: rejected).
#: ``[0-9]`` rather than ``\d``: Python's ``re`` (used by the ``jsonschema`` package) lets ``\d``
#: match non-ASCII digits and ECMA-262 (editors, ajv) does not; the schema must mean one thing.
INT_KEY = "^-?(?:0|[1-9][0-9]*)$"
#: Any ``"e4m3"``-style string; the loader converts these in ``num_bits``/``scale_bits``.
EXMY = "^[Ee][0-9]+[Mm][0-9]+$"
REF = "#/definitions/"


#: Keywords whose values are JSON data, not subschemas.
_DATA_KEYWORDS = frozenset({"default", "examples", "enum", "const", "defaultSnippets"})


def declare_required(node: Any) -> Any:
    """Give every ``required`` key a ``properties`` entry in the same subschema (in place).

    ajv's strict mode (strictRequired) insists on it even where the key is declared by the
    enclosing object, because rule subschemas (``if``/``then``/``anyOf``) are compiled first.
    The entry is the boolean schema ``true``: it changes no verdict, and both editor engines
    skip non-object property schemas when they list completions, so no undocumented duplicate
    shows up.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in _DATA_KEYWORDS:
                declare_required(value)
        required = node.get("required")
        if isinstance(required, list):
            properties = node.setdefault("properties", {})
            for key in required:
                properties.setdefault(key, True)
    elif isinstance(node, list):
        for value in node:
            declare_required(value)
    return node


def ref(name: str) -> dict[str, Any]:
    return {"$ref": REF + name}


def documented(schema: dict[str, Any], description: str, default: Any) -> dict[str, Any]:
    """A field: its type schema plus the hover text and the value completion inserts.

    A ``$ref`` is wrapped in ``allOf`` because draft-07 ignores keywords beside ``$ref`` (and ajv's
    strict mode rejects them), which would drop the description.
    """
    if "$ref" in schema:
        schema = {"allOf": [schema]}
    return {
        **schema,
        "description": description,
        "markdownDescription": description,
        "default": default,
    }


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def one_of_strings(values: list[str], descriptions: list[str]) -> dict[str, Any]:
    return {"type": "string", "enum": values, "markdownEnumDescriptions": descriptions}


#: A field without a default (a required one).
REQUIRED = object()


def json_default(model: type[BaseModel], name: str) -> Any:
    """The field's default as JSON, or ``REQUIRED``."""
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined, to_jsonable_python

    value = model.model_fields[name].get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return REQUIRED
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return to_jsonable_python(value)


def _convert(node: Any) -> Any:
    """pydantic's 2020-12 output → draft-07: no titles, ``prefixItems`` → array ``items``."""
    if isinstance(node, list):
        return [_convert(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _convert(v) for k, v in node.items() if k not in ("title", "$defs")}
    if "prefixItems" in out:
        out["items"] = out.pop("prefixItems")
    if "$ref" in out and len(out) > 1:
        out = {"allOf": [{"$ref": out.pop("$ref")}], **out}
    return out


def model_object(
    model: type[BaseModel],
    overrides: dict[str, dict[str, Any]] | None = None,
    *,
    descriptions: dict[str, str] | None = None,
    defaults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``model``'s fields as a closed object; ``overrides`` replace a field's type schema.

    Description and default always come from the model (or, for fields the model leaves
    undocumented or required, from ``descriptions``/``defaults``), so that the schema cannot
    drift from the models.
    """
    overrides = overrides or {}
    descriptions = descriptions or {}
    defaults = defaults or {}
    generated = model.model_json_schema(ref_template=REF + "{model}")["properties"]
    properties = {}
    required = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        schema = overrides.get(name)
        if schema is None:
            schema = _convert(generated[key])
            for k in ("description", "default"):
                schema.pop(k, None)
        description = info.description or descriptions[name]
        default = json_default(model, name)
        if default is REQUIRED:
            required.append(key)
            default = defaults[name]
            description = f"**Required.** {description}"
        properties[key] = documented(schema, description, default)
    out: dict[str, Any] = {
        "type": "object",
        "description": first_paragraph(model.__doc__),
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        out["required"] = required
    return out


def first_paragraph(text: str | None) -> str:
    """A docstring's first paragraph on one line, RST double backticks made markdown ones."""
    return " ".join((text or "").strip().split("\n\n")[0].split()).replace("``", "`")
