"""The calibration-algorithm benches run end to end and print their tables.

Why: the benches are how the issue's figures (accuracy and speed against Model Optimizer) are
reproduced; a change elsewhere that breaks them would otherwise go unnoticed until someone
wants the numbers. Tiny sizes (one row, a few sentences, qruntime only) keep this fast; a
failing row must be printed as such, not crash the script. Nothing about the numbers is
asserted beyond their being printed.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench():
    """The bench modules, imported as their scripts run (bench/ first on the path); the torch
    thread count their ``main`` sets is restored afterwards."""
    threads = torch.get_num_threads()
    sys.path.insert(0, str(BENCH))
    try:
        yield {
            name: importlib.import_module(name)
            for name in ("_minilm", "bench_accuracy", "bench_calib_algorithms")
        }
    finally:
        sys.path.remove(str(BENCH))
        torch.set_num_threads(threads)


def _broken_row(bench, monkeypatch):
    """An extra algorithm row whose config no library accepts: it must become an error row."""
    minilm = bench["_minilm"]
    broken = minilm.AlgorithmRow("broken method", "INT8_DEFAULT_CFG", {"method": "no_such"})
    monkeypatch.setattr(minilm, "ALGORITHM_ROWS", (*minilm.ALGORITHM_ROWS, broken))


def test_accuracy_bench_prints_algorithm_rows(bench, monkeypatch, capsys):
    _broken_row(bench, monkeypatch)
    argv = ["--rows", "algorithms", "--algorithms", "INT8 max", "broken"]
    argv += ["--calib-size", "2", "--eval-size", "2", "--no-modelopt", "--threads", "1"]
    status = bench["bench_accuracy"].main(argv)
    out = capsys.readouterr().out
    assert status == 1  # the broken row failed
    assert "algorithms: 2 calibration sentences in 1 batches" in out
    lines = {line.split("  ")[0]: line for line in out.splitlines()}
    assert lines["INT8 max"].split()[2].startswith("0.")  # a cosine
    assert lines["broken method"].split()[2] == "error"
    assert "broken method: qruntime quantize:" in out
    assert "INT4-b128 max" not in out  # only the rows asked for


def test_calibration_bench_prints_times_and_errors(bench, monkeypatch, capsys):
    _broken_row(bench, monkeypatch)
    argv = ["--rows", "INT8 max", "broken", "--calib-size", "2", "--repeat", "1"]
    status = bench["bench_calib_algorithms"].main([*argv, "--no-modelopt", "--timer", "wall"])
    out = capsys.readouterr().out
    assert status == 0
    assert "2 calibration sentences in 1 batches" in out and "wall time" in out
    rows = {line.split("  ")[0]: line.split() for line in out.splitlines()}
    assert float(rows["INT8 max"][2]) > 0
    assert rows["broken method"][2:5] == ["error", "n/a", "n/a"]
    assert "broken method: qruntime" in out


def test_layerwise_memory_bench_prints_its_table(capsys):
    """The layerwise memory bench runs a case in a fresh worker process and prints its row and
    the reading; one case (layerwise GPTQ on the toy model) keeps this to one interpreter start.
    """
    sys.path.insert(0, str(BENCH))
    try:
        module = importlib.import_module("bench_layerwise_memory")
    finally:
        sys.path.remove(str(BENCH))
    argv = ["--quick", "--no-modelopt", "--methods", "gptq", "--modes", "layerwise"]
    status = module.main(argv)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "Llama 2 layers, hidden 128" in out and "weights 1.3 MiB" in out
    row = next(line.split() for line in out.splitlines() if line.startswith("qruntime  gptq"))
    assert row[2:4] == ["layerwise", "4"]
    assert float(row[4].rstrip("^")) >= 0 and float(row[5]) > 0  # peak growth, wall seconds
    assert "glibc mmap threshold fixed at 128 KiB" in out
    reading = out.split("reading (")[1]
    assert "qruntime  gptq      4: layerwise +" in reading and "2 blocks' activations" in reading
