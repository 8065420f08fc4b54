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


class RoutedBlock(nn.Module):
    """``top_k`` on the block (the transformers 4 layout); experts see only their tokens."""

    def __init__(self, experts=4):
        super().__init__()
        self.top_k = 1
        self.gate = nn.Linear(8, experts, bias=False)
        self.experts = nn.ModuleList(nn.Linear(8, 8) for _ in range(experts))

    def forward(self, x):
        chosen = self.gate(x).topk(self.top_k, dim=-1).indices
        out = torch.zeros_like(x)
        for index, expert in enumerate(self.experts):
            rows = (chosen == index).any(-1)
            if rows.any():
                out[rows] += expert(x[rows])
        return out


@pytest.mark.parametrize("ratio", [0.5, 1.0])
def test_ratio_routes_calibration_tokens_to_more_experts(plugin, ratio):
    """Each expert's input amax is the max over the tokens a router with ``top_k`` raised to
    ``round(ratio * experts)`` sends it (derived here from the float router), not shared.
    (Model Optimizer 0.47.0 with transformers 5 asserts that ``top_k`` is on a router:
    docs/differences.md; the router layout is compared with it in
    tests/conformance/test_moe_ratio_conformance.py.)"""
    torch.manual_seed(0)
    model = nn.Sequential(RoutedBlock())
    x = torch.randn(64, 8)
    config = {**CONFIG, "algorithm": {"method": "max", "moe_calib_experts_ratio": ratio}}
    if not plugin:
        with pytest.warns(UserWarning, match=f"moe_calib_experts_ratio={ratio} has no effect"):
            qruntime.quantize(model, config, lambda m: m(x))
        return
    with torch.no_grad():
        chosen = model[0].gate(x).topk(round(ratio * 4), dim=-1).indices
    model = qruntime.quantize(model, config, lambda m: m(x))
    block = model[0]
    for index, expert in enumerate(block.experts):
        expected = x[(chosen == index).any(-1)].abs().amax()
        assert torch.equal(expert.input_quantizer._amax, expected), index
    assert "forward" not in block.__dict__
    if ratio < 1.0:
        assert len({float(e.input_quantizer._amax) for e in block.experts}) > 1  # not shared
        assert torch.equal(
            block.expert_token_count, torch.bincount(chosen.reshape(-1), minlength=4)
        )
    assert model[0].top_k == 1


def test_ratio_blocks_get_their_forward_back_on_failure(plugin):
    model = zoo.build("moe")
    block = model.model.layers[0].mlp
    config = {**CONFIG, "algorithm": {"method": "max", "moe_calib_experts_ratio": 0.5}}

    def failing(m):
        _loop(m)
        raise RuntimeError("loop failed")

    with pytest.raises(RuntimeError, match="loop failed"):
        qruntime.quantize(model, config, failing)
    assert "forward" not in block.__dict__
    assert not hasattr(block, "expert_token_count")
    assert type(model.lm_head) is nn.Linear
