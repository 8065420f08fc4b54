"""``qruntime.export`` of fused MoE experts (transformers 5 ``gate_up_proj``/``down_proj``)
checked against Model Optimizer 0.47.0's ``export_hf_checkpoint`` of the same model quantized by
Model Optimizer: the same tensor names (the hub checkpoint's, e.g. Mixtral's
``block_sparse_moe.experts.<e>.w1/w2/w3``), dtypes, shapes and bytes; and each expert's written
weight decodes to our fake-quantized expert weight.
"""

from __future__ import annotations

import copy
import json
import warnings

import modelopt.torch.quantization as mtq
import modelopt.torch.quantization.config as mc
import pytest
import qruntime
import torch
from hf_models import build, forward_loop
from safetensors.torch import load_file

PRESETS = {
    "fp8": mc.FP8_DEFAULT_CFG,
    "int8": mc.INT8_DEFAULT_CFG,
    "int8_wo": mc.INT8_WEIGHT_ONLY_CFG,
    "mxfp8": mc.MXFP8_DEFAULT_CFG,
    "nvfp4": mc.NVFP4_DEFAULT_CFG,
}
#: hub leaf names of (gate, up, down) per model
LEAVES = {"mixtral": ("w1", "w3", "w2"), "qwen3_moe": ("gate_proj", "up_proj", "down_proj")}
HUB_MLP = {"mixtral": "block_sparse_moe", "qwen3_moe": "mlp"}


def _quantized(name: str, preset: str | dict, *, ours: bool) -> torch.nn.Module:
    cfg = copy.deepcopy(PRESETS[preset] if isinstance(preset, str) else preset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ours:
            return qruntime.quantize(build(name), cfg, forward_loop(name), lint="off")
        return mtq.quantize(build(name), cfg, forward_loop(name))


def _mo_export(model, path) -> dict[str, torch.Tensor]:
    from modelopt.torch.export import export_hf_checkpoint

    model.config.architectures = [type(model).__name__]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_hf_checkpoint(model, export_dir=str(path))
    return load_file(path / "model.safetensors")


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8)


@pytest.mark.parametrize(
    ("name", "preset"),
    [("mixtral", p) for p in PRESETS] + [("qwen3_moe", "fp8"), ("qwen3_moe", "int8")],
)
def test_modelopt_export_of_fused_experts_writes_the_same_tensors(name, preset, tmp_path):
    theirs = _mo_export(_quantized(name, preset, ours=False), tmp_path / "mo")
    model = _quantized(name, preset, ours=True)
    qruntime.export(model, tmp_path / "ours", "modelopt-hf")
    mine = load_file(tmp_path / "ours" / "model.safetensors")
    assert sorted(mine) == sorted(theirs)
    gate, up, down = LEAVES[name]
    prefix = f"model.layers.0.{HUB_MLP[name]}.experts"
    for e in range(4):
        for leaf in (gate, up, down):
            assert f"{prefix}.{e}.{leaf}.weight_scale" in mine
    assert not any(k.endswith(("gate_up_proj", "experts.down_proj")) for k in mine)
    for key, value in theirs.items():
        if preset == "nvfp4" and ".experts." not in key:
            # Model Optimizer re-quantizes q/k/v under one shared NVFP4 global scale (their
            # largest amax); we keep each layer's own (docs/export.md). Experts are unaffected.
            continue
        assert mine[key].dtype == value.dtype, key
        assert mine[key].shape == value.shape, key
        if key.endswith("weight_scale_2"):
            # Deliberate (every NVFP4 linear, docs/export.md): we store 1 / (6 * 448 / amax),
            # the reciprocal of the divisor the fake quantization used; Model Optimizer
            # amax / (6 * 448): the two round differently by at most one float32 ulp
            assert torch.allclose(mine[key], value, rtol=2**-23, atol=0), key
            continue
        assert torch.equal(_bytes(mine[key]), _bytes(value)), key
    ours_cfg = json.loads((tmp_path / "ours" / "hf_quant_config.json").read_text())
    mo_cfg = json.loads((tmp_path / "mo" / "hf_quant_config.json").read_text())
    for field in ("quant_algo", "kv_cache_quant_algo", "group_size"):
        assert ours_cfg["quantization"].get(field) == mo_cfg["quantization"].get(field), field


