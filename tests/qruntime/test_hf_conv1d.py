"""GPT-2's ``Conv1D`` converted as a quantized linear (qruntime.modules.conv1d, sites/conv1d).

The truths: the unconverted GPT-2 (outputs), the weight itself (transpose, amax per output
column), the model's own Parameter objects (rollback, tied embeddings), and a fresh GPT-2
restored from a state file.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import qruntime
import torch
import torch.nn.functional as F
from calibration_cases import loop_failing_on_pass
from qruntime.modules import is_converted
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

PROJECTIONS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
IDS = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(3))

ALL_OFF = {"quant_cfg": [{"quantizer_name": "*", "enable": False}], "algorithm": None}
INT8_W_AXIS0 = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8, "axis": None}},
    ],
    "algorithm": "max",
}


def gpt2() -> GPT2LMHeadModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = GPT2Config(
            n_embd=32, n_layer=2, n_head=4, vocab_size=128, bos_token_id=0, eos_token_id=0
        )
        torch.manual_seed(0)
        return GPT2LMHeadModel(config).eval()


def loop(model):
    with torch.no_grad():
        model(IDS)


def conv1d_sites(manifest):
    return [m for m in manifest.modules if m.class_name == "Conv1D"]


def test_inventory_reports_conv1d_as_a_linear_on_meta_and_after_conversion():
    model = gpt2()
    with torch.device("meta"):
        meta = gpt2()
    before = qruntime.inventory(model).model_dump()
    assert qruntime.inventory(meta).model_dump() == before
    sites = conv1d_sites(qruntime.inventory(model))
    assert len(sites) == 8
    c_attn = next(s for s in sites if s.name.endswith("h.0.attn.c_attn"))
    assert c_attn.weight_shape == [96, 32]  # [out, in]; stored [32, 96]
    assert c_attn.registry_key == "nn.Linear"
    assert c_attn.parent_class_keys == ["nn.Linear", "Conv1D"]
    assert [q.attribute for q in c_attn.quantizers] == [
        "input_quantizer",
        "output_quantizer",
        "weight_quantizer",
    ]
    assert "Conv1D" in qruntime.inventory(model).registry_keys
    qruntime.quantize(model, ALL_OFF)
    assert tuple(model.transformer.h[0].attn.c_attn.weight.shape) == (96, 32)
    assert qruntime.inventory(model).model_dump() == before


def test_conversion_transposes_into_a_new_parameter_and_keeps_the_tie():
    model = gpt2()
    c_attn = model.transformer.h[0].attn.c_attn
    original = c_attn.weight
    values = original.detach().clone()
    model.transformer.h[1].attn.c_attn.weight.requires_grad_(False)
    qruntime.quantize(model, ALL_OFF)
    assert c_attn.weight.requires_grad
    assert not model.transformer.h[1].attn.c_attn.weight.requires_grad  # kept (MO: True)
    assert isinstance(c_attn, Conv1D) and is_converted(c_attn)
    assert c_attn.weight is not original
    assert torch.equal(c_attn.weight, values.T)
    assert c_attn.weight.is_contiguous()
    assert (c_attn.in_features, c_attn.out_features) == (32, 96)
    assert model.state_dict()["transformer.h.0.attn.c_attn.weight"].shape == (96, 32)
    assert torch.equal(original, values)  # the old Parameter is left as it was
    assert model.lm_head.weight is model.transformer.wte.weight


def test_everything_disabled_equals_the_unconverted_model():
    model = gpt2()
    with torch.no_grad():
        expected = model(IDS).logits
        qruntime.quantize(model, ALL_OFF)
        got = model(IDS).logits
    # F.linear and Conv1D's addmm are different kernels: equal up to rounding, not bitwise
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_weight_amax_is_the_max_of_each_output_column_of_the_stored_weight():
    model = gpt2()
    stored = model.transformer.h[1].mlp.c_fc.weight.detach().clone()  # [in 32, out 128]
    qruntime.quantize(model, INT8_W_AXIS0, loop)
    amax = model.transformer.h[1].mlp.c_fc.weight_quantizer.amax
    assert amax.shape == (128, 1)
    assert torch.equal(amax.flatten(), stored.abs().amax(dim=0))


def test_the_forward_is_the_quantized_linear_of_the_transposed_weight():
    model = gpt2()
    qruntime.quantize(model, INT8_W_AXIS0, loop)
    c_fc = model.transformer.h[0].mlp.c_fc
    x = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = F.linear(c_fc.input_quantizer(x), c_fc.weight_quantizer(c_fc.weight), c_fc.bias)
        assert torch.equal(c_fc(x), expected)
        assert not torch.equal(c_fc(x), F.linear(x, c_fc.weight, c_fc.bias))


def test_parent_class_conv1d_selects_the_conv1d_modules_only():
    model = gpt2()
    cfg = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"parent_class": "Conv1D", "quantizer_name": "*weight_quantizer", "enable": True},
        ],
        "algorithm": None,
    }
    plan = qruntime.compile_for(model, cfg)
    enabled = {n for n, q in plan.quantizers.items() if q.enable}
    assert enabled == {
        f"transformer.h.{i}.{p}.weight_quantizer" for i in (0, 1) for p in PROJECTIONS
    }
    assert {plan.quantizers[n].parent_class for n in enabled} == {"nn.Linear"}


def test_failing_calibration_restores_the_original_parameters_and_classes():
    model = gpt2()
    before = copy.deepcopy(model.state_dict())
    c_attn = model.transformer.h[0].attn.c_attn
    weight, attrs = c_attn.weight, dict(vars(c_attn))
    failing = loop_failing_on_pass(1, loop)
    with pytest.raises(RuntimeError, match="data source went away"):
        qruntime.quantize(model, INT8_W_AXIS0, failing)
    assert type(c_attn) is Conv1D
    assert c_attn.weight is weight and tuple(weight.shape) == (32, 96)
    assert vars(c_attn).keys() == attrs.keys()
    assert "in_features" not in vars(c_attn)
    assert list(model.state_dict()) == list(before)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


SMOOTHED = {**INT8_W_AXIS0, "algorithm": {"method": "smoothquant", "alpha": 0.5}}
AWQ = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 4, "block_sizes": {-1: 16}}},
    ],
    "algorithm": "awq_lite",
}


@pytest.mark.parametrize(
    "config", [INT8_W_AXIS0, SMOOTHED, AWQ], ids=["max", "smoothquant", "awq_lite"]
)
def test_state_file_round_trip_onto_a_fresh_model(tmp_path, config):
    """Weight-writing algorithms store the rewritten [out, in] weights; restoring them onto a
    fresh GPT-2 (whose Conv1D weights are still [in, out]) writes into the transposed
    parameter conversion creates."""
    model = qruntime.quantize(gpt2(), config, loop)
    path = tmp_path / "gpt2.qstate"
    qruntime.save_state(model, path)
    fresh = qruntime.restore_state(gpt2(), path)
    assert list(fresh.state_dict()) == list(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    with torch.no_grad():
        assert torch.equal(fresh(IDS).logits, model(IDS).logits)


class _OwnForward(Conv1D):
    def forward(self, x):
        return super().forward(x) * 2


class _SameForward(Conv1D):
    pass


def test_subclasses_follow_the_registry_rule():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.same = _SameForward(8, 4)
            self.own = _OwnForward(8, 4)

    sites = {m.name: m for m in qruntime.inventory(Net()).modules}
    assert set(sites) == {"same"}
    assert sites["same"].parent_class_keys == ["nn.Linear"]
    assert sites["same"].subclass_of == ["Conv1D"]
