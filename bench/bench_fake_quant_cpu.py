"""CPU throughput of qruntime's torch fake-quant reference vs Model Optimizer 0.47.0.

For each format and dtype on a 4096x4096 tensor: GB/s of our ``fake_quant`` (bytes read + bytes
written, i.e. 2 * numel * itemsize), Model Optimizer's equivalent ``TensorQuantizer`` forward in
the same process where it runs on CPU, the ratio, and whether the two outputs are bit-identical.
A plain ``clone()`` gives the memory-bandwidth ceiling. NVFP4 and MXFP4 do not run on CPU in
Model Optimizer (docs/numerics.md, 'What Model Optimizer runs where'), so they have no
comparison.

Usage: ``python bench/bench_fake_quant_cpu.py [--size 4096] [--repeat 5] [--threads N]``
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from qruntime.numerics import fake_quant, reduce_amax

FORMATS: dict[str, dict[str, Any]] = {
    "INT8 per tensor": {"num_bits": 8},
    "INT8 per channel": {"num_bits": 8, "axis": 0},
    "INT4 block 128": {"num_bits": 4, "block_sizes": {-1: 128}},
    "FP8 per tensor": {"num_bits": (4, 3)},
    "NVFP4": {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)}},
    "MXFP4": {"num_bits": (2, 1), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
}
GPU_ONLY_IN_MODELOPT = {"NVFP4", "MXFP4"}


def best_times(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` wall time of each function, runs interleaved.

    Interleaving makes the ratios robust on a shared machine: a busy spell slows every
    contender of a round instead of one of them.
    """
    for fn in fns.values():
        fn()  # warm-up (allocator, lazy init)
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    na, nb = torch.isnan(a), torch.isnan(b)
    view = torch.int16 if a.element_size() == 2 else torch.int32
    return torch.equal(na, nb) and torch.equal(a[~na].view(view), b[~nb].view(view))


def modelopt_quantizer(cfg: dict[str, Any], amax: torch.Tensor | None) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from modelopt.torch.quantization.config import QuantizerAttributeConfig
        from modelopt.torch.quantization.nn import TensorQuantizer

    tq = TensorQuantizer(QuantizerAttributeConfig(**cfg))
    if amax is not None:
        tq.amax = amax.clone()
    return tq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--no-modelopt", action="store_true", help="skip the modelopt columns")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    n = args.size
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(n, n, generator=gen)
    print(f"fake_quant on {n}x{n}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    header = (
        f"{'format':<18}{'dtype':<10}{'ours GB/s':>10}{'modelopt GB/s':>15}"
        f"{'ratio':>8}{'copy GB/s':>11}  bit-exact"
    )
    print(header)
    print("-" * len(header))
    for dtype in (torch.float32, torch.bfloat16):
        x = base.to(dtype)
        nbytes = 2 * x.numel() * x.element_size()
        for name, cfg in FORMATS.items():
            # Calibrated amax for the static formats (the steady state of a quantized layer);
            # NVFP4 gets its per-tensor global amax, MX uses none.
            amax = None if name == "MXFP4" else reduce_amax(x, cfg)
            fns: dict[str, Callable[[], Any]] = {
                "ours": lambda v=x, c=cfg, a=amax: fake_quant(v, c, a),
                "copy": x.clone,
            }
            exact = "n/a (modelopt: GPU only)"
            if name not in GPU_ONLY_IN_MODELOPT and not args.no_modelopt:
                tq = modelopt_quantizer(cfg, amax)
                with torch.no_grad():
                    exact = "yes" if bit_equal(fake_quant(x, cfg, amax), tq(x)) else "NO"
                fns["modelopt"] = lambda v=x, t=tq: t(v)
            with torch.no_grad():
                best = best_times(fns, args.repeat)
            gbs = {k: nbytes / v / 1e9 for k, v in best.items()}
            mo = gbs.get("modelopt")
            mo_txt = f"{mo:15.2f}" if mo else f"{'-':>15}"
            ratio_txt = f"{gbs['ours'] / mo:7.2f}x" if mo else f"{'-':>8}"
            print(
                f"{name:<18}{str(dtype).removeprefix('torch.'):<10}{gbs['ours']:10.2f}{mo_txt}"
                f"{ratio_txt}{gbs['copy']:11.2f}  {exact}"
            )


if __name__ == "__main__":
    main()
