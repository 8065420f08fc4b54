"""Layer-by-layer calibration: which blocks are found (Hugging Face layouts, a BERT encoder, the
generic search, the ``layers=`` override), how often the user's loop runs (N passes for N
blocks), that only the current block's inputs (and the next block's) stay alive, refusals
before the model is touched, rollback of a failing run, the warning for quantizers outside the
blocks, the loop checks and the progress bar. (Bit-exactness with Model Optimizer:
tests/conformance/test_layerwise_conformance.py.)"""

import copy
import gc
import warnings
import weakref

import pytest
import qruntime
import torch
import zoo
from qconfig.algorithms import LayerwiseConfig
from qruntime.calibrate import UnsupportedAlgorithmError
from qruntime.calibrate.layerwise import (
    LayerwiseDriver,
    LayerwiseError,
    LayerwiseOptions,
    find_layers,
)
from torch import nn


def _llama(n_layers=3):
    torch.manual_seed(0)
    return zoo.LlamaLike(n_layers=n_layers).eval()


LOOP = zoo.forward_loop("llama", seeds=(0, 1, 3))


def _cfg(method="max", head=False, embedding=False, **layerwise):
    quant_cfg = [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8}},
    ]
    if not head:
        quant_cfg.append({"quantizer_name": "*lm_head*", "enable": False})
    if not embedding:
        quant_cfg.append({"quantizer_name": "*embed_tokens*", "enable": False})
    algorithm = {"method": method, "layerwise": {"enable": True, **layerwise}}
    return {"quant_cfg": quant_cfg, "algorithm": algorithm}


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_untouched(model, before):
    assert not any(isinstance(m, qruntime.QuantModule) for m in model.modules())
    assert not any("forward" in m.__dict__ for m in model.modules())
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert after[key].dtype == value.dtype and torch.equal(after[key], value), key


# ------------------------------------------------------------------------------ discovery


class Block(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        return x + self.fc(x)


class _Stack(nn.Module):
    def __init__(self, n=2):
        super().__init__()
        self.layers = nn.ModuleList(Block() for _ in range(n))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class Multimodal(nn.Module):
    """``model.language_model.layers`` beside a vision tower with blocks of its own."""

    def __init__(self):
        super().__init__()
        self.model = nn.Module()
        self.model.language_model = _Stack(3)
        self.model.vision_tower = _Stack(2)


class GPT2Like(nn.Module):
    def __init__(self):
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.h = nn.ModuleList(Block() for _ in range(2))
        self.lm_head = nn.Linear(8, 8)


class Blocks(nn.Module):
    """Names no known layout uses: found by the generic search (norms hold no quantizers)."""

    def __init__(self):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(8) for _ in range(2))
        self.trunk = nn.Sequential(nn.Linear(8, 8), nn.Module())
        self.trunk[1].blocks = nn.ModuleList(Block() for _ in range(4))
        self.head = nn.Linear(8, 2)


class EncoderDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder_blocks = nn.ModuleList(Block() for _ in range(2))
        self.decoder_blocks = nn.ModuleList(Block() for _ in range(2))


def _tiny_bert(kind):
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    return (BertModel if kind == "base" else BertForSequenceClassification)(config).eval()


@pytest.mark.parametrize(
    ("build", "where", "count"),
    [
        (lambda: _llama(3), "model.layers", 3),
        (zoo.MoELike, "model.layers", 2),  # not the experts inside each block
        (Multimodal, "model.language_model.layers", 3),
        (GPT2Like, "transformer.h", 2),
        (lambda: _tiny_bert("base"), "encoder.layer", 2),
        (lambda: _tiny_bert("classifier"), "bert.encoder.layer", 2),
    ],
    ids=["llama", "moe", "multimodal", "gpt2", "bert", "bert-classifier"],
)
def test_blocks_are_found(build, where, count):
    model = build()
    found = find_layers(model)
    assert found.where == where
    assert len(found.modules) == count
    assert found.modules == tuple(model.get_submodule(where))
    assert found.names == tuple(f"{where}.{i}" for i in range(count))


def test_the_generic_search_takes_the_one_block_list_holding_quantizers():
    model = Blocks()
    planned = ["trunk.0.weight_quantizer", "trunk.1.blocks.3.fc.weight_quantizer", "head.x"]
    found = find_layers(model, quantized=planned)
    assert found.where == "trunk.1.blocks"
    assert found.modules == tuple(model.trunk[1].blocks)
    with pytest.raises(LayerwiseError, match=r"several block lists .*\(norms, trunk.1.blocks\)"):
        find_layers(model)  # without a plan the norms are a candidate too


