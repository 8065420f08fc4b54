"""Fused MoE experts (qruntime.modules.fused_experts, sites/fused_experts).

The truths: the experts' weights and routing (amax by hand), the quantizers applied by hand to
each expert's slice (the quantized forward), the model's configuration and ``F.linear`` (left as
they were), and the compiled plans' names.
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
from torch import nn
from transformers import MixtralConfig, MixtralForCausalLM
from transformers.models.mixtral.modeling_mixtral import MixtralExperts

E, H, INTER = 4, 16, 8  # experts, hidden, intermediate

INT8 = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8, "axis": None}},
    ],
    "algorithm": "max",
}


def experts() -> MixtralExperts:
    """A standalone MixtralExperts (no Hugging Face root model around it)."""
    config = MixtralConfig(hidden_size=H, intermediate_size=INTER, num_local_experts=E)
    module = MixtralExperts(config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        module.gate_up_proj.copy_(torch.randn(E, 2 * INTER, H, generator=gen))
        module.down_proj.copy_(torch.randn(E, H, INTER, generator=gen))
    return module.eval()


def routing(tokens: int, chosen: tuple[int, ...], seed: int = 1):
    """Hidden states and a top-2 routing that only ever picks experts in ``chosen``."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(tokens, H, generator=gen) * 3
    index = torch.stack(
        [
            torch.tensor(chosen)[torch.randperm(len(chosen), generator=gen)[:2]]
            for _ in range(tokens)
        ]
    )
    weights = torch.rand(tokens, 2, generator=gen)
    return hidden, index, weights


class Experts(nn.Module):
    """A non-Hugging-Face fused experts module: every expert on every token."""

    def __init__(self, gated: bool = True):
        super().__init__()
        self.num_experts = 3
        gen = torch.Generator().manual_seed(5)
        first = "gate_up_proj" if gated else "up_proj"
        rows = 2 * INTER if gated else INTER
        self.register_parameter(first, nn.Parameter(torch.randn(3, rows, H, generator=gen)))
        self.down_proj = nn.Parameter(torch.randn(3, H, INTER, generator=gen))
        self.first = first

    def forward(self, x):
        out = 0
        for e in range(self.num_experts):
            h = F.linear(x, getattr(self, self.first)[e])
            if self.first == "gate_up_proj":
                g, u = h.chunk(2, dim=-1)
                h = F.silu(g) * u
            out = out + F.linear(h, self.down_proj[e])
        return out


class CopiesItsWeights(Experts):
    def forward(self, x):
        return F.linear(x, self.gate_up_proj[0].clone()).sum()


def tiny_mixtral() -> MixtralForCausalLM:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = MixtralConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            num_local_experts=E,
            num_experts_per_tok=2,
        )
        torch.manual_seed(0)
        return MixtralForCausalLM(config).eval()


def test_sites_slots_and_keys_as_model_optimizer_creates_them():
    manifest = qruntime.inventory(experts())
    (site,) = manifest.modules
    assert (site.name, site.class_name, site.registry_key) == (
        "",
        "MixtralExperts",
        "hf.MixtralExperts",
    )
    assert site.parent_class_keys == ["hf.MixtralExperts"]
    assert [q.attribute for q in site.quantizers] == [
        "gate_up_proj_input_quantizer",
        *(f"gate_up_proj_weight_quantizers.{e}" for e in range(E)),
        "down_proj_input_quantizer",
        *(f"down_proj_weight_quantizers.{e}" for e in range(E)),
    ]
    assert "hf.MixtralExperts" in manifest.registry_keys
    with torch.device("meta"):
        meta = MixtralExperts(
            MixtralConfig(hidden_size=H, intermediate_size=INTER, num_local_experts=E)
        )
    assert qruntime.inventory(meta).model_dump() == manifest.model_dump()
    module = experts()
    qruntime.quantize(module, INT8, lambda m: m(*routing(4, chosen=(0, 1))))
    assert qruntime.inventory(module).model_dump() == manifest.model_dump()


def test_structural_detection_gated_non_gated_and_not_experts():
    non_gated = qruntime.inventory(Experts(gated=False)).modules[0]
    assert non_gated.registry_key == "hf.Experts"
    assert [q.attribute for q in non_gated.quantizers][:2] == [
        "up_proj_input_quantizer",
        "up_proj_weight_quantizers.0",
    ]
    with_gate = Experts(gated=False)
    with_gate.gate_proj = nn.Parameter(torch.zeros(3, INTER, H))
    no_count = Experts()
    del no_count.num_experts
    assert qruntime.inventory(with_gate).modules == []
    assert qruntime.inventory(no_count).modules == []


def test_max_calibration_weights_of_every_expert_inputs_of_routed_calls():
    module = experts()
    hidden, index, weights = routing(12, chosen=(0, 1))
    qruntime.quantize(module, INT8, lambda m: m(hidden, index, weights))
    for e in range(E):  # experts 2 and 3 received no token: amax from their own slice
        for name, param in (("gate_up_proj", module.gate_up_proj), ("down_proj", module.down_proj)):
            amax = getattr(module, f"{name}_weight_quantizers")[e].amax
            assert torch.equal(amax.flatten(), param[e].detach().abs().amax(dim=1)), (name, e)
    assert torch.equal(module.gate_up_proj_input_quantizer.amax, hidden.abs().max())
    expected_down = max(
        (F.silu(g) * u).abs().max()
        for e in (0, 1)
        for g, u in [F.linear(hidden[(index == e).any(1)], module.gate_up_proj[e]).chunk(2, -1)]
    )
    assert torch.equal(module.down_proj_input_quantizer.amax, expected_down.detach())


