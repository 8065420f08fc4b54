"""Import of compressed-tensors checkpoints into fake-quant form (``qruntime.load_quantized``).

Independent truths: compressed-tensors' own compressor writes a checkpoint from a float model
(its own scales, ``amax / 7.5``) and its own decompressor reads it; our import must give the
same weights (to one float32 rounding: it divides by the fake quant's divisor instead of
multiplying by the stored scale) and a fake quantization that reproduces the stored codes. For
our own checkpoints (``qruntime.export``) the round trip quantize -> export -> import must
reproduce the logits and, exported again, the very same tensors.
"""

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
from compressed_tensors.compressors.mxfp4.base import MXFP4PackedCompressor
from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from compressed_tensors.quantization.utils.mxfp_utils import generate_mx_scales
from qruntime import packing
from qruntime.compress.load import CheckpointImportError, load_quantized
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conformance"))
from hf_models import build, forward_loop


def _quantized(cfg: dict, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return qruntime.quantize(
            build("llama").to(dtype), copy.deepcopy(cfg), forward_loop("llama"), lint="off"
        )


def _group16(cfg: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    for entry in cfg["quant_cfg"]:
        if entry.get("quantizer_name") == "*weight_quantizer":
            entry["cfg"]["block_sizes"] = {-1: 16, "type": "static"}
    return cfg


FP8_KV = {
    **mc.FP8_DEFAULT_CFG,
    "quant_cfg": mc.FP8_DEFAULT_CFG["quant_cfg"] + mc.FP8_KV_CFG["quant_cfg"],
}
IDS = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def _same_tensors(a: dict, b: dict) -> bool:
    """Equal tensors; FP4 bytes compared by value (a zero may be coded +0 or -0)."""
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if key.endswith("weight_packed") and x.dtype == torch.uint8:
            x = packing.fp4_values(packing.unpack_fp4(x))
            y = packing.fp4_values(packing.unpack_fp4(y))
        if not torch.equal(x.float(), y.float()):
            return False
    return True


@pytest.mark.parametrize(
    ("cfg", "exact"),
    [
        (_group16(mc.INT4_BLOCKWISE_WEIGHT_ONLY_CFG), False),
        (mc.INT8_DEFAULT_CFG, False),
        (FP8_KV, True),
        (mc.NVFP4_DEFAULT_CFG, False),
    ],
    ids=["int4-g16", "int8-w8a8", "fp8-kv", "nvfp4"],
)
def test_round_trip_reproduces_logits_and_the_checkpoint(tmp_path, cfg, exact):
    """float32: FP8 comes back bit for bit. The INT divisor ``s`` is stored as ``f32(1/s)``,
    and a few such reciprocals are shared by two divisors; NVFP4's global scale is stored
    rounded to float32 from a double: there the logits agree to a few float32 ulps, and the
    tensors exported again are identical (same codes, same scales)."""
    model = _quantized(cfg)
    qruntime.export(model, tmp_path / "a")
    back = load_quantized(tmp_path / "a", build("llama"))
    ref, out = _logits(model), _logits(back)
    if exact:
        assert torch.equal(out, ref)
    else:
        assert torch.allclose(
            out, ref, rtol=0, atol=4 * torch.finfo(torch.float32).eps * ref.abs().max()
        )
    qruntime.export(back, tmp_path / "b")
    first = load_file(tmp_path / "a" / "model.safetensors")
    again = load_file(tmp_path / "b" / "model.safetensors")
    assert _same_tensors(first, again)


def test_bf16_round_trip_keeps_every_code_and_scale(tmp_path):
    """bf16 checkpoints store scales in bf16, so the float32 amax is not recoverable (logits
    within bf16 rounding); re-exporting gives the same tensors."""
    model = _quantized(_group16(mc.INT4_BLOCKWISE_WEIGHT_ONLY_CFG), torch.bfloat16)
    qruntime.export(model, tmp_path / "a")
    back = load_quantized(tmp_path / "a", build("llama").to(torch.bfloat16))
    ref, out = _logits(model).float(), _logits(back).float()
    assert torch.allclose(out, ref, rtol=0.02, atol=0.02)
    qruntime.export(back, tmp_path / "b")
    assert _same_tensors(
        load_file(tmp_path / "a" / "model.safetensors"),
        load_file(tmp_path / "b" / "model.safetensors"),
    )


def _ct_checkpoint(directory: Path) -> tuple[torch.nn.Module, dict]:
    """A W4A16 group-16 checkpoint written by compressed-tensors' own compressor from the float
    tiny Llama: its scales are ``amax / 7.5`` (not ours), ``lm_head`` ignored."""
    model = build("llama")
    scheme = QuantizationScheme(
        targets=["Linear"],
        weights=QuantizationArgs(
            num_bits=4, type="int", symmetric=True, strategy="group", group_size=16
        ),
    )
    tensors, decompressed = {}, {}
    for name, value in model.state_dict().items():
        tensors[name] = value.contiguous()
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name == "lm_head":
            continue
        w = module.weight.detach()
        amax = w.abs().reshape(w.shape[0], -1, 16).amax(-1)
        scale = amax / 7.5
        packed = PackedQuantizationCompressor.compress({"weight": w, "weight_scale": scale}, scheme)
        del tensors[f"{name}.weight"]
        for key, value in packed.items():
            tensors[f"{name}.{key}"] = value.contiguous()
        decompressed[name] = PackedQuantizationCompressor.decompress(packed, scheme)["weight"]
    config = json.loads(model.config.to_json_string())
    config["quantization_config"] = {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": {"group_0": {**scheme.model_dump(), "format": "pack-quantized"}},
        "ignore": ["lm_head"],
        "kv_cache_scheme": None,
    }
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return model, decompressed


def test_checkpoint_written_by_compressed_tensors(tmp_path):
    _, decompressed = _ct_checkpoint(tmp_path / "ct")
    back = load_quantized(tmp_path / "ct", build("llama"))
    stored = load_file(tmp_path / "ct" / "model.safetensors")
    for name, theirs in decompressed.items():
        layer = back.get_submodule(name)
        ours = layer.weight.detach()
        # compressed-tensors multiplies q * S; we divide by f32(1/S): one rounding apart
        assert torch.allclose(ours, theirs, rtol=2 * torch.finfo(torch.float32).eps, atol=0)
        # the restored fake quantization rounds to compressed-tensors' own codes
        shape = tuple(stored[f"{name}.weight_shape"].tolist())
        codes = packing.unpack_int32(stored[f"{name}.weight_packed"], 4, shape)
        amax = layer.weight_quantizer.amax.reshape(shape[0], -1)
        mine = torch.round(ours * (7.0 / amax).repeat_interleave(16, dim=1)).clamp(-8, 7)
        assert torch.equal(mine.to(torch.int8), codes)
        assert torch.equal(layer.weight_quantizer(layer.weight), layer.weight)
    assert not back.lm_head.weight_quantizer.is_enabled


def test_import_refusals_name_the_problem(tmp_path):
    _ct_checkpoint(tmp_path / "ct")
    config = json.loads((tmp_path / "ct" / "config.json").read_text())
    config["quantization_config"]["config_groups"]["group_0"]["weights"]["symmetric"] = False
    (tmp_path / "ct" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointImportError, match=r"q_proj: asymmetric weights"):
        load_quantized(tmp_path / "ct", build("llama"))
    config["quantization_config"]["quant_method"] = "modelopt"
    (tmp_path / "ct" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointImportError, match="not 'compressed-tensors'"):
        load_quantized(tmp_path / "ct", build("llama"))


def test_unknown_tensors_are_refused(tmp_path):
    model = _quantized(mc.FP8_DEFAULT_CFG)
    qruntime.export(model, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["model.layers.0.mlp.up_proj.weight_g_idx"] = torch.zeros(4, dtype=torch.int32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(
        CheckpointImportError,
        match=r"does not understand: \['model.layers.0.mlp.up_proj.weight_g_idx'\]",
    ):
        load_quantized(tmp_path, build("llama"))


def test_without_a_model_the_architecture_of_config_json_is_built(tmp_path):
    model = _quantized(mc.FP8_DEFAULT_CFG)
    qruntime.export(model, tmp_path)
    back = qruntime.load_quantized(tmp_path)
    assert type(back).__name__ == "LlamaForCausalLM"
    assert torch.equal(_logits(back), _logits(model))


@pytest.mark.parametrize(
    "cfg",
    [_group16(mc.INT4_BLOCKWISE_WEIGHT_ONLY_CFG), FP8_KV, mc.NVFP4_DEFAULT_CFG],
    ids=["int4-g16", "fp8-kv", "nvfp4"],
)
def test_export_of_a_compressed_model_writes_the_fake_quant_models_checkpoint(tmp_path, cfg):
    """export reads a compressed layer's decoded weight (``module.weight``), which the weight
    quantizer maps to itself: the checkpoint is the one the fake-quant model gives."""
    model = _quantized(cfg)
    qruntime.export(model, tmp_path / "fake")
    qruntime.compress(model)
    qruntime.export(model, tmp_path / "packed")
    assert _same_tensors(
        load_file(tmp_path / "fake" / "model.safetensors"),
        load_file(tmp_path / "packed" / "model.safetensors"),
    )


def test_mxfp4_checkpoint_written_by_compressed_tensors(tmp_path):
    """compressed-tensors' MXFP4 compressor (its own E8M0 exponent choice) writes the
    checkpoint; our weights equal its decompression, and the imported dynamic MX quantizer maps
    each decoded weight to itself."""
    model = build("llama")
    args = QuantizationArgs(
        num_bits=4,
        type="float",
        symmetric=True,
        strategy="group",
        group_size=32,
        scale_dtype=torch.uint8,
    )
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    theirs = {}
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name == "lm_head":
            continue
        w = module.weight.detach()
        scale = torch.exp2(generate_mx_scales(w.abs().reshape(w.shape[0], -1, 32).amax(-1)) - 127)
        packed = MXFP4PackedCompressor.compress({"weight": w, "weight_scale": scale}, scheme)
        del tensors[f"{name}.weight"]
        tensors.update({f"{name}.{k}": v.contiguous() for k, v in packed.items()})
        theirs[name] = MXFP4PackedCompressor.decompress(dict(packed), scheme)["weight"]
    config = json.loads(model.config.to_json_string())
    group = {**scheme.model_dump(mode="json"), "format": "mxfp4-pack-quantized"}
    config["quantization_config"] = {
        "quant_method": "compressed-tensors",
        "format": "mxfp4-pack-quantized",
        "quantization_status": "compressed",
        "config_groups": {"group_0": group},
        "ignore": ["lm_head"],
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(tmp_path / "model.safetensors"))
    back = load_quantized(tmp_path, build("llama"))
    assert theirs
    for name, weight in theirs.items():
        layer = back.get_submodule(name)
        assert torch.equal(layer.weight.detach().to(weight.dtype), weight)
        assert torch.equal(layer.weight_quantizer(layer.weight), layer.weight)
