"""Calibration time per algorithm on all-MiniLM-L6-v2: qruntime beside Model Optimizer 0.47.0.

For each algorithm row (bench/_minilm.py, ALGORITHM_ROWS: max, mse, local_hessian with and
without ``fp8_scale_sweep``, awq_lite, awq_clip, awq_full, svdquant, the INT4_AWQ and
W4A8_AWQ_BETA presets, smoothquant, nvfp4_act_headroom, on INT4 block-128, INT8 W8A8 and
NVFP4) both libraries start from a deep copy of the float model that is already converted and
configured with the row's quantizers but not calibrated, and the timer covers the calibration
alone, the same span on both sides:

* qruntime: ``run_algorithms(model, plan.algorithm, forward_loop, plan=plan)`` on a model
  prepared by ``apply_plan`` with the plan's algorithms removed. An algorithm that declares
  ``writes_weights`` (smoothquant) runs inside a ``Transaction(writes_weights=True,
  guard=None)``, as its ``save`` calls need one; no write guard, so no cost beyond the saves.
* Model Optimizer: ``mtq.calibrate(model, algorithm, forward_loop)`` on a model prepared by
  ``mtq.quantize`` with ``algorithm: None`` — the call ``mtq.quantize`` itself makes.

``--span quantize`` times the whole ``quantize(model, config, forward_loop)`` call instead
(conversion, configuration, calibration; for qruntime also the rollback transaction).

Both get the same forward loop over the same tokenized batches (the first ``--calib-size``
sentences of examples/data/calibration.txt, 32 by default, as in the issue's figures). Each
row runs once as a warm-up (counted when it took over 2 s), then up to ``--repeat`` times, no
new run after ``--budget`` seconds; the best time counts. The rounds cannot interleave the two
libraries: every qruntime run comes before Model Optimizer is imported (its Hugging Face
plugins register classes at import).

Times are ``time.process_time`` by default: CPU seconds of this process, all its threads, so a
neighbour competing for the two cores of a shared machine does not distort the ratios (wall
time would count the waiting). Both sides run under the same ``torch.set_num_threads``, one thread
by default: with two, a worker thread that waits for a partner descheduled by a neighbour spins
and its CPU time is counted (on the shared 2-core machine the float forward loop took 1.4 s
with one thread, 3 to 16 s with two). Process time still moves with the load (shared caches, memory bandwidth): trust the
ratios of one run more than absolute seconds across runs. ``--timer wall`` uses
``time.perf_counter`` for a quiet machine. Printed: the plain forward loop of the float model
(what one calibration pass costs at least), then ours, theirs, theirs/ours and the issues' goal
(GOALS: theirs/ours >= 3 for mse and local_hessian, 5 for awq_clip and awq_full, 2 for awq_lite
and svdquant). Nothing is asserted. A method qruntime has not
registered yet, or a row Model Optimizer cannot run on CPU (its NVFP4 fake quantization needs
CUDA or Triton), is printed with the reason instead of a time. ``--modelopt-reference-nvfp4``
runs those with qruntime's NVFP4 numerics in place of its kernels (bench/_mo_nvfp4.py); such
times, marked ``*``, measure its algorithm around our numerics, not its own speed.

    .venv/bin/python bench/bench_calib_algorithms.py [--rows SUBSTRING ...] [--repeat 3]
        [--threads N] [--timer process|wall] [--span calibrate|quantize] [--no-modelopt]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _minilm import (  # bench/ is not a package: found through sys.path
    AlgorithmRow,
    Calibration,
    add_run_options,
    apply_threads,
    import_modelopt,
    load_minilm,
    reason,
    registered_methods,
    select_rows,
)

#: The issues' speed goals (theirs/ours) per method.
GOALS = {
    "mse": 3.0,
    "local_hessian": 3.0,
    "awq_clip": 5.0,
    "awq_full": 5.0,
    "awq_lite": 2.0,
    "svdquant": 2.0,
}
CLOCKS = {"process": time.process_time, "wall": time.perf_counter}


WARM = 2.0  # seconds: a run this long is its own warm-up (first-call costs are ~10 ms)


def best_of(run: Callable[[], float], repeat: int, budget: float) -> float:
    """Best of up to ``repeat`` timed runs after a warm-up; a warm-up longer than ``WARM``
    counts as a run, and no new run starts once the runs so far took ``budget`` seconds. The
    first exception propagates."""
    first = run()
    times = [first] if first > WARM else []
    spent = first
    while len(times) < repeat and (not times or spent < budget):
        times.append(run())
        spent += times[-1]
    return min(times)


def qruntime_runner(
    base: torch.nn.Module, row: AlgorithmRow, loop: Calibration, span: str, clock
) -> Callable[[], float]:
    """One timed qruntime run of ``row`` on a fresh copy of ``base`` (see the docstring)."""
    import qruntime
    from qruntime.calibrate import algorithm_for, run_algorithms
    from qruntime.quantize import compile_for
    from qruntime.transaction import Transaction

    if span == "quantize":

        def whole() -> float:
            model = copy.deepcopy(base)
            start = clock()
            qruntime.quantize(model, row.config(), loop)
            return clock() - start

        return whole

    plan = compile_for(base, row.config())
    configure_only = dataclasses.replace(plan, algorithm=())
    writes = any(algorithm_for(c).capabilities.writes_weights for c in plan.algorithm)

    def calibrate() -> float:
        model = qruntime.apply_plan(copy.deepcopy(base), configure_only)
        start = clock()
        with (
            Transaction(model, writes_weights=True, guard=None)
            if writes
            else contextlib.nullcontext()
        ):
            run_algorithms(model, plan.algorithm, loop, plan=plan)
        return clock() - start

    return calibrate


def modelopt_runner(
    mtq, base: torch.nn.Module, row: AlgorithmRow, loop: Calibration, span: str, clock
) -> Callable[[], float]:
    """One timed Model Optimizer run of ``row`` on a fresh copy of ``base``."""

    def whole() -> float:
        model = copy.deepcopy(base)
        start = clock()
        mtq.quantize(model, row.config(), loop)
        return clock() - start

    def calibrate() -> float:
        model = mtq.quantize(copy.deepcopy(base), {**row.config(), "algorithm": None})
        start = clock()
        mtq.calibrate(model, row.algorithm_spec(), loop)
        return clock() - start

    run = whole if span == "quantize" else calibrate

    def quiet() -> float:  # its progress bars and notices, not ours
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return run()

    return quiet


def timed(make: Callable[[], Callable[[], float]], repeat: int, budget: float) -> float | str:
    """The best time, or the reason it could not be measured."""
    try:
        return best_of(make(), repeat, budget)
    except Exception as exc:  # a row, not a crash
        return reason(exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", nargs="+", default=None, help="rows whose name contains one")
    parser.add_argument("--calib-size", type=int, default=32, help="calibration sentences")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per row and side")
    parser.add_argument(
        "--budget", type=float, default=60.0, help="no new run after this many seconds of runs"
    )
    parser.add_argument("--timer", choices=sorted(CLOCKS), default="process")
    parser.add_argument("--span", choices=["calibrate", "quantize"], default="calibrate")
    add_run_options(parser)
    args = parser.parse_args(argv)
    apply_threads(args)
    clock = CLOCKS[args.timer]

    data = load_minilm(eval_size=1, batch_size=args.batch_size)
    loop = data.calibration(args.calib_size)
    rows = select_rows(args.rows)
    base = data.model

    def plain_forward() -> float:
        start = clock()
        loop(base)
        return clock() - start

    forward = best_of(plain_forward, args.repeat, args.budget)
    ours = {}
    for row in rows:
        ours[row.name] = timed(
            lambda row=row: qruntime_runner(base, row, loop, args.span, clock),
            args.repeat,
            args.budget,
        )
        print(f"  qruntime  {row.name:<32} {ours[row.name]}", file=sys.stderr, flush=True)
    theirs: dict[str, float | str] = {}
    marked: set[str] = set()  # Model Optimizer rows timed with qruntime's NVFP4 numerics
    version = "not run"
    if not args.no_modelopt:
        version, mtq = import_modelopt()
        for row in rows:
            with contextlib.ExitStack() as stack:
                uses = None
                if args.modelopt_reference_nvfp4:
                    from _mo_nvfp4 import reference_nvfp4

                    uses = stack.enter_context(reference_nvfp4())
                theirs[row.name] = timed(
                    lambda row=row: modelopt_runner(mtq, base, row, loop, args.span, clock),
                    args.repeat,
                    args.budget,
                )
                if uses is not None and uses.calls:
                    marked.add(row.name)
            print(f"  modelopt  {row.name:<32} {theirs[row.name]}", file=sys.stderr, flush=True)

    print(
        f"all-MiniLM-L6-v2, {loop.describe()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, best of up to {args.repeat} after a warm-up, "
        f"{args.timer} time of the {args.span} span; Model Optimizer {version}"
    )
    print(f"qruntime calibration methods registered: {', '.join(registered_methods())}")
    print(
        f"plain forward loop of the float model (the floor of one calibration pass): {forward:.3f} s"
    )
    header = f"{'row':<32} {'ours s':>8} {'theirs s':>9} {'theirs/ours':>11}  goal"
    print(header)
    print("-" * len(header))
    notes = []
    for row in rows:
        mine, other = ours[row.name], theirs.get(row.name, "not run (--no-modelopt)")
        for who, value in (("qruntime", mine), ("modelopt", other)):
            if isinstance(value, str):
                notes.append(f"{row.name}: {who} {value}")
        ratio = None
        if not isinstance(mine, str) and not isinstance(other, str) and mine > 0:
            ratio = other / mine
        mark = "*" if row.name in marked else ""
        goal = ""
        target = GOALS.get(row.method)
        if target is not None and ratio is not None and not mark:
            goal = f">= {target:g}x " + ("met" if ratio >= target else "NOT met")
        print(
            f"{row.name:<32} {'error' if isinstance(mine, str) else f'{mine:.3f}':>8} "
            f"{('n/a' if isinstance(other, str) else f'{other:.3f}') + mark:>9} "
            f"{('n/a' if ratio is None else f'{ratio:.2f}') + mark:>11}  {goal}"
        )
    for note in notes:
        print(f"  {note}")
    if marked:
        print(
            "* Model Optimizer's algorithm with its NVFP4 fake quantization by qruntime's "
            "numerics: not its own speed"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
