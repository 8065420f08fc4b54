"""``qruntime.export`` checked by the reference implementations (issue 17, item 2).

- compressed-tensors' own compressors decompress our checkpoint: the codes they read are the ones
  our fake quantization rounded to, and the weights they rebuild equal our fake-quantized weights
  bit for bit for FP8, NVFP4, MXFP4 and MXFP8 (FP4 after the decompressor's bf16 output cast). For INT4/INT8
  they are within one float32 ulp: the library multiplies the code by the stored scale
  ``amax / qmax`` while fake quantization divides by ``qmax / amax`` (no stored float32 scale
  makes a product equal that quotient for every code; docs/export.md).
- transformers loads the compressed-tensors checkpoint and its logits match our fake-quant model.
- Model Optimizer's ``export_hf_checkpoint`` of the same model quantized by Model Optimizer writes
  the same tensors (names, dtypes, bytes) as our ``modelopt-hf`` export, for the presets whose
  export runs on CPU (INT8, INT4 blocks, FP8 with FP8 KV cache).
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
import transformers
from compressed_tensors.compressors.base import BaseCompressor
from compressed_tensors.quantization import QuantizationConfig
from hf_models import build, forward_loop, outputs
from qruntime.packing import unpack_int32
from safetensors.torch import load_file


def _group16(cfg: dict) -> dict:
    """INT4 blocks of 16 instead of 128 (the tiny Llama's hidden size is 32)."""
    cfg = copy.deepcopy(cfg)
    for entry in cfg["quant_cfg"]:
        if entry.get("quantizer_name") == "*weight_quantizer":
            entry["cfg"]["block_sizes"] = {-1: 16, "type": "static"}
    return cfg


def _with_kv(cfg: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["quant_cfg"] += copy.deepcopy(mc.FP8_KV_CFG["quant_cfg"])
    return cfg


def _weights_only(cfg: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["quant_cfg"].append({"quantizer_name": "*input_quantizer", "enable": False})
    return cfg


PRESETS = {
    "int8": mc.INT8_DEFAULT_CFG,
    "int8_wo": mc.INT8_WEIGHT_ONLY_CFG,
    "int4": _group16(mc.INT4_BLOCKWISE_WEIGHT_ONLY_CFG),
    "fp8": mc.FP8_DEFAULT_CFG,
    "fp8_kv": _with_kv(mc.FP8_DEFAULT_CFG),
    "nvfp4": mc.NVFP4_DEFAULT_CFG,
    "w4a16_nvfp4": mc.W4A16_NVFP4_CFG,
    "mxfp4": mc.MXFP4_DEFAULT_CFG,
    "mxfp8": mc.MXFP8_DEFAULT_CFG,
    "mxfp4_weights": _weights_only(mc.MXFP4_DEFAULT_CFG),
    "nvfp4_mse": mc.NVFP4_W4A4_WEIGHT_MSE_FP8_SWEEP_CFG,  # static NVFP4 block scales
}
FORMATS = {
    "int8": "int-quantized",
    "int8_wo": "pack-quantized",
    "int4": "pack-quantized",
    "fp8": "float-quantized",
    "fp8_kv": "float-quantized",
    "nvfp4": "nvfp4-pack-quantized",
    "w4a16_nvfp4": "nvfp4-pack-quantized",
    "mxfp4": "mxfp4-pack-quantized",
    "mxfp8": "mxfp8-quantized",
    "mxfp4_weights": "mxfp4-pack-quantized",
    "nvfp4_mse": "nvfp4-pack-quantized",
}


#: GPT-2's MLP left unquantized: its Conv1D weights go back to the [in, out] layout on export.
NO_MLP = copy.deepcopy(mc.INT8_DEFAULT_CFG)
NO_MLP["quant_cfg"].append({"quantizer_name": "*mlp*", "enable": False})


def quantized_llama(preset: str, *, ours: bool = True, name: str = "llama") -> torch.nn.Module:
    model = build(name)
    cfg = copy.deepcopy(NO_MLP if preset == "int8_no_mlp" else PRESETS[preset])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ours:
            return qruntime.quantize(model, cfg, forward_loop(name), lint="off")
        return mtq.quantize(model, cfg, forward_loop(name))


def _linears(model):
    return {n: m for n, m in model.named_modules() if n.endswith("_proj")}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_compressed_tensors_decompresses_our_fake_quantized_weights(preset, tmp_path):
    model = quantized_llama(preset)
    qruntime.export(model, tmp_path)
    block = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    config = QuantizationConfig.model_validate(block)
    (scheme,) = config.config_groups.values()
    assert scheme.format == config.format == FORMATS[preset]
    assert config.ignore == ["lm_head"]
    compressor = BaseCompressor.get_value_from_registry(scheme.format)
    tensors = load_file(tmp_path / "model.safetensors")
    linears = _linears(model)
    assert len(linears) == 14
    for name, module in linears.items():
        local = {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(name + ".")}
        with torch.no_grad():
            fake = module.weight_quantizer(module.weight)
        got = compressor.decompress(local, scheme)["weight"]
        if scheme.weights.type == "int":
            bits = scheme.weights.num_bits
            amax = module.weight_quantizer.amax.float().reshape(fake.shape[0], -1)
            s = torch.div(torch.tensor(2.0 ** (bits - 1) - 1), amax)
            s = s.repeat_interleave(fake.shape[1] // s.shape[1], dim=1)
            expected_codes = torch.round(module.weight.detach() * s).clamp(
                -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
            )
            if "weight_packed" in local:
                codes = unpack_int32(
                    local["weight_packed"], bits, tuple(local["weight_shape"].tolist())
                )
            else:
                codes = local["weight"]
            assert torch.equal(codes.float(), expected_codes)
            # one float32 ulp: product with amax/qmax against quotient by qmax/amax
            ulp = torch.finfo(torch.float32).eps * fake.abs()
            assert bool(((got - fake).abs() <= ulp).all())
            assert not torch.equal(got, fake)  # the difference is real (see the docstring)
        elif scheme.format in ("nvfp4-pack-quantized", "mxfp4-pack-quantized"):
            assert got.dtype == torch.bfloat16  # the decompressor's output dtype
            assert torch.equal(got, fake.to(torch.bfloat16))
        else:
            assert torch.equal(got, fake)


def _load(path, dtype):
    transformers.logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    return model


@pytest.mark.parametrize("preset", ["int8", "int4", "fp8", "fp8_kv"])
def test_transformers_loads_the_checkpoint_and_matches_fake_quant(preset, tmp_path):
    model = quantized_llama(preset)
    ours = outputs(model, "llama")
    qruntime.export(model, tmp_path)
    loaded = _load(tmp_path, torch.float32)
    got = outputs(loaded, "llama")
    if preset == "fp8":
        # same weights and the same per-tensor FP8 input quantization: the same numbers
        assert torch.equal(got, ours)
    elif preset == "fp8_kv":
        # transformers neither loads k_scale/v_scale (vLLM does) nor quantizes the KV cache:
        # it computes our model without its K/V quantizers, exactly
        assert not hasattr(loaded.model.layers[0].self_attn, "k_scale")
        assert not torch.equal(got, ours)
        assert torch.equal(got, outputs(_without_kv(model), "llama"))
    else:
        # weights within one float32 ulp (see above) and INT8 inputs divided instead of
        # multiplied: logits of magnitude ~1 agree to float32 rounding noise
        assert float((got - ours).abs().max()) <= 1e-6


def test_bert_with_dropped_layernorm_quantizers_loads_as_our_model_without_them(tmp_path):
    def bert(*extra: dict) -> torch.nn.Module:
        cfg = copy.deepcopy(mc.FP8_DEFAULT_CFG)
        cfg["quant_cfg"] += list(extra)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return qruntime.quantize(build("bert"), cfg, forward_loop("bert"), lint="off")

    # the MLM decoder shares its weight with the word embedding: a quantized copy cannot be tied
    with pytest.raises(
        qruntime.ExportError, match=r"decoder\.weight_quantizer: the weight is tied"
    ):
        qruntime.export(bert(), tmp_path, drop_unexportable=True)
    model = bert({"quantizer_name": "*decoder*", "enable": False})
    with pytest.warns(UserWarning, match="LayerNorm"):
        result = qruntime.export(model, tmp_path, drop_unexportable=True)
    assert result.dropped and all("LayerNorm.input_quantizer" in n for n in result.dropped)
    for name in result.dropped:
        model.get_submodule(name).disable()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert torch.equal(outputs(loaded.eval(), "bert"), outputs(model, "bert"))


def _without_kv(model):
    for name, q in model.named_modules():
        if name.endswith(("k_bmm_quantizer", "v_bmm_quantizer")):
            q.disable()
    return model


@pytest.mark.parametrize("preset", ["w4a16_nvfp4", "mxfp4_weights"])
def test_transformers_loads_fp4_weight_only(preset, tmp_path):
    model = quantized_llama(preset)
    qruntime.export(model, tmp_path)
    loaded = _load(tmp_path, torch.bfloat16)  # the FP4 decompressors produce bf16 on CPU
    got = outputs(loaded, "llama")  # decompresses on the first forward
    # the decompressed weights are our fake-quantized weights rounded to bf16 (tested above):
    # run our model with exactly those weights in bf16 and expect the same logits
    reference = build("llama").to(torch.bfloat16)
    with torch.no_grad():
        for name, module in _linears(model).items():
            weight = module.weight_quantizer(module.weight).to(torch.bfloat16)
            reference.get_submodule(name).weight.copy_(weight)
    want = outputs(reference, "llama")
    # bf16 end to end: the two forwards round intermediate bf16 results at different points
    # (compressed-tensors' wrapped Linear), so logits (|x| < 0.5) may differ by a bf16 ulp or two
    # (2^-9 each at that magnitude); the quantization itself moves them far more
    assert float((got.float() - want.float()).abs().max()) <= 2**-9
    float_model = build("llama").to(torch.bfloat16)
    assert float((outputs(float_model, "llama").float() - want.float()).abs().max()) > 2**-5


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8)


def _mo_export(model, path) -> dict[str, torch.Tensor]:
    from modelopt.torch.export import export_hf_checkpoint

    model.config.architectures = [type(model).__name__]  # None for a model built from a config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_hf_checkpoint(model, export_dir=str(path))
    return load_file(path / "model.safetensors")


@pytest.mark.parametrize(
    ("name", "preset"),
    [("llama", "int8"), ("llama", "int8_wo"), ("llama", "int4"), ("llama", "fp8_kv"),
     ("gpt2", "int8"), ("gpt2", "fp8"), ("gpt2", "int8_no_mlp")],  # GPT-2: quantized Conv1D [out, in], plain [in, out]
)  # fmt: skip
def test_modelopt_export_writes_the_same_tensors(name, preset, tmp_path):
    theirs = _mo_export(quantized_llama(preset, ours=False, name=name), tmp_path / "mo")
    # GPT-2's LayerNorm input quantizers have no checkpoint field: Model Optimizer leaves them
    # out silently, we only when asked to (with a warning each)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = qruntime.export(
            quantized_llama(preset, name=name), tmp_path / "ours", "modelopt-hf",
            drop_unexportable=name == "gpt2",
        )  # fmt: skip
    assert bool(result.dropped) == (name == "gpt2")
    mine = load_file(tmp_path / "ours" / "model.safetensors")
    assert sorted(mine) == sorted(theirs)
    if preset == "int8_no_mlp":
        # Deliberate difference: Model Optimizer writes an unquantized (but converted) Conv1D
        # weight as [out, in], which GPT-2's Conv1D ([in, out]) cannot load; we transpose back
        for layer in (0, 1):
            for proj in ("c_fc", "c_proj"):
                key = f"transformer.h.{layer}.mlp.{proj}.weight"
                assert torch.equal(mine[key], theirs.pop(key).t())
        assert mine["transformer.h.0.mlp.c_fc.weight"].shape == (32, 128)  # HF's [in, out]
        assert tuple(build("gpt2").transformer.h[0].mlp.c_fc.weight.shape) == (32, 128)
    for key, value in theirs.items():
        assert mine[key].dtype == value.dtype, key
        assert mine[key].shape == value.shape, key
        assert torch.equal(_bytes(mine[key]), _bytes(value)), key
    ours_cfg = json.loads((tmp_path / "ours" / "hf_quant_config.json").read_text())["quantization"]
    mo_cfg = json.loads((tmp_path / "mo" / "hf_quant_config.json").read_text())["quantization"]
    for field in ("quant_algo", "kv_cache_quant_algo", "group_size"):
        assert ours_cfg.get(field) == mo_cfg.get(field), field