def test_only_block_lists_holding_quantized_modules_are_candidates():
    model = Multimodal()
    found = find_layers(model, quantized=["model.vision_tower.layers.0.fc.weight_quantizer"])
    assert found.where == "model.vision_tower.layers"
    with pytest.raises(LayerwiseError, match="found no decoder layers"):
        find_layers(model, quantized=["nowhere.weight_quantizer"])


def test_several_candidates_are_refused_naming_them_and_the_override():
    with pytest.raises(LayerwiseError, match=r"encoder_blocks, decoder_blocks\).*layers="):
        find_layers(EncoderDecoder())


@pytest.mark.parametrize(
    ("layers", "where"),
    [
        ("decoder_blocks", "layers='decoder_blocks'"),
        (lambda m: [m.encoder_blocks[1], m.decoder_blocks[0]], "layers=<lambda>"),
    ],
)
def test_the_override_names_the_blocks(layers, where):
    model = EncoderDecoder()
    found = find_layers(model, layers)
    assert found.where == where
    expected = (
        (model.decoder_blocks[0], model.decoder_blocks[1])
        if isinstance(layers, str)
        else (model.encoder_blocks[1], model.decoder_blocks[0])
    )
    assert found.modules == expected


@pytest.mark.parametrize(
    ("layers", "words"),
    [
        ("missing.path", "no non-empty ModuleList"),
        ("encoder_blocks.0.fc", "no non-empty ModuleList"),
        (lambda m: [], "non-empty sequence of modules"),
        (lambda m: [nn.Linear(2, 2)], "not a submodule"),
        (lambda m: [m.encoder_blocks[0], m.encoder_blocks[0]], "listed twice"),
        (lambda m: [m.encoder_blocks[0], m.encoder_blocks[0].fc], "is inside block"),
        (3, "submodule path or a function"),
    ],
)
def test_bad_overrides_are_refused(layers, words):
    with pytest.raises(LayerwiseError, match=words):
        find_layers(EncoderDecoder(), layers)


# ------------------------------------------------------------------------------ the driver


class _CountingLoop:
    def __init__(self, loop):
        self.loop, self.calls = loop, 0

    def __call__(self, model):
        self.calls += 1
        self.loop(model)


@pytest.mark.parametrize("qdq", [False, True])
@pytest.mark.parametrize("n_layers", [1, 2, 4])
def test_the_loop_runs_once_per_block_and_each_block_calibrates_once(n_layers, qdq):
    model = _llama(n_layers)
    loop = _CountingLoop(LOOP)
    qruntime.quantize(model, _cfg(get_qdq_activations_from_prev_layer=qdq), loop)
    assert loop.calls == n_layers
    for layer in model.model.layers:
        assert layer.mlp.down_proj.input_quantizer.amax is not None
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_the_calibration_sees_each_block_with_a_replay_of_its_inputs():
    """calibrate_layer gets the block itself and a loop that replays exactly the inputs the
    block receives in the float model (qdq off), one call per batch."""
    model = _llama(3)
    float_inputs = {i: [] for i in range(3)}
    hooks = [
        layer.register_forward_pre_hook(lambda m, a, i=i: float_inputs[i].append(a[0].clone()))
        for i, layer in enumerate(model.model.layers)
    ]
    LOOP(model)
    for hook in hooks:
        hook.remove()
    seen = []

    def calibrate_layer(layer, layer_loop):
        got = []
        hook = layer.register_forward_pre_hook(lambda m, a: got.append(a[0]))
        layer_loop(layer)
        hook.remove()
        seen.append((layer, got))

    driver = LayerwiseDriver(find_layers(model), LayerwiseConfig(enable=True))
    with torch.no_grad():
        driver.run(model, LOOP, calibrate_layer)
    assert driver.forward_loop_calls == 3
    assert [layer for layer, _ in seen] == list(model.model.layers)
    for i, (_, got) in enumerate(seen):
        assert len(got) == 3
        assert all(torch.equal(a, b) for a, b in zip(got, float_inputs[i], strict=True))


