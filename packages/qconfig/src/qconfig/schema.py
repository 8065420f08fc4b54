"""Draft-07 JSON Schemas for config files, manifests and plans: what editors complete against.

Why not pydantic's own ``model_json_schema()``: it emits 2020-12 (``$defs``, ``prefixItems``),
which VS Code's JSON engine and yaml-language-server only partly understand, and it describes the
*Python* inputs (``block_sizes`` with int keys, ``num_bits`` as any string) rather than what a
YAML/JSON file may contain after our loader's restorations (config-semantics §13.3). So the field
list, descriptions, defaults and simple types still come from the models — adding a field to a
model adds it here — while the file-level shapes, the cross-field rules draft-07 *can* express and
the completion helpers (``examples``, ``defaultSnippets``, ``markdownEnumDescriptions``) are added
on top. What the schema cannot express is listed in docs/schema.md and left to ``qconfig lint``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ["DRAFT_07", "KINDS", "SCHEMA_FILES", "json_schema", "render", "write_schemas"]

DRAFT_07 = "http://json-schema.org/draft-07/schema#"
KINDS = ("config", "manifest", "plan")
#: File name of each kind's schema inside ``schemas/``.
SCHEMA_FILES = {kind: f"qconfig-{kind}.schema.json" for kind in KINDS}

#: A JSON object key the loader turns back into an int axis (``"-1"`` → ``-1``), exactly as
#: ``qconfig.loader`` matches it (no leading zeros: ``"01"`` stays a string and is rejected).
#: ``[0-9]`` rather than ``\d``: Python's ``re`` (used by the ``jsonschema`` package) lets ``\d``
#: match non-ASCII digits and ECMA-262 (editors, ajv) does not; the schema must mean one thing.
INT_KEY = "^-?(?:0|[1-9][0-9]*)$"
#: Any ``"e4m3"``-style string; the loader converts these in ``num_bits``/``scale_bits``.
EXMY = "^[Ee][0-9]+[Mm][0-9]+$"
_REF = "#/definitions/"


def json_schema(kind: str = "config") -> dict[str, Any]:
    """The draft-07 schema of a config file (``"config"``), a manifest or a plan (a fresh copy)."""
    builders: dict[str, Callable[[], dict[str, Any]]] = {
        "config": _config_schema,
        "manifest": _manifest_schema,
        "plan": _plan_schema,
    }
    if kind not in builders:
        raise ValueError(f"unknown schema kind {kind!r}; expected one of {', '.join(KINDS)}")
    return _declare_required(copy.deepcopy(builders[kind]()))


def render(kind: str = "config") -> str:
    """The exact text of ``schemas/<file>``: sorted keys and indent 2, so diffs stay reviewable."""
    return json.dumps(json_schema(kind), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(directory: str | Path) -> list[Path]:
    """Write every kind's schema into ``directory`` (created if missing); returns the paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in KINDS:
        path = out / SCHEMA_FILES[kind]
        path.write_text(render(kind), encoding="utf-8")
        paths.append(path)
    return paths


# -- small builders -------------------------------------------------------------------------------


#: Keywords whose values are JSON data, not subschemas.
_DATA_KEYWORDS = frozenset({"default", "examples", "enum", "const", "defaultSnippets"})


def _declare_required(node: Any) -> Any:
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
                _declare_required(value)
        required = node.get("required")
        if isinstance(required, list):
            properties = node.setdefault("properties", {})
            for key in required:
                properties.setdefault(key, True)
    elif isinstance(node, list):
        for value in node:
            _declare_required(value)
    return node


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF + name}


def _doc(schema: dict[str, Any], description: str, default: Any) -> dict[str, Any]:
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


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _one_of_strings(values: list[str], descriptions: list[str]) -> dict[str, Any]:
    return {"type": "string", "enum": values, "markdownEnumDescriptions": descriptions}


#: A field without a default (a required one).
_REQUIRED = object()


def _json_default(model: type[BaseModel], name: str) -> Any:
    """The field's default as JSON, or ``_REQUIRED``."""
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined, to_jsonable_python

    value = model.model_fields[name].get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return _REQUIRED
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


