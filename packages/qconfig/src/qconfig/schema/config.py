"""The schema of a config file: a ``QuantizeConfig`` body, recipes, ``imports`` and ``$schema``."""

from __future__ import annotations

from functools import cache
from typing import Any

from qconfig.schema.algorithms import algorithm_definitions, algorithm_schema
from qconfig.schema.attributes import (
    attributes_schema,
    bias_schema,
    block_sizes_schema,
    no_lone_enable,
    rotate_schema,
)
from qconfig.schema.builders import DRAFT_07, documented, model_object, nullable, ref
from qconfig.schema.entries import (
    IMPORT_PROPERTY,
    entry_schema,
    legacy_pairs_schema,
    legacy_value_schema,
    quant_cfg_schema,
    scoped_value_schema,
)


def _quantize_config(*, file: bool) -> dict[str, Any]:
    from qconfig.quantize import QuantizeConfig

    out = model_object(
        QuantizeConfig,
        {
            "quant_cfg": quant_cfg_schema(),
            "algorithm": algorithm_schema(),
            "effective_bits": nullable({"type": "number", "exclusiveMinimum": 0, "maximum": 16}),
        },
    )
    out["properties"]["$import"] = IMPORT_PROPERTY
    # The loader refuses an empty config ({} or only $schema): Model Optimizer would read it as
    # its default config, INT8 on every quantizer (docs/differences.md). A header document
    # holding only `imports` is validated on its own by editors, so it stays valid.
    keys = [*QuantizeConfig.model_fields, "$import"]
    if file:
        out["properties"]["$schema"] = _SCHEMA_PROPERTY
        out["properties"]["imports"] = _IMPORTS_PROPERTY
        keys.append("imports")
    out["anyOf"] = [{"required": [key]} for key in keys]
    return out


_SCHEMA_PROPERTY = documented(
    {"type": "string"},
    "The JSON Schema this file is written against (editors use it for completion); ignored by "
    "the loader.",
    "../../schemas/qconfig-config.schema.json",
)
_IMPORTS_PROPERTY = documented(
    {"type": "object", "additionalProperties": {"type": "string"}},
    "Snippets this file uses: `{alias: path}`, referenced as `$import: alias` (docs/writing-"
    "configs.md, 'Imports: reusing snippets'). Built-in units are `qconfig/units/<name>`.",
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
            "metadata": documented(
                {
                    "type": "object",
                    "properties": {
                        "recipe_type": documented(
                            {"const": "ptq"},
                            "**Required.** Recipe type; only PTQ recipes carry a quantize config.",
                            "ptq",
                        ),
                        "description": documented(
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
            "quantize": documented(
                ref("QuantizeConfig"),
                "**Required.** The quantization config (`quant_cfg`, `algorithm`).",
                {},
            ),
        },
        "required": ["metadata", "quantize"],
        "additionalProperties": False,
    }


@cache
def config_schema() -> dict[str, Any]:
    definitions: dict[str, Any] = {
        "QuantizeConfigFile": _quantize_config(file=True),
        "QuantizeConfig": _quantize_config(file=False),
        "PTQRecipe": _recipe(),
        "QuantizerCfgEntry": entry_schema(),
        "LegacyEntry": legacy_pairs_schema(entry=True),
        "LegacyQuantCfg": legacy_pairs_schema(entry=False),
        "LegacyValue": legacy_value_schema(),
        "LegacyScopedValue": scoped_value_schema(),
        "QuantizerAttributeConfig": attributes_schema(legacy=False),
        "LegacyQuantizerCfg": attributes_schema(legacy=True),
        "RotateConfig": rotate_schema(),
        "BlockSizes": block_sizes_schema(),
        "Bias": bias_schema(),
        "NoLoneEnableTrue": no_lone_enable(),
        **algorithm_definitions(),
    }
    return {
        "$schema": DRAFT_07,
        "title": "qconfig quantization config",
        "description": "A Model Optimizer 0.47 quantization config (`quant_cfg` + `algorithm`) "
        "or PTQ recipe, as YAML or JSON.",
        "anyOf": [ref("QuantizeConfigFile"), ref("PTQRecipe")],
        "definitions": definitions,
    }
