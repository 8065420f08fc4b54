"""GPU throughput of the Triton fake-quant kernels, against a copy and the torch reference.

For each format, bf16 and fp32 inputs of 256 MB and 1 GB (of input), this measures:

* the kernel path, ``fake_quant(x, cfg, amax, backend="triton")`` end to end (the host work,
  the torch reductions a format needs first, e.g. a dynamic per-tensor amax, and the kernel);
* the torch reference on the same CUDA tensor (``backend="torch"``);
* a device-to-device copy of the same tensor (``y.copy_(x)``), measured in the same run, as the
  memory-bandwidth ceiling.

GB/s counts the bytes a fake-quant must move at the least: the input read once and the output
written once (``2 * numel * itemsize``), for the copy as well; extra passes (a global amax, a
padded copy) therefore show as a lower percentage. The goal of the issue is >= 85 % of the copy.
Each measured kernel output is also compared with the reference output, bit for bit (NaN
positions equal), so a fast but wrong kernel cannot go unnoticed.

Timing uses ``triton.testing.do_bench`` (CUDA events, L2 flushed between calls) on a GPU.
``--dry-run`` runs every step on CPU tensors in Triton's interpreter with tiny sizes and a wall
clock, to test this script without a GPU (its figures mean nothing).

Usage: ``python bench/bench_kernels_gpu.py [--sizes-mb 256 1024] [--dtypes bf16 fp32]
[--formats SUBSTR ...] [--budget-s 240] [--json PATH] [--dry-run]``; writes
``$OUT/bench_kernels_gpu.json`` when ``OUT`` is set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if "--dry-run" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import torch
from qruntime.kernels import KERNEL_STATS
from qruntime.numerics import fake_quant, reduce_amax


def _dyn(bits: Any, block: int, scale_bits: tuple[int, int]) -> dict[str, Any]:
    return {
        "num_bits": bits,
        "block_sizes": {-1: block, "type": "dynamic", "scale_bits": scale_bits},
    }


_NVFP4_STATIC = {
    "num_bits": (2, 1),
    "block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3)},
}

#: name -> (config, amax): "static" = a max calibration of the tensor (not timed), None = dynamic.
FORMATS: dict[str, tuple[dict[str, Any], str | None]] = {
    "INT8 per tensor static": ({"num_bits": 8}, "static"),
    "INT8 per tensor dynamic": ({"num_bits": 8}, None),
    "INT8 per channel static": ({"num_bits": 8, "axis": 0}, "static"),
    "INT8 per token dynamic": ({"num_bits": 8, "block_sizes": {-1: None}}, None),
    "INT4 block128 static": ({"num_bits": 4, "block_sizes": {-1: 128}}, "static"),
    "INT4 block128 dynamic": ({"num_bits": 4, "block_sizes": {-1: 128}}, None),
    "FP8 per tensor static": ({"num_bits": (4, 3)}, "static"),
    "FP8 per tensor dynamic": ({"num_bits": (4, 3)}, None),
    "FP8 per channel static": ({"num_bits": (4, 3), "axis": 0}, "static"),
    "FP8 per token dynamic": (
        {"num_bits": (4, 3), "block_sizes": {-1: None, "type": "dynamic"}},
        None,
    ),
    "FP8 128x128 dynamic": ({"num_bits": (4, 3), "block_sizes": {-1: 128, -2: 128}}, None),
    "NVFP4 b16 dynamic": (_dyn((2, 1), 16, (4, 3)), None),
    "NVFP4 b16 static global": (_dyn((2, 1), 16, (4, 3)), "static"),
    "NVFP4 b32 dynamic": (_dyn((2, 1), 32, (4, 3)), None),
    "NVFP4 static": (_NVFP4_STATIC, "static"),
    "NVFP4 four_over_six": (
        {**_NVFP4_STATIC, "block_sizes": {**_NVFP4_STATIC["block_sizes"], "four_over_six": True}},
        "static",
    ),
    "MXFP4": (_dyn((2, 1), 32, (8, 0)), None),
    "MXFP6 E3M2": (_dyn((3, 2), 32, (8, 0)), None),
    "MXFP6 E2M3": (_dyn((2, 3), 32, (8, 0)), None),
    "MXFP8 E4M3": (_dyn((4, 3), 32, (8, 0)), None),
    "MXFP8 E5M2": (_dyn((5, 2), 32, (8, 0)), None),
    "MXINT8": (_dyn(8, 32, (8, 0)), None),
}

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


def timer(device: str) -> Callable[[Callable[[], Any]], float]:
    """Mean milliseconds per call: do_bench on a GPU, a wall clock in a dry run."""
    if device == "cuda":
        from triton.testing import do_bench

        return lambda fn: float(do_bench(fn, warmup=5, rep=40))

    def wall(fn: Callable[[], Any]) -> float:
        fn()
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    return wall


def bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    na, nb = torch.isnan(a), torch.isnan(b)
    view = torch.int16 if a.element_size() == 2 else torch.int32
    same = (a.view(view) == b.view(view)) | (na & nb)
    return bool(torch.equal(na, nb) and bool(same.all()))


def versions() -> dict[str, Any]:
    import triton

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, sms=p.multi_processor_count, mem_gib=round(p.total_memory / 2**30))
    return info


def json_target(args: argparse.Namespace) -> Path | None:
    if args.json is not None:
        return args.json
    return Path(os.environ["OUT"]) / "bench_kernels_gpu.json" if os.environ.get("OUT") else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run to test the script on CPU")
    bench = timer(device)
    start = time.perf_counter()
    cols = 256 if args.dry_run else 8192
    sizes = [0.0625] if args.dry_run else args.sizes_mb
    names = [n for n in FORMATS if not args.formats or any(f in n for f in args.formats)]
    rows: list[dict[str, Any]] = []
    copies: dict[str, dict[str, float]] = {}
    skipped: list[str] = []
    target = json_target(args)

    def result() -> dict[str, Any]:
        return {
            "dry_run": args.dry_run,
            "versions": versions(),
            "bytes_counted": "2 * numel * itemsize (input read once + output written once)",
            "copy_gbps": copies,
            "rows": rows,
            "skipped_for_time": skipped,
            "elapsed_s": round(time.perf_counter() - start, 1),
        }

    for dname in args.dtypes:
        dtype = DTYPES[dname]
        for size in sizes:
            numel = int(size * 2**20) // torch.tensor([], dtype=dtype).element_size()
            x = torch.randn(numel // cols, cols, device=device, dtype=dtype)
            nbytes = 2 * x.numel() * x.element_size()
            out = torch.empty_like(x)
            copy_ms = bench(lambda x=x, out=out: out.copy_(x))
            copy_gbps = nbytes / copy_ms / 1e6
            copies.setdefault(dname, {})[f"{size:g}"] = round(copy_gbps, 1)
            del out
            for name in names:
                if time.perf_counter() - start > args.budget_s:
                    skipped.append(f"{name} {dname} {size:g}MB")
                    continue
                cfg, mode = FORMATS[name]
                amax = reduce_amax(x, cfg) if mode == "static" else None
                before = KERNEL_STATS.copy()
                y_kernel = fake_quant(x, cfg, amax, backend="triton")
                ran = KERNEL_STATS - before
                kernel_ms = bench(
                    lambda x=x, cfg=cfg, amax=amax: fake_quant(x, cfg, amax, backend="triton")
                )
                row: dict[str, Any] = {
                    "format": name,
                    "dtype": dname,
                    "size_mb": size,
                    "shape": list(x.shape),
                    "kernel_ran": sorted(f"{k[0]}:{k[1]}" for k in ran),
                    "kernel_ms": round(kernel_ms, 4),
                    "kernel_gbps": round(nbytes / kernel_ms / 1e6, 1),
                    "kernel_pct_copy": round(100 * nbytes / kernel_ms / 1e6 / copy_gbps, 1),
                }
                if not args.no_reference:
                    y_ref = fake_quant(x, cfg, amax, backend="torch")
                    row["bit_exact"] = bit_equal(y_kernel, y_ref)
                    del y_ref
                    ref_ms = bench(
                        lambda x=x, cfg=cfg, amax=amax: fake_quant(x, cfg, amax, backend="torch")
                    )
                    row.update(
                        torch_ms=round(ref_ms, 4),
                        torch_gbps=round(nbytes / ref_ms / 1e6, 1),
                        torch_pct_copy=round(100 * nbytes / ref_ms / 1e6 / copy_gbps, 1),
                        speedup=round(ref_ms / kernel_ms, 2),
                    )
                del y_kernel
                rows.append(row)
                print_row(row, flush=True)
                if target is not None:  # after every row: a killed run still leaves its figures
                    target.write_text(json.dumps(result(), indent=1))
            del x
            if device == "cuda":
                torch.cuda.empty_cache()
    return result()


HEADER = (
    f"{'format':<26} {'dtype':<5} {'MB':>6} {'kernel GB/s':>11} {'% copy':>7} "
    f"{'torch GB/s':>10} {'% copy':>7} {'speedup':>7} {'bits':>5}"
)


def print_row(r: dict[str, Any], flush: bool = False) -> None:
    torch_part = (
        f"{r['torch_gbps']:>10.1f} {r['torch_pct_copy']:>6.1f}% {r['speedup']:>6.1f}x "
        f"{'same' if r['bit_exact'] else 'DIFF':>5}"
        if "torch_gbps" in r
        else f"{'-':>10} {'-':>7} {'-':>7} {'-':>5}"
    )
    print(
        f"{r['format']:<26} {r['dtype']:<5} {r['size_mb']:>6g} {r['kernel_gbps']:>11.1f} "
        f"{r['kernel_pct_copy']:>6.1f}% {torch_part}",
        flush=flush,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes-mb", type=float, nargs="+", default=[256, 1024])
    p.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=sorted(DTYPES))
    p.add_argument("--formats", nargs="*", help="only formats whose name contains one of these")
    p.add_argument("--budget-s", type=float, default=1e9, help="stop starting new rows after this")
    p.add_argument("--no-reference", action="store_true", help="skip the torch reference")
    p.add_argument("--json", type=Path, help="where to write the JSON (default $OUT/...)")
    p.add_argument("--dry-run", action="store_true", help="CPU + interpreter, tiny sizes")
    args = p.parse_args(argv)
    print(HEADER, flush=True)
    result = run(args)
    copies = ", ".join(
        f"{d} {s}MB {g} GB/s" for d, v in result["copy_gbps"].items() for s, g in v.items()
    )
    print(f"copy: {copies}")
    print(f"versions: {result['versions']}")
    if result["skipped_for_time"]:
        print(f"not measured (time budget): {len(result['skipped_for_time'])} rows")
    target = json_target(args)
    if target is not None:
        target.write_text(json.dumps(result, indent=1))
        print(f"wrote {target}")
    bad = [r for r in result["rows"] if r.get("bit_exact") is False]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
