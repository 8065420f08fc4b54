"""Hugging Face attention and KV-cache quantizers beside Model Optimizer 0.47.0.

test_hf_models_conformance.py compares whole tiny models (inventory, plans, max calibration with
every KV preset) under their default attention implementation. This file adds what is specific
to the attention sites: CLIP (vision and text towers), the eager kernel on every architecture,
softmax-probability quantization where Model Optimizer computes it (non-causal, eager), per-head
and per-channel KV amax, calibration through ``generate()``, and the one kept difference that a
calibration loop can show (``output_attentions`` under sdpa).
"""

import copy
import sys
import types
import warnings

import hf_models
import modelopt.torch.quantization as mtq
import oracle
import pytest
import qruntime
import torch
import transformers
from qconfig.compile import compile_plan
from qruntime.numerics.rotation import normalized_hadamard_transform

KV_COMBINATIONS = [
    ("FP8_DEFAULT_CFG", "FP8_KV_CFG"),
    ("NVFP4_DEFAULT_CFG", "NVFP4_KV_CFG"),
    ("NVFP4_DEFAULT_CFG", "NVFP4_KV_ROTATE_CFG"),
    ("FP8_DEFAULT_CFG", "FP8_AFFINE_KV_CFG"),
    ("NVFP4_DEFAULT_CFG", "NVFP4_AFFINE_KV_CFG"),
]


def config(*names: str, extra: tuple = ()) -> dict:
    """Preset ``names[0]`` with the entries of the others (and ``extra``) appended, max."""
    cfg = copy.deepcopy(getattr(mtq, names[0]))
    cfg["quant_cfg"] = list(cfg["quant_cfg"])
    for name in names[1:]:
        cfg["quant_cfg"] += copy.deepcopy(getattr(mtq, name)["quant_cfg"])
    cfg["quant_cfg"] += list(copy.deepcopy(extra))
    cfg["algorithm"] = "max"
    return cfg


@pytest.fixture
def hadamard_stand_in(monkeypatch):
    """Model Optimizer rotates with the CUDA package ``fast_hadamard_transform``; on CPU this
    stand-in computes the same normalized transform of each block."""

    def hadamard_transform(x: torch.Tensor, scale: float) -> torch.Tensor:
        assert scale == x.shape[-1] ** -0.5
        return normalized_hadamard_transform(x, block_size=x.shape[-1])

    stand_in = types.ModuleType("fast_hadamard_transform")
    stand_in.hadamard_transform = hadamard_transform
    monkeypatch.setitem(sys.modules, "fast_hadamard_transform", stand_in)


# -- CLIP: both towers, not in hf_models --------------------------------------------------------


def clip(impl: str = "sdpa") -> torch.nn.Module:
    text = transformers.CLIPTextConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = transformers.CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=16,
        patch_size=8,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = transformers.CLIPConfig(
            text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16
        )
        torch.manual_seed(0)
        model = transformers.CLIPModel(cfg).eval()
    model.set_attn_implementation(impl)
    return model


def clip_batch(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(2, 128, (2, 8), generator=gen),
        "pixel_values": torch.randn(2, 3, 16, 16, generator=gen),
    }


