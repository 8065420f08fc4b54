"""bench/bench_accuracy.py --peers: the llm-compressor group is printed, and a peer that cannot
run is a line saying why, never a crash or a changed exit status.

Why: llm-compressor lives in its own venv (``make peers``) that the dev venv and CI do not build,
so the path every plain checkout takes is the unavailable one. The peer's own numbers are
checked in that venv by ``make peers-test`` (bench/test_peer_llmcompressor.py).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench():
    threads = torch.get_num_threads()
    sys.path.insert(0, str(BENCH))
    try:
        yield {name: importlib.import_module(name) for name in ("_peers", "bench_accuracy")}
    finally:
        sys.path.remove(str(BENCH))
        torch.set_num_threads(threads)


def test_missing_peers_venv_is_a_reason_not_a_crash(bench, tmp_path, capsys):
    argv = ["--rows", "algorithms", "--algorithms", "INT4-b128 max", "--calib-size", "2"]
    argv += ["--eval-size", "2", "--no-modelopt", "--threads", "1"]
    argv += ["--peers", "--peers-python", str(tmp_path / "missing" / "python")]
    status = bench["bench_accuracy"].main(argv)
    out = capsys.readouterr().out
    assert status == 0
    group = out.split("peer: llm-compressor 0.14\n", 1)[1]
    assert group.startswith(f"  unavailable: {tmp_path / 'missing' / 'python'} not found")
    assert "run `make peers`" in group


def test_a_peer_that_fails_gives_its_last_error_line(bench):
    """The dev venv's python has no llm-compressor (the reason for the separate venv): the
    peer exits before printing JSON and the report carries its error."""
    report = bench["_peers"].run_llmcompressor(Path(sys.executable), 2, 2, 16, 1)
    assert report.report is None
    assert report.unavailable.startswith("exit 1, no JSON: ")
    assert "llmcompressor" in report.unavailable


def test_group_prints_peer_rows_beside_the_anchor_rows(bench, capsys):
    report = {
        "peer": "llm-compressor 0.14.0.1",
        "scheme": "W4A16",
        "calibration": "2 calibration sentences in 1 batches",
        "rows": [
            {"name": "rtn", "smoothed": "none", "seconds": 0.25, "cosine": 0.95},
            {"name": "awq folded", "smoothed": "value", "error": "RuntimeError: boom"},
        ],
    }
    ours = {"INT4-b128 awq_lite": SimpleNamespace(cosine=0.96, seconds=1.5)}
    theirs = {"INT4-b128 awq_lite": SimpleNamespace(cosine=None, seconds=None)}
    bench["_peers"].print_group(bench["_peers"].PeerReport(report=report), ours, theirs)
    lines = capsys.readouterr().out.splitlines()
    rows = {line[:32].rstrip(): line[32:].split() for line in lines}
    assert rows["llmc rtn"][:2] == ["0.95000", "0.25"]
    assert rows["llmc awq folded"][:3] == ["error", "n/a", "RuntimeError:"]
    assert rows["INT4-b128 awq_lite (qruntime)"] == ["0.96000", "1.50"]
    assert rows["INT4-b128 awq_lite (modelopt)"] == ["n/a", "n/a"]
    assert "INT4-b128 max (qruntime)" not in rows  # only anchors that were run
