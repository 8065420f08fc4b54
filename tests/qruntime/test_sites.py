"""The site-provider seam (qruntime.sites): providers registered from outside the package add
quantizer sites that ``inventory`` lists, ``apply_plan`` converts and max calibration calibrates;
the provider order decides which provider converts a module two of them claim."""

from dataclasses import replace

import pytest
import qruntime
import torch
import zoo
from qconfig.attributes import QuantizerAttributeConfig as QAC
from qconfig.compile import compile_plan
from qruntime import QuantizerSlot, QuantModule, fake_quant
from qruntime.modules import original_class
from qruntime.sites import (
    Site,
    SiteProvider,
    find_sites,
    providers,
    register_provider,
    unregister_provider,
)
from torch import nn

# -- a toy attention: the quantized tensors are the two matmul inputs, not a weight -------------


class ToyAttention(nn.Module):
    def __init__(self, dim: int = 8):
        super().__init__()
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)

    def attend(self, q, k):
        return torch.softmax(q @ k.transpose(-1, -2), dim=-1)

    def forward(self, x):
        return self.attend(self.q_proj(x), self.k_proj(x))


class QuantToyAttention(QuantModule):
    """Quantizes both operands of ``q @ kᵀ`` where the original forward computes it."""

    @classmethod
    def quantizer_slots(cls, module):
        return [QuantizerSlot("q_bmm_quantizer"), QuantizerSlot("k_bmm_quantizer")]

    def attend(self, q, k):
        return super().attend(self.q_bmm_quantizer(q), self.k_bmm_quantizer(k))


class ToyAttentionProvider:
    name = "toy-attention"

    def sites(self, model, modules):
        return [
            Site(
                name=name,
                module=module,
                class_name="ToyAttention",
                registry_key="ToyAttention",
                quant_cls=QuantToyAttention,
                slots=tuple(QuantToyAttention.quantizer_slots(module)),
                parent_class_keys=("ToyAttention",),
                subclass_of=("ToyAttention",),
            )
            for name, module in modules
            if original_class(module) is ToyAttention
        ]

    def registry_keys(self, model, modules):
        return ["ToyAttention"]


class ToyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 8)
        self.attn = ToyAttention()

    def forward(self, x):
        return self.attn(self.embed(x))


BMM_FP8 = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*bmm_quantizer", "cfg": {"num_bits": [4, 3], "axis": None}},
    ],
    "algorithm": "max",
}


def _model():
    torch.manual_seed(0)
    return ToyNet().eval()


def _batches():
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(2, 5, 8, generator=generator) * (i + 1) for i in range(3)]


@pytest.fixture
def toy_attention():
    provider = ToyAttentionProvider()
    register_provider(provider)
    yield provider
    if provider in providers():
        unregister_provider(provider)


def test_builtin_providers_and_protocol():
    assert [p.name for p in providers()][:5] == [
        "module-types",
        "hf-conv1d",
        "fused-experts",
        "sparse-moe",
        "hf-attention",
    ]
    assert all(isinstance(p, SiteProvider) for p in providers())
    assert isinstance(ToyAttentionProvider(), SiteProvider)


def test_inventory_lists_the_provider_sites_in_module_order(toy_attention):
    with torch.device("meta"):
        model = ToyNet()
    manifest = qruntime.inventory(model)
    names = [m.name for m in manifest.modules]
    assert names == ["embed", "attn", "attn.q_proj", "attn.k_proj"]
    attn = manifest.modules[1]
    assert (attn.class_name, attn.registry_key, attn.parent_class_keys) == (
        "ToyAttention",
        "ToyAttention",
        ["ToyAttention"],
    )
    assert [q.attribute for q in attn.quantizers] == ["q_bmm_quantizer", "k_bmm_quantizer"]
    assert all(q.defaults == QAC(num_bits=8) for q in attn.quantizers)
    assert "ToyAttention" in manifest.registry_keys


