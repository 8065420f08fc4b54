"""Cold-start cost of loading a config: qconfig vs. importing Model Optimizer's quantization.

Why: a linter, a pre-commit hook or a CLI that checks a config pays the import on every run.
Each measurement is a fresh ``python -c`` (wall time, including interpreter start), so it is
what a user waits for. Goal: qconfig ≤ 0.25 s. Prints numbers; never pass/fail.

    .venv/bin/python bench/bench_load.py [--runs 10] [--modelopt-runs 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRESET = "INT8_DEFAULT_CFG"  # 27 entries once its units are imported


def _time(code: str, runs: int, cwd: str) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=cwd)
        times.append(time.perf_counter() - start)
    return times


def _peak_rss_mb(code: str, cwd: str) -> float | None:
    """Max resident memory of one run (``resource`` is POSIX-only), for the size comparison."""
    if sys.platform == "win32":
        return None
    wrapped = (
        f"{code}\nimport resource, sys\n"
        "r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(r / (1024 * 1024) if sys.platform == 'darwin' else r / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapped], check=True, cwd=cwd, capture_output=True, text=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--modelopt-runs", type=int, default=3)
    args = parser.parse_args()

    from qconfig import presets

    with tempfile.TemporaryDirectory() as tmp:
        # A stand-alone copy: the preset's imports name packaged units (qconfig/units/...).
        preset = Path(tmp) / "preset.yaml"
        shutil.copy(presets.path(PRESET), preset)
        entries = len(presets.get(PRESET)["quant_cfg"])
        qconfig_code = "import qconfig; qconfig.load_config('preset.yaml')"
        _time(qconfig_code, 1, tmp)  # warm the bytecode and file caches
        rows = [
            (
                f"qconfig: import + load_config (preset.yaml, {entries} entries)",
                _time(qconfig_code, args.runs, tmp),
                _peak_rss_mb(qconfig_code, tmp),
            ),
            ("python -c pass (interpreter start)", _time("pass", args.runs, tmp), None),
        ]
        if importlib.util.find_spec("modelopt") is not None:
            modelopt_code = "import modelopt.torch.quantization"
            _time(modelopt_code, 1, tmp)
            rows.append(
                (
                    "modelopt: import modelopt.torch.quantization",
                    _time(modelopt_code, args.modelopt_runs, tmp),
                    _peak_rss_mb(modelopt_code, tmp),
                )
            )

    print(f"python {sys.version.split()[0]} on {os.cpu_count()} CPUs; wall time of a fresh process")
    print(f"{'what':58} {'runs':>4} {'median s':>9} {'min s':>7} {'peak RSS MB':>12}")
    for label, times, rss in rows:
        rss_text = f"{rss:12.0f}" if rss is not None else f"{'':12}"
        print(
            f"{label:58} {len(times):4d} {statistics.median(times):9.3f} {min(times):7.3f} {rss_text}"
        )
    ours = statistics.median(rows[0][1])
    print(f"goal for qconfig: <= 0.25 s median -> {'met' if ours <= 0.25 else 'NOT met'}")
    if len(rows) == 3:
        theirs = statistics.median(rows[2][1])
        print(f"modelopt / qconfig: {theirs / ours:.1f}x")


if __name__ == "__main__":
    main()
