"""qruntime.compress: packed weights whose model computes exactly what the fake-quant model does.

Independent truths: the fake-quant model itself (outputs compared with ``torch.equal``, the
quantizers being conformance-tested against Model Optimizer elsewhere), codes derived by hand
from the INT formula ``round(W * qmax / amax)``, compressed-tensors' own ``unpack_from_int32``
and E2M1 decoder reading our packed words, and byte counts worked out from the layouts.
"""

from __future__ import annotations

import pytest
import qruntime
import torch
import zoo
from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
from qconfig import presets
from qruntime.compress import CompressionError, compress, compressed_layers, is_compressed
from torch import nn

PACKED_PRESETS = [
    ("INT8_DEFAULT_CFG", "int8"),
    ("INT8_WEIGHT_ONLY_CFG", "int8"),
    ("INT4_BLOCKWISE_WEIGHT_ONLY_CFG", "int4"),
    ("INT4_AWQ_CFG", "int4"),
    ("FP8_DEFAULT_CFG", "fp8"),
    ("FP8_PER_CHANNEL_PER_TOKEN_CFG", "fp8"),
    ("FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG", "fp8"),
    ("NVFP4_DEFAULT_CFG", "nvfp4"),
    ("W4A16_NVFP4_CFG", "nvfp4"),
    ("NVFP4_SVDQUANT_DEFAULT_CFG", "nvfp4"),
    ("MXFP4_DEFAULT_CFG", "mxfp4"),
    ("MXFP8_DEFAULT_CFG", "mxfp8"),
]


def _quantized(preset: str, dtype: torch.dtype, name: str = "llama") -> nn.Module:
    model = zoo.build(name).to(dtype)
    cfg = {**presets.get(preset)}
    cfg.setdefault("algorithm", "max")
    return qruntime.quantize(model, cfg, zoo.forward_loop(name))


def _run(model: nn.Module, name: str = "llama") -> torch.Tensor:
    with torch.no_grad():
        return model(*zoo.example_inputs(name))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("preset", "label"), PACKED_PRESETS)
def test_compressed_model_computes_exactly_the_fake_quant_outputs(preset, label, dtype):
    model = _quantized(preset, dtype)
    ref = _run(model)
    quantized = {
        n
        for n, m in model.named_modules()
        if getattr(m, "weight_quantizer", None) is not None and m.weight_quantizer.is_enabled
    }
    report = compress(model)
    assert torch.equal(_run(model), ref)
    layers = compressed_layers(model)
    assert set(layers) == quantized and quantized
    for name in quantized:
        module = model.get_submodule(name)
        assert report[name].startswith(label)
        assert "weight" not in module._parameters  # the float Parameter is gone
        assert f"{name}.weight_compressed.codes" in model.state_dict()
        assert qruntime.modules.convert.is_converted(module)
    # every weight quantizer left out was disabled, and says so
    for name, text in report.items():
        assert name in quantized or text == "left: weight quantizer disabled"


def test_int8_codes_are_the_hand_formula_and_int4_words_read_back_in_compressed_tensors():
    model = _quantized("INT8_WEIGHT_ONLY_CFG", torch.float32)
    layer = model.model.layers[0].mlp.up_proj
    w = layer.weight.detach().clone()
    amax = layer.weight_quantizer.amax
    compress(model)
    packed = layer.weight_compressed
    hand = torch.clamp(torch.round(w * (127.0 / amax)), -128, 127).to(torch.int8)
    assert torch.equal(packed.codes, hand)

    model = _quantized("INT4_BLOCKWISE_WEIGHT_ONLY_CFG", torch.float32)
    layer = model.model.layers[0].mlp.up_proj
    w = layer.weight.detach().clone()
    amax = layer.weight_quantizer.amax  # one per block of the last dim
    compress(model)
    packed = layer.weight_compressed
    block = w.shape[1] // (amax.numel() // w.shape[0])
    scale = (7.0 / amax).reshape(w.shape[0], -1).repeat_interleave(block, dim=1)
    hand = torch.clamp(torch.round(w * scale), -8, 7).to(torch.int8)
    assert packed.codes.dtype == torch.int32
    assert torch.equal(unpack_from_int32(packed.codes, 4, w.shape), hand)