def test_plan_configures_and_max_calibrates_the_matmul_inputs(toy_attention):
    model = _model()
    batches = _batches()
    with torch.no_grad():
        q_amax = max(model.attn.q_proj(model.embed(x)).abs().max() for x in batches)
        k_amax = max(model.attn.k_proj(model.embed(x)).abs().max() for x in batches)
    plan = compile_plan(BMM_FP8, qruntime.inventory(model))
    assert plan.quantizers["attn.q_bmm_quantizer"].parent_class == "ToyAttention"

    def loop(m):
        for x in batches:
            m(x)

    qruntime.apply_plan(model, plan, loop)
    attn = model.attn
    assert type(attn).__name__ == "QuantToyAttention" and isinstance(attn, ToyAttention)
    for quantizer, expected in ((attn.q_bmm_quantizer, q_amax), (attn.k_bmm_quantizer, k_amax)):
        assert quantizer.is_enabled and quantizer.num_bits == (4, 3)
        assert torch.equal(quantizer.amax, expected)
    assert not attn.q_proj.input_quantizer.is_enabled
    x = batches[0]
    with torch.no_grad():
        hidden = model.embed(x)
        q = fake_quant(attn.q_proj(hidden), {"num_bits": (4, 3)}, q_amax)
        k = fake_quant(attn.k_proj(hidden), {"num_bits": (4, 3)}, k_amax)
        assert torch.equal(model(x), torch.softmax(q @ k.transpose(-1, -2), dim=-1))


def test_unregistering_the_provider_restores_the_manifest():
    before = qruntime.inventory(_model())
    provider = ToyAttentionProvider()
    register_provider(provider)
    try:
        assert qruntime.inventory(_model()) != before
    finally:
        assert unregister_provider("toy-attention") is provider
    after = qruntime.inventory(_model())
    assert after == before and after.to_json() == before.to_json()
    assert "ToyAttention" not in after.registry_keys


def test_conversion_creates_the_site_slots():
    """The converted module has exactly the quantizers its site (and so the manifest) lists."""

    class QOnly(ToyAttentionProvider):
        name = "q-only"

        def sites(self, model, modules):
            return [replace(s, slots=s.slots[:1]) for s in super().sites(model, modules)]

    register_provider(QOnly())
    try:
        model = _model()
        manifest = qruntime.inventory(model)
        qruntime.apply_plan(model, compile_plan({"quant_cfg": []}, manifest))
    finally:
        unregister_provider("q-only")
    assert hasattr(model.attn, "q_bmm_quantizer") and not hasattr(model.attn, "k_bmm_quantizer")


# -- two providers claiming one module: the earlier one wins -------------------------------------


class LinearClaimer:
    """Claims every nn.Linear under another key (and mixin)."""

    name = "linear-claimer"

    def sites(self, model, modules):
        return [
            Site(
                name=name,
                module=module,
                class_name=type(module).__name__,
                registry_key="Claimed",
                quant_cls=QuantToyInput,
                slots=(QuantizerSlot("claimed_quantizer"),),
            )
            for name, module in modules
            if type(module) is nn.Linear
        ]

    def registry_keys(self, model, modules):
        return ["Claimed"]


class QuantToyInput(QuantModule):
    @classmethod
    def quantizer_slots(cls, module):
        return [QuantizerSlot("claimed_quantizer")]

    def forward(self, x):
        return super().forward(self.claimed_quantizer(x))


def test_first_provider_wins_a_module_two_providers_claim():
    baseline = qruntime.inventory(_model())
    register_provider(LinearClaimer())
    try:
        manifest = qruntime.inventory(_model())  # after the registry: the registry wins
        assert manifest.modules == baseline.modules
        assert "Claimed" in manifest.registry_keys  # keys are still contributed
    finally:
        unregister_provider("linear-claimer")
    register_provider(LinearClaimer(), before="module-types")
    try:
        assert [p.name for p in providers()][:2] == ["linear-claimer", "module-types"]
        model = _model()
        manifest = qruntime.inventory(model)
        assert {m.registry_key for m in manifest.modules} == {"Claimed"}
        plan = compile_plan({"quant_cfg": [{"quantizer_name": "*", "enable": False}]}, manifest)
        qruntime.apply_plan(model, plan)
        assert isinstance(model.embed.claimed_quantizer, qruntime.TensorQuantizer)
        assert not hasattr(model.embed, "weight_quantizer")
        assert [s.name for s in find_sites(model)] == ["embed", "attn.q_proj", "attn.k_proj"]
    finally:
        unregister_provider("linear-claimer")


def test_provider_list_errors(toy_attention):
    with pytest.raises(ValueError, match="already registered"):
        register_provider(ToyAttentionProvider())
    with pytest.raises(KeyError):
        register_provider(LinearClaimer(), before="nope")
    with pytest.raises(KeyError):
        unregister_provider("nope")
    with pytest.raises(TypeError, match="SiteProvider"):
        register_provider(object())  # type: ignore[arg-type]


