"""``lsq`` and the learned-amax quantizer: conversion, forward, gradients derived by hand.

The INT4 cases use one block of four weights ``w = [0.5, -1.3, 2.6, 9.0]`` calibrated by max
(amax 9, ``Q = 7``, step ``s = 9/7``): ``v = w/s = [0.389, -1.011, 2.022, 7]``, codes
``[0, -1, 2, 7]``. With ``dL/dy = 1``: ``dL/dw = s_post/s_pre = 1`` where ``|v| <= 7``;
``dL/damax_post = sum(codes)/Q = 8/7``; ``dL/damax_pre = -sum(w)/(s*Q) = -10.8/9``.
"""

import pytest
import qruntime
import torch
from qruntime.calibrate import UnsupportedAlgorithmError
from qruntime.numerics.fp8 import fake_quant_e4m3
from qruntime.numerics.lsq import FP8_E4M3_MIN_POSITIVE, lsq_block_scale
from qruntime.quantizer.learned import LearnedAmaxError, LearnedAmaxQuantizer
from torch import nn

W = [0.5, -1.3, 2.6, 9.0]


def _int4(algorithm=None, *, block=4, weight=W):
    model = nn.Linear(len(weight), 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([weight]))
    cfg = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {
                "quantizer_name": "*weight_quantizer",
                "cfg": {"num_bits": 4, "block_sizes": {-1: block, "type": "static"}},
            },
        ],
        "algorithm": {"method": "lsq", "scale_algorithm": {"method": "max"}, **(algorithm or {})},
    }
    return qruntime.quantize(model, cfg, None)


def _grads(model):
    q = model.weight_quantizer
    y = q(model.weight)
    y.sum().backward()
    return q, y


def test_int_forward_and_gradients_match_the_hand_derivation():
    model = _int4({"learnable_amax": ["pre", "post"]})
    q, y = _grads(model)
    assert isinstance(q, LearnedAmaxQuantizer)
    s = torch.tensor(9.0) / 7
    assert torch.equal(y, torch.tensor([[0.0, -1.0, 2.0, 7.0]]) * s)
    assert torch.equal(model.weight.grad, torch.ones(1, 4))
    assert torch.allclose(q.amax_post.grad, torch.tensor([[8 / 7]]))
    assert torch.allclose(q.amax_pre.grad, torch.tensor([[-10.8 / 9]]))


def test_an_element_outside_the_cast_range_gets_no_weight_gradient():
    model = _int4({"learnable_amax": ["pre", "post"]})
    q = model.weight_quantizer
    q.set_amax_tensor("pre", torch.tensor([[4.5]]), learnable=True)  # s_pre = 4.5/7: v = 14
    _, y = _grads(model)
    assert y[0, 3] == 7 * torch.tensor(9.0) / 7  # clamped to the largest code
    assert torch.allclose(model.weight.grad, torch.tensor([[2.0, 2.0, 2.0, 0.0]]))


def test_a_floored_step_passes_no_gradient_to_its_amax():
    model = _int4()
    q = model.weight_quantizer
    q.set_amax_tensor("post", torch.zeros(1, 1), learnable=True)
    _, y = _grads(model)
    assert torch.equal(q.amax_post.grad, torch.zeros(1, 1))
    assert torch.allclose(y, torch.tensor([[0.0, -1.0, 2.0, 7.0]]) * 1e-8)


def test_default_learns_post_only_and_keeps_pre_as_a_buffer():
    model = _int4()
    q = model.weight_quantizer
    assert [n for n, _ in model.named_parameters()] == ["weight", "weight_quantizer._amax_post"]
    assert list(model.state_dict()) == [
        "weight",
        "weight_quantizer._amax_post",
        "weight_quantizer._amax_pre",
    ]
    assert q.learnable_amax == ["post"] and not q.tied_amax
    assert q.amax_pre.flatten().tolist() == [9.0]
    with pytest.raises(RuntimeError, match="amax_pre / amax_post"):
        _ = q.amax