def test_fp4_codes_decode_in_compressed_tensors_to_our_elements():
    """compressed-tensors' E2M1 decoder reads our bytes; each block's elements times one factor,
    ``f32(f64(e4m3 block scale) / (f64(f32(6 / global_amax)) * 448))`` (the CUDA-extension
    formula of docs/numerics.md), give the fake-quantized weight."""
    model = _quantized("NVFP4_DEFAULT_CFG", torch.float32)
    layer = model.model.layers[1].mlp.down_proj
    expected = layer.weight_quantizer(layer.weight).detach()
    global_amax = layer.weight_quantizer.amax.to(torch.float32)
    compress(model)
    packed = layer.weight_compressed
    rows, cols = packed.shape
    elements = unpack_fp4_from_uint8(packed.codes, rows, cols, dtype=torch.float32)
    assert packed.scale.dtype == torch.float8_e4m3fn and packed.scale.shape == (rows, cols // 16)
    t = (torch.tensor(6.0) / global_amax).to(torch.float64) * 448.0
    factor = (packed.scale.to(torch.float64) / t).to(torch.float32)
    assert torch.equal(elements * factor.repeat_interleave(16, dim=1), expected)
    assert (elements != 0).any() and elements.abs().max() == 6.0


def test_int4_group_weights_take_about_a_quarter_of_bf16():
    lin = nn.Sequential(nn.Linear(256, 512, bias=False)).to(torch.bfloat16)
    cfg = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {
                "quantizer_name": "*weight_quantizer",
                "cfg": {"num_bits": 4, "block_sizes": {-1: 128}},
            },
        ],
        "algorithm": "max",
    }
    x = torch.randn(4, 256, dtype=torch.bfloat16)
    qruntime.quantize(lin, cfg, lambda m: m(x))
    ref = lin(x)
    compress(lin)
    assert torch.equal(lin(x), ref)
    packed = lin[0].weight_compressed
    # 512 x 256 int4 in int32 words = 512 * 32 words; one fp32 divisor per 128 columns
    assert packed.codes.shape == (512, 32) and packed.scale.numel() == 512 * 2
    assert packed.nbytes() == 512 * 32 * 4 + 512 * 2 * 4
    assert packed.nbytes() / (512 * 256 * 2) == pytest.approx(0.2656, abs=1e-4)


def test_patterns_choose_layers_last_match_wins():
    model = _quantized("INT8_WEIGHT_ONLY_CFG", torch.float32)
    ref = _run(model)
    compress(
        model,
        {"compress": {"*": True, "*mlp*": False, "*mlp.down_proj*": True, "*lm_head*": False}},
    )
    names = set(compressed_layers(model))
    assert "model.layers.0.self_attn.q_proj" in names
    assert "model.layers.0.mlp.down_proj" in names
    assert "model.layers.0.mlp.up_proj" not in names and "lm_head" not in names
    assert isinstance(model.lm_head._parameters["weight"], nn.Parameter)
    assert torch.equal(_run(model), ref)


def test_default_key_and_unmatched_layers():
    model = _quantized("INT8_WEIGHT_ONLY_CFG", torch.float32)
    compress(model, {"compress": {"default": False, "*q_proj*": True}})
    assert {n.rsplit(".", 1)[-1] for n in compressed_layers(model)} == {"q_proj"}


