"""Calibration inside a torch.distributed process group of several processes is refused until
qruntime syncs statistics across processes (each rank would keep different amaxes), before the
model is touched; ``distributed_sync: false`` on every algorithm opts into per-process results.
Two real gloo processes; a process group of one is an ordinary run."""

import json
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

CASES = {
    "max": {"method": "max"},
    "max-unsynced": {"method": "max", "distributed_sync": False},
    "list": [{"method": "max", "distributed_sync": False}, {"method": "max"}],
}


def _config(algorithm):
    return {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*_quantizer", "cfg": {"num_bits": 8}},
        ],
        "algorithm": algorithm,
    }


def _rank(rank: int, world: int, init: str, out: str) -> None:
    sys.path[:0] = [p for p in os.environ.get("QRUNTIME_TEST_PATH", "").split(os.pathsep) if p]
    import qruntime

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    results = {}
    try:
        for name, algorithm in CASES.items():
            model = nn.Sequential(nn.Linear(4, 4))
            x = torch.randn(3, 4, generator=torch.Generator().manual_seed(rank))
            try:
                qruntime.quantize(model, _config(algorithm), lambda m, x=x: m(x))
                results[name] = "ran"
            except qruntime.UnsupportedAlgorithmError as exc:
                unchanged = type(model[0]) is nn.Linear
                results[name] = f"refused unchanged={unchanged}: {exc}"
    finally:
        dist.destroy_process_group()
    with open(f"{out}.{rank}", "w") as f:
        json.dump(results, f)


def _run(tmp_path, world):
    os.environ["QRUNTIME_TEST_PATH"] = os.pathsep.join(sys.path)
    init = f"file://{tmp_path / 'store'}"
    out = str(tmp_path / "result")
    mp.spawn(_rank, args=(world, init, out), nprocs=world, join=True)
    return [json.loads((tmp_path / f"result.{r}").read_text()) for r in range(world)]


def test_several_processes_are_refused_unless_unsynced(tmp_path):
    for results in _run(tmp_path, 2):
        assert results["max"].startswith("refused unchanged=True")
        assert "process group of 2 processes" in results["max"]
        assert "distributed_sync: false" in results["max"]
        assert results["max-unsynced"] == "ran"
        assert results["list"].startswith("refused unchanged=True")


def test_a_group_of_one_process_runs(tmp_path):
    for results in _run(tmp_path, 1):
        assert set(results.values()) == {"ran"}