def test_tied_amax_is_one_parameter_read_as_pre_post_and_amax():
    model = _int4({"learnable_amax": ["pre", "post"], "tied_amax": True})
    q = model.weight_quantizer
    assert [n for n, _ in model.named_parameters()] == ["weight", "weight_quantizer._amax_post"]
    assert q.amax_pre is q.amax_post is q.amax
    _grads(model)
    # tied: both gradient paths land on the one tensor
    assert torch.allclose(q.amax_post.grad, torch.tensor([[8 / 7 - 10.8 / 9]]))


def test_frozen_amaxes_are_buffers():
    model = _int4({"learnable_amax": []})
    assert [n for n, _ in model.named_parameters()] == ["weight"]


def test_state_dict_round_trips_into_a_converted_model():
    a, b = _int4({"learnable_amax": ["pre", "post"]}), _int4({"learnable_amax": ["pre", "post"]})
    with torch.no_grad():
        a.weight_quantizer.amax_post.mul_(1.5)
    b.load_state_dict(a.state_dict())
    assert b.weight_quantizer.amax_post.flatten().tolist() == [13.5]


def test_fp8_quantized_steps_are_on_the_e4m3_grid_and_clipped_above_the_global_scale():
    amax = torch.tensor([[0.3], [5.0], [7.0]], requires_grad=True)
    global_amax = torch.tensor(6.0)
    step = lsq_block_scale(amax, 6.0, global_amax)
    per_tensor = global_amax / 6
    expected = fake_quant_e4m3(torch.tensor([[0.05], [5 / 6], [7 / 6]]), per_tensor)
    assert torch.equal(step.detach(), expected)
    step.sum().backward()
    # d(step)/d(amax) = 1/6 where |step| <= global/6, else 0 (FP8 clipping)
    assert torch.allclose(amax.grad, torch.tensor([[1 / 6], [1 / 6], [0.0]]))
    floor = lsq_block_scale(torch.zeros(1, 1), 6.0, global_amax)
    assert torch.equal(floor, fake_quant_e4m3(FP8_E4M3_MIN_POSITIVE * torch.ones(1, 1), per_tensor))


def test_nvfp4_static_weights_are_converted_and_train():
    torch.manual_seed(0)
    model = nn.Linear(32, 4)
    cfg = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {
                "quantizer_name": "*weight_quantizer",
                "cfg": {
                    "num_bits": (2, 1),
                    "block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3)},
                },
            },
        ],
        "algorithm": {"method": "lsq"},
    }
    model = qruntime.quantize(model, cfg, None)
    q = model.weight_quantizer
    assert isinstance(q, LearnedAmaxQuantizer) and q.quantize_scales
    assert q.global_amax is not None and q.amax_post.shape == (8, 1)
    _grads(model)
    assert q.amax_post.grad is not None and q.amax_post.grad.abs().sum() > 0


def test_training_lowers_the_loss_and_moves_the_learned_amax():
    torch.manual_seed(0)
    teacher = nn.Linear(16, 8)
    x = torch.randn(64, 16)
    target = teacher(x).detach()
    student = nn.Linear(16, 8)
    with torch.no_grad():
        student.weight.copy_(teacher.weight + 0.05 * torch.randn_like(teacher.weight))
        student.bias.copy_(teacher.bias)
    cfg = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {
                "quantizer_name": "*weight_quantizer",
                "cfg": {"num_bits": 4, "block_sizes": {-1: 8, "type": "static"}},
            },
        ],
        "algorithm": {"method": "lsq"},
    }
    model = qruntime.quantize(student, cfg, None)
    start = model.weight_quantizer.amax_post.detach().clone()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = (model(x) - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert not torch.equal(model.weight_quantizer.amax_post.detach(), start)


def test_quantizers_lsq_cannot_convert_are_left_calibrated():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    cfg = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "0.weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
            {
                "quantizer_name": "1.weight_quantizer",
                "cfg": {"num_bits": 4, "block_sizes": {-1: 4, "type": "static"}},
            },
        ],
        "algorithm": {"method": "lsq", "scale_algorithm": {"method": "max"}},
    }
    model = qruntime.quantize(model, cfg, None)
    assert type(model[0].weight_quantizer) is not LearnedAmaxQuantizer
    assert model[0].weight_quantizer.amax.shape == (8, 1)
    assert isinstance(model[1].weight_quantizer, LearnedAmaxQuantizer)


