"""Hugging Face attention sites (qruntime.sites.hf_attention, qruntime.modules.attention):
which modules get ``q/k/v/p_bmm_quantizer``, which tensors those quantizers see (checked against
values recomputed here from the model's own weights), and that the kernel interception changes
nothing outside the module — during the forward, after it, and after an exception."""

import copy
import sys
import types
import warnings

import pytest
import qruntime
import torch
import transformers
from qruntime.modules.attention import QuantAttention
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama import modeling_llama

VOCAB = 128
BMM = ["q_bmm_quantizer", "k_bmm_quantizer", "v_bmm_quantizer", "p_bmm_quantizer"]


def llama(impl: str = "sdpa") -> nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        attn_implementation=impl,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def bert(impl: str = "sdpa") -> nn.Module:
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        attn_implementation=impl,
    )
    torch.manual_seed(0)
    return transformers.BertModel(config).eval()


def ids(seed: int = 0, shape=(2, 8)) -> torch.Tensor:
    return torch.randint(0, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


def cfg(*entries: dict) -> dict:
    return {"quant_cfg": [{"quantizer_name": "*", "enable": False}, *entries], "algorithm": "max"}


FP8 = {"num_bits": (4, 3), "axis": None}
KV_FP8 = cfg({"quantizer_name": "*[kv]_bmm_quantizer", "cfg": FP8})


def quantize(model: nn.Module, config: dict, batches=(0, 1)) -> nn.Module:
    def loop(m):
        with torch.no_grad():
            for seed in batches:
                m(input_ids=ids(seed))

    return qruntime.quantize(copy.deepcopy(model), copy.deepcopy(config), loop, lint="off")


def record_inputs(model: nn.Module, suffix: str) -> dict[str, list[torch.Tensor]]:
    """Every input each ``*<suffix>`` quantizer of ``model`` receives from now on."""
    seen: dict[str, list[torch.Tensor]] = {}
    for name, module in model.named_modules():
        if name.endswith(suffix):
            module.register_forward_hook(
                lambda m, args, out, name=name: (
                    seen.setdefault(name, []).append(args[0].clone()) and None
                )
            )
    return seen


# -- discovery --------------------------------------------------------------------------------


def test_inventory_on_meta_lists_the_four_bmm_quantizers_after_the_projections():
    with torch.device("meta"):
        model = llama()
    manifest = qruntime.inventory(model)
    attention = [m for m in manifest.modules if m.class_name == "LlamaAttention"]
    assert [m.name for m in attention] == [f"model.layers.{i}.self_attn" for i in (0, 1)]
    for site in attention:
        assert site.registry_key == "LlamaAttention"
        assert site.parent_class_keys == ["LlamaAttention"]
        assert [q.attribute for q in site.quantizers] == BMM
        # Model Optimizer's default TensorQuantizer: INT8, per tensor, enabled, dynamic
        assert all(q.defaults.num_bits == 8 and q.defaults.axis is None for q in site.quantizers)
        assert all(q.defaults.enable and not q.hard_disabled for q in site.quantizers)
    assert "LlamaAttention" in manifest.registry_keys
    assert all(p.device.type == "meta" for p in model.parameters())  # not touched


def test_only_the_innermost_attention_of_a_wrapper_is_registered():
    manifest = qruntime.inventory(bert())
    sites = [m.name for m in manifest.modules if m.class_name.endswith("Attention")]
    assert sites == [f"encoder.layer.{i}.attention.self" for i in (0, 1)]
    assert "BertSelfAttention" in manifest.registry_keys
    assert "BertAttention" not in manifest.registry_keys


def test_a_plain_module_holding_hf_attention_gets_nothing():
    """Discovery needs a PreTrainedModel root (Model Optimizer in a fresh process)."""
    holder = nn.Module()
    holder.attn = llama().model.layers[0].self_attn
    manifest = qruntime.inventory(holder)
    assert not [m for m in manifest.modules if m.class_name == "LlamaAttention"]
    assert "LlamaAttention" not in manifest.registry_keys


def test_legacy_attention_warns_and_gets_no_quantizers():
    config = transformers.GPTNeoConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        attention_types=[[["global", "local"], 1]],
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = transformers.GPTNeoForCausalLM(config).eval()
    with pytest.warns(UserWarning, match=r"GPTNeoSelfAttention.*no q/k/v/p_bmm_quantizer"):
        manifest = qruntime.inventory(model)
    assert not [m for m in manifest.modules if "Attention" in m.class_name]
    assert "GPTNeoSelfAttention" not in manifest.registry_keys


# -- which tensors ------------------------------------------------------------------------------


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE of ``x`` [B, H, S, D] at positions 0..S-1, recomputed from its definition."""
    dim, seq = x.shape[-1], x.shape[-2]
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    freqs = torch.arange(seq, dtype=torch.float32)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    half = dim // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * emb.cos() + rotated * emb.sin()


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_k_input_is_rope_of_k_proj_before_repeat_kv(impl):
    model = quantize(llama(impl), KV_FP8)
    seen = record_inputs(model, "layers.0.self_attn.k_bmm_quantizer")
    captured = {}
    layer = model.model.layers[0]
    layer.self_attn.register_forward_pre_hook(
        lambda m, args, kwargs: captured.update(x=kwargs["hidden_states"]), with_kwargs=True
    )
    with torch.no_grad():
        model(input_ids=ids(5))
    (k_in,) = seen["model.layers.0.self_attn.k_bmm_quantizer"]
    assert k_in.shape == (2, 2, 8, 8)  # [B, Hkv, S, D]: not yet repeated to 4 heads
    with torch.no_grad():
        k = layer.self_attn.k_proj.weight @ captured["x"].transpose(-1, -2)  # raw, unquantized
    k = k.transpose(-1, -2).view(2, 8, 2, 8).transpose(1, 2)
    theta = model.config.rope_parameters["rope_theta"]
    torch.testing.assert_close(k_in, _rope(k, theta), rtol=1e-5, atol=1e-6)


def test_output_attentions_under_sdpa_still_quantizes_k_and_v():
    """Model Optimizer patches the eager function then, and the sdpa kernel runs unquantized."""
    model = quantize(llama("sdpa"), KV_FP8)
    seen = record_inputs(model, "_bmm_quantizer")
    with torch.no_grad():
        model(input_ids=ids(3), output_attentions=True)
    assert len(seen["model.layers.0.self_attn.k_bmm_quantizer"]) == 1
    assert len(seen["model.layers.1.self_attn.v_bmm_quantizer"]) == 1


def test_generate_quantizes_the_whole_cache_every_step():
    model = quantize(llama("sdpa"), cfg({"quantizer_name": "*[qk]_bmm_quantizer", "cfg": FP8}))
    seen = record_inputs(model, "layers.0.self_attn.k_bmm_quantizer")
    q_seen = record_inputs(model, "layers.0.self_attn.q_bmm_quantizer")
    with torch.no_grad():
        model.generate(ids(4, (1, 5)), max_new_tokens=3, do_sample=False, pad_token_id=0)
    k_shapes = [tuple(t.shape) for t in seen["model.layers.0.self_attn.k_bmm_quantizer"]]
    assert k_shapes == [(1, 2, 5, 8), (1, 2, 6, 8), (1, 2, 7, 8)]
    q_shapes = [tuple(t.shape) for t in q_seen["model.layers.0.self_attn.q_bmm_quantizer"]]
    assert q_shapes == [(1, 4, 5, 8), (1, 4, 1, 8), (1, 4, 1, 8)]
    # the cached positions are the same tensor every step: the first 5 keys never change
    first = seen["model.layers.0.self_attn.k_bmm_quantizer"]
    assert torch.equal(first[2][:, :, :5], first[0])


@pytest.mark.parametrize(
    ("axis", "shape"), [(1, (1, 2, 1, 1)), (-1, (1, 1, 1, 8)), ((1, 3), (1, 2, 1, 8))]
)
def test_per_head_and_per_channel_kv_amax(axis, shape):
    model = quantize(
        llama(), cfg({"quantizer_name": "*[kv]_bmm_quantizer", "cfg": {**FP8, "axis": axis}})
    )
    seen = record_inputs(model, "layers.1.self_attn.k_bmm_quantizer")
    k = model.model.layers[1].self_attn.k_bmm_quantizer
    assert tuple(k._amax.shape) == shape
    # the calibrated amax is the max |k| over both calibration batches, per kept axis
    reference = llama()
    ref_seen = {}
    hook = lambda m, a, kw: ref_seen.setdefault("x", []).append(kw["hidden_states"])  # noqa: E731
    reference.model.layers[1].self_attn.register_forward_pre_hook(hook, with_kwargs=True)
    with torch.no_grad():
        for seed in (0, 1):
            reference(input_ids=ids(seed))
    theta = reference.config.rope_parameters["rope_theta"]
    keep = {axis % 4} if isinstance(axis, int) else {a % 4 for a in axis}
    reduce = tuple(d for d in range(4) if d not in keep)
    amaxes = []
    for x in ref_seen["x"]:
        with torch.no_grad():
            raw = reference.model.layers[1].self_attn.k_proj(x)
        raw = raw.view(2, 8, 2, 8).transpose(1, 2)
        amaxes.append(_rope(raw, theta).abs().amax(dim=reduce, keepdim=True))
    torch.testing.assert_close(k._amax, torch.maximum(*amaxes), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        model.generate(ids(4, (1, 5)), max_new_tokens=2, do_sample=False, pad_token_id=0)
    assert len(seen["model.layers.1.self_attn.k_bmm_quantizer"]) == 2


# -- nothing global changes ----------------------------------------------------------------------


def _globals_snapshot():
    return (
        modeling_llama.eager_attention_forward,
        modeling_llama.ALL_ATTENTION_FUNCTIONS,
        dict(ALL_ATTENTION_FUNCTIONS._global_mapping),
        dict(ALL_ATTENTION_FUNCTIONS._local_mapping),
        torch.nn.functional.softmax,
        torch.softmax,
    )


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_the_kernel_swap_writes_nothing_global(impl):
    before = _globals_snapshot()
    during = []
    model = quantize(
        llama(impl),
        cfg(
            {"quantizer_name": "*[kv]_bmm_quantizer", "cfg": FP8},
            {"quantizer_name": "*p_bmm_quantizer", "cfg": FP8},
        ),
    )
    k = model.model.layers[0].self_attn.k_bmm_quantizer
    k.register_forward_hook(lambda m, a, o: during.append(_globals_snapshot()) and None)
    with torch.no_grad():
        model(input_ids=ids(2))
    assert during == [before]
    assert _globals_snapshot() == before

    def boom(m, a, o):
        raise ValueError("inside the kernel")

    k.register_forward_hook(boom)
    with pytest.raises(ValueError, match="inside the kernel"), torch.no_grad():
        model(input_ids=ids(2))
    assert _globals_snapshot() == before
    # an unquantized twin in the same process is unaffected
    plain = llama(impl)
    with torch.no_grad():
        expected = plain(input_ids=ids(2)).logits
    assert torch.equal(llama(impl)(input_ids=ids(2)).logits.detach(), expected)


class SubclassedLlamaAttention(modeling_llama.LlamaAttention):
    """Defined in this module, ``forward`` inherited from modeling_llama (Model Optimizer's eager
    patch lands in this module then, and misses)."""

    # discovery probes this module for an ALL_ATTENTION_FUNCTIONS global: imported above


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_inherited_forward_from_another_module_is_quantized(impl):
    model = llama(impl)
    for layer in model.model.layers:
        layer.self_attn.__class__ = SubclassedLlamaAttention
    manifest = qruntime.inventory(model)
    site = next(m for m in manifest.modules if m.name == "model.layers.0.self_attn")
    assert (site.class_name, site.registry_key) == ("SubclassedLlamaAttention",) * 2
    quantized = quantize(model, KV_FP8)
    seen = record_inputs(quantized, "layers.0.self_attn.k_bmm_quantizer")
    with torch.no_grad():
        quantized(input_ids=ids(3))
    assert len(seen["model.layers.0.self_attn.k_bmm_quantizer"]) == 1
    assert quantized.model.layers[0].self_attn.k_bmm_quantizer._amax > 0


# -- p_bmm_quantizer ------------------------------------------------------------------------------

P_FP8 = cfg({"quantizer_name": "*p_bmm_quantizer", "cfg": FP8})


def _max_probability(model: nn.Module, layer: int) -> torch.Tensor:
    """The largest softmax probability of ``layer`` over the calibration batches, read from
    transformers' own eager attention weights (``output_attentions``)."""
    eager = copy.deepcopy(model)
    eager.config._attn_implementation = "eager"
    with torch.no_grad():
        weights = [eager(input_ids=ids(s), output_attentions=True).attentions for s in (0, 1)]
    return torch.stack([w[layer].abs().amax() for w in weights]).amax()


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_p_is_calibrated_on_the_causal_softmax_and_quantized(impl):
    """Causal attention: Model Optimizer needs a CUDA Triton kernel (RuntimeError on CPU);
    qruntime runs the eager kernel with the softmax output quantized, under sdpa too."""
    model = llama(impl)
    quantized = quantize(model, P_FP8)
    for layer in (0, 1):
        p = quantized.model.layers[layer].self_attn.p_bmm_quantizer
        torch.testing.assert_close(p._amax, _max_probability(model, layer), rtol=0, atol=1e-7)
    with torch.no_grad():
        got = quantized(input_ids=ids(7)).logits
        plain = model(input_ids=ids(7)).logits
    assert not torch.equal(got, plain)
    twin = quantize(llama("eager" if impl == "sdpa" else "sdpa"), P_FP8)
    with torch.no_grad():  # the same P quantization whichever kernel the model is set to
        assert torch.equal(twin(input_ids=ids(7)).logits, got)


def _module_from_source(monkeypatch, name: str, source: str) -> types.ModuleType:
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


TOY_SOURCE = """
import torch
from torch import nn

def eager_attention_forward(module, query, key, value, attention_mask, **kwargs):
    scores = query @ key.transpose(-1, -2) * query.shape[-1] ** -0.5
    probabilities = scores.softmax(dim=-1)  # a tensor method: out of qruntime's reach
    return probabilities @ value, probabilities

class ToyAttention(nn.Module):
    def __init__(self, use_kernel=True):
        super().__init__()
        self.proj = nn.Linear(8, 24)
        self.use_kernel = use_kernel

    def forward(self, x):
        q, k, v = self.proj(x).unsqueeze(1).chunk(3, dim=-1)
        if not self.use_kernel:
            return q @ k.transpose(-1, -2) @ v
        return eager_attention_forward(self, q, k, v, None)[0]
"""


def test_p_enabled_but_softmax_out_of_reach_raises(monkeypatch):
    toy = _module_from_source(monkeypatch, "toy_attention_p", TOY_SOURCE)
    qruntime.register(toy.ToyAttention, QuantAttention)
    try:
        model = toy.ToyAttention()
        x = torch.randn(2, 5, 8)
        with pytest.raises(RuntimeError, match=r"p_bmm_quantizer is enabled.*cannot intercept"):
            qruntime.quantize(model, P_FP8, lambda m: m(x), lint="off")
    finally:
        qruntime.unregister(toy.ToyAttention)


def test_a_forward_that_never_reaches_a_kernel_raises(monkeypatch):
    toy = _module_from_source(monkeypatch, "toy_attention_nokernel", TOY_SOURCE)
    qruntime.register(toy.ToyAttention, QuantAttention)
    try:
        model = toy.ToyAttention(use_kernel=False)
        x = torch.randn(2, 5, 8)
        with pytest.raises(RuntimeError, match="never called an attention kernel"):
            qruntime.quantize(model, KV_FP8, lambda m: m(x), lint="off")
        # all bmm quantizers off: nothing was skipped, nothing to report
        off = qruntime.quantize(
            toy.ToyAttention(use_kernel=False), cfg(), lambda m: m(x), lint="off"
        )
        off(x)
    finally:
        qruntime.unregister(toy.ToyAttention)


def test_a_registered_custom_attention_quantizes_its_kernel_operands(monkeypatch):
    """The docs/huggingface.md recipe: ``qruntime.register(MyAttention, QuantAttention)``."""
    toy = _module_from_source(monkeypatch, "toy_attention_custom", TOY_SOURCE)
    qruntime.register(toy.ToyAttention, QuantAttention)
    try:
        torch.manual_seed(0)
        model = toy.ToyAttention()
        x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantized = qruntime.quantize(copy.deepcopy(model), KV_FP8, lambda m: m(x))
        with torch.no_grad():
            _, k, v = model.proj(x).unsqueeze(1).chunk(3, dim=-1)
        assert quantized.k_bmm_quantizer._amax == k.abs().max()
        assert quantized.v_bmm_quantizer._amax == v.abs().max()
    finally:
        qruntime.unregister(toy.ToyAttention)


def test_the_docs_example_runs_and_calibrates_k_and_p(monkeypatch):
    """docs/huggingface.md, 'Registering a custom attention module', as written."""
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "huggingface.md").read_text()
    section = text.split("## Registering a custom attention module", 1)[1]
    source = section.split("```python\n", 1)[1].split("```", 1)[0]
    module = types.ModuleType("huggingface_doc_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    try:
        exec(compile(source, "docs/huggingface.md", "exec"), module.__dict__)
        attention = module.quantized[0]
        keys, probabilities = [], []
        for x in module.batches:
            with torch.no_grad():
                q, k, _ = module.model[0].qkv(x).view(2, 6, 3, 4, 8).permute(2, 0, 3, 1, 4)
            keys.append(k.abs().max())
            probabilities.append((q @ k.transpose(-1, -2) * 8**-0.5).softmax(-1).max())
        assert attention.k_bmm_quantizer._amax == max(keys)
        assert attention.p_bmm_quantizer._amax == max(probabilities)
    finally:
        if "MyAttention" in module.__dict__:
            qruntime.unregister(module.MyAttention)


def test_p_under_sdpa_with_a_padding_mask_equals_eager():
    """Non-causal BERT with padding: the sdpa model runs the eager kernel for P, its boolean
    mask turned into eager's additive one; amax and outputs equal the eager model's."""
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, -3:] = 0

    def loop(m):
        with torch.no_grad():
            for seed in (0, 1):
                m(input_ids=ids(seed), attention_mask=mask)

    got = {}
    for impl in ("sdpa", "eager"):
        model = qruntime.quantize(bert(impl), copy.deepcopy(P_FP8), loop, lint="off")
        with torch.no_grad():
            out = model(input_ids=ids(9), attention_mask=mask).last_hidden_state
        amax = [layer.attention.self.p_bmm_quantizer._amax for layer in model.encoder.layer]
        got[impl] = (out, amax)
    assert torch.equal(got["sdpa"][0], got["eager"][0])
    assert got["sdpa"][1] == got["eager"][1]
    plain = bert("sdpa")
    with torch.no_grad():
        assert not torch.equal(
            plain(input_ids=ids(9), attention_mask=mask).last_hidden_state, got["sdpa"][0]
        )


