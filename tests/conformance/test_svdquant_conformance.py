"""svdquant against Model Optimizer 0.47.0, run in the same test.

Every state_dict entry (weights with the low rank taken out, the factors where Model Optimizer
keeps them in state_dict, pre_quant_scales, amaxes) must be Model Optimizer's bit for bit, with
the same keys in the same order, and the outputs equal: zoo models, INT4 blocks of 8 and 128,
ranks 2, 4, 16 and one larger than the layers (zero padding), skip_layers, bfloat16 and
quantized inputs. Where Model Optimizer fails (sequential W4A8 weights; skip_layers with
static-block INT4 weights), the test shows its failure and what qruntime does instead.
"""

import copy
import warnings

import modelopt.torch.quantization as mtq
import oracle
import pytest
import qruntime
import torch
import zoo
from qruntime.calibrate import UnsupportedAlgorithmError


def _int4_cfg(block, **options):
    cfg = copy.deepcopy(mtq.INT4_AWQ_CFG)
    cfg["quant_cfg"][1]["cfg"]["block_sizes"][-1] = block
    cfg["algorithm"] = {"method": "svdquant", **options}
    return cfg


def _int8_cfg(**options):
    cfg = copy.deepcopy(mtq.INT8_DEFAULT_CFG)
    cfg["algorithm"] = {"method": "svdquant", **options}
    return cfg


def _assert_same(name, cfg, model=None):
    model = zoo.build(name) if model is None else model
    ref, ours = oracle.quantize_both(model, cfg, zoo.forward_loop(name))
    oracle.assert_same_model(ref, ours)
    assert torch.equal(oracle.zoo_outputs(ours, name), oracle.zoo_outputs(ref, name))
    return ref, ours


@pytest.mark.parametrize("lowrank", [2, 4, 16])
@pytest.mark.parametrize("block", [8, 128])
def test_llama_int4_is_bit_exact(block, lowrank):
    ref, ours = _assert_same("llama", _int4_cfg(block, lowrank=lowrank))
    q = ours.model.layers[0].self_attn.q_proj
    # the branch is there (outside state_dict, as Model Optimizer's after its promotion)
    assert q.weight_quantizer._svdquant_lora_a.shape == (lowrank, 16)
    assert torch.equal(
        q.weight_quantizer._svdquant_lora_b,
        ref.model.layers[0].self_attn.q_proj.weight_quantizer.svdquant_lora_b,
    )


@pytest.mark.parametrize("name", ["vlm", "cnn", "moe"])
def test_other_zoo_models_are_bit_exact(name):
    _assert_same(name, _int4_cfg(8, lowrank=4))


def test_int8_keeps_the_factors_in_state_dict():
    """With per-channel INT8 weights (no static-block promotion) the factors are state_dict
    buffers, before the weight amax registered again by the last max calibration."""
    _ref, ours = _assert_same("llama", _int8_cfg(lowrank=4))
    keys = [k for k in ours.state_dict() if k.startswith("model.layers.0.self_attn.q_proj.")]
    assert keys == [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.q_proj.input_quantizer._pre_quant_scale",
        "model.layers.0.self_attn.q_proj.input_quantizer._amax",
        "model.layers.0.self_attn.q_proj.weight_quantizer._svdquant_lora_a",
        "model.layers.0.self_attn.q_proj.weight_quantizer._svdquant_lora_b",
        "model.layers.0.self_attn.q_proj.weight_quantizer._amax",
    ]


def test_rank_above_the_layer_is_zero_padded_with_a_warning():
    """A 16x16 weight has 16 singular values: rank 20 pads 4 zero rows/columns."""
    cfg = _int4_cfg(8, lowrank=20)
    _ref, ours = _assert_same("llama", cfg)
    with pytest.warns(UserWarning, match="only 16 singular values"):
        qruntime.quantize(zoo.build("llama"), copy.deepcopy(cfg), zoo.forward_loop("llama"))
    wq = ours.model.layers[0].self_attn.q_proj.weight_quantizer
    assert wq._svdquant_lora_a.shape == (20, 16)
    assert not wq._svdquant_lora_a[16:].any() and not wq._svdquant_lora_b[:, 16:].any()