@pytest.mark.parametrize("preset", ["fp8", "int8"])
def test_each_written_expert_decodes_to_our_fake_quantized_expert(preset, tmp_path):
    """From first principles: ``weight * weight_scale`` (per tensor or per output row) is the
    expert's fake-quantized weight; gate and up are the two row halves of ``gate_up_proj[e]``;
    the input scale is the shared input quantizer's ``amax / qmax``."""
    model = _quantized("mixtral", preset, ours=True)
    qruntime.export(model, tmp_path, "modelopt-hf")
    written = load_file(tmp_path / "model.safetensors")
    qmax = {"fp8": 448.0, "int8": 127.0}[preset]
    for layer in range(2):
        experts = model.model.layers[layer].mlp.experts
        hub = f"model.layers.{layer}.block_sparse_moe.experts"
        for e in range(4):
            with torch.no_grad():
                gate_up = experts.gate_up_proj_weight_quantizers[e](experts.gate_up_proj[e])
                down = experts.down_proj_weight_quantizers[e](experts.down_proj[e])
            half = gate_up.shape[0] // 2
            want = {"w1": gate_up[:half], "w3": gate_up[half:], "w2": down}
            for leaf, fake in want.items():
                w = written[f"{hub}.{e}.{leaf}.weight"].float()
                s = written[f"{hub}.{e}.{leaf}.weight_scale"].float()
                got = w * (s if s.dim() == 0 else s[:, None])
                # the fake quantization divides by qmax / amax where the checkpoint stores
                # amax / qmax to multiply by: the stored scale, the product and the quotient
                # each round once (half an ulp each), so they agree within two float32 ulps
                ulp = 2 * torch.finfo(torch.float32).eps * fake.abs()
                assert bool(((got - fake).abs() <= ulp).all()), (leaf, e)
                codes = (fake / s if s.dim() == 0 else fake / s[:, None]).abs()
                assert float(codes.max()) <= qmax * (1 + 1e-6)
                shared = "down_proj" if leaf == "w2" else "gate_up_proj"
                q = getattr(experts, f"{shared}_input_quantizer")
                assert torch.equal(
                    written[f"{hub}.{e}.{leaf}.input_scale"], (q.amax.float() / qmax).reshape(())
                )


def test_compressed_tensors_refuses_fused_experts_naming_them(tmp_path):
    model = _quantized("mixtral", "fp8", ours=True)
    with pytest.raises(qruntime.ExportError, match=r"model\.layers\.0\.mlp\.experts: fused MoE"):
        qruntime.export(model, tmp_path)


def test_partly_quantized_experts_are_refused(tmp_path):
    model = _quantized("mixtral", "fp8", ours=True)
    model.model.layers[1].mlp.experts.down_proj_weight_quantizers[2].disable()
    with pytest.raises(qruntime.ExportError, match=r"down_proj_weight_quantizers\.2: disabled"):
        qruntime.export(model, tmp_path, "modelopt-hf")


def _int4_blocks16() -> dict:
    cfg = copy.deepcopy(mc.INT4_BLOCKWISE_WEIGHT_ONLY_CFG)
    for entry in cfg["quant_cfg"]:
        if entry.get("quantizer_name") == "*weight_quantizer":
            entry["cfg"]["block_sizes"] = {-1: 16, "type": "static"}
    return cfg


def _signed_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Rows ``2k`` (low nibble) and ``2k+1`` (high nibble) of Model Optimizer's INT4 bytes."""
    low, high = (packed & 0xF).to(torch.int16), (packed >> 4).to(torch.int16)
    rows = torch.stack([low, high], dim=1).reshape(-1, packed.shape[1])
    return torch.where(rows > 7, rows - 16, rows).float()


def test_int4_block_experts_decode_to_our_fake_quantized_experts(tmp_path):
    """Model Optimizer 0.47.0's export of INT4-block fused experts raises (its pre-export
    resmoothing of INT4 experts lists them with ``len()`` of the fused container, which has
    none), so this is checked from first principles: unpack the nibbles, multiply by the
    per-block ``weight_scale``."""
    model = _quantized("mixtral", _int4_blocks16(), ours=True)
    qruntime.export(model, tmp_path, "modelopt-hf")
    written = load_file(tmp_path / "model.safetensors")
    config = json.loads((tmp_path / "hf_quant_config.json").read_text())["quantization"]
    assert (config["quant_algo"], config["group_size"]) == ("W4A16_AWQ", 16)
    experts = model.model.layers[1].mlp.experts
    hub = "model.layers.1.block_sparse_moe.experts"
    for e in range(4):
        with torch.no_grad():
            gate_up = experts.gate_up_proj_weight_quantizers[e](experts.gate_up_proj[e])
            down = experts.down_proj_weight_quantizers[e](experts.down_proj[e])
        half = gate_up.shape[0] // 2
        for leaf, fake in {"w1": gate_up[:half], "w3": gate_up[half:], "w2": down}.items():
            codes = _signed_nibbles(written[f"{hub}.{e}.{leaf}.weight"])
            scale = written[f"{hub}.{e}.{leaf}.weight_scale"]
            assert scale.shape == (fake.shape[0], fake.shape[1] // 16)
            got = codes * scale.repeat_interleave(16, dim=1)
            ulp = 2 * torch.finfo(torch.float32).eps * fake.abs()
            assert bool(((got - fake).abs() <= ulp).all()), (leaf, e)
            assert f"{hub}.{e}.{leaf}.input_scale" not in written