def test_refusals_name_the_layer_and_leave_the_model_unchanged():
    model = _quantized("W4A8_AWQ_BETA_CFG", torch.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CompressionError, match=r"q_proj: its weight quantizer is sequential"):
        compress(model)
    assert not compressed_layers(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)

    model = _quantized("MXINT8_DEFAULT_CFG", torch.float32)
    with pytest.raises(CompressionError, match=r"MX element num_bits=8"):
        compress(model)

    model = _quantized("INT8_WEIGHT_ONLY_CFG", torch.float32, "rnn")
    with pytest.raises(CompressionError, match=r"lstm: QuantLSTM is not a Linear/Conv/Embedding"):
        compress(model)
    ref = _run(model, "rnn")
    compress(model, {"compress": {"*": True, "lstm.*": False, "gru.*": False}})  # the rest packs
    assert set(compressed_layers(model)) == {"head"}
    assert torch.equal(_run(model, "rnn"), ref)


def test_bad_config_is_refused():
    model = _quantized("INT8_WEIGHT_ONLY_CFG", torch.float32)
    with pytest.raises(ValueError, match="compress"):
        compress(model, {"compress": {"*": "maybe"}})
    with pytest.raises(ValueError, match=r"unknown_key|extra"):
        compress(model, {"unknown_key": 1})


def test_save_and_restore_carry_the_packed_weights(tmp_path):
    model = _quantized("INT4_BLOCKWISE_WEIGHT_ONLY_CFG", torch.bfloat16)
    compress(model)
    ref = _run(model)
    path = tmp_path / "state.safetensors"
    qruntime.save_state(model, path)
    fresh = zoo.build("llama").to(torch.bfloat16)
    with torch.no_grad():
        for name, module in fresh.named_modules():
            if name in compressed_layers(model):
                module.weight.zero_()  # the file, not the fresh weights, must decide
    qruntime.restore_state(fresh, path)
    assert set(compressed_layers(fresh)) == set(compressed_layers(model))
    assert all(is_compressed(fresh.get_submodule(n)) for n in compressed_layers(model))
    assert torch.equal(_run(fresh), ref)


def test_restore_refuses_a_packed_layer_of_another_dtype(tmp_path):
    from qconfig.errors import DocumentError

    model = _quantized("INT8_WEIGHT_ONLY_CFG", torch.float32)
    compress(model)
    path = tmp_path / "state.safetensors"
    qruntime.save_state(model, path)
    other = zoo.build("llama")
    before = type(other.lm_head)
    with pytest.raises(DocumentError, match="dtype"):
        qruntime.restore_state(other.to(torch.bfloat16), path)
    assert type(other.lm_head) is before and not compressed_layers(other)


def test_dtype_casts_leave_the_packed_tensors_alone():
    """``model.to(dtype)`` would round the float32 divisors and widen E4M3 codes: packed buffers
    keep their dtypes, so the decoded weight is unchanged."""
    model = _quantized("FP8_DEFAULT_CFG", torch.float32)
    compress(model)
    packed = model.model.layers[0].mlp.up_proj.weight_compressed
    before = packed.dequantize()
    dtypes = {k: v.dtype for k, v in packed.named_buffers()}
    model.to(torch.bfloat16)
    assert {k: v.dtype for k, v in packed.named_buffers()} == dtypes
    assert dtypes["codes"] == torch.float8_e4m3fn and dtypes["scale"] == torch.float32
    assert torch.equal(packed.dequantize(), before)


def test_hugging_face_llama_with_kv_quantizers_compresses_its_projections_only():
    """An HF attention module is converted too (k/v bmm quantizers); its projections are layers
    of their own, so the attention module itself is neither packed nor refused."""
    import copy
    import sys
    from pathlib import Path

    import modelopt.torch.quantization.config as mc

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conformance"))
    from hf_models import build, forward_loop

    cfg = copy.deepcopy(mc.FP8_DEFAULT_CFG)
    cfg["quant_cfg"] = cfg["quant_cfg"] + copy.deepcopy(mc.FP8_KV_CFG["quant_cfg"])
    model = qruntime.quantize(build("llama"), cfg, forward_loop("llama"), lint="off")
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids).logits
    compress(model)
    layers = compressed_layers(model)
    assert "model.layers.0.self_attn.q_proj" in layers
    assert not any(name.endswith("self_attn") for name in layers)
    assert model.model.layers[0].self_attn.k_bmm_quantizer.amax is not None
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref)