OPAQUE_DECORATOR_SOURCE = """
import functools
import torch
from torch import nn

def eager_attention_forward(module, query, key, value, attention_mask, **kwargs):
    probabilities = torch.softmax(query @ key.transpose(-1, -2), dim=-1)
    return probabilities @ value, probabilities

def opaque(func, table={}):
    table["f"] = func  # the wrapped function is not in a closure cell

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return table["f"](*args, **kwargs)

    return wrapper

class OpaqueAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 24)

    @opaque
    def forward(self, x):
        q, k, v = self.proj(x).unsqueeze(1).chunk(3, dim=-1)
        return eager_attention_forward(self, q, k, v, None)[0]
"""


def test_a_forward_behind_an_opaque_decorator_runs_only_with_the_quantizers_off(monkeypatch):
    toy = _module_from_source(monkeypatch, "toy_attention_opaque", OPAQUE_DECORATOR_SOURCE)
    qruntime.register(toy.OpaqueAttention, QuantAttention)
    try:
        torch.manual_seed(0)
        model = toy.OpaqueAttention()
        x = torch.randn(2, 5, 8)
        off = qruntime.quantize(copy.deepcopy(model), cfg(), lambda m: m(x), lint="off")
        assert torch.equal(off(x), model(x))
        with pytest.raises(RuntimeError, match="cannot intercept the attention kernel"):
            qruntime.quantize(copy.deepcopy(model), KV_FP8, lambda m: m(x), lint="off")
    finally:
        qruntime.unregister(toy.OpaqueAttention)


