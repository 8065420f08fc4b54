"""TensorQuantizer / SequentialQuantizer: the forward order of docs/numerics.md, 'Order of
operations in a quantizer', and the state Model Optimizer keeps (docs/model-optimizer-rules.md,
'How a quantizer applies attributes')."""

import pytest
import torch
from qconfig.attributes import QuantizerAttributeConfig as QAC
from qruntime import HardDisabledTensorQuantizer, SequentialQuantizer, TensorQuantizer
from qruntime.numerics import fake_quant


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_default_is_int8_per_tensor_dynamic():
    q, x = TensorQuantizer(), _x(4, 8)
    assert q.is_enabled and q.amax is None
    assert torch.equal(q(x), fake_quant(x, {"num_bits": 8}))
    assert not torch.equal(q(x), x)


def test_disabled_returns_the_input_but_applies_pre_quant_scale():
    q, x = TensorQuantizer(QAC(num_bits=8, enable=False)), _x(4, 8)
    assert q(x) is x
    q.pre_quant_scale = torch.full((8,), 2.0)
    assert torch.equal(q(x), x * 2)


def test_empty_input_is_returned_unchanged():
    empty = torch.empty(0, 8)
    assert TensorQuantizer()(empty) is empty


def test_per_token_block_sizes_become_axis_on_first_forward():
    cfg = QAC(num_bits=(4, 3), block_sizes={-1: None, "type": "dynamic"})
    q, x = TensorQuantizer(cfg), _x(2, 3, 8)
    y = q(x)
    assert q.axis == (0, 1) and q.block_sizes is None
    assert torch.equal(y, fake_quant(x, {"num_bits": (4, 3), "axis": (0, 1)}))
    assert q.attributes()["axis"] == (0, 1) and q.config.block_sizes is not None


def test_static_block_reshape_pads_sets_axis_and_fixes_the_shape():
    q, x = TensorQuantizer(QAC(num_bits=4, block_sizes={-1: 16})), _x(4, 40)
    q.disable_quant()
    q.enable_calib()
    assert q(x) is x
    q.load_calib_amax()
    assert q.amax.shape == (12, 1)  # 40 padded to 48: 3 blocks per row
    assert q.axis == (0,)
    q.disable_calib()
    q.enable_quant()
    assert torch.equal(q(x), fake_quant(x, {"num_bits": 4, "block_sizes": {-1: 16}}, q.amax))
    with pytest.raises(ValueError, match="Input shape has changed"):
        q(_x(4, 32))


def test_calibration_keeps_the_running_max_and_passes_data_through():
    q = TensorQuantizer(QAC(num_bits=8, axis=0))
    q.disable_quant()
    q.enable_calib()
    a, b = _x(3, 5, seed=1), _x(3, 5, seed=2)
    assert q(a) is a and q(b) is b
    q.load_calib_amax()
    expected = torch.maximum(a.abs().amax(1, keepdim=True), b.abs().amax(1, keepdim=True))
    assert torch.equal(q.amax, expected)


def test_dynamic_type_never_calibrates():
    q = TensorQuantizer(QAC(num_bits=8, type="dynamic"))
    q.enable_calib()
    assert not q._if_calib


def test_calibrator_refuses_nan():
    q = TensorQuantizer()
    q.disable_quant()
    q.enable_calib()
    q(torch.tensor([1.0, 2.0]))
    q(torch.tensor([1.0, float("nan")]))
    q(torch.tensor([3.0, 2.0]))
    with pytest.raises(AssertionError, match="nan"):
        q.load_calib_amax()


def test_constant_amax_is_stored_and_use_constant_amax_is_not():
    x = _x(4, 8) * 300
    q = TensorQuantizer(QAC(num_bits=(4, 3), constant_amax=2688.0))
    assert torch.equal(q._amax, torch.tensor(2688.0))
    assert torch.equal(q(x), fake_quant(x, {"num_bits": (4, 3)}, torch.tensor(2688.0)))
    q = TensorQuantizer(QAC(num_bits=(4, 3), use_constant_amax=True))
    assert "_amax" not in q._buffers
    assert torch.equal(q(x), fake_quant(x, {"num_bits": (4, 3)}, torch.tensor(448.0)))


