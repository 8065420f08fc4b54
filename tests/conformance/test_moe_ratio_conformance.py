"""``moe_calib_experts_ratio`` against Model Optimizer 0.47.0 (with transformers 5 installed).

A sparse MoE block whose router (``gate``) carries ``top_k`` and ``num_experts`` — the layout of
Hugging Face routers in transformers 5 — is calibrated with every expert input quantizer on and
the ratio set: each calibration batch runs once routed to ``round(ratio * num_experts)``
experts (output discarded) and once normally, the experts keep their own input amax (no
sharing), and the block counts the tokens each expert got in the widened pass. Amaxes and outputs must equal
Model Optimizer's, the token counts the counts derived from the router; without the ratio,
experts share their amax.
"""

import copy
import warnings

import modelopt.torch.quantization as mtq
import pytest
import qruntime
import torch
from torch import nn

HIDDEN, EXPERTS = 8, 6


class Router(nn.Module):
    def __init__(self):
        super().__init__()
        self.top_k = 1
        self.num_experts = EXPERTS
        self.proj = nn.Linear(HIDDEN, EXPERTS, bias=False)

    def forward(self, x):
        return self.proj(x)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = Router()
        self.experts = nn.ModuleList(nn.Linear(HIDDEN, HIDDEN) for _ in range(EXPERTS))

    def forward(self, x):
        tokens = x.reshape(-1, HIDDEN)
        weights, chosen = torch.softmax(self.gate(tokens), -1).topk(self.gate.top_k, dim=-1)
        out = torch.zeros_like(tokens)
        for index, expert in enumerate(self.experts):
            rows, slot = torch.nonzero(chosen == index, as_tuple=True)
            if rows.numel():  # an expert sees only the tokens routed to it
                out[rows] += weights[rows, slot, None] * expert(tokens[rows])
        return out.reshape(x.shape)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(Block(), nn.Linear(HIDDEN, 4))


DATA = [torch.randn(2, 5, HIDDEN, generator=torch.Generator().manual_seed(s)) for s in range(3)]


def _loop(model):
    for x in DATA:
        model(x)


def _config(ratio):
    algorithm = (
        {"method": "max"} if ratio is None else {"method": "max", "moe_calib_experts_ratio": ratio}
    )
    return {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*experts*input_quantizer", "cfg": {"num_bits": 8}},
            {"quantizer_name": "*experts*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        ],
        "algorithm": algorithm,
    }


def _routed(model, x, top_k):
    """Tokens per expert when the float router picks ``top_k`` experts per token."""
    with torch.no_grad():
        chosen = model[0].gate(x.reshape(-1, HIDDEN)).topk(top_k, dim=-1).indices
    return torch.bincount(chosen.reshape(-1), minlength=EXPERTS)


def _amaxes(model):
    return {k: v for k, v in model.state_dict().items() if k.endswith("_amax")}


@pytest.mark.parametrize("ratio", [None, 0.34, 0.5, 1.0])
def test_ratio_matches_modelopt(ratio):
    model = _model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = mtq.quantize(copy.deepcopy(model), _config(ratio), _loop)
    ours = qruntime.quantize(copy.deepcopy(model), _config(ratio), _loop)
    theirs, mine = _amaxes(ref), _amaxes(ours)
    assert list(mine) == list(theirs)
    for key, value in theirs.items():
        assert torch.equal(mine[key], value), key
    inputs = [theirs[k] for k in theirs if "input_quantizer" in k]
    shared = all(torch.equal(a, inputs[0]) for a in inputs)
    if ratio is None:
        assert shared  # experts share the max of their amaxes
    elif ratio < 1.0:
        assert not shared  # each expert keeps the amax of the tokens it saw
    with torch.no_grad():
        x = torch.randn(3, 4, HIDDEN)
        assert torch.equal(ours(x), ref(x))
    counts = getattr(ref[0], "expert_token_count", None)
    if ratio is not None and ratio < 1.0:
        per_batch = [_routed(model, x, round(ratio * EXPERTS)) for x in DATA]
        assert torch.equal(ours[0].expert_token_count, sum(per_batch))
        # Model Optimizer installs its counter during the first batch and misses that batch
        # (docs/differences.md)
        assert torch.equal(counts, sum(per_batch[1:]))
    else:
        assert not hasattr(ours[0], "expert_token_count")
    assert "forward" not in ours[0].__dict__  # the block has its own forward back
