"""What rollback costs during max calibration on CPU: the write guard against no transaction.

For one zoo model and one preset it measures, best of ``--repeat`` interleaved rounds, the
calibration step alone (``run_algorithms`` on an already converted and configured model, as
``bench_calib_cpu.py`` does):

* ``bare``: no transaction;
* ``snapshot``: inside ``Transaction(model, guard=None)`` (module snapshot + tensor journal);
* ``dispatch``: inside ``Transaction(model, guard="dispatch")``: the dispatch-mode write guard
  sees every aten op of the forward loop;
* ``kernels``: inside ``Transaction(model)`` — what ``apply_plan`` runs: Python kernels on the
  writing operators only (registered per transaction);
* ``null mode``: inside a ``TorchDispatchMode`` that only calls the op — the floor of any
  dispatch-mode interception, to tell the guard's own work from the mechanism's;
* ``modelopt``: ``mtq.calibrate(model, "max", loop)`` in the same run, as the yardstick.

Times are CPU seconds of the process (``time.process_time``), ratios against ``bare``. Printed,
never asserted.

    .venv/bin/python bench/bench_rollback_cpu.py --model llama --batch 16 --seq 256
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import qruntime
from bench_calib_cpu import best_of_interleaved, calibration_setup
from qruntime.calibrate import run_algorithms
from qruntime.quantize import compile_for
from qruntime.transaction import Transaction
from torch.utils._python_dispatch import TorchDispatchMode


class NullMode(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def main() -> None:
    setup = calibration_setup(__doc__.split("\n")[0])
    args, config, base, loop = setup.args, setup.config, setup.base, setup.loop
    import modelopt.torch.quantization as mtq  # imported by the setup already

    plan = compile_for(base, config)
    configure_only = dataclasses.replace(plan, algorithm=())

    def timed(wrap: str) -> float:
        model = qruntime.apply_plan(copy.deepcopy(base), configure_only)
        start = time.process_time()
        if wrap == "bare":
            run_algorithms(model, plan.algorithm, loop)
        elif wrap == "null mode":
            with NullMode():
                run_algorithms(model, plan.algorithm, loop)
        else:
            with Transaction(model, guard=None if wrap == "snapshot" else wrap):
                run_algorithms(model, plan.algorithm, loop)
        return time.process_time() - start

    kinds = {
        kind: (lambda kind=kind: timed(kind))
        for kind in ("bare", "snapshot", "null mode", "dispatch", "kernels")
    }
    if not args.no_modelopt:
        warnings.simplefilter("ignore")
        no_calibration = {**copy.deepcopy(config), "algorithm": None}

        def mo_calibrate() -> float:
            model = mtq.quantize(copy.deepcopy(base), copy.deepcopy(no_calibration))
            start = time.process_time()
            mtq.calibrate(model, "max", loop)
            return time.process_time() - start

        kinds["modelopt"] = mo_calibrate

    best = best_of_interleaved(kinds, args.repeat)
    print(
        f"model={args.model} preset={args.preset} batch={args.batch} seq={args.seq} "
        f"batches={args.batches} threads={torch.get_num_threads()} repeat={args.repeat} "
        f"torch={torch.__version__}"
    )
    print(f"{'max calibration':16s} {'CPU ms':>9s} {'/ bare':>7s}")
    for kind, value in best.items():
        print(f"{kind:16s} {value * 1e3:9.1f} {value / best['bare']:7.3f}")


if __name__ == "__main__":
    main()