def test_full_replacement_keeps_calibrated_amax_partial_disable_turns_rotation_off():
    q = TensorQuantizer(QAC(num_bits=8, axis=0, rotate=True))
    q.amax = torch.ones(4, 1)
    q.set_from_attribute_config(QAC(num_bits=4))
    assert q.amax.shape == (4, 1)  # the calibrated amax survives, with its old shape
    q.set_from_attribute_config(QAC(num_bits=8, rotate=True))
    q.set_from_attribute_config({"enable": False})
    assert not q.is_enabled and q.attributes()["rotate"] is False
    q.set_from_attribute_config({"enable": True})
    assert q.is_enabled and q.config.rotate is False
    with pytest.raises(AssertionError, match="not a valid"):
        q.set_from_attribute_config({"bogus": 1})


def test_mx_formats_force_the_straight_through_gradient():
    cfg = QAC(
        num_bits=(4, 3),
        block_sizes={-1: 32, "type": "dynamic", "scale_bits": (8, 0)},
        pass_through_bwd=False,
    )
    q = TensorQuantizer(cfg)
    assert q.config.pass_through_bwd is True and q.is_mx_format and q.amax is None


@pytest.mark.parametrize("pass_through", [True, False])
def test_ste_backward(pass_through):
    q = TensorQuantizer(QAC(num_bits=8, pass_through_bwd=pass_through))
    q.amax = torch.tensor(1.0)
    x = torch.tensor([-2.0, -0.5, 0.25, 0.9, 3.0], requires_grad=True)
    q(x).sum().backward()
    expected = torch.ones(5) if pass_through else torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0])
    assert torch.equal(x.grad, expected)


def test_rotation_is_applied_before_quantization_and_back_after():
    x = _x(2, 8)
    plain = TensorQuantizer(QAC(num_bits=8, rotate={"enable": True}))
    back = TensorQuantizer(QAC(num_bits=8, rotate={"enable": True, "mode": "rotate_back"}))
    rotated = plain(x)
    assert not torch.allclose(rotated, x, atol=0.1)
    assert torch.allclose(back(x), x, atol=0.05)
    off = TensorQuantizer(
        QAC(num_bits=8, enable=False, rotate={"enable": True, "mode": "rotate_back"})
    )
    assert torch.allclose(off(x), x, atol=1e-6)


def test_amax_buffer_is_in_the_state_dict():
    q = TensorQuantizer()
    assert list(q.state_dict()) == []
    q.amax = 3.0
    assert list(q.state_dict()) == ["_amax"]
    with pytest.raises(RuntimeError, match="Changing shape"):
        q.amax = torch.ones(2)


def test_hard_disabled_quantizer_absorbs_configs_and_refuses_enabling():
    q = HardDisabledTensorQuantizer(QAC(num_bits=8, enable=False))
    q.set_from_attribute_config(QAC(num_bits=4))
    assert not q.is_enabled and q.num_bits == 4
    for method in (q.enable, q.enable_quant, q.enable_calib):
        with pytest.raises(RuntimeError, match="hard-disabled"):
            method()


def test_sequential_quantizer_applies_elements_in_order():
    first = QAC(num_bits=4, block_sizes={-1: 8, "type": "static"})
    second = QAC(num_bits=(4, 3))
    sq = SequentialQuantizer(TensorQuantizer(), TensorQuantizer())
    sq.set_from_attribute_config((first, second))
    x = _x(4, 16)
    assert torch.equal(sq(x), fake_quant(x, [first, second]))
    assert sq.config == (first, second)
    sq[0].disable()
    assert sq.is_enabled
    sq.disable()
    assert not sq.is_enabled and sq(x) is x
    sq.set_from_attribute_config(QAC(num_bits=6))
    assert [q.num_bits for q in sq] == [6, 6]


def test_extra_repr_reads_the_format():
    q = TensorQuantizer(QAC(num_bits=8, axis=0))
    assert "INT8 per-channel(0)" in repr(q) and "dynamic" in repr(q)
    q.disable()
    assert "disabled" in repr(q)


@pytest.mark.parametrize("axis", [None, 0, (0, 2)])
def test_running_max_over_many_batches_equals_the_max_of_per_batch_amaxes(axis):
    q = TensorQuantizer(QAC(num_bits=8, axis=axis))
    q.disable_quant()
    q.enable_calib()
    batches = [_x(3, 4, 5, seed=s) * (1 + s % 7) for s in range(40)]
    for b in batches:
        q(b)
    q.load_calib_amax()
    dims = (
        None
        if axis is None
        else tuple(i for i in range(3) if i not in ((axis,) if isinstance(axis, int) else axis))
    )
    per_batch = [
        b.abs().amax() if dims is None else b.abs().amax(dims, keepdim=True) for b in batches
    ]
    assert torch.equal(q.amax, torch.stack(per_batch).amax(0))
