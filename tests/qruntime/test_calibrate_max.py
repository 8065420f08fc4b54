"""max calibration: amax shapes per axis/block, weights from the tensor,
activations from the forward loop, no data → dynamic, static blocks finalized."""

import pytest
import qruntime
import torch
import zoo
from calibration_cases import BUILTIN_METHODS
from calibration_cases import batch as _data
from calibration_cases import two_batches as _loop
from calibration_cases import weight_input_config as _config
from qruntime.sites.registry import registrations
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(40, 16)
        self.fc2 = nn.Linear(16, 8)
        self.dead = nn.Linear(8, 8)  # never called

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_amax_shapes_per_axis_and_activation_running_max():
    model = qruntime.quantize(Net(), _config({"num_bits": 8, "axis": 0}, {"num_bits": 8}), _loop)
    fc1 = model.fc1
    assert fc1.weight_quantizer._amax.shape == (16, 1)
    assert torch.equal(fc1.weight_quantizer._amax, fc1.weight.abs().amax(1, keepdim=True))
    expected = torch.maximum(_data(0).abs().max(), _data(1).abs().max())
    assert torch.equal(fc1.input_quantizer._amax, expected)
    assert fc1.input_quantizer._amax.shape == ()


def test_module_without_data_keeps_a_dynamic_input_but_a_calibrated_weight():
    model = qruntime.quantize(Net(), _config({"num_bits": 8, "axis": 0}, {"num_bits": 8}), _loop)
    assert model.dead.input_quantizer.amax is None  # no data: stays dynamic
    assert model.dead.weight_quantizer.amax is not None


def test_no_forward_loop_calibrates_weights_only():
    model = qruntime.quantize(Net(), _config({"num_bits": 8, "axis": 0}, {"num_bits": 8}))
    assert model.fc1.weight_quantizer.amax is not None
    assert model.fc1.input_quantizer.amax is None


def test_static_blocks_with_padding_are_kept_in_float32():
    cfg = {"num_bits": 4, "block_sizes": {-1: 16, "type": "static"}}
    model = Net().to(torch.bfloat16)
    qruntime.quantize(model, _config(cfg, {"num_bits": 8}), lambda m: m(_data(0).bfloat16()))
    weight_q = model.fc1.weight_quantizer
    assert weight_q._amax.shape == (16 * 3, 1)  # 40 columns padded to 48
    assert weight_q._amax.dtype == torch.float32  # promoted static block
    assert weight_q.axis == (0,)
    assert model.fc1.input_quantizer._amax.dtype == torch.bfloat16  # activation: input dtype


def test_two_dimensional_blocks():
    cfg = {"num_bits": (4, 3), "block_sizes": {-1: 8, -2: 8}}
    model = qruntime.quantize(Net(), _config(cfg), _loop)
    assert model.fc1.weight_quantizer._amax.shape == (2, 1, 5, 1)
    assert model.fc1.weight_quantizer._amax.dtype == torch.float32


def test_dynamic_and_constant_amax_quantizers_are_not_calibrated():
    config = _config({"num_bits": 8, "axis": 0}, {"num_bits": (4, 3), "use_constant_amax": True})
    config["quant_cfg"].append(
        {"quantizer_name": "fc2.input_quantizer", "cfg": {"num_bits": 8, "type": "dynamic"}}
    )
    config["quant_cfg"].append(
        {
            "quantizer_name": "dead.input_quantizer",
            "cfg": {"num_bits": (4, 3), "constant_amax": 2.0},
        }
    )
    model = qruntime.quantize(Net(), config, _loop)
    assert "_amax" not in model.fc1.input_quantizer._buffers
    assert "_amax" not in model.fc2.input_quantizer._buffers
    assert torch.equal(model.dead.input_quantizer._amax, torch.tensor(2.0))
    assert all(q._if_quant and not q._if_calib for q in model.modules() if hasattr(q, "_if_calib"))


def test_skip_forward_without_activation_calibration():
    calls = []
    algorithm = {"method": "max", "skip_forward_without_activation_calib": True}
    dynamic_inputs = _config({"num_bits": 8}, {"num_bits": 8, "type": "dynamic"}, algorithm)
    qruntime.quantize(Net(), dynamic_inputs, calls.append)
    assert calls == []
    qruntime.quantize(Net(), _config({"num_bits": 8}, {"num_bits": 8}, algorithm), calls.append)
    assert len(calls) == 1


def test_calibration_runs_in_eval_mode_without_grad_and_restores_flags():
    model = Net().train()
    model.fc2.eval()
    seen = []

    def loop(m):
        seen.append((m.training, m.fc1.training, torch.is_grad_enabled()))
        m(_data(0))

    qruntime.quantize(model, _config({"num_bits": 8}, {"num_bits": 8}), loop)
    assert seen == [(False, False, False)]
    assert model.training and model.fc1.training and not model.fc2.training