def test_skip_layers_are_bit_exact():
    """Skipped linears: no smoothing, no branch, their weight untouched, max-calibrated."""
    cfg = _int8_cfg(lowrank=4, skip_layers=["*q_proj", "*layers.1.mlp*"])
    model = zoo.build("llama")
    _ref, ours = _assert_same("llama", cfg, model)
    skipped = ours.model.layers[1].mlp.down_proj
    assert skipped.input_quantizer.pre_quant_scale is None
    assert "_svdquant_lora_a" not in skipped.weight_quantizer._buffers
    assert torch.equal(skipped.weight, model.model.layers[1].mlp.down_proj.weight)
    assert "_svdquant_lora_a" in ours.model.layers[1].self_attn.k_proj.weight_quantizer._buffers


def test_skip_layers_with_static_int4_blocks_runs_where_model_optimizer_fails():
    """Model Optimizer's last max calibration promotes the skipped layers' static-block weight
    quantizers to a class without the branch properties, and every later forward fails (with
    other patterns, e.g. ``*layers.1.mlp*``, already during the calibration); qruntime skips
    them as asked."""
    cfg = _int4_cfg(8, lowrank=4, skip_layers=["*q_proj"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = mtq.quantize(zoo.build("llama"), copy.deepcopy(cfg), zoo.forward_loop("llama"))
    with pytest.raises(AttributeError, match="svdquant_lora_a"):
        oracle.zoo_outputs(ref, "llama")
    model = zoo.build("llama")
    ours = qruntime.quantize(copy.deepcopy(model), cfg, zoo.forward_loop("llama"))
    q = ours.model.layers[0].self_attn.q_proj
    assert torch.equal(q.weight, model.model.layers[0].self_attn.q_proj.weight)
    w = q.weight.detach().reshape(-1, 8)
    assert torch.equal(q.weight_quantizer.amax.reshape(-1), w.abs().amax(1))
    assert "_svdquant_lora_a" in ours.model.layers[0].self_attn.k_proj.weight_quantizer._buffers


@pytest.mark.parametrize(
    "cfg", [_int4_cfg(8, lowrank=4), _int8_cfg(lowrank=4)], ids=["int4", "int8"]
)
def test_bfloat16_is_bit_exact(cfg):
    _assert_same("llama", cfg, zoo.build("llama").to(torch.bfloat16))


@pytest.mark.parametrize("inputs", [{"num_bits": 8}, {"num_bits": (4, 3)}], ids=["int8", "fp8"])
def test_quantized_inputs_are_bit_exact(inputs):
    """Per-tensor quantized inputs: calibrated on the smoothed input after the SVD step."""
    cfg = _int4_cfg(8, lowrank=4)
    cfg["quant_cfg"][2] = {"quantizer_name": "*input_quantizer", "cfg": inputs}
    _assert_same("llama", cfg)


def test_w4a8_is_refused_where_model_optimizer_fails():
    cfg = copy.deepcopy(mtq.W4A8_AWQ_BETA_CFG)
    cfg["quant_cfg"][1]["cfg"][0]["block_sizes"][-1] = 8
    cfg["algorithm"] = {"method": "svdquant", "lowrank": 4}
    with warnings.catch_warnings(), pytest.raises(AttributeError, match="is_enabled"):
        warnings.simplefilter("ignore")
        mtq.quantize(zoo.build("llama"), copy.deepcopy(cfg), zoo.forward_loop("llama"))
    model = zoo.build("llama")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsupportedAlgorithmError, match="sequential quantizer"):
        qruntime.quantize(model, cfg, zoo.forward_loop("llama"))
    assert list(model.state_dict()) == list(before)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