@pytest.mark.parametrize("qdq", [False, True])
def test_only_the_current_blocks_inputs_stay_alive(qdq):
    """When block i calibrates, the recorded inputs of blocks before it are gone."""
    model = _llama(4)
    qruntime.quantize(model, {**_cfg(), "algorithm": None})  # quantizers, no calibration
    recorded: list[list[weakref.ref]] = []

    def calibrate_layer(layer, layer_loop):
        refs = []
        hook = layer.register_forward_pre_hook(lambda m, a: refs.append(weakref.ref(a[0])))
        layer_loop(layer)
        hook.remove()
        gc.collect()
        assert all(r() is not None for r in refs)  # the current block's: alive
        for earlier in recorded:
            assert all(r() is None for r in earlier)
        recorded.append(refs)

    driver = LayerwiseDriver(
        find_layers(model), LayerwiseConfig(enable=True, get_qdq_activations_from_prev_layer=qdq)
    )
    with torch.no_grad():
        driver.run(model, LOOP, calibrate_layer)
    assert len(recorded) == 4
    gc.collect()
    assert all(r() is None for refs in recorded for r in refs)  # nothing kept after the run


def test_offloaded_inputs_give_the_same_calibration():
    """The CPU offload is a round trip (a no-op on a CPU-only machine, exercised on CUDA)."""
    model = _llama(3)
    plain = qruntime.quantize(copy.deepcopy(model), _cfg(), LOOP)
    offloaded = qruntime.quantize(
        copy.deepcopy(model), _cfg(), LOOP, layers=LayerwiseOptions(offload_inputs=True)
    )
    expected = plain.state_dict()
    for key, value in offloaded.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_the_override_reaches_quantize():
    """``layers=`` picks the blocks the search would not: here the last two of three."""
    model = _llama(3)
    loop = _CountingLoop(LOOP)
    with pytest.warns(UserWarning, match="2 blocks of layers=<lambda>; 14 enabled quantizers"):
        qruntime.quantize(model, _cfg(), loop, layers=lambda m: list(m.model.layers)[1:])
    assert loop.calls == 2
    assert model.model.layers[0].mlp.down_proj.input_quantizer.amax is None
    assert model.model.layers[2].mlp.down_proj.input_quantizer.amax is not None


def test_a_bert_encoder_calibrates_like_whole_model_max():
    """A real Hugging Face BertModel (keyword inputs, attention mask): layerwise max with float
    activations gives the amaxes of whole-model max inside the encoder blocks."""
    model = _tiny_bert("base")
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0

    def loop(m):
        m(input_ids=ids, attention_mask=mask)

    cfg = _cfg()
    cfg["quant_cfg"].append({"quantizer_name": "*embeddings*", "enable": False})
    cfg["quant_cfg"].append({"quantizer_name": "*pooler*", "enable": False})
    whole_cfg = {**cfg, "algorithm": "max"}
    whole = qruntime.quantize(copy.deepcopy(model), whole_cfg, loop)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layerwise = qruntime.quantize(copy.deepcopy(model), cfg, loop)
    expected = {k: v for k, v in whole.state_dict().items() if k.endswith("_amax")}
    got = {k: v for k, v in layerwise.state_dict().items() if k.endswith("_amax")}
    assert list(got) == list(expected)
    assert len(got) >= 2 * 6 * 2 and all(k.startswith("encoder.layer.") for k in got)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


# ------------------------------------------------------------------------------ refusals


def _svdquant_cfg():
    cfg = _cfg()
    cfg["algorithm"] = {"method": "svdquant", "layerwise": {"enable": True}}
    return cfg


@pytest.mark.parametrize(
    ("build", "cfg", "loop", "words"),
    [
        (_llama, _svdquant_cfg(), LOOP, "'svdquant' does not support layerwise"),
        (_llama, _cfg(), None, "layerwise.enable needs calibration data"),
        (lambda: nn.Sequential(nn.Linear(4, 4), nn.ReLU()), _cfg(), LOOP, "layers="),
        (EncoderDecoder, _cfg(), LOOP, "several block lists"),
    ],
    ids=["svdquant", "no-loop", "no-blocks", "ambiguous"],
)
def test_refused_before_the_model_is_touched(build, cfg, loop, words):
    model = build()
    before = _state(model)
    with pytest.raises(UnsupportedAlgorithmError, match=words) as info:
        qruntime.quantize(model, cfg, loop)
    assert "The model was not changed." in str(info.value)
    _assert_untouched(model, before)


