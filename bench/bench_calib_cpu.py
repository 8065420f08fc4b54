"""Max-calibration cost on CPU: calibration time ÷ plain forward time, qruntime beside Model Optimizer.

For one zoo model and one preset (max calibration) it measures, best of ``--repeat`` interleaved rounds:

* ``forward``: the forward loop on the float model (under ``torch.no_grad``, as calibration runs);
* ``calibrate``: the calibration step alone on an already converted and configured model
  (qruntime: ``run_algorithms``; Model Optimizer: ``mtq.calibrate(model, "max", loop)``);
* ``quantize``: the whole ``quantize(model, config, forward_loop)`` call (inventory/convert,
  config, calibration).

Times are CPU seconds of the process (``time.process_time``), best of the runs, so that other
load on a shared machine does not distort the ratios. The goal for qruntime is
``calibrate / forward <= 1.3``: the forward loop dominates, collection adds one reduction per
activation quantizer call and one per weight. Numbers are printed, never asserted.

    .venv/bin/python bench/bench_calib_cpu.py --model llama --batch 16 --seq 256
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import qruntime
import zoo
from qruntime.calibrate import run_algorithms
from qruntime.quantize import compile_for


def calibration_inputs(
    name: str, batch: int, seq: int, n_batches: int
) -> list[tuple[torch.Tensor, ...]]:
    out = []
    for seed in range(n_batches):
        g = torch.Generator().manual_seed(seed)
        if name in ("llama", "moe"):
            out.append((torch.randint(0, 32, (batch, seq), generator=g),))
        elif name == "vlm":
            side = max(4, int(seq**0.5) // 4 * 4)
            pixels = torch.randn(batch, 3, side, side, generator=g)
            out.append((pixels, torch.randint(0, 32, (batch, seq), generator=g)))
        elif name == "cnn":
            out.append((torch.randn(batch, 3, 16, 16, generator=g),))
        else:
            raise SystemExit(f"no input recipe for {name!r}")
    return out


def _timed(fn) -> float:
    """CPU seconds of this process (all its threads): unlike wall time, not inflated by other
    processes competing for the cores."""
    start = time.process_time()
    fn()
    return time.process_time() - start


@dataclasses.dataclass
class Setup:
    """What every max-calibration benchmark starts from: the options, Model Optimizer's preset
    (with ``algorithm: max``), the float zoo model, its batches and the forward loop."""

    args: argparse.Namespace
    config: dict
    base: torch.nn.Module
    batches: list[tuple[torch.Tensor, ...]]

    def loop(self, model: torch.nn.Module) -> None:
        for batch in self.batches:
            model(*batch)


def calibration_setup(description: str) -> Setup:
    """Parse the shared options (model, preset, sizes, repeats, threads) and build the inputs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="llama", choices=["llama", "moe", "vlm", "cnn"])
    parser.add_argument("--preset", default="INT8_DEFAULT_CFG")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batches", type=int, default=16, help="batches per forward loop")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--no-modelopt", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import modelopt.torch.quantization as mtq

    config = copy.deepcopy(getattr(mtq, args.preset))
    config["algorithm"] = "max"
    batches = calibration_inputs(args.model, args.batch, args.seq, args.batches)
    return Setup(args, config, zoo.build(args.model), batches)


def best_of_interleaved(kinds: dict[str, Callable[[], float]], repeat: int) -> dict[str, float]:
    """Best time of each kind over ``repeat`` interleaved rounds (after one warm-up each), so
    that every kind sees the same machine conditions."""
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for fn in kinds.values():
        fn()
    for _ in range(repeat):
        for kind, fn in kinds.items():
            times[kind].append(fn())
    return {kind: min(values) for kind, values in times.items()}


def main() -> None:
    setup = calibration_setup(__doc__.split("\n")[0])
    args, config, base, loop = setup.args, setup.config, setup.base, setup.loop
    import modelopt.torch.quantization as mtq  # imported by the setup already

    def plain_forward() -> float:
        with torch.no_grad():
            return _timed(lambda: loop(base))

    plan = compile_for(base, config)
    configure_only = dataclasses.replace(plan, algorithm=())

    def ours_calibrate() -> float:
        model = qruntime.apply_plan(copy.deepcopy(base), configure_only)
        return _timed(lambda: run_algorithms(model, plan.algorithm, loop, plan=plan))

    def ours_quantize() -> float:
        model = copy.deepcopy(base)
        return _timed(lambda: qruntime.quantize(model, config, loop))

    kinds = {
        "forward": plain_forward,
        "qruntime calibrate": ours_calibrate,
        "qruntime quantize": ours_quantize,
    }
    if not args.no_modelopt:
        warnings.simplefilter("ignore")
        no_calibration = {**copy.deepcopy(config), "algorithm": None}

        def mo_calibrate() -> float:
            model = mtq.quantize(copy.deepcopy(base), copy.deepcopy(no_calibration))
            return _timed(lambda: mtq.calibrate(model, "max", loop))

        def mo_quantize() -> float:
            model = copy.deepcopy(base)
            return _timed(lambda: mtq.quantize(model, copy.deepcopy(config), loop))

        kinds["modelopt calibrate"] = mo_calibrate
        kinds["modelopt quantize"] = mo_quantize

    best = best_of_interleaved(kinds, args.repeat)
    forward = best["forward"]
    rows = [("qruntime", best["qruntime calibrate"], best["qruntime quantize"])]
    if not args.no_modelopt:
        rows.append(("modelopt 0.47.0", best["modelopt calibrate"], best["modelopt quantize"]))

    print(
        f"model={args.model} preset={args.preset} batch={args.batch} seq={args.seq} "
        f"batches={args.batches} threads={torch.get_num_threads()} repeat={args.repeat} "
        f"torch={torch.__version__}"
    )
    print(f"plain forward loop: {forward * 1e3:.1f} ms CPU")
    print(
        f"{'':16s} {'calibrate ms':>13s} {'calib/fwd':>10s} {'quantize ms':>12s} {'quant/fwd':>10s}"
    )
    for label, calib, quant in rows:
        print(
            f"{label:16s} {calib * 1e3:13.1f} {calib / forward:10.2f} {quant * 1e3:12.1f} "
            f"{quant / forward:10.2f}"
        )
    print("goal: qruntime calib/fwd <= 1.3")


if __name__ == "__main__":
    main()
