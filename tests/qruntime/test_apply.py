"""apply_plan: refuses plans that do not fit before touching the model, and is all-or-nothing."""

import copy
import dataclasses
from typing import Literal

import pytest
import qruntime
import torch
import zoo
from qconfig.algorithms import QuantizeAlgorithmConfig
from qconfig.compile import compile_plan
from qruntime import PlanMismatchError, UnsupportedAlgorithmError, modules
from qruntime.quantizer import TensorQuantizer
from torch import nn

INT8 = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8}},
    ],
    "algorithm": "max",
}


def fingerprint(model: nn.Module) -> list:
    """Everything apply_plan could change: classes, attribute dicts, tensors (identity and
    value), hooks, training flags."""
    out = []
    for name, m in model.named_modules():
        out.append(
            (
                name,
                type(m),
                m.training,
                sorted(m.__dict__),
                [
                    (k, id(v), v.clone() if v is not None else None)
                    for k, v in m._parameters.items()
                ],
                [(k, id(v), v.clone() if v is not None else None) for k, v in m._buffers.items()],
                [(k, id(v)) for k, v in m._modules.items()],
                list(m._forward_hooks.values()),
                list(m._forward_pre_hooks.values()),
            )
        )
    return out


def same(a: list, b: list) -> bool:
    if len(a) != len(b):
        return False
    for row_a, row_b in zip(a, b, strict=True):
        for x, y in zip(row_a, row_b, strict=True):
            if isinstance(x, list) and x and isinstance(x[0], tuple) and len(x[0]) == 3:
                if [(k, i) for k, i, _ in x] != [(k, i) for k, i, _ in y]:
                    return False
                if not all(
                    (u is None and v is None) or torch.equal(u, v)
                    for (_, _, u), (_, _, v) in zip(x, y, strict=True)
                ):
                    return False
            elif x != y:
                return False
    return True


@pytest.fixture
def model():
    m = zoo.build("subclass")
    m.mlp.train()  # mixed training flags must come back as they were
    m.mlp[0].register_forward_hook(lambda mod, inp, out: None)
    m.features.conv.register_forward_pre_hook(lambda mod, inp: None)
    return m


def batches():
    return [zoo.example_inputs("subclass", seed=s) for s in (0, 1)]


def loop(model):
    for batch in batches():
        model(*batch)


def plan_for(model, config=INT8):
    return compile_plan(config, qruntime.inventory(model))


def test_fingerprint_sees_a_conversion(model):
    before = fingerprint(model)
    assert same(before, fingerprint(model))
    qruntime.apply_plan(model, plan_for(model), loop)
    assert not same(before, fingerprint(model))


def test_plan_for_another_model_is_refused_untouched(model):
    before = fingerprint(model)
    other = plan_for(zoo.build("llama"))
    with pytest.raises(PlanMismatchError, match="does not fit this model") as err:
        qruntime.apply_plan(model, other, loop)
    assert "model does not have" in str(err.value) and "missing from the plan" in str(err.value)
    assert same(before, fingerprint(model))


def test_module_class_mismatch_is_refused_untouched(model):
    plan = plan_for(model)
    model.norm = nn.BatchNorm1d(32)  # same quantizer names, another registry key
    before = fingerprint(model)
    with pytest.raises(PlanMismatchError, match=r"norm\..*expects a nn.LayerNorm"):
        qruntime.apply_plan(model, plan)
    assert same(before, fingerprint(model))


class UnknownCalibConfig(QuantizeAlgorithmConfig):
    """A method no algorithm is registered for."""

    method: Literal["unknown_toy"] = "unknown_toy"


def test_unimplemented_algorithm_is_refused_untouched(model):
    plan = dataclasses.replace(plan_for(model), algorithm=(UnknownCalibConfig(),))
    before = fingerprint(model)
    with pytest.raises(UnsupportedAlgorithmError, match="'unknown_toy' is not implemented"):
        qruntime.apply_plan(model, plan, loop)
    assert same(before, fingerprint(model))


def test_histogram_calibrator_with_max_is_refused_untouched(model):
    config = copy.deepcopy(INT8)
    config["quant_cfg"].append(
        {"quantizer_name": "*lm_head.input_quantizer", "cfg": {"calibrator": "histogram"}}
    )
    before = fingerprint(model)
    with pytest.raises(UnsupportedAlgorithmError, match=r"lm_head\.input_quantizer.*histogram"):
        qruntime.apply_plan(model, plan_for(model, config), loop)
    assert same(before, fingerprint(model))


def test_custom_backend_is_refused_untouched(model):
    config = copy.deepcopy(INT8)
    config["quant_cfg"].append(
        {"quantizer_name": "*lm_head.input_quantizer", "cfg": {"num_bits": 8, "backend": "x"}}
    )
    before = fingerprint(model)
    with pytest.raises(PlanMismatchError, match="backend 'x'"):
        qruntime.apply_plan(model, plan_for(model, config), loop)
    assert same(before, fingerprint(model))


@pytest.mark.parametrize("pattern", ["*lm_head.input_quantizer", "*mlp.0.output_quantizer"])
def test_static_nvfp4_on_an_activation_is_refused_untouched(model, pattern):
    """Static NVFP4 blocks are promoted only on weights; Model Optimizer raises
    NotImplementedError at the first forward after calibrating such an activation."""
    config = copy.deepcopy(INT8)
    static_nvfp4 = {
        "num_bits": (2, 1),
        "block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3)},
    }
    config["quant_cfg"].append({"quantizer_name": pattern, "cfg": static_nvfp4})
    before = fingerprint(model)
    with pytest.raises(PlanMismatchError, match=r"static NVFP4 blocks .* quantize weights only"):
        qruntime.apply_plan(model, plan_for(model, config), loop)
    assert same(before, fingerprint(model))
    weights_only = copy.deepcopy(INT8)
    weights_only["quant_cfg"].append(
        {"quantizer_name": "*mlp.2.weight_quantizer", "cfg": static_nvfp4}
    )
    qruntime.apply_plan(model, plan_for(model, weights_only), loop)  # a weight: accepted


