"""The schemas of qconfig's own outputs: manifests (``qconfig.manifest/v1``) and plans."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

from qconfig.schema.attributes import attributes_schema
from qconfig.schema.builders import DRAFT_07, documented, model_object, ref
from qconfig.schema.config import config_schema


def _attribute_dump() -> dict[str, Any]:
    """A full attribute dump as manifests and plans store it (no ``$import``, no legacy)."""
    out = attributes_schema(legacy=False)
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
def manifest_schema() -> dict[str, Any]:
    from qconfig.manifest import Manifest, ModuleSite, QuantizerSite

    def closed(model: type[BaseModel]) -> dict[str, Any]:
        return model_object(
            model, descriptions=_MANIFEST_DESCRIPTIONS, defaults=_MANIFEST_PLACEHOLDERS
        )

    config_definitions = config_schema()["definitions"]
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
def plan_schema() -> dict[str, Any]:
    from qconfig.algorithms import ALGORITHMS
    from qconfig.plan import PLAN_FORMAT, READABLE_PLAN_FORMATS

    config_definitions = config_schema()["definitions"]
    definitions = {
        name: config_definitions[name]
        for name in ("RotateConfig", "BlockSizes", "Bias", "NoLoneEnableTrue", "LayerwiseConfig")
    }
    definitions.update(
        {cls.__name__: config_definitions[cls.__name__] for cls in ALGORITHMS.values()}
    )
    attributes = _attribute_dump()
    attributes["properties"]["calibrator"] = documented(
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
            "enable": documented({"type": "boolean"}, "**Required.** Whether it quantizes.", True),
            "attributes": documented(
                {"anyOf": [index, {"type": "array", "items": index}]},
                "**Required.** Index into `attribute_sets`; a list = a sequential quantizer.",
                0,
            ),
            "parent_class": documented(
                {"type": "string"}, "**Required.** Registry key of its module.", ""
            ),
            "sources": documented(
                {"type": "array", "items": index},
                "**Required.** Indices of the `quant_cfg` entries that changed it, in order.",
                [],
            ),
            "hard_disabled": documented(
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
            "code": documented({"type": "string"}, "**Required.** Stable rule code.", ""),
            "severity": documented(
                {"type": "string", "enum": ["error", "warning", "info"]},
                "**Required.** How bad it is.",
                "warning",
            ),
            "message": documented({"type": "string"}, "**Required.** What is wrong.", ""),
            "file": documented({"type": ["string", "null"]}, "Config file.", None),
            "line": documented(nullable_int, "1-based line.", None),
            "column": documented(nullable_int, "1-based column.", None),
            "path": documented({"type": "string"}, "JSON path in the config.", ""),
            "fixable": documented({"type": "boolean"}, "`qconfig migrate` can fix it.", False),
        },
        "required": ["code", "severity", "message"],
        "additionalProperties": False,
    }
    pair = {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}
    nullable_pair = {"anyOf": [pair, {"type": "null"}]}
    spec = {
        "type": "object",
        "description": "What an attribute set resolves to (derived; checked when a plan loads).",
        "properties": {
            "family": documented(
                {"enum": ["int", "fp", "nvfp4", "mx", None]},
                "Number format family (null: no format implements the combination).",
                "int",
            ),
            "bits": documented(
                {"anyOf": [{"type": "integer"}, nullable_pair]},
                "Integer bits or `[E, M]` of the elements.",
                8,
            ),
            "strategy": documented(
                {"enum": ["tensor", "channel", "block", "token"]},
                "Granularity of the scale.",
                "tensor",
            ),
            "dynamic": documented(
                {"type": "boolean"}, "Scale computed from every input, not calibrated.", False
            ),
            "block": documented(
                {"type": ["object", "null"], "additionalProperties": nullable_int},
                "Block shape: axis → block size (null = the whole dimension).",
                None,
            ),
            "scale_bits": documented(nullable_pair, "Scale format of block formats.", None),
            "bias": documented({"type": "boolean"}, "Affine (asymmetric) quantization.", False),
            "rotate": documented(
                {"enum": ["rotate", "rotate_back", None]}, "Hadamard rotation mode.", None
            ),
        },
        "required": [
            "family",
            "bits",
            "strategy",
            "dynamic",
            "block",
            "scale_bits",
            "bias",
            "rotate",
        ],
        "additionalProperties": False,
    }
    definitions["QuantizerState"] = state
    definitions["Diagnostic"] = diagnostic
    definitions["QuantizerSpec"] = spec
    algorithm_step = {
        "type": "object",
        "required": ["method"],
        "anyOf": [ref(cls.__name__) for cls in ALGORITHMS.values()],
    }
    return {
        "$schema": DRAFT_07,
        "title": f"qconfig compiled plan ({PLAN_FORMAT})",
        "description": "Per-quantizer effective state after applying a config to a model once.",
        "type": "object",
        "properties": {
            "format": documented(
                {"enum": list(READABLE_PLAN_FORMATS)},
                "**Required.** Format tag (v1 files, without `specs`, still load).",
                PLAN_FORMAT,
            ),
            "model": documented({"type": "string"}, "The manifest's `model`.", ""),
            "algorithm": documented(
                {"type": "array", "items": algorithm_step},
                "**Required.** Validated calibration steps, in order.",
                [],
            ),
            "attribute_sets": documented(
                {"type": "array", "items": ref("QuantizerAttributeConfig")},
                "**Required.** Distinct attribute sets, referenced by index.",
                [],
            ),
            "specs": documented(
                {"type": "array", "items": ref("QuantizerSpec")},
                "One per attribute set: what it resolves to (v2).",
                [],
            ),
            "states": documented(
                {"type": "array", "items": ref("QuantizerState")},
                "**Required.** Distinct quantizer states, referenced by index.",
                [],
            ),
            "quantizers": documented(
                {"type": "object", "additionalProperties": index},
                "**Required.** Full quantizer name → index of its state in `states`.",
                {},
            ),
            "diagnostics": documented(
                {"type": "array", "items": ref("Diagnostic")},
                "What the compiler noticed.",
                [],
            ),
        },
        "required": ["format", "algorithm", "attribute_sets", "states", "quantizers"],
        "additionalProperties": False,
        "definitions": definitions,
    }