def _model_object(
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
    generated = model.model_json_schema(ref_template=_REF + "{model}")["properties"]
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
        default = _json_default(model, name)
        if default is _REQUIRED:
            required.append(key)
            default = defaults[name]
            description = f"**Required.** {description}"
        properties[key] = _doc(schema, description, default)
    out: dict[str, Any] = {
        "type": "object",
        "description": _first_paragraph(model.__doc__),
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        out["required"] = required
    return out


def _first_paragraph(text: str | None) -> str:
    """A docstring's first paragraph on one line, RST double backticks made markdown ones."""
    return " ".join((text or "").strip().split("\n\n")[0].split()).replace("``", "`")


# -- quantizer attributes (config-semantics §2) ---------------------------------------------------


def _exmy_pattern(formats: list[tuple[int, int]]) -> str:
    """ExMy strings that the loader turns into one of ``formats`` (``e04m3`` → ``(4, 3)`` too)."""
    alternatives = "|".join(f"0*{e}[Mm]0*{m}" for e, m in formats)
    return f"^[Ee](?:{alternatives})$"


def _fp_formats() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(formats valid in any layout, formats valid only with dynamic blocks), per V2 (§2.2)."""
    from qconfig.attributes import _FP_FORMATS_ANY_LAYOUT, FP_FORMATS

    reachable = [f for f in FP_FORMATS if all(x > 0 for x in f)]  # (0,3)/(3,0) never pass V2
    any_layout = [f for f in reachable if f in _FP_FORMATS_ANY_LAYOUT]
    return any_layout, [f for f in reachable if f not in _FP_FORMATS_ANY_LAYOUT]


_FORMAT_NAMES = {
    (4, 3): "FP8 E4M3",
    (5, 2): "FP8 E5M2 (dynamic blocks only)",
    (2, 1): "FP4 E2M1",
    (1, 2): "E1M2 (dynamic blocks only)",
    (3, 2): "FP6 E3M2 (dynamic blocks only)",
    (2, 3): "FP6 E2M3 (dynamic blocks only)",
}


def _pair() -> dict[str, Any]:
    return {
        "type": "array",
        "items": [{"type": "integer"}, {"type": "integer"}],
        "minItems": 2,
        "maxItems": 2,
    }


def _num_bits_loose() -> dict[str, Any]:
    """Every form the field's type admits; the strict forms are checked by the V2 rule.

    Loose here because a custom ``backend`` turns V2 off (any int, pair or format name), and a
    property schema cannot look at a sibling; ``examples`` still drive completion.
    """
    any_layout, dynamic_only = _fp_formats()
    pairs = [list(f) for f in any_layout + dynamic_only]
    return {
        "anyOf": [{"type": "integer"}, _pair(), {"type": "string"}],
        "examples": [8, 4, *pairs, "e4m3", "e5m2", "e2m1"],
    }


def _num_bits_strict() -> dict[str, Any]:
    """V2 without a backend: a positive int, a reachable ``[E, M]`` pair, or its ExMy string."""
    any_layout, dynamic_only = _fp_formats()
    formats = any_layout + dynamic_only
    return {
        "anyOf": [
            {"type": "integer", "minimum": 1},
            {
                **_pair(),
                "enum": [list(f) for f in formats],
                "markdownEnumDescriptions": [
                    _FORMAT_NAMES.get(f, f"E{f[0]}M{f[1]}") for f in formats
                ],
            },
            {"type": "string", "pattern": _exmy_pattern(formats)},
        ],
    }


def _dynamic_only_fp() -> dict[str, Any]:
    _, dynamic_only = _fp_formats()
    return {
        "anyOf": [
            {**_pair(), "enum": [list(f) for f in dynamic_only]},
            {"type": "string", "pattern": _exmy_pattern(dynamic_only)},
        ]
    }


_BLOCK_SPECIALS_DOC = {
    "type": (
        _one_of_strings(
            ["static", "dynamic"],
            [
                "Block scales calibrated once (amax per block).",
                "Block scales computed from each input (MX, NVFP4).",
            ],
        ),
        "`static`: per-block amax calibrated; `dynamic`: block scales computed from each input "
        "(MX and NVFP4 formats need `dynamic`).",
        "static",
    ),
    "scale_bits": (
        {
            "anyOf": [
                {"type": "integer"},
                _pair(),
                {"type": "string", "pattern": EXMY},
                {"type": "null"},
            ],
            "examples": [[4, 3], [8, 0], "e4m3", "e8m0"],
        },
        "Format of the block scales: `[4, 3]`/`e4m3` (NVFP4's FP8 scales), `[8, 0]`/`e8m0` "
        "(MX power-of-two scales); null = full-precision scales.",
        None,
    ),
    "scale_block_sizes": (
        {
            "anyOf": [
                {
                    "type": "object",
                    "patternProperties": {INT_KEY: {"type": "integer"}},
                    "additionalProperties": False,
                },
                {"type": "null"},
            ]
        },
        "Second-level blocks of the scales themselves: `{axis: size}`.",
        None,
    ),
    "four_over_six": (
        {"enum": [True, False, 1, 0]},
        "NVFP4 4/6 scaling: pick per block between scaling to 4 and to 6 (Model Optimizer stores "
        "`true` as `1`).",
        False,
    ),
}


def _block_sizes() -> dict[str, Any]:
    """``block_sizes`` (V5): ``{"-1": 16, "type": "dynamic", ...}`` with the loader's int keys."""
    from qconfig.attributes import BLOCK_SPECIAL_KEYS

    specials = list(BLOCK_SPECIAL_KEYS)
    assert set(specials) == set(_BLOCK_SPECIALS_DOC), "BLOCK_SPECIAL_KEYS changed; document it"
    others = [k for k in specials if k != "type"]
    # "exactly one axis key" = total keys - special keys present == 1: one branch per subset of
    # the optional special keys that are present (type itself is required by the branch).
    exactly_one_axis = []
    for mask in range(1 << len(others)):
        present = [k for i, k in enumerate(others) if mask >> i & 1]
        absent = [k for k in others if k not in present]
        branch: dict[str, Any] = {
            "required": ["type", *present],
            "minProperties": len(present) + 2,
            "maxProperties": len(present) + 2,
        }
        if absent:
            branch["properties"] = {k: False for k in absent}
        exactly_one_axis.append(branch)
    return {
        "type": "object",
        "properties": {k: _doc(*_BLOCK_SPECIALS_DOC[k]) for k in specials},
        "patternProperties": {
            INT_KEY: {
                "type": ["integer", "null"],
                "description": "Block size along this axis (negative axes count from the end); "
                "null = the whole axis (per-token when `type` is `dynamic`).",
            }
        },
        "additionalProperties": False,
        "examples": [
            {"-1": 128, "type": "static"},
            {"-1": 16, "type": "dynamic", "scale_bits": [4, 3]},
            {"-1": 32, "type": "dynamic", "scale_bits": [8, 0]},
        ],
        "if": {"properties": {"type": {"const": "dynamic"}}, "required": ["type"]},
        "then": {
            "$comment": "V5: dynamic block quantization needs exactly one axis key.",
            "anyOf": exactly_one_axis,
        },
    }


def _bias() -> dict[str, Any]:
    """``bias`` (V6): int axis keys (at least one) plus optional ``type`` and ``method``."""
    axis_value = {
        "anyOf": [
            {"type": "string", "enum": ["static", "dynamic", "mean", "max_min"]},
            {"type": "array", "items": {"type": "integer"}},
            {"type": ["boolean", "integer", "null"]},
        ],
        "description": "Axis whose bias is computed (the value is not used; null is usual).",
    }
    return {
        "type": "object",
        "properties": {
            "type": _doc(
                _one_of_strings(["static", "dynamic"], ["Calibrated bias.", "Bias per input."]),
                "`static`: bias calibrated; `dynamic`: computed from each input.",
                "static",
            ),
            "method": _doc(
                _one_of_strings(["mean", "max_min"], ["Mean of the values.", "(max + min) / 2."]),
                "How the bias is computed: `mean` or `max_min`.",
                "mean",
            ),
        },
        "patternProperties": {INT_KEY: axis_value},
        "additionalProperties": False,
        "$comment": "V6: at least one axis key.",
        "not": {"propertyNames": {"enum": ["type", "method"]}},
        "examples": [{"-2": None, "-4": None, "type": "static"}],
    }


def _no_lone_enable() -> dict[str, Any]:
    """V1 below the top level: no nested mapping may be exactly ``{"enable": true}``.

    Model Optimizer walks every nested dict and list of the raw attributes, skipping whatever
    sits under a ``rotate`` key; only ``backend_extra_args`` can hold such values and still be
    valid, so this recursive definition is used there.
    """
    return {
        "anyOf": [
            {
                "type": "object",
                "not": _LONE_ENABLE,
                "properties": {"rotate": {}},
                "additionalProperties": _ref("NoLoneEnableTrue"),
            },
            {"type": "array", "items": _ref("NoLoneEnableTrue")},
            {"type": ["string", "number", "boolean", "null"]},
        ]
    }


_LONE_ENABLE = {
    "required": ["enable"],
    "maxProperties": 1,
    "properties": {"enable": {"const": True}},
}

_BACKEND_SET = {"required": ["backend"], "properties": {"backend": {"type": "string"}}}


def _attribute_rules() -> list[dict[str, Any]]:
    """V2, V5 (axis part) and V9 as if/then rules; V1 is added for non-legacy attributes."""
    return [
        {
            "$comment": "V2: num_bits is checked only without a custom backend.",
            "if": {"not": _BACKEND_SET},
            "then": {"properties": {"num_bits": _num_bits_strict()}},
        },
        {
            "$comment": "V2: FP formats other than E4M3/E2M1 need dynamic blocks.",
            "if": {
                "required": ["num_bits"],
                "properties": {"num_bits": _dynamic_only_fp()},
                "not": _BACKEND_SET,
            },
            "then": {
                "required": ["block_sizes"],
                "properties": {
                    "block_sizes": {
                        "type": "object",
                        "required": ["type"],
                        "properties": {"type": {"const": "dynamic"}},
                    }
                },
            },
        },
        {
            "$comment": "V5: axis must be null when block_sizes is set.",
            "if": {"required": ["block_sizes"], "properties": {"block_sizes": {"type": "object"}}},
            "then": {"properties": {"axis": {"type": "null"}}},
        },
        {
            "$comment": "V9: use_constant_amax and constant_amax are mutually exclusive.",
            "if": {
                "required": ["use_constant_amax"],
                "properties": {"use_constant_amax": {"const": True}},
            },
            "then": {"properties": {"constant_amax": {"type": "null"}}},
        },
    ]


def _attribute_overrides(enable: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "enable": enable,
        "num_bits": _num_bits_loose(),
        "effective_bits": _nullable({"type": "number", "exclusiveMinimum": 0, "maximum": 16}),
        "axis": {
            "anyOf": [
                {"type": "integer"},
                {"type": "array", "items": {"type": "integer"}},
                {"type": "null"},
            ],
            "examples": [0, None, -1],
        },
        "learn_amax": {"const": False},
        "type": _one_of_strings(
            ["static", "dynamic"],
            ["amax calibrated once, then fixed.", "amax computed from each input."],
        ),
        "block_sizes": _nullable(_ref("BlockSizes")),
        "bias": _nullable(_ref("Bias")),
        "trt_high_precision_dtype": _one_of_strings(
            ["Float", "Half", "BFloat16"],
            ["float32 scales.", "float16 scales.", "bfloat16 scales."],
        ),
        "calibrator": _one_of_strings(
            ["max", "histogram"],
            ["amax = max |x|.", "amax from a histogram (percentile/MSE/entropy search)."],
        ),
        "rotate": {"anyOf": [{"type": "boolean"}, _ref("RotateConfig")]},
        "backend_extra_args": _nullable({"type": "object", "allOf": [_ref("NoLoneEnableTrue")]}),
        "constant_amax": _nullable({"type": "number", "exclusiveMinimum": 0}),
    }


def _attributes(*, legacy: bool) -> dict[str, Any]:
    """``QuantizerAttributeConfig`` as written in a file (``legacy``: a legacy entry's value).

    A legacy ``{pattern: {...}}`` value pops ``enable`` (null allowed) before the rest becomes
    ``cfg`` (§6.1), so V1's top-level check does not apply to it.
    """
    from qconfig.attributes import QuantizerAttributeConfig

    enable = {"type": ["boolean", "null"]} if legacy else {"type": "boolean"}
    out = _model_object(QuantizerAttributeConfig, _attribute_overrides(enable))
    rules = _attribute_rules()
    if not legacy:
        rules.append({"$comment": "V1: {enable: true} alone says nothing.", "not": _LONE_ENABLE})
    out["properties"]["$import"] = _IMPORT_PROPERTY
    out["if"] = {"required": ["$import"]}
    out["else"] = {"allOf": rules}
    return out


def _rotate() -> dict[str, Any]:
    from qconfig.attributes import RotateConfig

    return _model_object(
        RotateConfig,
        {
            "mode": _one_of_strings(
                ["rotate", "rotate_back"],
                ["Rotate only.", "Rotate, fake-quantize, rotate back."],
            ),
            "block_size": _nullable({"type": "integer", "minimum": 1}),
        },
    )


# -- quant_cfg entries (§3, §6) -------------------------------------------------------------------

_IMPORT_PROPERTY = _doc(
    {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "Insert the snippet(s) named in the file's `imports` here (config-semantics §13); keys "
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
            _ref("QuantizerAttributeConfig"),
            {"type": "array", "items": _ref("QuantizerAttributeConfig")},
        ]
    }


def _entry() -> dict[str, Any]:
    from qconfig.entries import QuantizerCfgEntry

    out = _model_object(
        QuantizerCfgEntry,
        {"cfg": _cfg_field()},
        defaults={"quantizer_name": "*"},
    )
    for key in ("quantizer_name", "parent_class"):
        examples = QuantizerCfgEntry.model_fields[key].examples
        out["properties"][key]["examples"] = list(examples or [])
    out["properties"]["$import"] = _IMPORT_PROPERTY
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


def _legacy_value() -> dict[str, Any]:
    """The value of a legacy ``{pattern: value}`` pair (§6.1 ``_dict_to_entry``)."""
    return {
        "anyOf": [
            {"type": "null"},
            _ref("LegacyQuantizerCfg"),
            {
                "type": "array",
                "items": _ref("QuantizerAttributeConfig"),
                "contains": {"type": "object", "minProperties": 1},
            },
        ],
        "description": "Legacy form: the attributes of the quantizers matching this pattern "
        "(`enable` inside switches them on/off), a list for a sequential quantizer, or null.",
    }


def _scoped_value() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": _ref("LegacyQuantizerCfg"),
        "description": "Legacy form: `{pattern: attributes}` applied only to quantizers whose "
        "parent module is this registered class.",
    }


_NN_KEY = "^nn\\."


def _legacy_pairs(*, entry: bool) -> dict[str, Any]:
    """A legacy single-key entry (``entry``) or a legacy flat ``quant_cfg`` dict."""
    out: dict[str, Any] = {
        "type": "object",
        "patternProperties": {_NN_KEY: _ref("LegacyScopedValue")},
        "additionalProperties": _ref("LegacyValue"),
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


def _quant_cfg() -> dict[str, Any]:
    return {
        "anyOf": [
            {
                "type": "array",
                "items": {
                    "anyOf": [_ref("QuantizerCfgEntry"), _ref("LegacyEntry")],
                    "defaultSnippets": _ENTRY_SNIPPETS,
                },
            },
            _ref("LegacyQuantCfg"),
        ]
    }


# -- algorithms (§4) ------------------------------------------------------------------------------


def _algorithm_definitions() -> dict[str, dict[str, Any]]:
    from qconfig.algorithms import ALGORITHMS, LayerwiseConfig

    layerwise = _model_object(LayerwiseConfig)
    layerwise["if"] = {
        "required": ["checkpoint_dir"],
        "properties": {"checkpoint_dir": {"type": "string"}},
    }
    layerwise["then"] = {
        "$comment": "layerwise.checkpoint_dir requires layerwise.enable.",
        "required": ["enable"],
        "properties": {"enable": {"const": True}},
    }
    definitions = {"LayerwiseConfig": layerwise}
    scale_algorithms = [
        _ref("MaxCalibConfig"),
        _ref("MseCalibConfig"),
        _ref("LocalHessianCalibConfig"),
    ]
    for method, cls in ALGORITHMS.items():
        layerwise_field: dict[str, Any] = {"anyOf": [{"type": "null"}, _ref("LayerwiseConfig")]}
        if cls.mutates_weights:
            layerwise_field["anyOf"][1] = {
                "type": "object",
                "allOf": [_ref("LayerwiseConfig")],
                "$comment": "Only amax-only algorithms support calib_mutates_weights: false.",
                "properties": {"calib_mutates_weights": {"const": True}},
            }
        overrides: dict[str, dict[str, Any]] = {
            "method": {"const": method} if method is not None else {"type": "null"},
            "layerwise": layerwise_field,
        }
        fields = cls.model_fields
        if "shared_states" in fields:
            overrides["shared_states"] = _nullable(
                {
                    "type": "object",
                    "properties": {
                        "weight_global_amax": _doc(
                            {
                                "type": "object",
                                "properties": {
                                    "patterns": _doc(
                                        {"type": "array", "items": {"type": "string"}},
                                        "Full-match regexes on module names; `[]` disables it.",
                                        [],
                                    )
                                },
                                "additionalProperties": False,
                            },
                            "Share the weight global amax across the matching modules.",
                            {"patterns": []},
                        )
                    },
                    "additionalProperties": False,
                }
            )
        if "weight_scale_algorithm" in fields:
            overrides["weight_scale_algorithm"] = {"anyOf": scale_algorithms}
        if "scale_algorithm" in fields:
            overrides["scale_algorithm"] = {"anyOf": [*scale_algorithms, {"type": "null"}]}
        schema = _model_object(cls, overrides)
        schema["description"] = _first_paragraph(cls.__doc__)
        if "tied_amax" in fields:
            schema["if"] = {"required": ["tied_amax"], "properties": {"tied_amax": {"const": True}}}
            schema["then"] = {
                "$comment": "tied_amax needs learnable_amax [] or both 'pre' and 'post'.",
                "required": ["learnable_amax"],
                "properties": {
                    "learnable_amax": {
                        "type": "array",
                        "anyOf": [
                            {"maxItems": 0},
                            {
                                "allOf": [
                                    {"contains": {"const": "pre"}},
                                    {"contains": {"const": "post"}},
                                ]
                            },
                        ],
                    }
                },
            }
        definitions[cls.__name__] = schema
    return definitions


def _algorithm() -> dict[str, Any]:
    """``algorithm``: a method name, a mapping dispatched on ``method``, null, or a list of them."""
    from qconfig.algorithms import ALGORITHMS

    methods = [m for m in ALGORITHMS if m is not None]
    names = {
        "type": "string",
        "enum": methods,
        "markdownEnumDescriptions": [_first_paragraph(ALGORITHMS[m].__doc__) for m in methods],
    }
    mapping = {
        "type": "object",
        "required": ["method"],
        "properties": {
            "method": _doc(
                {
                    "enum": [*methods, None],
                    "markdownEnumDescriptions": [
                        *names["markdownEnumDescriptions"],
                        "No calibration.",
                    ],
                },
                "**Required.** Calibration method; the other keys are its settings.",
                "max",
            )
        },
        # Dispatch on method, as QuantizeConfig does (§4): until a method is written, completion
        # offers only `method` and the snippets, not the union of every algorithm's settings.
        "allOf": [
            {
                "if": {"required": ["method"], "properties": {"method": {"const": method}}},
                "then": _ref(cls.__name__),
            }
            for method, cls in ALGORITHMS.items()
        ],
        "defaultSnippets": [
            {
                "label": f"{m} algorithm",
                "description": _first_paragraph(ALGORITHMS[m].__doc__),
                "body": {"method": m, **_snippet_settings(m)},
            }
            for m in methods
        ],
    }
    step = {"anyOf": [{"type": "null"}, names, mapping]}
    return {
        "anyOf": [
            {"type": "null"},
            names,
            mapping,
            {"type": "array", "items": step},
        ]
    }


def _snippet_settings(method: str) -> dict[str, Any]:
    """The settings a user usually touches first, with their defaults, for each method."""
    from qconfig.algorithms import ALGORITHMS

    cls = ALGORITHMS[method]
    common = {"method", "moe_calib_experts_ratio", "layerwise", "shared_states", "debug"}
    out = {}
    for name in cls.model_fields:
        if name in common:
            continue
        default = _json_default(cls, name)
        if default is not None and default is not _REQUIRED:
            out[name] = default
        if len(out) == 2:
            break
    return out


# -- the config file, recipes ---------------------------------------------------------------------


def _quantize_config(*, file: bool) -> dict[str, Any]:
    from qconfig.quantize import QuantizeConfig

    out = _model_object(
        QuantizeConfig,
        {
            "quant_cfg": _quant_cfg(),
            "algorithm": _algorithm(),
            "effective_bits": _nullable({"type": "number", "exclusiveMinimum": 0, "maximum": 16}),
        },
    )
    out["properties"]["$import"] = _IMPORT_PROPERTY
    if file:
        out["properties"]["$schema"] = _SCHEMA_PROPERTY
        out["properties"]["imports"] = _IMPORTS_PROPERTY
    return out


_SCHEMA_PROPERTY = _doc(
    {"type": "string"},
    "The JSON Schema this file is written against (editors use it for completion); ignored by "
    "the loader.",
    "../../schemas/qconfig-config.schema.json",
)
_IMPORTS_PROPERTY = _doc(
    {"type": "object", "additionalProperties": {"type": "string"}},
    "Snippets this file uses: `{alias: path}`, referenced as `$import: alias` (config-semantics "
    "§13). Built-in units are `qconfig/units/<name>`.",
    {},
)


def _recipe() -> dict[str, Any]:
    return {
        "type": "object",
        "title": "PTQ recipe",  # yaml-language-server names its skeleton completion after it
        "description": "A Model Optimizer PTQ recipe: `metadata` plus the config under `quantize`.",
        "properties": {
            "$schema": _SCHEMA_PROPERTY,
            "imports": _IMPORTS_PROPERTY,
            "metadata": _doc(
                {
                    "type": "object",
                    "properties": {
                        "recipe_type": _doc(
                            {"const": "ptq"},
                            "**Required.** Recipe type; only PTQ recipes carry a quantize config.",
                            "ptq",
                        ),
                        "description": _doc(
                            {"type": "string"},
                            "Human-readable description of the recipe.",
                            "Model optimization recipe.",
                        ),
                    },
                    "required": ["recipe_type"],
                    "additionalProperties": False,
                },
                "**Required.** Recipe metadata: its type and a description.",
                {"recipe_type": "ptq"},
            ),
            "quantize": _doc(
                _ref("QuantizeConfig"),
                "**Required.** The quantization config (`quant_cfg`, `algorithm`).",
                {},
            ),
        },
        "required": ["metadata", "quantize"],
        "additionalProperties": False,
    }


@cache
def _config_schema() -> dict[str, Any]:
    definitions: dict[str, Any] = {
        "QuantizeConfigFile": _quantize_config(file=True),
        "QuantizeConfig": _quantize_config(file=False),
        "PTQRecipe": _recipe(),
        "QuantizerCfgEntry": _entry(),
        "LegacyEntry": _legacy_pairs(entry=True),
        "LegacyQuantCfg": _legacy_pairs(entry=False),
        "LegacyValue": _legacy_value(),
        "LegacyScopedValue": _scoped_value(),
        "QuantizerAttributeConfig": _attributes(legacy=False),
        "LegacyQuantizerCfg": _attributes(legacy=True),
        "RotateConfig": _rotate(),
        "BlockSizes": _block_sizes(),
        "Bias": _bias(),
        "NoLoneEnableTrue": _no_lone_enable(),
        **_algorithm_definitions(),
    }
    return {
        "$schema": DRAFT_07,
        "title": "qconfig quantization config",
        "description": "A Model Optimizer 0.47 quantization config (`quant_cfg` + `algorithm`) "
        "or PTQ recipe, as YAML or JSON.",
        "anyOf": [_ref("QuantizeConfigFile"), _ref("PTQRecipe")],
        "definitions": definitions,
    }


# -- manifest and plan --------------------------------------------------------------------------


def _attribute_dump() -> dict[str, Any]:
    """A full attribute dump as manifests and plans store it (no ``$import``, no legacy)."""
    out = _attributes(legacy=False)
    del out["properties"]["$import"]
    rules = out.pop("else")["allOf"]
    del out["if"]
    out["allOf"] = rules
    return out


#: Fields the manifest models leave undocumented.
_MANIFEST_DESCRIPTIONS = {
    "format": "Format tag of the file.",
    "modules": "Every converted module, in `named_modules()` order.",
    "quantizers": "The module's quantizers, in creation order.",
}
#: What completion inserts for the manifest's required fields.
_MANIFEST_PLACEHOLDERS = {
    "attribute": "",
    "defaults": {},
    "name": "",
    "class_name": "",
    "registry_key": "",
}


@cache
def _manifest_schema() -> dict[str, Any]:
    from qconfig.manifest import Manifest, ModuleSite, QuantizerSite

    def closed(model: type[BaseModel]) -> dict[str, Any]:
        return _model_object(
            model, descriptions=_MANIFEST_DESCRIPTIONS, defaults=_MANIFEST_PLACEHOLDERS
        )

    config_definitions = _config_schema()["definitions"]
    definitions = {
        "ModuleSite": closed(ModuleSite),
        "QuantizerSite": closed(QuantizerSite),
        "QuantizerAttributeConfig": _attribute_dump(),
        **{
            k: config_definitions[k]
            for k in ("RotateConfig", "BlockSizes", "Bias", "NoLoneEnableTrue")
        },
    }
    return {
        "$schema": DRAFT_07,
        "title": "qconfig model manifest (qconfig.manifest/v1)",
        **closed(Manifest),
        "definitions": definitions,
    }


@cache
def _plan_schema() -> dict[str, Any]:
    from qconfig.algorithms import ALGORITHMS
    from qconfig.plan import PLAN_FORMAT

    config_definitions = _config_schema()["definitions"]
    definitions = {
        name: config_definitions[name]
        for name in ("RotateConfig", "BlockSizes", "Bias", "NoLoneEnableTrue", "LayerwiseConfig")
    }
    definitions.update(
        {cls.__name__: config_definitions[cls.__name__] for cls in ALGORITHMS.values()}
    )
    attributes = _attribute_dump()
    attributes["properties"]["calibrator"] = _doc(
        {"type": "string"},
        "`max`, `histogram`, or the repr() of a Python calibrator constructor.",
        "max",
    )
    definitions["QuantizerAttributeConfig"] = attributes
    index = {"type": "integer", "minimum": 0}
    state = {
        "type": "object",
        "description": "An effective quantizer state, shared by every quantizer that has it.",
        "properties": {
            "enable": _doc({"type": "boolean"}, "**Required.** Whether it quantizes.", True),
            "attributes": _doc(
                {"anyOf": [index, {"type": "array", "items": index}]},
                "**Required.** Index into `attribute_sets`; a list = a sequential quantizer.",
                0,
            ),
            "parent_class": _doc(
                {"type": "string"}, "**Required.** Registry key of its module.", ""
            ),
            "sources": _doc(
                {"type": "array", "items": index},
                "**Required.** Indices of the `quant_cfg` entries that changed it, in order.",
                [],
            ),
            "hard_disabled": _doc(
                {"type": "boolean"}, "Can never be enabled (written only when true).", False
            ),
        },
        "required": ["enable", "attributes", "parent_class", "sources"],
        "additionalProperties": False,
    }
    nullable_int = {"type": ["integer", "null"]}
    diagnostic = {
        "type": "object",
        "description": "A finding of the compiler.",
        "properties": {
            "code": _doc({"type": "string"}, "**Required.** Stable rule code.", ""),
            "severity": _doc(
                {"type": "string", "enum": ["error", "warning", "info"]},
                "**Required.** How bad it is.",
                "warning",
            ),
            "message": _doc({"type": "string"}, "**Required.** What is wrong.", ""),
            "file": _doc({"type": ["string", "null"]}, "Config file.", None),
            "line": _doc(nullable_int, "1-based line.", None),
            "column": _doc(nullable_int, "1-based column.", None),
            "path": _doc({"type": "string"}, "JSON path in the config.", ""),
            "fixable": _doc({"type": "boolean"}, "`qconfig migrate` can fix it.", False),
        },
        "required": ["code", "severity", "message"],
        "additionalProperties": False,
    }
    definitions["QuantizerState"] = state
    definitions["Diagnostic"] = diagnostic
    algorithm_step = {
        "type": "object",
        "required": ["method"],
        "anyOf": [_ref(cls.__name__) for cls in ALGORITHMS.values()],
    }
    return {
        "$schema": DRAFT_07,
        "title": f"qconfig compiled plan ({PLAN_FORMAT})",
        "description": "Per-quantizer effective state after applying a config to a model once.",
        "type": "object",
        "properties": {
            "format": _doc({"const": PLAN_FORMAT}, "**Required.** Format tag.", PLAN_FORMAT),
            "model": _doc({"type": "string"}, "The manifest's `model`.", ""),
            "algorithm": _doc(
                {"type": "array", "items": algorithm_step},
                "**Required.** Validated calibration steps, in order.",
                [],
            ),
            "attribute_sets": _doc(
                {"type": "array", "items": _ref("QuantizerAttributeConfig")},
                "**Required.** Distinct attribute sets, referenced by index.",
                [],
            ),
            "states": _doc(
                {"type": "array", "items": _ref("QuantizerState")},
                "**Required.** Distinct quantizer states, referenced by index.",
                [],
            ),
            "quantizers": _doc(
                {"type": "object", "additionalProperties": index},
                "**Required.** Full quantizer name → index of its state in `states`.",
                {},
            ),
            "diagnostics": _doc(
                {"type": "array", "items": _ref("Diagnostic")},
                "What the compiler noticed.",
                [],
            ),
        },
        "required": ["format", "algorithm", "attribute_sets", "states", "quantizers"],
        "additionalProperties": False,
        "definitions": definitions,
    }
