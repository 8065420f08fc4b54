"""The schema of a quantizer's attributes (``cfg``): formats, block sizes, bias, rotation.

Here the file-level spellings the loader accepts (``e4m3`` strings, ``"-1"`` axis keys) are added
to what the model declares, and the cross-field rules draft-07 can express are written as
``if``/``then`` rules (docs/schema.md lists those it cannot).
"""

from __future__ import annotations

from typing import Any

from qconfig.blocks import MAX_BLOCK_SIZE
from qconfig.schema.builders import (
    INT_KEY,
    documented,
    model_object,
    nullable,
    one_of_strings,
    ref,
)
from qconfig.schema.entries import IMPORT_PROPERTY


def _exmy_pattern(formats: list[tuple[int, int]]) -> str:
    """ExMy strings that the loader turns into one of ``formats`` (``e04m3`` → ``(4, 3)`` too)."""
    alternatives = "|".join(f"0*{e}[Mm]0*{m}" for e, m in formats)
    return f"^[Ee](?:{alternatives})$"


def _fp_formats() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(formats valid in any layout, formats valid only with dynamic blocks), as the model's
    ``num_bits`` validator decides: asked of the model itself, so the schema cannot drift."""
    from pydantic import ValidationError

    from qconfig.attributes import FP_FORMATS, QuantizerAttributeConfig

    def any_layout(bits: tuple[int, int]) -> bool:
        try:
            QuantizerAttributeConfig(num_bits=bits)
        except ValidationError:
            return False
        return True

    reachable = [f for f in FP_FORMATS if all(x > 0 for x in f)]  # (0,3)/(3,0) never validate
    anywhere = [f for f in reachable if any_layout(f)]
    return anywhere, [f for f in reachable if f not in anywhere]


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


def _int_bits() -> tuple[tuple[int, int], tuple[int, int]]:
    """((signed low, high), (unsigned low, high)): the integer ``num_bits`` the model accepts."""
    from qconfig.attributes import int_bits_range

    return int_bits_range(False), int_bits_range(True)


def _num_bits_strict() -> dict[str, Any]:
    """V2 without a backend: an int in the float32-exact range (narrowed by ``unsigned`` in
    :func:`_attribute_rules`), a reachable ``[E, M]`` pair, or its ExMy string."""
    any_layout, dynamic_only = _fp_formats()
    formats = any_layout + dynamic_only
    (signed_low, signed_high), (unsigned_low, unsigned_high) = _int_bits()
    return {
        "anyOf": [
            {
                "type": "integer",
                "minimum": min(signed_low, unsigned_low),
                "maximum": max(signed_high, unsigned_high),
            },
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
        one_of_strings(
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
        None,  # built by _scale_bits(): it asks the model's constants
        "Format of the block scales: `[4, 3]`/`e4m3` (NVFP4's FP8 scales), `[8, 0]`/`e8m0` "
        "(MX power-of-two scales), integer bits for NF4 double quantization; null = "
        "full-precision scales.",
        None,
    ),
    "scale_block_sizes": (
        {
            "anyOf": [
                {
                    "type": "object",
                    "patternProperties": {
                        INT_KEY: {"type": "integer", "minimum": 1, "maximum": MAX_BLOCK_SIZE}
                    },
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


def _scale_bits() -> dict[str, Any]:
    """``scale_bits``: integer bits (NF4 double quantization), a scale format the kernels know
    (or its ExMy string), or null — as the model's block validator accepts."""
    from qconfig.attributes import SCALE_FORMATS

    (low, high), _ = _int_bits()
    return {
        "anyOf": [
            {"type": "integer", "minimum": low, "maximum": high},
            {**_pair(), "enum": [list(f) for f in SCALE_FORMATS]},
            {"type": "string", "pattern": _exmy_pattern(list(SCALE_FORMATS))},
            {"type": "null"},
        ],
        "examples": [[4, 3], [8, 0], "e4m3", "e8m0"],
    }


def block_sizes_schema() -> dict[str, Any]:
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
        "properties": {k: _block_special(k) for k in specials},
        "patternProperties": {
            INT_KEY: {
                "type": ["integer", "null"],
                "minimum": 1,
                "maximum": MAX_BLOCK_SIZE,
                "description": "Block size along this axis (negative axes count from the end), "
                f"1 to {MAX_BLOCK_SIZE:,}; null = the whole axis (per-token when `type` is "
                "`dynamic`).",
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


def _block_special(key: str) -> dict[str, Any]:
    schema, description, default = _BLOCK_SPECIALS_DOC[key]
    return documented(_scale_bits() if key == "scale_bits" else schema, description, default)


def bias_schema() -> dict[str, Any]:
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
            "type": documented(
                one_of_strings(["static", "dynamic"], ["Calibrated bias.", "Bias per input."]),
                "`static`: bias calibrated; `dynamic`: computed from each input.",
                "static",
            ),
            "method": documented(
                one_of_strings(["mean", "max_min"], ["Mean of the values.", "(max + min) / 2."]),
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


def no_lone_enable() -> dict[str, Any]:
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
                "additionalProperties": ref("NoLoneEnableTrue"),
            },
            {"type": "array", "items": ref("NoLoneEnableTrue")},
            {"type": ["string", "number", "boolean", "null"]},
        ]
    }