def test_convert_refuses_what_it_cannot_learn():
    model = _int4()
    q = model.weight_quantizer
    with pytest.raises(LearnedAmaxError, match="already learns"):
        LearnedAmaxQuantizer.convert(q)
    per_channel = qruntime.quantize(
        nn.Linear(4, 2),
        {"quant_cfg": [{"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8}}]},
        None,
    )
    with pytest.raises(LearnedAmaxError, match="static-block"):
        LearnedAmaxQuantizer.convert(per_channel.weight_quantizer)
    with pytest.raises(LearnedAmaxError, match="tied_amax"):
        LearnedAmaxQuantizer.convert(per_channel.weight_quantizer, tied_amax=True)
    with pytest.raises(LearnedAmaxError, match="'sides'"):
        LearnedAmaxQuantizer.convert(per_channel.weight_quantizer, learnable_amax=["sides"])
    with pytest.raises(LearnedAmaxError, match="no single amax"):
        q.amax = torch.ones(1, 1)


def test_layerwise_lsq_is_refused_before_the_model_is_touched():
    model = nn.Linear(4, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = {
        "quant_cfg": [
            {
                "quantizer_name": "*weight_quantizer",
                "cfg": {"num_bits": 4, "block_sizes": {-1: 4, "type": "static"}},
            }
        ],
        "algorithm": {"method": "lsq", "layerwise": {"enable": True}},
    }
    with pytest.raises(UnsupportedAlgorithmError, match="layerwise"):
        qruntime.quantize(model, cfg, lambda m: m(torch.ones(1, 4)))
    assert not any(n.endswith("quantizer") for n, _ in model.named_modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_refused_conversion_rolls_the_whole_model_back():
    """The first layer converts, the second (blocks along dim 0) is refused: apply_plan puts
    the model back as it was, the first layer included."""
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {
                "quantizer_name": "0.weight_quantizer",
                "cfg": {"num_bits": 4, "block_sizes": {-1: 4, "type": "static"}},
            },
            {
                "quantizer_name": "1.weight_quantizer",
                "cfg": {"num_bits": 4, "block_sizes": {0: 4, "type": "static"}},
            },
        ],
        "algorithm": {"method": "lsq", "scale_algorithm": {"method": "max"}},
    }
    with pytest.raises(LearnedAmaxError, match=r"1\.weight_quantizer.*last dim"):
        qruntime.quantize(model, cfg, None)
    assert [type(m) for m in model] == [nn.Linear, nn.Linear]
    assert list(model.state_dict()) == list(before)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("weight", ["int4", "nvfp4"])
def test_learned_amax_model_compiles_as_one_graph_equal_to_eager(weight):
    """docs/qat-and-compile.md: fullgraph, no breaks; output and gradients (weights and
    learned amaxes) equal eager's with the aot_eager backend (the same aten ops)."""
    torch._dynamo.reset()
    fmt = {
        "int4": {"num_bits": 4, "block_sizes": {-1: 16, "type": "static"}},
        "nvfp4": {
            "num_bits": (2, 1),
            "block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3)},
        },
    }[weight]
    torch.manual_seed(0)
    cfg = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*weight_quantizer", "cfg": fmt},
        ],
        "algorithm": {"method": "lsq", "learnable_amax": ["pre", "post"]},
    }
    model = qruntime.quantize(nn.Sequential(nn.Linear(32, 16), nn.GELU(), nn.Linear(16, 4)), cfg)
    x = torch.randn(3, 32)
    assert torch._dynamo.explain(model)(x).graph_break_count == 0
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    results = []
    for fn in (model, compiled):
        model.zero_grad()
        y = fn(x)
        y.square().sum().backward()
        results.append((y.detach(), [p.grad.clone() for p in model.parameters()]))
    (y_eager, g_eager), (y_comp, g_comp) = results
    assert torch.equal(y_comp, y_eager)
    assert len(g_eager) == 8  # 2 layers x (weight, bias, amax_post, amax_pre)
    for a, b in zip(g_comp, g_eager, strict=True):
        assert torch.equal(a, b)
