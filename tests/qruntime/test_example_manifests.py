"""The checked-in example manifests are exactly what ``qruntime.inventory`` produces for the zoo
models they describe (meta device: no weights are materialized).

Regenerate after an intended change with ``QCONFIG_UPDATE_EXAMPLES=1 make test``.
"""

import os
from pathlib import Path

import pytest
import torch
import zoo
from qconfig.manifest import Manifest
from qruntime import inventory, register, unregister
from qruntime.sites.registry import registrations

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "manifests"
MODELS = {
    "llama_decoder": ("llama", "Llama-style decoder (2 layers, embeddings, lm_head)"),
    "moe": ("moe", "MoE decoder (router, 4 experts, shared expert)"),
    "vlm": ("vlm", "vision-language model (vision tower, projector, language model)"),
    "cnn": ("cnn", "CNN (Conv1d/2d, ConvTranspose2d, BatchNorm, InstanceNorm, LeakyReLU, pools)"),
}


@pytest.fixture
def builtin_registry_only():
    """The examples describe the built-in (plain torch) registry: set aside registrations that
    other tests in this process added (e.g. the zoo's fused experts), restore them after."""
    extra = [r for r in registrations() if not r.original.__module__.startswith("torch.")]
    for r in extra:
        unregister(r.original)
    yield
    for r in extra:
        register(r.original, r.quant_cls, key=r.key)


@pytest.mark.parametrize("filename", sorted(MODELS))
def test_example_manifest_is_current(filename, builtin_registry_only):
    zoo_name, label = MODELS[filename]
    with torch.device("meta"):
        model = zoo.ZOO[zoo_name]()
    manifest = inventory(model, label)
    path = EXAMPLES / f"{filename}.json"
    if os.environ.get("QCONFIG_UPDATE_EXAMPLES") == "1":
        path.write_text(manifest.to_json(), encoding="utf-8")
    assert path.exists(), f"{path} missing: run with QCONFIG_UPDATE_EXAMPLES=1"
    assert Manifest.load(path) == manifest
    assert path.read_text(encoding="utf-8") == manifest.to_json()