_LONE_ENABLE = {
    "required": ["enable"],
    "maxProperties": 1,
    "properties": {"enable": {"const": True}},
}

_BACKEND_SET = {"required": ["backend"], "properties": {"backend": {"type": "string"}}}


_UNSIGNED = {"required": ["unsigned"], "properties": {"unsigned": {"const": True}}}


def _int_bits_rules() -> list[dict[str, Any]]:
    """V2: integer ``num_bits`` whose float32 grid works — signed from 2 (one bit is 0/0),
    unsigned up to 24 (docs/differences.md)."""
    (signed_low, _), (_, unsigned_high) = _int_bits()
    int_bits = {"required": ["num_bits"], "properties": {"num_bits": {"type": "integer"}}}
    return [
        {
            "$comment": "V2: a signed integer quantizer needs at least two bits.",
            "if": {**int_bits, "not": {"anyOf": [_BACKEND_SET, _UNSIGNED]}},
            "then": {"properties": {"num_bits": {"type": "integer", "minimum": signed_low}}},
        },
        {
            "$comment": "V2: an unsigned integer grid is exact in float32 up to 24 bits.",
            "if": {
                "required": ["num_bits", "unsigned"],
                "properties": {"num_bits": {"type": "integer"}, "unsigned": {"const": True}},
                "not": _BACKEND_SET,
            },
            "then": {"properties": {"num_bits": {"type": "integer", "maximum": unsigned_high}}},
        },
    ]


def _attribute_rules() -> list[dict[str, Any]]:
    """V2, V5 (axis part) and V9 as if/then rules; V1 is added for non-legacy attributes."""
    return [
        {
            "$comment": "V2: num_bits is checked only without a custom backend.",
            "if": {"not": _BACKEND_SET},
            "then": {"properties": {"num_bits": _num_bits_strict()}},
        },
        *_int_bits_rules(),
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


def _float32_max() -> float:
    from qconfig.attributes import FLOAT32_MAX

    return FLOAT32_MAX


def _attribute_overrides(enable: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "enable": enable,
        "num_bits": _num_bits_loose(),
        "effective_bits": nullable({"type": "number", "exclusiveMinimum": 0, "maximum": 16}),
        "axis": {
            "anyOf": [
                {"type": "integer"},
                {"type": "array", "items": {"type": "integer"}},
                {"type": "null"},
            ],
            "examples": [0, None, -1],
        },
        "learn_amax": {"const": False},
        "type": one_of_strings(
            ["static", "dynamic"],
            ["amax calibrated once, then fixed.", "amax computed from each input."],
        ),
        "block_sizes": nullable(ref("BlockSizes")),
        "bias": nullable(ref("Bias")),
        "trt_high_precision_dtype": one_of_strings(
            ["Float", "Half", "BFloat16"],
            ["float32 scales.", "float16 scales.", "bfloat16 scales."],
        ),
        "calibrator": one_of_strings(
            ["max", "histogram"],
            ["amax = max |x|.", "amax from a histogram (percentile/MSE/entropy search)."],
        ),
        "rotate": {"anyOf": [{"type": "boolean"}, ref("RotateConfig")]},
        "backend_extra_args": nullable({"type": "object", "allOf": [ref("NoLoneEnableTrue")]}),
        "constant_amax": nullable(
            {"type": "number", "exclusiveMinimum": 0, "maximum": _float32_max()}
        ),
    }


def attributes_schema(*, legacy: bool) -> dict[str, Any]:
    """``QuantizerAttributeConfig`` as written in a file (``legacy``: a legacy entry's value).

    A legacy ``{pattern: {...}}`` value pops ``enable`` (null allowed) before the rest becomes
    ``cfg``, so V1's top-level check does not apply to it.
    """
    from qconfig.attributes import QuantizerAttributeConfig

    enable = {"type": ["boolean", "null"]} if legacy else {"type": "boolean"}
    out = model_object(QuantizerAttributeConfig, _attribute_overrides(enable))
    rules = _attribute_rules()
    if not legacy:
        rules.append({"$comment": "V1: {enable: true} alone says nothing.", "not": _LONE_ENABLE})
    out["properties"]["$import"] = IMPORT_PROPERTY
    out["if"] = {"required": ["$import"]}
    out["else"] = {"allOf": rules}
    return out


def rotate_schema() -> dict[str, Any]:
    from qconfig.attributes import RotateConfig

    return model_object(
        RotateConfig,
        {
            "mode": one_of_strings(
                ["rotate", "rotate_back"],
                ["Rotate only.", "Rotate, fake-quantize, rotate back."],
            ),
            "block_size": nullable({"type": "integer", "minimum": 1}),
        },
    )
