"""Wall time of ``qconfig lint`` on one preset YAML, process start to exit.

Why: the linter runs in editors, pre-commit hooks and CI, once per commit or save, so its
start-up is what users wait for; Model Optimizer can only check a config after
``import modelopt.torch.quantization`` (several seconds, torch included). Goals: qconfig lint
<= 0.25 s median on a quiet machine, and <= 2x the floor of its own imports (``import yaml,
pydantic``) measured in the same run, which holds on any machine. Prints numbers; never
pass/fail.

Every row is a fresh process run the way users run it (the installed console script), median of
``--runs``; ``cpu s`` is the child's user+sys time, which a busy machine inflates far less than
wall time, so compare rows of one run only. The rows are measured interleaved (one run of each
in turn), so a change in load hits them alike and their ratios stay comparable. The floor rows
show what any pydantic + PyYAML tool pays before doing anything; the "one pydantic model" row
what any tool that validates with a pydantic model pays (``import pydantic`` is lazy, the first
model imports the rest). Bytecode: a pip-installed package is byte-compiled at install time; an
editable checkout writes ``__pycache__`` on first import unless PYTHONDONTWRITEBYTECODE is set,
so this script unsets it for its children and warms each command once.

    .venv/bin/python bench/bench_lint.py [--runs 10] [--modelopt-runs 3] [--instructions]

``--instructions`` also counts each row's instructions under valgrind (``PYTHONMALLOC=malloc
valgrind --tool=callgrind``, after the warm-up run): deterministic to about 0.1 %, where wall
and CPU time on a shared machine vary by 10 %, so it is the figure to compare changes by.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRESET = "INT8_DEFAULT_CFG"  # 27 entries once its units are imported


def _measure(cmd: list[str], runs: int, cwd: str, env: dict[str, str]) -> tuple[float, float]:
    """(median wall s, median user+sys CPU s) over ``runs`` fresh processes."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            raise SystemExit(
                f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--modelopt-runs", type=int, default=3)
    parser.add_argument(
        "--instructions", action="store_true", help="also count instructions under valgrind"
    )
    args = parser.parse_args()
    if args.instructions and shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind on PATH")

    from qconfig import presets

    qconfig = shutil.which("qconfig", path=str(Path(sys.executable).parent))
    if qconfig is None:
        raise SystemExit("the qconfig script is not installed next to this python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        # a stand-alone copy: its imports name packaged units (qconfig/units/...)
        shutil.copy(presets.path(PRESET), Path(tmp) / "preset.yaml")
        rows: list[tuple[str, list[str], int]] = [
            ("qconfig lint preset.yaml", [qconfig, "lint", "preset.yaml"], args.runs),
            ("qconfig --help", [qconfig, "--help"], args.runs),
            ("floor: python -c 'import yaml, pydantic'", [py, "-c", _FLOOR], args.runs),
            ("floor: python -c pass", [py, "-c", "pass"], args.runs),
            ("one pydantic model, validated once", [py, "-c", _ONE_MODEL], args.runs),
        ]
        if args.modelopt_runs > 0 and importlib.util.find_spec("modelopt") is not None:
            code = "import modelopt.torch.quantization"
            rows.append((f"python -c '{code}'", [py, "-c", code], args.modelopt_runs))
        for _label, cmd, _runs in rows:
            _measure(cmd, 1, tmp, env)  # warm bytecode and file caches
        samples: dict[str, tuple[list[float], list[float]]] = {r[0]: ([], []) for r in rows}
        for i in range(max(r[2] for r in rows)):
            for label, cmd, runs in rows:
                if i < runs:
                    wall, cpu = _measure(cmd, 1, tmp, env)
                    samples[label][0].append(wall)
                    samples[label][1].append(cpu)
        results = [
            (
                label,
                runs,
                statistics.median(samples[label][0]),
                statistics.median(samples[label][1]),
            )
            for label, _cmd, runs in rows
        ]
        counts = (
            {label: _instructions(cmd, tmp, env) for label, cmd, _runs in rows[:5]}
            if args.instructions
            else {}
        )

    print(f"python {sys.version.split()[0]} on {os.cpu_count()} CPUs, load {_load()}")
    print(f"{'what (fresh process each run)':48} {'runs':>4} {'median wall s':>13} {'cpu s':>6}")
    for label, runs, wall, cpu in results:
        print(f"{label:48} {runs:4d} {wall:13.3f} {cpu:6.3f}")
    ours, floor = results[0][2], results[2][2]
    print(f"goal for qconfig lint: <= 0.25 s median wall -> {'met' if ours <= 0.25 else 'NOT met'}")
    ratio = ours / floor
    print(
        f"qconfig lint / floor (import yaml, pydantic): {ours:.3f} / {floor:.3f} s = {ratio:.2f}x"
        f" (cpu {results[0][3] / results[2][3]:.2f}x); goal <= 2x -> {'met' if ratio <= 2 else 'NOT met'}"
    )
    model = results[4]
    print(
        f"one pydantic model / floor: {model[2] / floor:.2f}x (cpu {model[3] / results[2][3]:.2f}x);"
        f" qconfig lint / one pydantic model: {ours / model[2]:.2f}x"
        f" (cpu {results[0][3] / model[3]:.2f}x)"
    )
    if counts:
        base, one = counts[results[2][0]], counts[results[4][0]]
        print(f"{'instructions (callgrind, M)':48} {'':4} {'M':>13} {'x floor':>7}")
        for label, count in counts.items():
            print(f"{label:48} {'':4} {count / 1e6:13.1f} {count / base:7.2f}")
        ratio = counts[results[0][0]] / base
        print(
            f"qconfig lint / floor in instructions: {ratio:.2f}x (goal <= 2x -> "
            f"{'met' if ratio <= 2 else 'NOT met'}); above one pydantic model: "
            f"{(counts[results[0][0]] - one) / 1e6:.0f} M"
        )
    if len(results) == 6:
        print(f"import modelopt.torch.quantization / qconfig lint: {results[5][2] / ours:.1f}x")


_FLOOR = "import yaml, pydantic"
#: What any tool that validates with a pydantic model pays: ``import pydantic`` alone is lazy,
#: the first model class imports the model machinery (pydantic.main, fields, types). Plugin
#: discovery is skipped as the qconfig CLI skips it (qconfig.cli.startup).
_ONE_MODEL = (
    "import sys, types\n"
    "stub = types.ModuleType('pydantic.plugin._loader')\n"
    "stub.get_plugins = lambda: ()\n"
    "sys.modules['pydantic.plugin._loader'] = stub\n"
    "import yaml\nfrom pydantic import BaseModel, Field\n"
    "class M(BaseModel):\n    x: int = Field(default=1, ge=0)\nM(x=2)"
)


def _instructions(cmd: list[str], cwd: str, env: dict[str, str]) -> int:
    """Instructions the command executes, counted by callgrind (the system allocator, so that
    pymalloc's arenas do not differ between runs)."""
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd],
        cwd=cwd,
        env={**env, "PYTHONMALLOC": "malloc"},
        capture_output=True,
        text=True,
    )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"valgrind {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return int(found.group(1))


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


if __name__ == "__main__":
    main()
