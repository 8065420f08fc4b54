"""Draft-07 JSON Schemas for config files, manifests and plans: what editors complete against.

Why not pydantic's own ``model_json_schema()``: it emits 2020-12 (``$defs``, ``prefixItems``),
which VS Code's JSON engine and yaml-language-server only partly understand, and it describes the
*Python* inputs (``block_sizes`` with int keys, ``num_bits`` as any string) rather than what a
YAML/JSON file may contain after our loader's restorations (docs/writing-configs.md). So the field
list, descriptions, defaults and simple types still come from the models — adding a field to a
model adds it here — while the file-level shapes, the cross-field rules draft-07 *can* express and
the completion helpers (``examples``, ``defaultSnippets``, ``markdownEnumDescriptions``) are added
on top. What the schema cannot express is listed in docs/schema.md and left to ``qconfig lint``.
Modules: :mod:`~qconfig.schema.builders` (shared helpers), one per part of a config file
(:mod:`~qconfig.schema.attributes`, :mod:`~qconfig.schema.entries`,
:mod:`~qconfig.schema.algorithms`, :mod:`~qconfig.schema.config`) and
:mod:`~qconfig.schema.artifacts` for manifests and plans.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qconfig.schema.artifacts import manifest_schema, plan_schema
from qconfig.schema.builders import DRAFT_07, EXMY, INT_KEY, declare_required
from qconfig.schema.config import config_schema

__all__ = [
    "DRAFT_07",
    "EXMY",
    "INT_KEY",
    "KINDS",
    "SCHEMA_FILES",
    "json_schema",
    "render",
    "write_schemas",
]

KINDS = ("config", "manifest", "plan")
#: File name of each kind's schema inside ``schemas/``.
SCHEMA_FILES = {kind: f"qconfig-{kind}.schema.json" for kind in KINDS}


def json_schema(kind: str = "config") -> dict[str, Any]:
    """The draft-07 schema of a config file (``"config"``), a manifest or a plan (a fresh copy)."""
    builders: dict[str, Callable[[], dict[str, Any]]] = {
        "config": config_schema,
        "manifest": manifest_schema,
        "plan": plan_schema,
    }
    if kind not in builders:
        raise ValueError(f"unknown schema kind {kind!r}; expected one of {', '.join(KINDS)}")
    return declare_required(copy.deepcopy(builders[kind]()))


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
