"""Sparse MoE blocks: Model Optimizer's structural rule and the ``hf.<Class>`` key
(qruntime.sites.moe), and the expert input-amax sync after max calibration (docs/differences.md)."""

import pytest
import qruntime
import torch
import zoo
from qruntime.sites import moe
from torch import nn

CONFIG = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*experts*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        {"quantizer_name": "*experts*input_quantizer", "cfg": {"num_bits": 8}},
    ],
    "algorithm": "max",
}


def _loop(model):
    model(*zoo.example_inputs("moe"))


class Gate(nn.Linear):
    top_k = 2
    num_experts = 2


class RouterBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = Gate(4, 2)
        self.experts = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])


class NoRouting(nn.Module):
    def __init__(self):
        super().__init__()
        self.experts = nn.ModuleList([nn.Linear(4, 4)])


def test_structural_rule():
    assert moe.is_sparse_moe_block(zoo.SparseMoe())  # top_k on the block, experts with a length
    assert moe.is_sparse_moe_block(RouterBlock())  # gate with top_k and num_experts
    assert not moe.is_sparse_moe_block(NoRouting())
    assert not moe.is_sparse_moe_block(zoo.FusedMoENet())
    block = zoo.SparseMoe()
    moe.is_sparse_moe_block(block)
    assert not hasattr(block, "num_experts")  # Model Optimizer sets it; we do not touch models


@pytest.fixture(params=[True, False], ids=["transformers", "no-transformers"])
def plugin(request, monkeypatch):
    monkeypatch.setattr(moe, "moe_plugin_active", lambda: request.param)
    return request.param


def test_experts_share_their_input_amax_only_when_modelopt_would(plugin):
    model = qruntime.quantize(zoo.build("moe"), CONFIG, _loop)
    experts = model.model.layers[0].mlp.experts
    amaxes = [e.down_proj.input_quantizer._amax for e in experts]
    weights = [e.down_proj.weight_quantizer._amax for e in experts]
    assert all(a.shape == () for a in amaxes)
    if plugin:
        assert all(torch.equal(a, max(amaxes)) for a in amaxes)
    else:
        assert len({float(a) for a in amaxes}) > 1
    assert not all(torch.equal(w, weights[0]) for w in weights)  # weights stay per expert
    keys = qruntime.inventory(zoo.build("moe")).registry_keys
    assert ("hf.SparseMoe" in keys) == plugin


def test_weight_amax_is_shared_on_request(plugin):
    config = {**CONFIG, "algorithm": {"method": "max", "sync_expert_weight_amax": True}}
    model = qruntime.quantize(zoo.build("moe"), config, _loop)
    weights = [e.down_proj.weight_quantizer._amax for e in model.model.layers[0].mlp.experts]
    assert all(torch.equal(w, weights[0]) for w in weights) == plugin


def test_forcing_tokens_to_more_experts_is_refused():
    model = zoo.build("moe")
    config = {**CONFIG, "algorithm": {"method": "max", "moe_calib_experts_ratio": 1.0}}
    with pytest.raises(qruntime.UnsupportedAlgorithmError, match="moe_calib_experts_ratio"):
        qruntime.quantize(model, config, _loop)
    assert type(model.lm_head) is nn.Linear
