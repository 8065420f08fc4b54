"""A torch.distributed group of one process calibrates as one process.

Calibration in a process group of several processes is synchronised now and no longer refused
(tests/qruntime/test_distributed_calibration.py, which also covers the refusals left: a
``ParallelState`` without torch.distributed, a process refused before calibrating). In a group
of one process nothing is synchronised and nothing that needs a single process (the layerwise
checkpoint, refused in a group of several: tests/qruntime/test_layer_checkpoint.py) is refused.
A real gloo process."""

import json
import os
import sys
from datetime import timedelta

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

    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=world, timeout=timedelta(seconds=20)
    )
    results = {}
    try:
        x = torch.randn(3, 4, generator=torch.Generator().manual_seed(rank))
        for name, algorithm in CASES.items():
            model = nn.Sequential(nn.Linear(4, 4))
            qruntime.quantize(model, _config(algorithm), lambda m, x=x: m(x))
            amax = model[0].input_quantizer.amax
            results[name] = bool(torch.equal(amax, x.abs().max()))
        model = nn.Sequential(nn.Sequential(nn.Linear(4, 4)), nn.Sequential(nn.Linear(4, 4)))
        config = _config({"method": "max", "layerwise": {"enable": True}})
        config["algorithm"]["layerwise"]["checkpoint_dir"] = f"{out}.ckpt{rank}"
        try:
            qruntime.quantize(model, config, lambda m, x=x: m(x), layers=lambda m: list(m))
            results["checkpoint"] = "ran"
        except Exception as exc:
            unchanged = type(model[0][0]) is nn.Linear
            results["checkpoint"] = f"{type(exc).__name__} unchanged={unchanged}: {exc}"
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


def test_a_group_of_one_process_runs_as_one_process(tmp_path):
    """Each amax is that of the process's own data; the layer checkpoint is allowed."""
    (results,) = _run(tmp_path, 1)
    assert results["max"] and results["max-unsynced"] and results["list"]
    assert results["checkpoint"] == "ran"
