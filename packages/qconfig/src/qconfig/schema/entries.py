"""The schema of ``quant_cfg``: list entries, legacy single-key and flat-dict forms, snippets."""

from __future__ import annotations

from typing import Any

from qconfig.schema.builders import documented, model_object, ref

IMPORT_PROPERTY = documented(
    {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "Insert the snippet(s) named in the file's `imports` here (docs/writing-configs.md, 'Imports: reusing snippets'); keys "
    "written beside `$import` override the imported ones.",
    "",
)

#: ``cfg`` values Model Optimizer treats as empty: ``{}``, ``[]``, or a list of ``{}`` only.
_EMPTY_CFG = {
    "anyOf": [
        {"type": "object", "maxProperties": 0},
        {"type": "array", "items": {"type": "object", "maxProperties": 0}},
    ]
}

_ENTRY_SNIPPETS = [
    {
        "label": "deny all",
        "description": "Disable every quantizer first; later entries enable what to quantize.",
        "body": {"quantizer_name": "*", "enable": False},
    },
    {
        "label": "weight entry",
        "description": "INT8 per-channel weights.",
        "body": {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
    },
    {
        "label": "input entry",
        "description": "INT8 per-tensor activations.",
        "body": {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8, "axis": None}},
    },
    {
        "label": "KV-cache entry",
        "description": "FP8 KV cache (the k/v BMM quantizers of attention).",
        "body": {
            "quantizer_name": "*[kv]_bmm_quantizer",
            "cfg": {"num_bits": [4, 3], "axis": None},
        },
    },
    {
        "label": "disable a layer",
        "description": "Keep matching quantizers in high precision (e.g. the LM head).",
        "body": {"quantizer_name": "*lm_head*", "enable": False},
    },
]


def _cfg_field() -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "null"},
            ref("QuantizerAttributeConfig"),
            {"type": "array", "items": ref("QuantizerAttributeConfig")},
        ]
    }


def entry_schema() -> dict[str, Any]:
    from qconfig.entries import QuantizerCfgEntry

    out = model_object(
        QuantizerCfgEntry,
        {"cfg": _cfg_field()},
        defaults={"quantizer_name": "*"},
    )
    for key in ("quantizer_name", "parent_class"):
        examples = QuantizerCfgEntry.model_fields[key].examples
        out["properties"][key]["examples"] = list(examples or [])
    out["properties"]["$import"] = IMPORT_PROPERTY
    # With $import the required keys may come from the imported snippet.
    out.pop("required")
    out["if"] = {"required": ["$import"]}
    out["else"] = {
        "required": ["quantizer_name"],
        "anyOf": [{"required": ["cfg"]}, {"required": ["enable"]}],
        "allOf": [
            {
                "$comment": "An empty cfg is only allowed with enable: false (then it means None).",
                "if": {"required": ["cfg"], "properties": {"cfg": _EMPTY_CFG}},
                "then": {"required": ["enable"], "properties": {"enable": {"const": False}}},
            }
        ],
    }
    return out


def legacy_value_schema() -> dict[str, Any]:
    """The value of a legacy ``{pattern: value}`` pair (Model Optimizer's ``_dict_to_entry``)."""
    return {
        "anyOf": [
            {"type": "null"},
            ref("LegacyQuantizerCfg"),
            {
                "type": "array",
                "items": ref("QuantizerAttributeConfig"),
                "contains": {"type": "object", "minProperties": 1},
            },
        ],
        "description": "Legacy form: the attributes of the quantizers matching this pattern "
        "(`enable` inside switches them on/off), a list for a sequential quantizer, or null.",
    }


def scoped_value_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": ref("LegacyQuantizerCfg"),
        "description": "Legacy form: `{pattern: attributes}` applied only to quantizers whose "
        "parent module is this registered class.",
    }


_NN_KEY = "^nn\\."


def legacy_pairs_schema(*, entry: bool) -> dict[str, Any]:
    """A legacy single-key entry (``entry``) or a legacy flat ``quant_cfg`` dict."""
    out: dict[str, Any] = {
        "type": "object",
        "patternProperties": {_NN_KEY: ref("LegacyScopedValue")},
        "additionalProperties": ref("LegacyValue"),
    }
    if entry:
        out.update(
            {
                "description": "Legacy entry `{pattern: attributes}` (or several `nn.<Class>` "
                "scoped pairs); `qconfig migrate` rewrites it in the list form.",
                "minProperties": 1,
                "propertyNames": {"not": {"enum": ["quantizer_name", "$import"]}},
                "anyOf": [
                    {"maxProperties": 1},
                    {"not": {"propertyNames": {"not": {"pattern": _NN_KEY}}}},
                ],
            }
        )
    else:
        out.update(
            {
                "description": "Legacy flat form `{pattern: attributes}` (deprecated since Model "
                "Optimizer 0.44; `qconfig migrate` rewrites it). A `default` key is renamed `*` "
                "in place, so placed last it disables everything before it.",
                "propertyNames": {"not": {"const": "quantizer_name"}},
            }
        )
    return out


def quant_cfg_schema() -> dict[str, Any]:
    return {
        "anyOf": [
            {
                "type": "array",
                "items": {
                    "anyOf": [ref("QuantizerCfgEntry"), ref("LegacyEntry")],
                    "defaultSnippets": _ENTRY_SNIPPETS,
                },
            },
            ref("LegacyQuantCfg"),
        ]
    }