def test_a_site_outside_the_model_is_an_error():
    class Stray(ToyAttentionProvider):
        name = "stray"

        def sites(self, model, modules):
            return [Site("ghost", nn.Linear(2, 2), "Linear", "Stray", QuantToyInput, slots=())]

    register_provider(Stray())
    try:
        with pytest.raises(ValueError, match=r"'stray'.*'ghost'"):
            qruntime.inventory(_model())
    finally:
        unregister_provider("stray")


# -- a Linear-like module with a transposed weight, through the module-type registry -------------


class Conv1DLike(nn.Module):
    """GPT-2's layout: the weight is stored ``[in, out]`` and the forward is ``x @ W + b``."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf))
        self.bias = nn.Parameter(torch.randn(nf))

    def forward(self, x):
        out = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)
        return out.reshape(*x.shape[:-1], self.nf)


class QuantConv1DLike(QuantModule):
    """Quantized like a Linear: the weight quantizer sees ``[out, in]`` (axis 0 = outputs)."""

    _quantize_weight = False

    @classmethod
    def quantizer_slots(cls, module):
        return [
            QuantizerSlot("input_quantizer", QAC(num_bits=8)),
            QuantizerSlot("output_quantizer", QAC(num_bits=8, enable=False)),
            QuantizerSlot("weight_quantizer", QAC(num_bits=8, axis=0)),
        ]

    @classmethod
    def reported_weight(cls, module):
        shape, dtype = super().reported_weight(module)
        return (None if shape is None else tuple(reversed(shape))), dtype

    @property
    def weight(self):
        weight = self._parameters["weight"]
        if self.__dict__.get("_quantize_weight"):
            return self._modules["weight_quantizer"](weight.T).T
        return weight

    def iter_weights_for_calibration(self):
        yield self._parameters["weight"].T, self._modules["weight_quantizer"]

    def forward(self, x):
        self.__dict__["_quantize_weight"] = True
        try:
            out = super().forward(self._modules["input_quantizer"](x))
        finally:
            self.__dict__["_quantize_weight"] = False
        return self._modules["output_quantizer"](out)


class Conv1DNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_attn = Conv1DLike(12, 4)

    def forward(self, x):
        return self.c_attn(x)


@pytest.fixture
def conv1d_registered():
    qruntime.register(Conv1DLike, QuantConv1DLike, key="Conv1D")
    yield
    qruntime.unregister(Conv1DLike)


def test_transposed_weight_module_through_the_registry(conv1d_registered):
    torch.manual_seed(0)
    model = Conv1DNet().eval()
    manifest = qruntime.inventory(model)
    (site,) = manifest.modules
    assert (site.name, site.registry_key, site.parent_class_keys) == (
        "c_attn",
        "Conv1D",
        ["Conv1D"],
    )
    assert site.weight_shape == [12, 4]  # reported as [out, in], stored as [in, out]
    config = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {
                "parent_class": "Conv1D",
                "quantizer_name": "*weight_quantizer",
                "cfg": {"num_bits": 8, "axis": 0},
            },
            {
                "parent_class": "Conv1D",
                "quantizer_name": "*input_quantizer",
                "cfg": {"num_bits": 8},
            },
        ],
        "algorithm": "max",
    }
    x = torch.randn(3, 4)
    qruntime.apply_plan(model, compile_plan(config, manifest), lambda m: m(x))
    layer = model.c_attn
    weight = layer._parameters["weight"]
    assert weight.shape == (4, 12)  # the parameter is not touched
    assert torch.equal(layer.weight_quantizer.amax, weight.abs().amax(0).reshape(12, 1))
    assert torch.equal(layer.input_quantizer.amax, x.abs().max())
    with torch.no_grad():
        q_x = fake_quant(x, {"num_bits": 8}, layer.input_quantizer.amax)
        q_w = fake_quant(weight.T, {"num_bits": 8, "axis": 0}, layer.weight_quantizer.amax)
        torch.testing.assert_close(model(x), nn.functional.linear(q_x, q_w, layer.bias))


def test_zoo_manifests_do_not_depend_on_provider_walk_order():
    """Sites come back in named_modules order even though providers are asked one by one."""
    model = zoo.build("moe")
    names = [m.name for m in qruntime.inventory(model).modules]
    order = [name for name, _ in model.named_modules()]
    assert names == sorted(names, key=order.index)
