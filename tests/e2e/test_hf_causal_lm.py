"""The Hugging Face causal-LM path end to end: config.json → manifest on the meta device (the
``qruntime manifest`` CLI) → ``qconfig lint --manifest`` → ``qruntime.quantize`` with
NVFP4_MLP_ONLY_CFG → ``generate()``.

Why: this is how the two packages are meant to be used on an LLM — the manifest is made once
without weights, configs are checked against it torch-free, and the runtime then quantizes the
real model. A tiny random Llama keeps it fast; random weights are fine for the mechanics (the
accuracy side is covered by test_demo and bench/bench_accuracy.py).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import qruntime
import torch
from qconfig import lint, presets
from qconfig.manifest import Manifest
from qruntime.cli import main as qruntime_main
from qruntime.quantizer import TensorQuantizer
from transformers import LlamaConfig, LlamaForCausalLM

QCONFIG_CLI = [sys.executable, "-m", "qconfig.cli"]
MLP = ("gate_proj", "up_proj", "down_proj")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


def _tiny_llama_config() -> LlamaConfig:
    return LlamaConfig(
        hidden_size=64,
        num_hidden_layers=2,
        intermediate_size=128,
        vocab_size=256,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        architectures=["LlamaForCausalLM"],
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("llama")
    _tiny_llama_config().save_pretrained(path)  # writes config.json only
    return path


def test_manifest_cli_on_meta_device(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    out = workdir / "m.json"
    assert (
        qruntime_main(["manifest", "--hf-config", str(workdir / "config.json"), "-o", str(out)])
        == 0
    )
    manifest = Manifest.load(out)
    assert manifest.model == "LlamaForCausalLM"
    names = manifest.quantizer_names()
    for layer in range(2):
        for proj in MLP:
            assert f"model.layers.{layer}.mlp.{proj}.weight_quantizer" in names
        for proj in ATTENTION:
            assert f"model.layers.{layer}.self_attn.{proj}.input_quantizer" in names
    sites = {m.name: m for m in manifest.modules}
    assert sites["model.layers.0.mlp.down_proj"].weight_shape == [64, 128]
    assert sites["lm_head"].registry_key == "nn.Linear"
    # the same manifest as inventory() of a real model: meta building loses nothing
    real = qruntime.inventory(LlamaForCausalLM(_tiny_llama_config()), "LlamaForCausalLM")
    assert json.loads(real.to_json()) == json.loads(out.read_text())


def test_manifest_cli_from_a_factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "my_models.py").write_text(
        "import torch\n"
        "def build():\n"
        "    assert torch.empty(1).device.type == 'meta'  # built under torch.device('meta')\n"
        "    return torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert qruntime_main(["manifest", "my_models:build", "--label", "tiny"]) == 0
    manifest = Manifest.from_json(capsys.readouterr().out)
    assert manifest.model == "tiny"
    assert [(m.name, m.weight_shape) for m in manifest.modules] == [("0", [4, 8]), ("2", [2, 4])]


def test_manifest_cli_rejects_a_bad_factory(capsys: pytest.CaptureFixture) -> None:
    assert qruntime_main(["manifest", "no_such_module_xyz:build"]) == 2
    assert "no_such_module_xyz" in capsys.readouterr().err


def test_lint_quantize_generate(workdir: Path) -> None:
    manifest_path = workdir / "m.json"
    if not manifest_path.exists():
        assert (
            qruntime_main(
                ["manifest", "--hf-config", str(workdir / "config.json"), "-o", str(manifest_path)]
            )
            == 0
        )
    # the config as a user gets it from the qconfig CLI, linted there against the manifest
    config_path = workdir / "nvfp4_mlp_only.yaml"
    text = subprocess.run(
        [*QCONFIG_CLI, "presets", "NVFP4_MLP_ONLY_CFG", "--format", "yaml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    config_path.write_text(text)
    linted = subprocess.run(
        [*QCONFIG_CLI, "lint", "--manifest", str(manifest_path), str(config_path)],
        capture_output=True,
        text=True,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "QC205" in linted.stdout  # the MoE/Mamba patterns of the preset match nothing here
    diagnostics = lint(config_path, Manifest.load(manifest_path))
    assert not [d for d in diagnostics if d.severity == "error"]

    torch.manual_seed(0)
    model = LlamaForCausalLM(_tiny_llama_config()).eval()
    prompt = torch.randint(3, 256, (1, 6))
    calibration = [torch.randint(3, 256, (2, 16)) for _ in range(3)]
    calls = []

    def forward_loop(m: torch.nn.Module) -> None:
        calls.append(len(calibration))
        with torch.no_grad():
            for ids in calibration:
                m(input_ids=ids)

    qruntime.quantize(model, presets.get("NVFP4_MLP_ONLY_CFG"), forward_loop)
    assert calls == [3]

    for layer in model.model.layers:
        for proj in MLP:
            module = getattr(layer.mlp, proj)
            for quantizer in (module.weight_quantizer, module.input_quantizer):
                assert isinstance(quantizer, TensorQuantizer) and quantizer.is_enabled
                assert quantizer.num_bits == (2, 1)
                assert quantizer.block_sizes == {-1: 16, "type": "dynamic", "scale_bits": (4, 3)}
            assert module.input_quantizer.amax is not None  # calibrated global amax
        for proj in ATTENTION:
            module = getattr(layer.self_attn, proj)
            assert not module.weight_quantizer.is_enabled
            assert not module.input_quantizer.is_enabled
    assert not model.lm_head.weight_quantizer.is_enabled

    # the MLP weights really are fake-quantized: NVFP4 keeps at most 15 distinct magnitudes
    # times a per-block scale, so the output differs from the float model's
    reference = LlamaForCausalLM(_tiny_llama_config()).eval()
    reference.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        assert not torch.equal(model(prompt).logits, reference(prompt).logits)

    generated = model.generate(prompt, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert generated.shape == (1, 11)
    assert torch.equal(generated[:, :6], prompt)
    assert ((generated[:, 6:] >= 0) & (generated[:, 6:] < 256)).all()
