"""Fused MoE experts against Model Optimizer 0.47.0 on tiny Mixtral, Qwen3-MoE and Qwen2-MoE
(shared expert), run in the same test.

(a) the inventory equals the manifest read off Model Optimizer's converted copy; (b) plans of
the FP8, INT8, NVFP4 and INT4-AWQ presets, and of per-expert / ``parent_class`` entries, equal
Model Optimizer's states after it applies them; (c) after quantization every state, every
calibration buffer and the logits on an unseen batch are bit-equal (AWQ included: Model
Optimizer runs awq_lite on such models and leaves the fused experts to max calibration).
"""

from __future__ import annotations

import copy
import warnings

import hf_models
import modelopt.torch.quantization as mtq
import oracle
import pytest
import qruntime
import torch
import transformers

_QWEN2_MOE = {
    "vocab_size": hf_models.VOCAB,
    "hidden_size": 32,
    "intermediate_size": 64,
    "moe_intermediate_size": 16,
    "shared_expert_intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "max_position_embeddings": 64,
}
MODELS = ["mixtral", "qwen3_moe", "qwen2_moe"]
EXPERTS = {
    "mixtral": "hf.MixtralExperts",
    "qwen3_moe": "hf.Qwen3MoeExperts",
    "qwen2_moe": "hf.Qwen2MoeExperts",
}
PLAN_PRESETS = ["FP8_DEFAULT_CFG", "INT8_DEFAULT_CFG", "NVFP4_DEFAULT_CFG", "INT4_AWQ_CFG"]


def build(name: str) -> torch.nn.Module:
    if name != "qwen2_moe":
        return hf_models.build(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = transformers.Qwen2MoeConfig(**_QWEN2_MOE, attn_implementation="sdpa")
        torch.manual_seed(0)
        return transformers.Qwen2MoeForCausalLM(config).eval()


def batches(seeds):
    return [
        torch.randint(
            0, hf_models.VOCAB, hf_models.BATCH, generator=torch.Generator().manual_seed(s)
        )
        for s in seeds
    ]


def loop(model):
    with torch.no_grad():
        for ids in batches(hf_models.CALIBRATION_SEEDS):
            model(input_ids=ids)


def logits(model):
    with torch.no_grad():
        return model(input_ids=batches([hf_models.EVAL_SEED])[0]).logits


@pytest.mark.parametrize("name", MODELS)
def test_inventory_equals_model_optimizer_conversion(name):
    model = build(name)
    expected = oracle.manifest_of(model, name).model_dump()
    theirs_keys = set(expected.pop("registry_keys"))
    with torch.device("meta"):
        meta = build(name)
    for ours in (qruntime.inventory(model, name), qruntime.inventory(meta, name)):
        got = ours.model_dump()
        our_keys = set(got.pop("registry_keys"))
        assert EXPERTS[name] in our_keys and our_keys <= theirs_keys
        assert got == expected
    experts = [m for m in expected["modules"] if m["registry_key"] == EXPERTS[name]]
    assert len(experts) == 2 and len(experts[0]["quantizers"]) == 2 * 4 + 2


def _plan_and_reference(model, quant_cfg):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = qruntime.compile_for(model, {"quant_cfg": quant_cfg, "algorithm": None})
        reference = oracle.quantizer_states(oracle.apply(model, quant_cfg))
    return oracle.plan_states(plan), reference


@pytest.mark.parametrize("preset", PLAN_PRESETS)
@pytest.mark.parametrize("name", MODELS)
def test_preset_plans_equal_model_optimizer(name, preset):
    ours, theirs = _plan_and_reference(
        build(name), copy.deepcopy(getattr(mtq, preset))["quant_cfg"]
    )
    assert ours == theirs
    assert theirs["model.layers.0.mlp.experts.gate_up_proj_weight_quantizers.3"]["enable"]


@pytest.mark.parametrize("name", MODELS)
def test_one_expert_by_name_and_shared_inputs_by_parent_class(name):
    model = build(name)
    by_name = [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*gate_up_proj_weight_quantizers.1", "cfg": {"num_bits": 4}},
    ]
    ours, theirs = _plan_and_reference(model, by_name)
    assert ours == theirs
    assert {n for n, s in theirs.items() if s["enable"]} == {
        f"model.layers.{i}.mlp.experts.gate_up_proj_weight_quantizers.1" for i in (0, 1)
    }
    by_parent = [
        {"quantizer_name": "*", "enable": False},
        {"parent_class": EXPERTS[name], "quantizer_name": "*", "cfg": {"num_bits": 8}},
        {"quantizer_name": "*lm_head*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
    ]
    ours, theirs = _plan_and_reference(model, by_parent)
    assert ours == theirs
    assert {n for n, s in theirs.items() if s["enable"] and "experts" in n} == {
        f"model.layers.{i}.mlp.experts.{p}_input_quantizer"
        for i in (0, 1)
        for p in ("gate_up_proj", "down_proj")
    }


def _quantize_both(name, preset, algorithm):
    model = build(name)
    cfg = copy.deepcopy(getattr(mtq, preset))
    if algorithm is not None:
        cfg["algorithm"] = algorithm
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = mtq.quantize(copy.deepcopy(model), copy.deepcopy(cfg), loop)
        ours = qruntime.quantize(copy.deepcopy(model), copy.deepcopy(cfg), loop)
    return model, ref, ours


def _assert_bit_equal(model, ref, ours):
    assert oracle.normalized_states(qruntime.quantizer_states(ours)) == oracle.quantizer_states(ref)
    oracle.assert_same_buffers(ref, ours)
    buffers = oracle.quantizer_buffers(ref)
    assert "model.layers.1.mlp.experts.down_proj_weight_quantizers.3._amax" in buffers
    reference = logits(ref)
    assert torch.equal(logits(ours), reference)
    assert not torch.equal(logits(model), reference), "quantization had no effect"
    # Model Optimizer rewrote its copy's experts backend for good; ours is as the user set it
    assert ref.config._experts_implementation == "eager"
    assert ours.config._experts_implementation == model.config._experts_implementation


@pytest.mark.parametrize("preset", ["INT8_DEFAULT_CFG", "FP8_DEFAULT_CFG"])
@pytest.mark.parametrize("name", MODELS)
def test_max_calibration_is_bit_exact(name, preset):
    _assert_bit_equal(*_quantize_both(name, preset, "max"))


@pytest.mark.parametrize("name", MODELS)
def test_nvfp4_max_calibration_is_bit_exact(name, reference_fake_quant):
    _assert_bit_equal(*_quantize_both(name, "NVFP4_DEFAULT_CFG", "max"))


@pytest.mark.parametrize("name", ["mixtral", "qwen2_moe"])
def test_int4_awq_lite_is_bit_exact(name):
    model, ref, ours = _quantize_both(name, "INT4_AWQ_CFG", None)
    _assert_bit_equal(model, ref, ours)