def clip_loop(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for seed in (0, 1):
            model(**clip_batch(seed))


def clip_outputs(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(**clip_batch(2)).logits_per_image


def quantize_both(model, cfg, loop):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = mtq.quantize(copy.deepcopy(model), copy.deepcopy(cfg), loop)
        got = qruntime.quantize(copy.deepcopy(model), copy.deepcopy(cfg), loop, lint="off")
    return ref, got


def assert_same(ref, got, outputs) -> None:
    """Every quantizer state, state_dict entry (amax, bias) and the unseen outputs, bit for bit."""
    oracle.assert_same_model(ref, got)
    assert torch.equal(outputs(got), outputs(ref))


def test_clip_inventory_and_plans_equal_model_optimizer():
    model = clip()
    expected = oracle.manifest_of(model, "clip").model_dump()
    expected_keys = set(expected.pop("registry_keys"))
    with torch.device("meta"):
        meta = clip()
    for manifest in (qruntime.inventory(model, "clip"), qruntime.inventory(meta, "clip")):
        got = manifest.model_dump()
        keys = set(got.pop("registry_keys"))
        assert {"CLIPAttention"} <= keys <= expected_keys
        assert got == expected
    names = [m["name"] for m in expected["modules"] if m["class_name"] == "CLIPAttention"]
    assert len(names) == 4  # two text and two vision layers
    converted = oracle.converted(model)
    for preset in (config("FP8_DEFAULT_CFG", "FP8_KV_CFG"), config("INT8_DEFAULT_CFG")):
        theirs = copy.deepcopy(converted)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mtq.set_quantizer_by_cfg(theirs, preset["quant_cfg"])
        plan = compile_plan({"quant_cfg": preset["quant_cfg"], "algorithm": None}, manifest)
        assert oracle.plan_states(plan) == oracle.quantizer_states(theirs)


@pytest.mark.parametrize(("weights", "kv"), KV_COMBINATIONS)
def test_clip_kv_presets_are_bit_exact(weights, kv, reference_fake_quant, hadamard_stand_in):
    ref, got = quantize_both(clip(), config(weights, kv), clip_loop)
    assert_same(ref, got, clip_outputs)


# -- the eager kernel on every architecture ------------------------------------------------------


@pytest.mark.parametrize("name", ["gpt2", "mixtral", "qwen3_moe", "t5", "clip"])
def test_eager_kv_calibration_is_bit_exact(name):
    if name == "clip":
        model, loop, outputs = clip("eager"), clip_loop, clip_outputs
    else:
        model = hf_models.build(name)
        model.set_attn_implementation("eager")
        loop, outputs = hf_models.forward_loop(name), lambda m: hf_models.outputs(m, name)
    ref, got = quantize_both(model, config("FP8_DEFAULT_CFG", "FP8_KV_CFG"), loop)
    assert any("bmm" in k for k in oracle.quantizer_buffers(ref))
    assert_same(ref, got, outputs)


# -- softmax probabilities: non-causal attention under eager --------------------------------------

P_FP8 = ({"quantizer_name": "*p_bmm_quantizer", "cfg": {"num_bits": (4, 3), "axis": None}},)
P_NVFP4 = (
    {
        "quantizer_name": "*p_bmm_quantizer",
        "cfg": {
            "num_bits": (2, 1),
            "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)},
            "axis": None,
        },
    },
)


@pytest.mark.parametrize("p", [P_FP8, P_NVFP4], ids=["fp8", "nvfp4"])
@pytest.mark.parametrize("name", ["bert_eager", "clip"])
def test_noncausal_eager_p_quantization_is_bit_exact(name, p, reference_fake_quant):
    """Model Optimizer quantizes P only here: non-causal attention, eager kernel."""
    if name == "clip":
        model, loop, outputs = clip("eager"), clip_loop, clip_outputs
    else:
        model = hf_models.build(name)
        loop, outputs = hf_models.forward_loop(name), lambda m: hf_models.outputs(m, name)
    ref, got = quantize_both(model, config("FP8_DEFAULT_CFG", "FP8_KV_CFG", extra=p), loop)
    p_states = {k: s for k, s in oracle.quantizer_states(ref).items() if "p_bmm" in k}
    assert p_states and all(s["enable"] for s in p_states.values())
    assert_same(ref, got, outputs)
    assert not torch.equal(
        outputs(got),
        outputs(quantize_both(model, config("FP8_DEFAULT_CFG", "FP8_KV_CFG"), loop)[1]),
    )


# -- per-head / per-channel amax, generate() --------------------------------------------------------


@pytest.mark.parametrize("axis", [1, -1, (1, 3)])
def test_per_head_and_per_channel_kv_amax_are_bit_exact(axis):
    kv = ({"quantizer_name": "*[kv]_bmm_quantizer", "cfg": {"num_bits": (4, 3), "axis": axis}},)
    ref, got = quantize_both(
        hf_models.build("llama"),
        config("FP8_DEFAULT_CFG", extra=kv),
        hf_models.forward_loop("llama"),
    )
    assert_same(ref, got, lambda m: hf_models.outputs(m, "llama"))


def test_calibration_through_generate_is_bit_exact():
    """The forward loop decodes with a DynamicCache: every step quantizes the whole cache."""
    prompt = hf_models.example_inputs("llama", 0)["input_ids"][:1, :5]

    def generate(model):
        with torch.no_grad():
            return model.generate(prompt, max_new_tokens=3, do_sample=False, pad_token_id=0)

    ref, got = quantize_both(
        hf_models.build("llama"), config("FP8_DEFAULT_CFG", "FP8_KV_CFG"), generate
    )
    oracle.assert_same_model(ref, got)
    assert torch.equal(generate(got), generate(ref))


# -- the kept difference a loop shows -----------------------------------------------------------


def test_output_attentions_under_sdpa_calibrates_kv_where_model_optimizer_does_not():
    """differences.md: Model Optimizer patches the eager kernel when sdpa is asked for attention
    weights, so sdpa runs unquantized and k/v stay uncalibrated (dynamic); qruntime quantizes the
    kernel the forward actually calls, so the amax equals a plain loop's."""
    ids = hf_models.example_inputs("llama", 0)["input_ids"]

    def loop(model, **kwargs):
        with torch.no_grad():
            model(input_ids=ids, **kwargs)

    cfg = config("FP8_DEFAULT_CFG", "FP8_KV_CFG")
    ref, got = quantize_both(
        hf_models.build("llama"), cfg, lambda m: loop(m, output_attentions=True)
    )
    plain_ref, _ = quantize_both(hf_models.build("llama"), cfg, loop)
    k = "model.layers.0.self_attn.k_bmm_quantizer._amax"
    assert k not in oracle.quantizer_buffers(ref)
    assert torch.equal(oracle.quantizer_buffers(got)[k], oracle.quantizer_buffers(plain_ref)[k])


class SubclassedLlamaAttention(transformers.models.llama.modeling_llama.LlamaAttention):
    """Inherits ``forward``: converted by ``LlamaAttention``'s entry when that class comes
    first (the registry's subclass rule), so ``parent_class: LlamaAttention`` does not select it."""


# discovery probes the defining module for the interface global
ALL_ATTENTION_FUNCTIONS = transformers.modeling_utils.ALL_ATTENTION_FUNCTIONS


def test_a_subclass_sharing_forward_is_converted_by_the_base_entry():
    model = hf_models.build("llama")
    model.model.layers[1].self_attn.__class__ = SubclassedLlamaAttention
    expected = oracle.manifest_of(model, "llama").model_dump()
    expected_keys = set(expected.pop("registry_keys"))
    got = qruntime.inventory(model, "llama").model_dump()
    keys = set(got.pop("registry_keys"))
    assert "LlamaAttention" in keys <= expected_keys
    assert "SubclassedLlamaAttention" not in keys
    assert got == expected
    site = next(m for m in got["modules"] if m["name"] == "model.layers.1.self_attn")
    assert (site["registry_key"], site["parent_class_keys"]) == ("LlamaAttention", [])
    ref, ours = quantize_both(
        model, config("FP8_DEFAULT_CFG", "FP8_KV_CFG"), hf_models.forward_loop("llama")
    )
    assert_same(ref, ours, lambda m: hf_models.outputs(m, "llama"))
