"""Peer libraries in the accuracy table: bench/peer_llmcompressor.py run in its own venv, and
its rows printed beside the qruntime and Model Optimizer rows they anchor.

Why a subprocess: llm-compressor 0.14 requires a transformers older than the dev venv's, so it
lives in ``.venv-peers`` (``make peers``) and answers with ``--json``. A peer that is missing or
fails is a line that says why, never a crash of the bench.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
PEERS_PYTHON = BENCH.parent / ".venv-peers" / "bin" / "python"
TITLE = "peer: llm-compressor 0.14"
#: The algorithm rows the peer's rows are compared with (round to nearest, the AWQ family, GPTQ
#: once bench/_minilm.py has its row); only those the run selected are printed.
ANCHORS = (
    "INT4-b128 max",
    "INT4-b128 awq_lite",
    "INT4-b128 awq_clip",
    "INT4-b128 awq_full",
    "INT4-b128 gptq",
)


@dataclasses.dataclass
class PeerReport:
    """The peer's JSON answer (``report``), or why there is none (``unavailable``)."""

    report: dict[str, Any] | None = None
    unavailable: str | None = None


def run_llmcompressor(
    python: Path,
    calib_size: int,
    eval_size: int | None,
    batch_size: int,
    threads: int,
    timeout: float = 1800,
) -> PeerReport:
    """bench/peer_llmcompressor.py with ``python`` (the peers venv), the bench's sizes and
    threads; its rows, or the reason it gave none."""
    if not python.exists():
        return PeerReport(unavailable=f"{python} not found: run `make peers`")
    command = [str(python), str(BENCH / "peer_llmcompressor.py"), "--json"]
    command += ["--calib-size", str(calib_size), "--batch-size", str(batch_size)]
    command += ["--threads", str(threads)]
    if eval_size is not None:
        command += ["--eval-size", str(eval_size)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return PeerReport(unavailable=f"{type(exc).__name__}: {exc}")
    lines = done.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = " ".join(done.stderr.strip().splitlines()[-1:]) or "no output"
        return PeerReport(unavailable=f"exit {done.returncode}, no JSON: {tail[:200]}")
    return PeerReport(report=report)


def _cell(value: float | None, fmt: str, width: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}{fmt}}"


def print_group(peer: PeerReport, ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> None:
    """The peer's rows (cosine, calibration seconds, what it smoothed), then the anchor rows
    of ``ours`` / ``theirs`` (name -> object with ``cosine`` and ``seconds``) that were run."""
    print(f"\n{TITLE}")
    if peer.report is None:
        print(f"  unavailable: {peer.unavailable}")
        return
    report = peer.report
    print(f"{report['peer']}, {report['scheme']}; {report['calibration']}")
    header = f"{'row':<32} {'cosine':>9} {'seconds':>8}  smoothed"
    print(header)
    print("-" * len(header))
    for row in report["rows"]:
        name = f"llmc {row['name']}"
        if "error" in row:
            print(f"{name:<32} {'error':>9} {'n/a':>8}  {row['error']}")
            continue
        seconds = _cell(row["seconds"], ".2f", 8)
        print(f"{name:<32} {row['cosine']:>9.5f} {seconds}  {row['smoothed']}")
    for anchor in ANCHORS:
        for library, outcomes in (("qruntime", ours), ("modelopt", theirs)):
            outcome = outcomes.get(anchor)
            if outcome is None:
                continue
            label = f"{anchor} ({library})"
            print(
                f"{label:<32} {_cell(outcome.cosine, '.5f', 9)} {_cell(outcome.seconds, '.2f', 8)}"
            )
    print(
        "llmc seconds: process time of llm-compressor's oneshot (tracing, calibration and "
        "quantization); the qruntime / modelopt rows: wall seconds of one quantize call, as above"
    )
