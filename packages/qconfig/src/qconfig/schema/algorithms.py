"""The schema of ``algorithm``: a method name, a settings object per method, or a list of them."""

from __future__ import annotations

from typing import Any

from qconfig.schema.builders import (
    REQUIRED,
    documented,
    first_paragraph,
    json_default,
    model_object,
    nullable,
    ref,
)


def algorithm_definitions() -> dict[str, dict[str, Any]]:
    from qconfig.algorithms import ALGORITHMS, LayerwiseConfig

    layerwise = model_object(LayerwiseConfig)
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
        ref("MaxCalibConfig"),
        ref("MseCalibConfig"),
        ref("LocalHessianCalibConfig"),
    ]
    for method, cls in ALGORITHMS.items():
        layerwise_field: dict[str, Any] = {"anyOf": [{"type": "null"}, ref("LayerwiseConfig")]}
        if cls.mutates_weights:
            layerwise_field["anyOf"][1] = {
                "type": "object",
                "allOf": [ref("LayerwiseConfig")],
                "$comment": "Only amax-only algorithms support calib_mutates_weights: false.",
                "properties": {"calib_mutates_weights": {"const": True}},
            }
        overrides: dict[str, dict[str, Any]] = {
            "method": {"const": method} if method is not None else {"type": "null"},
            "layerwise": layerwise_field,
        }
        fields = cls.model_fields
        if "shared_states" in fields:
            overrides["shared_states"] = nullable(
                {
                    "type": "object",
                    "properties": {
                        "weight_global_amax": documented(
                            {
                                "type": "object",
                                "properties": {
                                    "patterns": documented(
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
        schema = model_object(cls, overrides)
        schema["description"] = first_paragraph(cls.__doc__)
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


def algorithm_schema() -> dict[str, Any]:
    """``algorithm``: a method name, a mapping dispatched on ``method``, null, or a list of them."""
    from qconfig.algorithms import ALGORITHMS

    methods = [m for m in ALGORITHMS if m is not None]
    names = {
        "type": "string",
        "enum": methods,
        "markdownEnumDescriptions": [first_paragraph(ALGORITHMS[m].__doc__) for m in methods],
    }
    mapping = {
        "type": "object",
        "required": ["method"],
        "properties": {
            "method": documented(
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
        # Dispatch on method, as QuantizeConfig does: until a method is written, completion
        # offers only `method` and the snippets, not the union of every algorithm's settings.
        "allOf": [
            {
                "if": {"required": ["method"], "properties": {"method": {"const": method}}},
                "then": ref(cls.__name__),
            }
            for method, cls in ALGORITHMS.items()
        ],
        "defaultSnippets": [
            {
                "label": f"{m} algorithm",
                "description": first_paragraph(ALGORITHMS[m].__doc__),
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
        default = json_default(cls, name)
        if default is not None and default is not REQUIRED:
            out[name] = default
        if len(out) == 2:
            break
    return out
