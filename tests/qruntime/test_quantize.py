"""quantize(): inventory + compile_plan + apply_plan, with mtq.quantize's algorithm rule.

docs/model-optimizer-rules.md, 'quantize and calibrate'.
"""

import pytest
import qruntime
import torch
import zoo
from qconfig.algorithms import MaxCalibConfig
from qconfig.compile import CompileError
from qconfig.quantize import QuantizeConfig

QUANT_CFG = [
    {"quantizer_name": "*", "enable": False},
    {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
    {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8}},
]


def _loop(model):
    model(*zoo.example_inputs("llama"))


def _calibrated(model):
    return any("_amax" in k for k in model.state_dict())


def test_plain_dict_without_algorithm_runs_no_calibration():
    model = zoo.build("llama")
    assert qruntime.quantize(model, {"quant_cfg": QUANT_CFG}, _loop) is model
    assert not _calibrated(model)
    assert qruntime.applied_plan(model).algorithm == ()


def test_explicit_none_runs_no_calibration_and_max_calibrates():
    assert not _calibrated(
        qruntime.quantize(zoo.build("llama"), {"quant_cfg": QUANT_CFG, "algorithm": None}, _loop)
    )
    model = qruntime.quantize(
        zoo.build("llama"), {"quant_cfg": QUANT_CFG, "algorithm": "max"}, _loop
    )
    assert _calibrated(model) and model.lm_head.input_quantizer._amax is not None


def test_quantize_config_instance_uses_its_default_max():
    plan = qruntime.compile_for(zoo.build("llama"), QuantizeConfig(quant_cfg=QUANT_CFG))
    assert plan.algorithm == (MaxCalibConfig(),)


def test_config_errors_are_raised_before_the_model_is_touched():
    model = zoo.build("llama")
    bad = {"quant_cfg": [{"quantizer_name": "*", "parent_class": "nn.ReLU", "enable": False}]}
    with pytest.raises(CompileError, match=r"nn\.ReLU"):
        qruntime.quantize(model, bad)
    assert type(model.lm_head) is torch.nn.Linear
    with pytest.raises(ValueError, match="awq"):
        qruntime.quantize(model, {"quant_cfg": QUANT_CFG, "algorithm": "awq"})
    assert type(model.lm_head) is torch.nn.Linear


def test_quantized_outputs_change_and_stay_deterministic():
    model = zoo.build("llama")
    reference = model(*zoo.example_inputs("llama", seed=3))
    qruntime.quantize(model, {"quant_cfg": QUANT_CFG, "algorithm": "max"}, _loop)
    with torch.no_grad():
        first = model(*zoo.example_inputs("llama", seed=3))
        second = model(*zoo.example_inputs("llama", seed=3))
    assert torch.equal(first, second)
    assert not torch.equal(first, reference)
    assert torch.allclose(first, reference, atol=0.1)


def test_weight_check_is_read_from_the_environment_at_quantize(monkeypatch):
    """``quantize`` is the drop-in for ``mtq.quantize``, which honours
    MODELOPT_SKIP_WEIGHT_QUANT_CHECK; ``weight_check=`` overrides it either way."""

    # weight quantizers asked for by a pattern that matches none: the check's condition
    config = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*experts*weight_quantizer", "cfg": {"num_bits": 4}},
        ],
        "algorithm": "max",
    }
    monkeypatch.delenv("MODELOPT_SKIP_WEIGHT_QUANT_CHECK", raising=False)
    with pytest.raises(CompileError):
        qruntime.quantize(zoo.build("llama"), config, _loop)
    qruntime.quantize(zoo.build("llama"), config, _loop, weight_check=False)
    monkeypatch.setenv("MODELOPT_SKIP_WEIGHT_QUANT_CHECK", "1")
    qruntime.quantize(zoo.build("llama"), config, _loop)
    with pytest.raises(CompileError):
        qruntime.quantize(zoo.build("llama"), config, _loop, weight_check=True)