@pytest.mark.parametrize("k", [0, 1, 4, 8])
def test_failure_at_the_kth_module_leaves_the_model_as_it_was(model, monkeypatch, k):
    plan = plan_for(model)
    n_modules = len(qruntime.inventory(model).modules)
    assert k < n_modules
    original = modules.convert_module
    calls = []

    def failing(module, registration):
        calls.append(module)
        if len(calls) == k + 1:
            raise RuntimeError("injected conversion failure")
        return original(module, registration)

    monkeypatch.setattr(modules, "convert_module", failing)
    before = fingerprint(model)
    with pytest.raises(RuntimeError, match="injected"):
        qruntime.apply_plan(model, plan, loop)
    assert len(calls) == k + 1
    assert same(before, fingerprint(model))
    monkeypatch.setattr(modules, "convert_module", original)
    qruntime.apply_plan(model, plan, loop)  # and it still works afterwards
    assert isinstance(model.mlp[0].weight_quantizer, TensorQuantizer)


def test_failure_inside_the_forward_loop_leaves_the_model_as_it_was(model):
    before = fingerprint(model)
    seen = []

    def broken_loop(m):
        m(*batches()[0])
        seen.append(m.mlp[0].input_quantizer._calibrator.compute_amax())
        raise KeyError("data loader failed")

    with pytest.raises(KeyError, match="data loader"):
        qruntime.apply_plan(model, plan_for(model), broken_loop)
    assert seen and seen[0] is not None  # calibration had started
    assert same(before, fingerprint(model))


def test_failure_while_storing_amax_leaves_the_model_as_it_was(model, monkeypatch):
    original = TensorQuantizer.load_calib_amax
    calls = []

    def failing(self):
        calls.append(self)
        if len(calls) == 5:
            raise RuntimeError("injected failure while finishing calibration")
        original(self)

    monkeypatch.setattr(TensorQuantizer, "load_calib_amax", failing)
    before = fingerprint(model)
    with pytest.raises(RuntimeError, match="finishing calibration"):
        qruntime.apply_plan(model, plan_for(model), loop)
    assert same(before, fingerprint(model))


def test_nan_in_calibration_data_leaves_the_model_as_it_was(model):
    before = fingerprint(model)
    bad = torch.full((2, 3, 8, 8), float("nan"))
    with pytest.raises(AssertionError, match="nan"):
        qruntime.apply_plan(model, plan_for(model), lambda m: m(bad))
    assert same(before, fingerprint(model))


def test_failure_on_an_already_quantized_model_restores_its_quantizers(model):
    qruntime.apply_plan(model, plan_for(model), loop)
    amax = model.mlp[0].weight_quantizer._amax
    before = fingerprint(model)
    with pytest.raises(KeyError):
        qruntime.apply_plan(model, plan_for(model), lambda m: (m(*batches()[0]), {}["x"]))
    assert same(before, fingerprint(model))
    assert model.mlp[0].weight_quantizer._amax is amax


def test_apply_patches_in_place_and_keeps_hooks_and_flags(model):
    hook_calls = []
    model.lm_head.register_forward_hook(lambda mod, inp, out: hook_calls.append(out.shape))
    params = {k: v for k, v in model.named_parameters()}
    result = qruntime.apply_plan(model, plan_for(model), loop)
    assert result is model
    assert type(model.mlp[0]).__name__ == "QuantLinear"
    assert type(model.sub).__name__ == "QuantMyLinear"
    assert type(model.own).__name__ == "MyOwnForwardLinear"
    assert model.mlp.training and not model.lm_head.training
    assert {k: v for k, v in model.named_parameters()} == params
    assert "mlp.0.weight_quantizer._amax" in model.state_dict()
    hook_calls.clear()
    model(*batches()[0])
    assert len(hook_calls) == 1


def test_reapplying_a_plan_reconfigures_existing_quantizers(model):
    qruntime.apply_plan(model, plan_for(model), loop)
    quantizer = model.mlp[0].input_quantizer
    amax = quantizer._amax
    config = copy.deepcopy(INT8)
    config["quant_cfg"].append({"quantizer_name": "*mlp.0.input_quantizer", "enable": False})
    config["algorithm"] = None
    qruntime.apply_plan(model, plan_for(model, config))
    assert model.mlp[0].input_quantizer is quantizer and not quantizer.is_enabled
    assert quantizer._amax is amax
    assert (
        qruntime.inventory(model).model_dump()
        == qruntime.inventory(zoo.build("subclass")).model_dump()
    )


def test_sequential_and_back(model):
    w4a8 = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {
                "quantizer_name": "*weight_quantizer",
                "cfg": [
                    {"num_bits": 4, "block_sizes": {-1: 8, "type": "static"}},
                    {"num_bits": (4, 3)},
                ],
            },
        ],
        "algorithm": "max",
    }
    qruntime.apply_plan(model, plan_for(model, w4a8), loop)
    sq = model.mlp[0].weight_quantizer
    assert isinstance(sq, qruntime.SequentialQuantizer) and len(sq) == 2
    assert sq[0]._amax.shape == (32, 1) and sq[1]._amax.shape == ()
    assert "mlp.0.weight_quantizer.1._amax" in model.state_dict()
    qruntime.apply_plan(model, plan_for(model, INT8), loop)
    assert isinstance(model.mlp[0].weight_quantizer, TensorQuantizer)
