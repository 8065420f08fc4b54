"""summary(): formats by counts and the reasons quantizers are off."""

import qruntime
import zoo
from qruntime.quantize import compile_for

CONFIG = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": (4, 3)}},
        {"quantizer_name": "*lm_head*", "enable": False},
    ],
    "algorithm": "max",
}


def test_plan_summary_counts_formats_and_reasons():
    text = qruntime.summary(compile_for(zoo.build("subclass"), CONFIG))
    lines = text.splitlines()
    assert lines[0].split() == ["format", "enabled"]
    assert any(line.split() == ["INT8", "per-channel(0)", "5"] for line in lines)
    assert any(line.split()[:3] == ["FP8", "per-tensor", "8"] for line in lines)
    assert "hard-disabled" in text and "quant_cfg[3]" in text and "quant_cfg[0]" in text
    assert lines[-1] == "calibration: max"


def test_model_summary_shows_calibration_status_and_later_toggles():
    model = zoo.build("subclass")
    qruntime.quantize(model, CONFIG, lambda m: m(*zoo.example_inputs("subclass")))
    model.mlp[0].weight_quantizer.disable()
    text = qruntime.summary(model)
    header = text.splitlines()[0].split()
    assert header == ["format", "enabled", "calibrated"]
    assert "disabled after the plan was applied" in text
    assert "mlp.0.weight_quantizer" in text
