"""inventory(): which modules get quantizers (docs/manifest-and-plan.md), on any device, untouched."""

import pytest
import qruntime
import torch
import zoo
from qconfig.attributes import QuantizerAttributeConfig as QAC
from qruntime import QuantizerSlot, QuantModule, fake_quant
from qruntime.sites.registry import lookup, registered_keys
from torch import nn


def _sites(manifest):
    return {m.name: [q.attribute for q in m.quantizers] for m in manifest.modules}


def test_subclass_rule_and_keys():
    manifest = qruntime.inventory(zoo.build("subclass"))
    modules = {m.name: m for m in manifest.modules}
    assert "own" not in modules  # overrides forward: not converted at all
    sub = modules["sub"]
    assert (sub.class_name, sub.registry_key, sub.parent_class_keys) == (
        "MyLinear",
        "nn.Linear",
        [],
    )
    assert sub.subclass_of == ["nn.Linear"]
    assert modules["lm_head"].parent_class_keys == ["nn.Linear"]
    assert modules["mlp.0"].weight_shape == [32, 8] and modules["mlp.0"].weight_dtype == "float32"
    assert "mlp.1" not in modules  # ReLU is not registered
    assert len([k for k in manifest.registry_keys if k.startswith("nn.")]) == 28


def test_module_defaults_and_order():
    manifest = qruntime.inventory(zoo.build("subclass"))
    modules = {m.name: m for m in manifest.modules}
    linear = {q.attribute: q for q in modules["lm_head"].quantizers}
    assert list(linear) == ["input_quantizer", "output_quantizer", "weight_quantizer"]
    assert linear["input_quantizer"].defaults == QAC(num_bits=8)
    assert linear["output_quantizer"].defaults == QAC(num_bits=8, enable=False)
    assert linear["weight_quantizer"].defaults == QAC(num_bits=8, axis=0)
    emb = {q.attribute: q for q in modules["emb"].quantizers}
    assert list(emb) == ["weight_quantizer", "input_quantizer", "output_quantizer"]
    assert emb["weight_quantizer"].defaults.axis is None
    assert emb["input_quantizer"].hard_disabled and not emb["input_quantizer"].defaults.enable
    assert _sites(manifest)["features.bn"] == ["input_quantizer", "output_quantizer"]


def test_lstm_names_per_parameter_and_layer():
    lstm = nn.LSTM(4, 8, num_layers=2, bidirectional=True, proj_size=2)
    names = _sites(qruntime.inventory(lstm))[""]
    weights = [n for n in names if n.endswith("weight_quantizer")]
    inputs = [n for n in names if n.endswith("input_quantizer")]
    assert len(weights) == 12 and len(inputs) == 16  # as Model Optimizer 0.47.0 converts it
    assert weights[:3] == [
        "weight_ih_l0_weight_quantizer",
        "weight_hh_l0_weight_quantizer",
        "weight_hr_l0_weight_quantizer",
    ]
    assert inputs[:4] == [
        "layer_0_input_quantizer",
        "proj_0_input_quantizer",
        "layer_0_reverse_input_quantizer",
        "proj_0_reverse_input_quantizer",
    ]


def test_meta_device_and_no_changes():
    with torch.device("meta"):
        model = zoo.LlamaLike()
    manifest = qruntime.inventory(model, "llama")
    assert manifest.model == "llama"
    assert len(manifest.quantizer_names()) == 48
    assert all(type(m).__module__.startswith(("torch", "zoo")) for m in model.modules())


def test_converted_model_reports_its_original_sites():
    model = zoo.build("llama")
    fresh = qruntime.inventory(model).model_dump()
    qruntime.quantize(model, {"quant_cfg": [{"quantizer_name": "*", "enable": False}]})
    assert type(model.lm_head).__name__ == "QuantLinear"
    assert qruntime.inventory(model).model_dump() == fresh


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return x * self.weight


class QuantScale(QuantModule):
    @classmethod
    def quantizer_slots(cls, module):
        return [
            QuantizerSlot("input_quantizer"),
            QuantizerSlot("weight_quantizer", QAC(num_bits=4)),
        ]

    def forward(self, x):
        return self.input_quantizer(x) * self.weight_quantizer(self.weight)


@pytest.fixture
def scale_registered():
    qruntime.register(Scale, QuantScale)
    yield
    qruntime.unregister(Scale)


def test_user_registration(scale_registered):
    model = nn.Sequential(nn.Linear(4, 4), Scale())
    manifest = qruntime.inventory(model)
    site = manifest.modules[1]
    assert (site.name, site.registry_key, site.parent_class_keys) == ("1", "Scale", ["Scale"])
    assert [q.defaults.num_bits for q in site.quantizers] == [8, 4]
    assert "Scale" in manifest.registry_keys
    config = {"quant_cfg": [{"quantizer_name": "*", "cfg": {"num_bits": 8}}], "algorithm": "max"}
    qruntime.quantize(model, config)  # no forward loop: weights only
    assert torch.equal(model[1].weight_quantizer._amax, torch.tensor(1.0))
    assert model[1].input_quantizer.amax is None
    x = torch.randn(2, 4)
    hidden = model[0](x)
    expected = fake_quant(hidden, {"num_bits": 8}) * fake_quant(
        model[1].weight, {"num_bits": 8}, torch.tensor(1.0)
    )
    assert torch.equal(model(x), expected)


def test_registry_errors(scale_registered):
    with pytest.raises(ValueError, match="already used"):
        qruntime.register(nn.ReLU, QuantScale, key="Scale")
    with pytest.raises(TypeError, match="QuantModule"):
        qruntime.register(nn.ReLU, nn.Module)
    with pytest.raises(KeyError):
        qruntime.unregister(nn.GELU)
    assert lookup(nn.GELU) is None and "GELU" not in registered_keys()