def test_a_bad_override_is_refused_before_the_model_is_touched():
    model = _llama()
    before = _state(model)
    with pytest.raises(UnsupportedAlgorithmError, match=r"layers='model\.blocks'"):
        qruntime.quantize(model, _cfg(), LOOP, layers="model.blocks")
    with pytest.raises(TypeError, match="layers must be"):
        qruntime.quantize(model, _cfg(), LOOP, layers=3)
    _assert_untouched(model, before)


# ------------------------------------------------------------------------------ rollback


class _FailingLoop:
    """Raises on call ``fail_at`` (1-based), after the earlier blocks were calibrated."""

    def __init__(self, fail_at):
        self.fail_at, self.calls = fail_at, 0

    def __call__(self, model):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("data source went away")
        LOOP(model)


@pytest.mark.parametrize("method", ["max", "awq_lite"])
def test_a_failure_in_a_later_block_leaves_the_model_exactly_as_before(method):
    """awq_lite rescales block 0's and 1's weights before the third pass fails."""
    model = _llama(3)
    before = _state(model)
    loop = _FailingLoop(fail_at=3)
    with pytest.raises(RuntimeError, match="data source went away"):
        qruntime.quantize(model, _cfg(method, get_qdq_activations_from_prev_layer=True), loop)
    assert loop.calls == 3
    _assert_untouched(model, before)


def test_a_loop_that_feeds_different_batches_each_call_is_an_error():
    calls = []

    def loop(model):
        calls.append(1)
        for seed in range(len(calls)):  # one more batch on every call
            model(*zoo.example_inputs("llama", seed=seed))

    model = _llama(3)
    before = _state(model)
    with pytest.raises(LayerwiseError, match="same batches in the same order"):
        qruntime.quantize(model, _cfg(), loop)
    _assert_untouched(model, before)


def test_a_loop_that_never_reaches_the_blocks_is_an_error():
    model = _llama(2)
    with pytest.raises(LayerwiseError, match=r"never reached block 'model\.layers\.0'"):
        qruntime.quantize(model, _cfg(), lambda m: m.lm_head(torch.zeros(1, zoo.H)))


def test_a_loop_that_calls_a_submodule_instead_of_the_model_is_an_error():
    model = _llama(2)
    batch = zoo.example_inputs("llama")
    with pytest.raises(LayerwiseError, match=r"without calling the model itself"):
        qruntime.quantize(model, _cfg(), lambda m: m.model(*batch))
    assert not any("forward" in m.__dict__ for m in model.modules())


class _ComputesBetweenBlocks(nn.Module):
    """Reads the hidden state's values between blocks: impossible on meta placeholders."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(Block() for _ in range(3))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
            if x.abs().max().item() > 1e6:
                x = x / 2
        return x


def test_a_model_that_computes_on_the_hidden_state_between_blocks_is_refused():
    model = _ComputesBetweenBlocks()
    before = _state(model)
    with pytest.raises(LayerwiseError, match="without layerwise"):
        qruntime.quantize(model, _cfg(), lambda m: m(torch.randn(2, 8)))
    _assert_untouched(model, before)


# ------------------------------------------------------------------------------ messages


def test_one_warning_counts_the_quantizers_left_outside_the_blocks():
    model = _llama(2)
    with pytest.warns(UserWarning) as record:
        qruntime.quantize(model, _cfg(head=True, embedding=True), LOOP)
    ours = [w for w in record if "layerwise calibration" in str(w.message)]
    assert len(ours) == 1
    message = str(ours[0].message)
    assert "2 blocks of model.layers; 3 enabled quantizers outside them" in message
    assert "model.embed_tokens.weight_quantizer, lm_head.input_quantizer" in message
    assert model.lm_head.weight_quantizer.amax is None


def test_the_progress_bar_is_drawn_on_request_and_quiet_otherwise(capsys):
    qruntime.quantize(_llama(2), _cfg(), LOOP, layers=LayerwiseOptions(progress=True))
    drawn = capsys.readouterr().err
    assert "layerwise calibration" in drawn and "2/2" in drawn
    qruntime.quantize(_llama(2), _cfg(), LOOP)  # stderr is not a terminal under pytest
    assert "layerwise calibration" not in capsys.readouterr().err