def test_each_expert_call_is_quantized_with_its_own_weight_quantizer():
    module = experts()
    hidden, index, weights = routing(10, chosen=(0, 1, 2, 3))
    qruntime.quantize(module, INT8, lambda m: m(hidden, index, weights))
    expected = torch.zeros_like(hidden)
    with torch.no_grad():
        for e in range(E):
            pos, tok = torch.where((index == e).T)
            x = module.gate_up_proj_input_quantizer(hidden[tok])
            w = module.gate_up_proj_weight_quantizers[e](module.gate_up_proj[e])
            g, u = F.linear(x, w).chunk(2, dim=-1)
            h = module.down_proj_input_quantizer(F.silu(g) * u)
            w = module.down_proj_weight_quantizers[e](module.down_proj[e])
            expected.index_add_(0, tok, F.linear(h, w) * weights[tok, pos, None])
        got = module(hidden, index, weights)
    assert torch.equal(got, expected)
    with torch.no_grad():
        assert not torch.equal(got, MixtralExperts.forward(experts(), hidden, index, weights))


def test_config_is_left_alone_and_the_backend_cannot_bypass_quantization():
    model = tiny_mixtral()
    backend = model.config._experts_implementation
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = model(ids).logits
    qruntime.quantize(model, INT8, lambda m: m(ids))
    assert model.config._experts_implementation == backend
    with torch.no_grad():
        quantized = model(ids).logits
        model.config._experts_implementation = "batched_mm"
        assert torch.equal(model(ids).logits, quantized)
    assert not torch.equal(quantized, plain)


def test_an_error_in_the_forward_leaves_no_patch_behind():
    module = Experts()
    qruntime.quantize(module, INT8, lambda m: m(torch.randn(2, H)))
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        module(torch.randn(2, H + 1))
    assert F.linear is torch._C._nn.linear
    assert not torch.overrides.has_torch_function_variadic(torch.zeros(1), torch.zeros(1))
    assert torch._C._len_torch_function_stack() == 0


def test_a_forward_that_copies_expert_weights_is_refused():
    module = CopiesItsWeights()
    with pytest.raises(RuntimeError, match=r"never passed one to F\.linear"):
        qruntime.quantize(module, INT8, lambda m: m(torch.randn(2, H)))
    assert not is_converted(module)


def test_failing_calibration_restores_the_experts_module():
    module = experts()
    before = copy.deepcopy(module.state_dict())
    attrs = dict(vars(module))
    hidden, index, weights = routing(6, chosen=(0, 2))
    failing = loop_failing_on_pass(1, lambda m: m(hidden, index, weights))
    with pytest.raises(RuntimeError, match="data source went away"):
        qruntime.quantize(module, INT8, failing)
    assert type(module) is MixtralExperts
    assert vars(module).keys() == attrs.keys()
    assert list(module.state_dict()) == list(before)


def test_names_normalize_per_expert_and_parent_class_reaches_shared_inputs_only():
    module = experts()
    one = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*gate_up_proj_weight_quantizers.1", "cfg": {"num_bits": 4}},
            {"quantizer_name": "*down_proj_weight_quantizer", "cfg": {"num_bits": 8}},
        ],
        "algorithm": None,
    }
    plan = qruntime.compile_for(module, one)
    enabled = {n for n, q in plan.quantizers.items() if q.enable}
    assert enabled == {"gate_up_proj_weight_quantizers.1"} | {
        f"down_proj_weight_quantizers.{e}" for e in range(E)
    }
    by_parent = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"parent_class": "hf.MixtralExperts", "quantizer_name": "*", "cfg": {"num_bits": 8}},
        ],
        "algorithm": None,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = qruntime.compile_for(module, by_parent, weight_check=False)
    enabled = {n for n, q in plan.quantizers.items() if q.enable}
    assert enabled == {"gate_up_proj_input_quantizer", "down_proj_input_quantizer"}


def test_moe_calib_experts_ratio_on_fused_experts_warns_and_changes_nothing():
    """Model Optimizer ignores the ratio on fused experts without a word (the block holding them
    is not a sequential MoE block); qruntime says so and calibrates as without it."""
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(2))
    plain = qruntime.quantize(tiny_mixtral(), INT8, lambda m: m(ids))
    cfg = {**INT8, "algorithm": {"method": "max", "moe_calib_experts_ratio": 1.0}}
    with pytest.warns(UserWarning, match="moe_calib_experts_ratio=1.0 has no effect"):
        ratio = qruntime.quantize(tiny_mixtral(), cfg, lambda m: m(ids))
    assert list(ratio.state_dict()) == list(plain.state_dict())
    for key, value in plain.state_dict().items():
        assert torch.equal(ratio.state_dict()[key], value), key
