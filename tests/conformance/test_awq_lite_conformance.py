"""awq_lite against Model Optimizer 0.47.0, run in the same test.

Zoo models quantized with INT4_AWQ_CFG (its block of 128 is wider than the zoo's 16 channels,
so also with blocks of 8 and 4), other alpha steps, bfloat16, enabled input quantizers of
several formats, W4A8_AWQ_BETA_CFG (sequential weights), a layer no data reaches and a loop that
runs only once: every quantizer's state, every calibration buffer (the searched
``_pre_quant_scale`` included), the rescaled weights — bit-exact, same dtype, same
``state_dict`` keys in the same order — and the outputs are equal.
"""

import copy
import warnings

import modelopt.torch.quantization as mtq
import oracle
import pytest
import qruntime
import torch
import zoo
from calibration_cases import WithDeadLayer


def _quiet(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)


def _int4_awq_cfg(block, alpha_step=0.1):
    cfg = copy.deepcopy(mtq.INT4_AWQ_CFG)
    cfg["quant_cfg"][1]["cfg"]["block_sizes"][-1] = block
    cfg["algorithm"] = {"method": "awq_lite", "alpha_step": alpha_step}
    return cfg


@pytest.mark.parametrize("block", [128, 8, 4])
@pytest.mark.parametrize("name", ["llama"])
def test_zoo_int4_awq_is_bit_exact(name, block):
    model, loop = zoo.build(name), zoo.forward_loop(name)
    ref, ours = oracle.quantize_both(model, _int4_awq_cfg(block), loop)
    oracle.assert_same_model(ref, ours)
    scaled = [k for k in ref.state_dict() if k.endswith("input_quantizer._pre_quant_scale")]
    assert scaled, "nothing was scaled"
    assert torch.equal(oracle.zoo_outputs(ours, name), oracle.zoo_outputs(ref, name))


@pytest.mark.parametrize("name", ["vlm", "cnn", "moe"])
def test_other_zoo_models_are_bit_exact(name):
    model, loop = zoo.build(name), zoo.forward_loop(name)
    ref, ours = oracle.quantize_both(model, _int4_awq_cfg(8), loop)
    oracle.assert_same_model(ref, ours)
    assert torch.equal(oracle.zoo_outputs(ours, name), oracle.zoo_outputs(ref, name))


@pytest.mark.parametrize("alpha_step", [0.25, 0.3, 1.0])
def test_alpha_steps_are_bit_exact(alpha_step):
    model, loop = zoo.build("llama"), zoo.forward_loop("llama")
    ref, ours = oracle.quantize_both(model, _int4_awq_cfg(8, alpha_step), loop)
    oracle.assert_same_model(ref, ours)


def test_bfloat16_llama_is_bit_exact():
    model = zoo.build("llama").to(torch.bfloat16)
    ref, ours = oracle.quantize_both(model, _int4_awq_cfg(8), zoo.forward_loop("llama"))
    oracle.assert_same_model(ref, ours)
    assert torch.equal(oracle.zoo_outputs(ours, "llama"), oracle.zoo_outputs(ref, "llama"))


WEIGHTS = {
    "int4_block": {"num_bits": 4, "block_sizes": {-1: 8, "type": "static"}},
    "int8_axis0": {"num_bits": 8, "axis": 0},
    "int8_tensor": {"num_bits": 8},
    "fp8_tensor": {"num_bits": (4, 3)},
}
INPUTS = {
    "int8": {"num_bits": 8},
    "int8_channel": {"num_bits": 8, "axis": -1},
    "fp8": {"num_bits": (4, 3)},
    "int8_dynamic": {"num_bits": 8, "type": "dynamic"},
}


CASES = [("llama", w, i) for w in sorted(WEIGHTS) for i in sorted(INPUTS)] + [
    ("moe", "int4_block", "fp8"),
    ("moe", "int8_axis0", "int8_channel"),
]


@pytest.mark.parametrize(("name", "weights", "inputs"), CASES)
def test_quantized_inputs_are_bit_exact(name, weights, inputs):
    """An enabled input quantizer: off during the search, calibrated per channel on the side,
    per tensor again after with the smoothed amax (in a sparse MoE block the experts share the
    per-channel amax first, as Model Optimizer's max calibration inside awq_lite does)."""
    cfg = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*weight_quantizer", "cfg": WEIGHTS[weights]},
            {"quantizer_name": "*input_quantizer", "cfg": INPUTS[inputs]},
            {"quantizer_name": "*lm_head*", "enable": False},
            {"quantizer_name": "*mlp.gate.*", "enable": False},
        ],
        "algorithm": {"method": "awq_lite", "alpha_step": 0.25},
    }
    model, loop = zoo.build(name), zoo.forward_loop(name)
    ref, ours = oracle.quantize_both(model, cfg, loop)
    oracle.assert_same_model(ref, ours)
    assert torch.equal(oracle.zoo_outputs(ours, name), oracle.zoo_outputs(ref, name))


def _batches():
    g = torch.Generator().manual_seed(3)
    return [torch.randn(2, 5, 16, generator=g) for _ in range(2)]


@pytest.mark.parametrize("inputs", [None, "int8"])
def test_dead_layer_gets_ones_and_max_calibration(inputs):
    cfg = _int4_awq_cfg(8)
    if inputs:
        cfg["quant_cfg"][2] = {"quantizer_name": "*input_quantizer", "cfg": INPUTS[inputs]}
    batches = _batches()

    def loop(m):
        for x in batches:
            m(x)

    ref, ours = oracle.quantize_both(WithDeadLayer(), cfg, loop)
    oracle.assert_same_model(ref, ours)
    assert torch.equal(ours.dead.input_quantizer.pre_quant_scale, torch.ones(16))


@pytest.mark.parametrize("inputs", [None, "int8"])
def test_loop_that_runs_once_gets_ones(inputs):
    """The second pass sees no data: every layer falls back to max calibration and ones."""
    cfg = _int4_awq_cfg(8)
    if inputs:
        cfg["quant_cfg"][2] = {"quantizer_name": "*input_quantizer", "cfg": INPUTS[inputs]}
    batches = _batches()

    def once():
        calls = []

        def loop(m):
            if not calls:
                for x in batches:
                    m(x)
            calls.append(1)

        return loop

    ref = _quiet(mtq.quantize, WithDeadLayer(), copy.deepcopy(cfg), once())
    ours = _quiet(qruntime.quantize, WithDeadLayer(), copy.deepcopy(cfg), once())
    oracle.assert_same_model(ref, ours)
    assert torch.equal(ours.live.input_quantizer.pre_quant_scale, torch.ones(16))


@pytest.mark.parametrize("block", [128, 8])
@pytest.mark.parametrize("name", ["llama", "moe"])
def test_w4a8_awq_beta_is_bit_exact(name, block, dtype=torch.float32):
    """Sequential INT4-then-FP8 weights: the search and the scaling through the INT4 element,
    then both elements max-calibrated on the scaled weight; FP8 inputs."""
    cfg = copy.deepcopy(mtq.W4A8_AWQ_BETA_CFG)
    cfg["quant_cfg"][1]["cfg"][0]["block_sizes"][-1] = block
    model, loop = zoo.build(name).to(dtype), zoo.forward_loop(name)
    ref, ours = oracle.quantize_both(model, cfg, loop)
    oracle.assert_same_model(ref, ours)
    assert torch.equal(oracle.zoo_outputs(ours, name), oracle.zoo_outputs(ref, name))


def test_bfloat16_w4a8_awq_beta_is_bit_exact():
    test_w4a8_awq_beta_is_bit_exact("llama", 8, torch.bfloat16)
