"""Real configs, manifests and plans the mutating strategies start from.

Why real fragments: random text almost never gets past the YAML parser, and random structures
rarely past the first validator. Starting from the example configs, the 39 presets (as
qconfig ships them and as Model Optimizer 0.47.0 dumped them) and the example manifests, most
mutated examples load far enough to reach validation, compilation, lint and explain.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from fuzz_support import EXAMPLES_DIR, PRESETS_JSON

#: The example manifest the pipeline tests compile against (the smallest two: speed).
MANIFESTS = ("cnn", "llama_decoder")


def _lists(value: Any) -> Any:
    """Tuples as lists and every key as JSON writes it: what a text file can hold."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


@functools.cache
def config_texts() -> tuple[tuple[str, str], ...]:
    """``(suffix, text)`` of every example config and shipped preset/unit file."""
    import qconfig.presets as presets

    files = sorted((EXAMPLES_DIR / "configs").glob("*.*"))
    preset_dir = presets.path("INT8_DEFAULT_CFG").parent
    files += sorted(preset_dir.glob("*.yaml")) + sorted((preset_dir / "units").glob("*.yaml"))
    return tuple((f.suffix, f.read_text(encoding="utf-8")) for f in files)


@functools.cache
def config_trees() -> tuple[Any, ...]:
    """Configs as plain JSON-like data: the presets (qconfig's and Model Optimizer's dump) and
    the example configs, plus the unit lists as ``quant_cfg`` bodies."""
    import qconfig.presets as presets
    import yaml

    trees: list[Any] = []
    for name in presets.names():
        trees.append(_lists(presets.get(name)))
    dumped = json.loads(PRESETS_JSON.read_text(encoding="utf-8"))
    for name, value in sorted(dumped.items()):
        if name.startswith("_note"):
            continue
        trees.append(value if isinstance(value, dict) else {"quant_cfg": value})
    for path in sorted((EXAMPLES_DIR / "configs").glob("*.*")):
        text = path.read_text(encoding="utf-8")
        trees.append(json.loads(text) if path.suffix == ".json" else yaml.safe_load(text))
    return tuple(trees)


@functools.cache
def manifest_text(name: str) -> str:
    return (EXAMPLES_DIR / "manifests" / f"{name}.json").read_text(encoding="utf-8")


@functools.cache
def manifest(name: str) -> Any:
    from qconfig.manifest import Manifest

    return Manifest.from_json(manifest_text(name))


def manifest_path(name: str) -> Path:
    return EXAMPLES_DIR / "manifests" / f"{name}.json"


@functools.cache
def plan_texts() -> tuple[str, ...]:
    """Compiled plans of a few presets on the example manifests (JSON text)."""
    import qconfig
    import qconfig.presets as presets

    out = []
    for preset, name in (
        ("INT8_DEFAULT_CFG", "cnn"),
        ("W4A8_AWQ_BETA_CFG", "llama_decoder"),
        ("NVFP4_DEFAULT_CFG", "llama_decoder"),
        ("FP8_KV_CFG", "llama_decoder"),
        ("MXFP4_DEFAULT_CFG", "cnn"),
    ):
        config = qconfig.load_config(presets.get(preset))
        out.append(qconfig.compile_plan(config, manifest(name), weight_check=False).to_json())
    return tuple(out)
