"""The quantize jobs' reports: rich tables, plain text off a terminal, colour on one.

Why: a report piped into a file or a CI log must be plain text (no ANSI codes, no wrapped
lines), and the same report on a terminal may use colour; the tables are rich renderables, not
hand-built padding. The plan and lint reports are checked on a real plan compiled here, and
the job steps behind the ``--kv-cache`` row (its config checked before any run and appended
last; KV quantizers counted, uncalibrated ones refused) on small models.
"""

import io

import pytest
import torch
from qconfig.errors import Diagnostic
from qruntime.job import JobError, QuantizeOptions
from qruntime.job_steps import JobRun, with_entries
from qruntime.quantize import compile_for
from qruntime.report import (
    job_console,
    lint_renderable,
    lint_report,
    plan_report,
    render_text,
    results_table,
)
from torch import nn

INT8 = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8, "axis": None}},
    ],
    "algorithm": "max",
}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_results_table_is_aligned_plain_text() -> None:
    table = results_table(["run", "x"], [["a", "1"], ["bb", "10"]])
    assert render_text(table) == "run    x\n────────\na      1\nbb    10"


def test_plan_report_table_and_disabled_groups() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    plan = compile_for(model, INT8, lint="off")
    lines = plan_report(plan).splitlines()
    assert lines[0] == "  4 of 6 quantizers enabled; calibration: max"
    assert lines[1].split() == ["format", "weight", "input"]
    assert set(lines[2].strip()) == {"─"}
    assert lines[3].split() == ["INT8", "per-channel(0)", "2", "0"]
    assert lines[4].split() == ["INT8", "per-tensor", "0", "2"]
    assert lines[5] == "  disabled: 2"
    assert all(line == line.rstrip() for line in lines)


def test_console_is_plain_off_a_terminal_and_coloured_on_one() -> None:
    diagnostic = Diagnostic(code="QC101", severity="error", message="bad parent_class")
    plain, tty = io.StringIO(), Terminal()
    long_line = "x" * 300
    for out in (plain, tty):
        console = job_console(out)
        console.print(lint_renderable([diagnostic]))
        console.print(long_line)
    assert "\x1b[" not in plain.getvalue()
    assert "  FAILED: 1 error(s), 0 warning(s), 0 info note(s)\n" in plain.getvalue()
    assert f"\n{long_line}\n" in plain.getvalue()  # never wrapped in a file or a pipe
    assert "\x1b[" in tty.getvalue()  # the verdict in colour
    assert lint_report([diagnostic]).startswith("  FAILED: 1 error(s)")
    assert "[0]" in render_text("quant_cfg[0]")  # no rich markup: entries print as written


def test_kv_cache_config_is_checked_before_any_run_and_appended_last() -> None:
    with pytest.raises(JobError, match="no such config file or preset name"):
        JobRun(QuantizeOptions(kv_cache="NO_SUCH_KV_PRESET"), io.StringIO(), io.StringIO())
    job = JobRun(QuantizeOptions(kv_cache="FP8_KV"), io.StringIO(), io.StringIO())
    config, label = job.kv_cache_config(INT8)
    assert label == "FP8_KV_CFG"
    assert config["quant_cfg"][:3] == INT8["quant_cfg"]
    assert config["quant_cfg"][3]["quantizer_name"] == "*[kv]_bmm_quantizer"
    assert config["algorithm"] == "max"
    legacy = with_entries({"quant_cfg": {"*": {"enable": False}}, "algorithm": "max"}, INT8)
    assert legacy["quant_cfg"][0] == {"quantizer_name": "*", "cfg": None, "enable": False}
    assert legacy["quant_cfg"][1:] == INT8["quant_cfg"]


def test_kv_quantizers_counted_and_uncalibrated_ones_refused() -> None:
    """A tiny Llama has 2 attention layers, a k and a v bmm quantizer each: FP8_KV_CFG without
    calibration enables 4 and calibrates none (the row would be made of unset scales); with a
    forward loop all 4 hold an amax."""
    import transformers
    from qconfig import presets
    from qruntime import quantize
    from qruntime.job_steps import kv_quantizer_counts

    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    job = JobRun(QuantizeOptions(), io.StringIO(), io.StringIO())
    uncalibrated = transformers.LlamaForCausalLM(config).eval()
    kv = presets.get("FP8_KV_CFG")
    quantize(uncalibrated, {**kv, "algorithm": None}, lint="off")
    assert kv_quantizer_counts(uncalibrated) == (4, 0)
    with pytest.raises(JobError, match="4 of 4 KV-cache quantizers were never calibrated"):
        job.check_kv_quantizers(uncalibrated, "FP8_KV_CFG")
    calibrated = transformers.LlamaForCausalLM(config).eval()
    quantize(calibrated, {**kv, "algorithm": "max"}, lambda m: m(torch.arange(8)[None]), lint="off")
    assert kv_quantizer_counts(calibrated) == (4, 4)
    assert job.check_kv_quantizers(calibrated, "FP8_KV_CFG") == 4