def test_nvfp4_static_global_amax_is_shared_by_qkv_siblings():
    cfg = {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3)}}
    model = qruntime.quantize(zoo.build("llama"), _config(cfg))
    attn = model.model.layers[0].self_attn
    qkv = [attn.q_proj, attn.k_proj, attn.v_proj]
    expected = max(float(m.weight.abs().max()) for m in qkv)
    for m in qkv:
        assert m.weight_quantizer._global_amax.dtype == torch.float32
        assert float(m.weight_quantizer._global_amax) == pytest.approx(expected, abs=0)
    o = attn.o_proj.weight_quantizer
    assert float(o._global_amax) == float(attn.o_proj.weight.abs().max())


def test_static_bias_is_calibrated_before_the_amax():
    bias = {-1: None, "type": "static", "method": "mean"}
    config = _config({"num_bits": 8}, {"num_bits": 8})
    config["quant_cfg"].append(
        {"quantizer_name": "fc1.input_quantizer", "cfg": {"num_bits": 8, "bias": bias}}
    )
    model = qruntime.quantize(Net(), config, _loop)
    q = model.fc1.input_quantizer
    b0, b1 = _data(0).mean(-1, keepdim=True), _data(1).mean(-1, keepdim=True)
    assert torch.allclose(q._bias_value, (b0 + b1) / 2)
    running = (b0.float() + b1.float()) / 2
    expected_amax = torch.maximum((_data(0) - b0).abs().max(), (_data(1) - running).abs().max())
    assert torch.equal(q._amax, expected_amax)


def test_sequential_weight_quantizer_elements_each_get_an_amax():
    cfg = [{"num_bits": 4, "block_sizes": {-1: 8, "type": "static"}}, {"num_bits": (4, 3)}]
    model = qruntime.quantize(Net(), _config(cfg), _loop)
    first, second = model.fc1.weight_quantizer
    assert first._amax.shape == (16 * 5, 1) and second._amax.shape == ()
    assert torch.equal(second._amax, model.fc1.weight.abs().max())


#: The methods qruntime implements (the rest are refused before the model is touched).


def test_registered_algorithms():
    assert qruntime.registered_methods() == BUILTIN_METHODS


def test_static_bias_without_data_fails_like_modelopt():
    bias = {-1: None, "type": "static"}
    config = _config({"num_bits": 8}, {"num_bits": 8, "bias": bias})
    model = Net()
    with pytest.raises(RuntimeError, match="Bias calibrator returned None"):
        qruntime.quantize(model, config, _loop)  # ``dead`` never sees data
    assert type(model.fc1) is nn.Linear


class QuantFusedExperts(qruntime.QuantModule):
    """The zoo's fused experts with a forward that calls per-expert weight quantizers."""

    @classmethod
    def quantizer_slots(cls, module):
        n = module.gate_up_proj.shape[0]
        return [
            *(qruntime.QuantizerSlot(f"gate_up_proj_weight_quantizers.{i}") for i in range(n)),
            *(qruntime.QuantizerSlot(f"down_proj_weight_quantizers.{i}") for i in range(n)),
            qruntime.QuantizerSlot("gate_up_proj_input_quantizer"),
            qruntime.QuantizerSlot("down_proj_input_quantizer"),
        ]

    def forward(self, x):
        out = 0
        for e in range(self.gate_up_proj.shape[0]):
            up = self.gate_up_proj_weight_quantizers[e](self.gate_up_proj[e])
            down = self.down_proj_weight_quantizers[e](self.down_proj[e])
            g, u = (self.gate_up_proj_input_quantizer(x) @ up.T).chunk(2, dim=-1)
            out = out + self.down_proj_input_quantizer(nn.functional.silu(g) * u) @ down.T
        return out


def test_weight_quantizer_lists_are_calibrated_per_expert():
    """Model Optimizer 0.47.0 raises AttributeError here (docs/differences.md)."""
    previous = [r for r in registrations() if r.original is zoo.FusedExperts]
    qruntime.register(zoo.FusedExperts, QuantFusedExperts)
    try:
        model = zoo.build("fused")
        config = _config({"num_bits": 8, "axis": 0}, {"num_bits": 8})
        qruntime.quantize(model, config, lambda m: m(*zoo.example_inputs("fused")))
    finally:
        qruntime.unregister(zoo.FusedExperts)
        for r in previous:  # other test modules may have registered their own wrapper
            qruntime.register(r.original, r.quant_cls, key=r.key)
    experts = model.experts
    for e in range(2):
        q = experts.gate_up_proj_weight_quantizers[e]
        assert torch.equal(q._amax, experts.gate_up_proj[e].abs().amax(1, keepdim=True))
    assert experts.down_proj_input_quantizer._amax is not None
    assert "experts.gate_up_proj_weight_quantizers.1._amax" in model.state_dict()
