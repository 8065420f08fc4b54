"""Distributed calibration time vs one process, on the CPU with gloo.

One process calibrates the whole data set; then ``world`` processes (torch.distributed, gloo,
one thread each) calibrate a shard each and synchronise. Printed per algorithm and world size:
the wall time of ``qruntime.quantize`` (slowest process), the same with
``distributed_sync: false`` (the forward work alone, no collective), and the difference — what
the synchronisation costs. The model is a stack of linears (``--layers`` x ``--width``), INT8
per-channel weights and per-tensor inputs for ``max``, INT4 block-32 weights for ``awq_lite``
and ``gptq``.

    .venv/bin/python bench/bench_distributed_calib.py --worlds 2 4 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

INT8 = [
    {"quantizer_name": "*", "enable": False},
    {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
    {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8}},
]
INT4 = [
    {"quantizer_name": "*", "enable": False},
    {
        "quantizer_name": "*weight_quantizer",
        "cfg": {"num_bits": 4, "block_sizes": {-1: 32, "type": "static"}},
    },
]
ALGORITHMS = {
    "max": (INT8, {"method": "max"}),
    "awq_lite": (INT4, {"method": "awq_lite"}),
    "gptq": (INT4, {"method": "gptq", "block_size": 32}),
}


def _model(layers: int, width: int) -> nn.Module:
    torch.manual_seed(0)
    blocks: list[nn.Module] = []
    for _ in range(layers):
        blocks += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*blocks)


def _data(batches: int, width: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(4, 32, width, generator=g) for _ in range(batches)]


def _config(name: str, synced: bool) -> dict:
    quant_cfg, algorithm = ALGORITHMS[name]
    algorithm = dict(algorithm)
    if not synced:
        algorithm["distributed_sync"] = False
    return {"quant_cfg": quant_cfg, "algorithm": algorithm}


def _time(name: str, synced: bool, indices: list[int], args: argparse.Namespace) -> float:
    import qruntime

    data = _data(args.batches, args.width)
    model = _model(args.layers, args.width)

    def loop(m: nn.Module) -> None:
        for i in indices:
            m(data[i])

    if dist.is_initialized():
        dist.barrier()
    start = time.perf_counter()
    qruntime.quantize(model, _config(name, synced), loop, lint="off")
    return time.perf_counter() - start


def _worker(rank: int, world: int, init: str, out: str, args: argparse.Namespace) -> None:
    sys.path[:0] = [p for p in os.environ.get("QRUNTIME_BENCH_PATH", "").split(os.pathsep) if p]
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=world, timeout=timedelta(seconds=300)
    )
    indices = list(range(rank, args.batches, world))
    lines = []
    for name in args.algorithms:
        for synced in (True, False):
            if synced is False and name != "max":
                continue  # without sync the other algorithms' processes diverge: no baseline
            times = [_time(name, synced, indices, args) for _ in range(args.repeat)]
            lines.append(f"{name} {int(synced)} {statistics.median(times)}")
    dist.destroy_process_group()
    Path(f"{out}.{rank}").write_text("\n".join(lines))


def _distributed(world: int, args: argparse.Namespace) -> dict[tuple[str, bool], float]:
    os.environ["QRUNTIME_BENCH_PATH"] = os.pathsep.join(sys.path)
    with tempfile.TemporaryDirectory() as tmp:
        init = f"file://{tmp}/store"
        out = f"{tmp}/times"
        mp.spawn(_worker, args=(world, init, out, args), nprocs=world, join=True)
        slowest: dict[tuple[str, bool], float] = {}
        for rank in range(world):
            for line in Path(f"{out}.{rank}").read_text().splitlines():
                name, synced, seconds = line.split()
                key = (name, synced == "1")
                slowest[key] = max(slowest.get(key, 0.0), float(seconds))
    return slowest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS))
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"model {args.layers} x Linear({args.width}, {args.width}), {args.batches} batches of "
        f"4 x 32 tokens, one thread per process, gloo; median of {args.repeat}"
    )
    single = {
        name: statistics.median(
            _time(name, True, list(range(args.batches)), args) for _ in range(args.repeat)
        )
        for name in args.algorithms
    }
    print("| algorithm | processes | wall s (slowest) | unsynced s | sync cost s | vs 1 process |")
    print("|---|---|---|---|---|---|")
    for name in args.algorithms:
        print(f"| {name} | 1 | {single[name]:.3f} | - | - | 1.00x |")
    for world in args.worlds:
        times = _distributed(world, args)
        for name in args.algorithms:
            synced = times[(name, True)]
            unsynced = times.get((name, False))
            cost = f"{synced - unsynced:.3f}" if unsynced is not None else "-"
            plain = f"{unsynced:.3f}" if unsynced is not None else "-"
            print(
                f"| {name} | {world} | {synced:.3f} | {plain} | {cost} | "
                f"{single[name] / synced:.2f}x |"
            )


if __name__ == "__main__":
    main()