def test_save_and_restore_round_trips_the_kv_bias_and_amax(tmp_path):
    config = cfg(
        {
            "quantizer_name": "*[kv]_bmm_quantizer",
            "cfg": {
                "num_bits": (4, 3),
                "axis": None,
                "bias": {-2: None, -4: None, "type": "static"},
            },
        }
    )
    quantized = quantize(llama(), config)
    k = quantized.model.layers[0].self_attn.k_bmm_quantizer
    assert k._bias_value.shape == (1, 2, 1, 8)  # per KV head and channel
    qruntime.save_state(quantized, tmp_path / "state.safetensors")
    restored = qruntime.restore_state(llama(), tmp_path / "state.safetensors")
    with torch.no_grad():
        assert torch.equal(restored(input_ids=ids(6)).logits, quantized(input_ids=ids(6)).logits)
    assert torch.equal(
        restored.model.layers[0].self_attn.k_bmm_quantizer._bias_value, k._bias_value
    )


FUSED_SOURCE = """
import torch
from torch import nn

def eager_attention_forward(module, query, key, value, attention_mask, **kwargs):
    probabilities = torch.softmax(query @ key.transpose(-1, -2), dim=-1)
    return probabilities @ value, probabilities

def fused_attention_forward(module, query, key, value, attention_mask, **kwargs):
    return torch.nn.functional.scaled_dot_product_attention(query, key, value), None

class Interface(dict):
    def get_interface(self, name, default):
        return self.get(name, default)

ALL_ATTENTION_FUNCTIONS = Interface(fused=fused_attention_forward)

class FusedAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 24)

    def forward(self, x, padding):
        q, k, v = self.proj(x).unsqueeze(1).chunk(3, dim=-1)
        kernel = ALL_ATTENTION_FUNCTIONS.get_interface("fused", eager_attention_forward)
        return kernel(self, q, k, v, padding)[0]
"""


def test_p_under_a_fused_kernel_with_a_2d_padding_mask_is_refused(monkeypatch):
    """Flash-attention-style kernels get a [B, S] padding mask, which the eager kernel cannot
    add to its scores: refused with the quantizer's name, not computed wrongly."""
    toy = _module_from_source(monkeypatch, "toy_attention_fused", FUSED_SOURCE)
    qruntime.register(toy.FusedAttention, QuantAttention)
    try:
        torch.manual_seed(0)
        x, padding = torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.long)
        kv = qruntime.quantize(toy.FusedAttention(), KV_FP8, lambda m: m(x, padding), lint="off")
        assert kv.k_bmm_quantizer._amax > 0  # the fused kernel's operands are quantized
        with pytest.raises(RuntimeError, match=r"p_bmm_quantizer is enabled.*\(2, 5\)"):
            qruntime.quantize(toy.FusedAttention(), P_FP8, lambda m: m(x, padding), lint="off")
    finally:
        qruntime.unregister(toy.FusedAttention)
