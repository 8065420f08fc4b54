"""Test scenarios run in real gloo processes: spawn, a deadline, one result file per scenario
and rank.

Why shared: the QAT/DDP and FSDP2-calibration tests need the same harness, and its details
(spawn so no state is forked, a deadline that kills a hanging process, a crash recorded as a
result instead of a missing file) are easy to get subtly wrong twice.
"""

import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

#: A scenario: (name, rank) -> a picklable result (saved with torch.save).
Scenario = Callable[[str, int], dict]


def _worker(
    rank: int,
    world: int,
    init: str,
    out: str,
    scenario: Scenario,
    names: Sequence[str],
    timeout_s: float,
) -> None:
    sys.path[:0] = [p for p in os.environ.get("QRUNTIME_TEST_PATH", "").split(os.pathsep) if p]
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s)
    )
    for name in names:
        try:
            result = scenario(name, rank)
        except Exception:
            result = {"crash": traceback.format_exc()}
        torch.save(result, Path(out) / f"{name}.{rank}.pt")
    dist.destroy_process_group()


def run_scenarios(
    scenario: Scenario,
    names: Sequence[str],
    out: Path,
    *,
    world: int = 2,
    timeout_s: float = 20,
    deadline_s: float = 90,
) -> Path:
    """Run ``scenario(name, rank)`` for every name on ``world`` gloo processes (one spawn for
    all names); results land in ``out/<name>.<rank>.pt``. ``scenario`` must be a module-level
    function. Any process still alive after ``deadline_s`` is killed."""
    os.environ["QRUNTIME_TEST_PATH"] = os.pathsep.join(sys.path)
    ctx = mp.get_context("spawn")
    init = f"file://{out / 'store'}"
    args = (world, init, str(out), scenario, list(names), timeout_s)
    procs = [ctx.Process(target=_worker, args=(rank, *args)) for rank in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + deadline_s
    for p in procs:
        p.join(max(1.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    return out


def load_results(out: Path, name: str, world: int = 2) -> list[dict]:
    """The results of scenario ``name``, one per rank; a missing file or a crash fails."""
    loaded = []
    for rank in range(world):
        path = out / f"{name}.{rank}.pt"
        assert path.exists(), f"rank {rank} wrote no result for {name}"
        result = torch.load(path, weights_only=False)
        assert "crash" not in result, result["crash"]
        loaded.append(result)
    return loaded
