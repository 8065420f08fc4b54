"""``qruntime.export`` layout rules checked from first principles: file layout, sharding with an
index, tokenizer copy, the modelopt-hf config, and one clear ExportError per inexpressible state."""

from __future__ import annotations

import copy
import json
import sys
import warnings
from pathlib import Path

import modelopt.torch.quantization.config as mc
import pytest
import qruntime
import torch
from qruntime.export import ExportError
from qruntime.export.shards import parse_size
from qruntime.packing import unpack_fp4, unpack_int4_row_pairs
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conformance"))
from hf_models import build, forward_loop


def quantized(cfg: dict, name: str = "llama") -> torch.nn.Module:
    model = build(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return qruntime.quantize(model, copy.deepcopy(cfg), forward_loop(name), lint="off")


def _group16(cfg: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    for entry in cfg["quant_cfg"]:
        if entry.get("quantizer_name") == "*weight_quantizer":
            entry["cfg"]["block_sizes"] = {-1: 16, "type": "static"}
    return cfg


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("2KiB") == 2048
    assert parse_size(1000) == 1000
    with pytest.raises(ValueError, match="not a size"):
        parse_size("five")


def test_shards_and_index_hold_every_tensor_once(tmp_path):
    model = quantized(_group16(mc.INT4_BLOCKWISE_WEIGHT_ONLY_CFG))
    one = qruntime.export(model, tmp_path / "one")
    many = qruntime.export(model, tmp_path / "many", max_shard_size="10KB")
    index = json.loads((tmp_path / "many" / "model.safetensors.index.json").read_text())
    shards = sorted({*index["weight_map"].values()})
    assert len(shards) > 2
    merged = {}
    for shard in shards:
        part = load_file(tmp_path / "many" / shard)
        assert sum(t.numel() * t.element_size() for t in part.values()) <= 10_000 or len(part) == 1
        merged.update(part)
    single = load_file(tmp_path / "one" / "model.safetensors")
    assert merged.keys() == single.keys() == index["weight_map"].keys()
    assert all(torch.equal(merged[k], single[k]) for k in single)
    assert index["metadata"]["total_size"] == one.tensor_bytes == many.tensor_bytes


def test_int4_checkpoint_size_is_about_a_quarter_of_the_float_weights(tmp_path):
    model = quantized(_group16(mc.INT4_BLOCKWISE_WEIGHT_ONLY_CFG))
    qruntime.export(model, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    q = tensors["model.layers.0.mlp.down_proj.weight_packed"]
    assert q.dtype == torch.int32 and q.shape == (32, 64 * 4 // 32)
    # 4 bits per weight plus one fp32 scale per 16 weights: (4 + 32/16) / 32 of fp32
    packed = q.numel() * 4 + tensors["model.layers.0.mlp.down_proj.weight_scale"].numel() * 4
    assert packed == 32 * 64 * (4 + 2) // 8
    assert "model.layers.0.mlp.down_proj.weight" not in tensors
    assert tensors["model.layers.0.mlp.down_proj.weight_shape"].tolist() == [32, 64]


def test_modelopt_hf_int4_rows_and_nvfp4_global_scale_reciprocal(tmp_path):
    model = quantized(_group16(mc.INT4_BLOCKWISE_WEIGHT_ONLY_CFG))
    qruntime.export(model, tmp_path / "int4", "modelopt-hf")
    t = load_file(tmp_path / "int4" / "model.safetensors")
    proj = model.model.layers[0].self_attn.q_proj
    codes = unpack_int4_row_pairs(t["model.layers.0.self_attn.q_proj.weight"])
    scale = t["model.layers.0.self_attn.q_proj.weight_scale"]
    assert torch.equal(scale, proj.weight_quantizer.amax.float().reshape(32, 2) / 7.0)
    rebuilt = codes.float() * scale.repeat_interleave(16, dim=1)
    with torch.no_grad():
        fake = proj.weight_quantizer(proj.weight)
    assert float((rebuilt - fake).abs().max()) <= 1e-6
    hf = json.loads((tmp_path / "int4" / "hf_quant_config.json").read_text())["quantization"]
    assert hf["quant_algo"] == "W4A16_AWQ" and hf["group_size"] == 16
    assert hf["exclude_modules"] == ["lm_head"]
    whole = json.loads((tmp_path / "int4" / "hf_quant_config.json").read_text())
    assert whole["producer"] == {"name": "modelopt", "version": "0.47.0"}  # what loaders check
    assert whole["exported_by"]["name"] == "qruntime"

    nv = quantized(mc.NVFP4_DEFAULT_CFG)
    qruntime.export(nv, tmp_path / "nv_mo", "modelopt-hf")
    qruntime.export(nv, tmp_path / "nv_ct")
    mo = load_file(tmp_path / "nv_mo" / "model.safetensors")
    ct = load_file(tmp_path / "nv_ct" / "model.safetensors")
    key = "model.layers.1.mlp.up_proj"
    assert torch.equal(mo[f"{key}.weight"], ct[f"{key}.weight_packed"])
    assert mo[f"{key}.weight_scale_2"].shape == ()
    assert torch.equal(mo[f"{key}.weight_scale_2"], 1 / ct[f"{key}.weight_global_scale"][0])
    # input scales: modelopt multiplies (amax / (6 * 448)), compressed-tensors divides
    amax = nv.get_submodule(key).input_quantizer.amax.float()
    assert torch.equal(mo[f"{key}.input_scale"], (amax / 2688.0).reshape(()))
    assert torch.equal(
        ct[f"{key}.input_global_scale"], torch.div(torch.tensor(2688.0), amax).reshape(1)
    )
    assert unpack_fp4(mo[f"{key}.weight"]).shape == (64, 32)


def test_config_and_tokenizer_are_copied(tmp_path):
    model = quantized(mc.FP8_DEFAULT_CFG)
    src = tmp_path / "src"
    src.mkdir()
    (src / "tokenizer.json").write_text('{"version": "1.0"}')
    (src / "vocab.txt").write_text("a\nb\n")
    model.config._name_or_path = str(src)
    result = qruntime.export(model, tmp_path / "out")
    names = {p.name for p in result.files}
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt"} <= names
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] == 32
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"


def _per_tensor_int8() -> dict:
    cfg = copy.deepcopy(mc.INT8_DEFAULT_CFG)
    for entry in cfg["quant_cfg"]:
        if entry.get("quantizer_name") == "*weight_quantizer":
            entry["cfg"]["axis"] = None
    return cfg


def test_mx_formats_in_modelopt_hf(tmp_path):
    model = quantized(mc.MXFP4_DEFAULT_CFG)
    qruntime.export(model, tmp_path, "modelopt-hf")
    t = load_file(tmp_path / "model.safetensors")
    w, s = t["model.layers.0.mlp.gate_proj.weight"], t["model.layers.0.mlp.gate_proj.weight_scale"]
    assert (w.dtype, tuple(w.shape), s.dtype, tuple(s.shape)) == (
        torch.uint8,
        (64, 16),
        torch.uint8,
        (64, 1),
    )
    hf = json.loads((tmp_path / "hf_quant_config.json").read_text())["quantization"]
    assert hf["quant_algo"] == "mxfp4" and "group_size" not in hf


def _smoothquant_like(model):
    proj = model.model.layers[0].self_attn.o_proj
    proj.input_quantizer.pre_quant_scale = torch.full((32,), 0.5)
    return model


@pytest.mark.parametrize(
    ("make", "fmt", "message"),
    [
        (lambda: _smoothquant_like(quantized(mc.INT8_DEFAULT_CFG)), "compressed-tensors",
         r"model\.layers\.0\.self_attn\.o_proj\.input_quantizer: a pre_quant_scale"),
        (lambda: quantized(_per_tensor_int8()), "modelopt-hf",
         r"q_proj\.weight_quantizer: INT8 tensor weights with int8 inputs match no Model"),
        (lambda: quantized(mc.FP8_DEFAULT_CFG, "gpt2"), "compressed-tensors",
         r"c_attn\.weight_quantizer: compressed-tensors compresses only Linear"),
        (lambda: quantized(mc.INT8_DEFAULT_CFG), "modelopt-hf", None),
        (lambda: quantized(_group16(mc.INT4_BLOCKWISE_WEIGHT_ONLY_CFG)), "modelopt-hf", None),
    ],
)  # fmt: skip
def test_inexpressible_states_raise_one_clear_error(make, fmt, message, tmp_path):
    model = make()
    drop = model.config.model_type == "gpt2"  # its LayerNorm input quantizers (tested below)
    if message is None:
        qruntime.export(model, tmp_path, fmt)  # expressible: no error
        return
    with pytest.raises(ExportError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qruntime.export(model, tmp_path, fmt, drop_unexportable=drop)
    assert not (tmp_path / "model.safetensors").exists()  # nothing written


def test_modelopt_hf_stores_pre_quant_scale(tmp_path):
    model = _smoothquant_like(quantized(mc.INT8_DEFAULT_CFG))
    qruntime.export(model, tmp_path, "modelopt-hf")
    t = load_file(tmp_path / "model.safetensors")
    assert torch.equal(t["model.layers.0.self_attn.o_proj.pre_quant_scale"], torch.full((32,), 0.5))
    assert "model.layers.0.self_attn.q_proj.pre_quant_scale" not in t


def test_quantizers_without_a_checkpoint_field_raise_or_are_dropped_with_a_warning(tmp_path):
    model = quantized(mc.FP8_DEFAULT_CFG, "gpt2")  # GPT-2's LayerNorms get input quantizers
    with pytest.raises(
        ExportError,
        match=r"transformer\.h\.0\.ln_1\.input_quantizer: a quantizer "
        r"on a LayerNorm has no checkpoint field.*drop_unexportable=True",
    ):
        qruntime.export(model, tmp_path / "a", "modelopt-hf")
    assert not (tmp_path / "a" / "model.safetensors").exists()
    with pytest.warns(UserWarning, match=r"ln_1\.input_quantizer: .*dropped"):
        result = qruntime.export(model, tmp_path / "b", "modelopt-hf", drop_unexportable=True)
    assert "transformer.h.0.ln_1.input_quantizer" in result.dropped
    assert all(name.endswith("input_quantizer") and ".ln_" in name for name in result.dropped)


def test_awq_pre_quant_scale_in_modelopt_hf_computes_our_layer_and_is_refused_by_ct(tmp_path):
    model = quantized(_group16(mc.INT4_AWQ_CFG))  # awq_lite calibration
    with pytest.raises(ExportError, match=r"q_proj\.input_quantizer: a pre_quant_scale"):
        qruntime.export(model, tmp_path / "ct")
    qruntime.export(model, tmp_path / "mo", "modelopt-hf")
    t = load_file(tmp_path / "mo" / "model.safetensors")
    hf = json.loads((tmp_path / "mo" / "hf_quant_config.json").read_text())["quantization"]
    assert (hf["quant_algo"], hf["pre_quant_scale"], hf["has_zero_point"]) == (
        "W4A16_AWQ",
        True,
        False,
    )
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    for name in ("model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"):
        module = model.get_submodule(name)
        assert torch.equal(t[f"{name}.pre_quant_scale"], module.input_quantizer.pre_quant_scale)
        # what an engine computes: (x * pre_quant_scale) @ (q * scale)^T
        w = unpack_int4_row_pairs(t[f"{name}.weight"]).float()
        w = w * t[f"{name}.weight_scale"].repeat_interleave(16, dim=1)
        with torch.no_grad():
            ours = module(x)
        engine = (x * t[f"{name}.pre_quant_scale"]) @ w.T
        assert float((engine - ours).abs().max()) <= 1e-6 * float(ours.abs().max())


def test_gpt2_conv1d_modelopt_hf_keeps_quantized_out_in_and_plain_in_out(tmp_path):
    model = quantized(mc.FP8_DEFAULT_CFG, "gpt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qruntime.export(model, tmp_path, "modelopt-hf", drop_unexportable=True)
    t = load_file(tmp_path / "model.safetensors")
    assert t["transformer.h.0.attn.c_attn.weight"].shape == (96, 32)  # [out, in], quantized
    assert t["transformer.h.0.attn.c_attn.weight"].dtype == torch.float8_e4m3fn


@pytest.mark.parametrize(
    "cfg",
    [mc.INT8_DEFAULT_CFG, _group16(mc.INT4_BLOCKWISE_WEIGHT_ONLY_CFG), mc.FP8_DEFAULT_CFG,
     mc.NVFP4_DEFAULT_CFG, mc.MXFP4_DEFAULT_CFG],
    ids=["int8", "int4", "fp8", "nvfp4", "mxfp4"],
)  # fmt: skip
def test_a_compressed_model_exports_the_same_checkpoint(cfg, tmp_path):
    model = quantized(cfg)
    qruntime.export(model, tmp_path / "fake")
    qruntime.compress(model, {"compress": {"*_proj.weight_quantizer": True}})
    assert not any(k.endswith("q_proj.weight") for k in model.state_dict())  # really packed
    qruntime.export(model, tmp_path / "packed")
    fake = load_file(tmp_path / "fake" / "model.safetensors")
    packed = load_file(tmp_path / "packed" / "model.safetensors")
    assert fake.keys() == packed.keys()
    for key, value in fake.items():
        assert value.dtype == packed[key].dtype, key
        assert torch.equal(
            value.reshape(-1).view(torch.uint8), packed[key].reshape(-1).view(torch.uint8)
        ), key


def test_cli_export(tmp_path, capsys):
    from qruntime.cli import main

    model = quantized(mc.INT8_DEFAULT_CFG)
    folder = tmp_path / "model"
    model_float = build("llama")
    model_float.config.architectures = ["LlamaForCausalLM"]
    model_float.save_pretrained(folder)
    qruntime.save_state(model, tmp_path / "state.safetensors")
    out = tmp_path / "ckpt"
    rc = main(["export", "--model", str(folder), "--state", str(tmp_path / "state.safetensors"),
               "--format", "modelopt-hf", "-o", str(out)])  # fmt: skip
    assert rc == 0
    assert "14 quantized linears" in capsys.readouterr().out
    mine = load_file(out / "model.safetensors")
    qruntime.export(model, tmp_path / "direct", "modelopt-hf")
    direct = load_file(tmp_path / "direct" / "model.safetensors")
    assert mine.keys() == direct.keys()
    assert all(torch.equal(mine[k], direct[k]) for k in direct)


def test_cli_export_unexportable_quantizers(tmp_path, capsys):
    from qruntime.cli import main

    model = quantized(mc.FP8_DEFAULT_CFG, "gpt2")
    folder = tmp_path / "model"
    float_model = build("gpt2")
    float_model.config.architectures = ["GPT2LMHeadModel"]
    float_model.save_pretrained(folder)
    qruntime.save_state(model, tmp_path / "state.safetensors")
    args = ["export", "--model", str(folder), "--state", str(tmp_path / "state.safetensors"),
            "--format", "modelopt-hf", "-o", str(tmp_path / "out")]  # fmt: skip
    assert main(args) == 1
    assert "ln_1.input_quantizer: a quantizer on a LayerNorm" in capsys.readouterr().err
    assert main([*args, "--drop-unexportable"]) == 0
    captured = capsys.readouterr()
    assert "left out 5 quantizers" in captured.err  # ln_1, ln_2 of two blocks and ln_f
    assert captured.err.count("warning") == 1
    assert "5 quantizers left out" in captured.out


def test_per_token_fp8_inputs_export_after_forwards(tmp_path):
    """A forward rewrites a per-token quantizer's blocks into an axis; export reads the
    configured attributes, so the inputs stay dynamic per-token FP8 (they read as an
    inexpressible per-channel quantizer before)."""
    model = quantized(mc.FP8_PER_CHANNEL_PER_TOKEN_CFG)
    model(torch.randint(0, 128, (2, 8)))  # after calibration, another forward
    qruntime.export(model, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]
    (group,) = config["config_groups"].values()
    assert group["input_activations"]["strategy"] == "token"
    assert group["input_activations"]["dynamic"] is True
