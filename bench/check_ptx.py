"""Compile every kernel specialization for a GPU on a machine without one, and audit the PTX.

Why: the interpreter (tests/qruntime/test_kernels.py) proves the kernels' arithmetic but runs
numpy, not compiled code. Triton compiles to PTX and runs ``ptxas`` without a GPU, so the
code-generation facts that bit-exactness rests on can be checked here, for the Triton installed
(CI: PyPI's) and for 3.6 (the GPU image's, ``PYTHONPATH=.triton36``):

* every kernel the CPU test cases launch compiles and assembles (``ptxas``) for sm_90;
* no approximate or flushing fp32 arithmetic: no ``div.full``/``div.approx``/``rcp.approx``,
  no ``.ftz``, no ``fma`` on fp32 (contraction is off);
* ``div_rn`` became ``div.rn.f32``; fp64 -> fp32 and fp32 -> fp16 conversions are ``cvt.rn``
  (no float conversion rounds towards zero or infinity);
* whether the global loads were vectorised (reported; a performance hint, not a failure).

The specializations are collected by running the CPU kernel cases with the launch replaced by
a recorder, so they are the ones the tests exercise (argument types, constexprs, alignment).

Usage: ``python bench/check_ptx.py [--arch 90] [--limit N] [--json PATH]`` (no TRITON_INTERPRET).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    raise SystemExit("check_ptx.py compiles kernels: run it without TRITON_INTERPRET")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import triton
from qruntime.kernels import dispatch
from qruntime.kernels.formats import _common
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

_PTR = {
    torch.float32: "*fp32",
    torch.float16: "*fp16",
    torch.int16: "*i16",
    torch.int8: "*i8",
    torch.float64: "*fp64",
}
_SHOWN = ("FMT", "KIND", "PATTERN", "EVEN", "BLOCK", "LANES", "IN_KIND", "OUT_KIND", "BR", "BC")
FORBIDDEN = {
    "approximate fp32 division": re.compile(r"\bdiv\.(full|approx)\.f32"),
    "approximate reciprocal": re.compile(r"\brcp\.approx"),
    "flush to zero": re.compile(r"\.ftz\b"),
    "fp32 fma (contraction)": re.compile(r"\bfma\.rn\.f32"),
    "float narrowing not to nearest": re.compile(r"\bcvt\.r[zmp]\.(f16|bf16|f32)"),
}


def _spec_key(kernel: Any, args: tuple, meta: dict) -> str:
    parts = []
    for a in args:
        if isinstance(a, torch.Tensor):
            parts.append(f"{_PTR[a.dtype]}:{a.data_ptr() % 16 == 0}")
        else:
            parts.append(
                f"{'i64' if abs(int(a)) >= 2**31 else 'i32'}:{int(a) == 1}:{int(a) % 16 == 0}"
            )
    return f"{kernel.__name__}|{','.join(parts)}|{sorted(meta.items())}"


def representative(specs: dict[str, tuple[Any, tuple, dict]]) -> dict[str, tuple[Any, tuple, dict]]:
    """Every element-format branch of every kernel (bf16 in/out preferred: the most involved
    load/store path) plus every output dtype of every kernel, without the shape variants: the
    quick CI subset."""
    chosen: dict[tuple, str] = {}
    for key, (kernel, _, meta) in sorted(
        specs.items(), key=lambda kv: kv[1][2].get("OUT_KIND") != 2
    ):
        chosen.setdefault((kernel.__name__, meta.get("FMT"), meta.get("KIND")), key)
        chosen.setdefault((kernel.__name__, "out", meta.get("OUT_KIND")), key)
    keep = set(chosen.values())
    return {k: v for k, v in specs.items() if k in keep}


def collect(limit: int | None) -> dict[str, tuple[Any, tuple, dict]]:
    """Run the CPU kernel cases with a recording launch; the kernels never execute."""
    specs: dict[str, tuple[Any, tuple, dict]] = {}

    def record(kernel: Any, grid: tuple, *args: Any, elems: int, **meta: Any) -> None:
        meta = dict(meta, num_warps=_common.warps_for(elems))
        specs.setdefault(_spec_key(kernel, args, meta), (kernel, args, meta))

    _common.launch = record
    for mod in list(sys.modules.values()):  # the format modules imported `launch` by name
        if getattr(mod, "launch", None) is not None and mod.__name__.startswith("qruntime.kernels"):
            mod.launch = record
    dispatch.interpreter_enabled = lambda: True  # let backend="triton" accept CPU tensors

    from kernel_cases import CASES, DTYPES, amax_for, edge_cases, make_input
    from qruntime.numerics import fake_quant

    for _, cfg, shape, modes, ties in CASES:
        for d, dtype in enumerate(DTYPES):
            for k, mode in enumerate(modes):
                x = make_input(shape, dtype, k + d, ties=ties, transposed=bool((k + d) % 2))
                if cfg.get("unsigned"):
                    x = x.abs()
                x.requires_grad_(mode == "dynamic")  # also record the amax-writing variants
                y = fake_quant(
                    x, {**cfg, "pass_through_bwd": False}, amax_for(mode, x, cfg), backend="triton"
                )
                del y
    for x, cfg, amax, _ in edge_cases("cpu").values():
        fake_quant(x, cfg, amax, backend="triton")
    tested = set(specs)
    # The benchmark's aligned shapes: where the loads must be vectorised for bandwidth.
    from bench_kernels_gpu import FORMATS
    from qruntime.numerics import reduce_amax

    for cfg, mode in FORMATS.values():
        for dtype in (torch.bfloat16, torch.float32):
            x = torch.randn(256, 1024, dtype=dtype)
            fake_quant(x, cfg, reduce_amax(x, cfg) if mode == "static" else None, backend="triton")
    items = sorted(specs.items(), key=lambda kv: (kv[0] in tested, kv[0]))  # bench shapes first
    return dict(items[:limit] if limit else items)


def compile_spec(kernel: Any, args: tuple, meta: dict, arch: int) -> dict[str, Any]:
    names = kernel.arg_names
    signature: dict[str, str] = {}
    attrs: dict[tuple[int, ...], list] = {}
    constexprs: dict[str, Any] = {}
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            signature[names[i]] = _PTR[a.dtype]
            if a.data_ptr() % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif int(a) == 1:  # Triton specializes integer arguments equal to 1 as constants
            signature[names[i]] = "constexpr"
            constexprs[names[i]] = 1
        else:
            signature[names[i]] = "i64" if abs(int(a)) >= 2**31 else "i32"
            if int(a) % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    options = {"enable_fp_fusion": False}
    for k, v in meta.items():
        if k in ("num_warps", "enable_fp_fusion"):
            options[k] = v
        else:
            signature[k] = "constexpr"
            constexprs[k] = v
    src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    t0 = time.perf_counter()
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    ptx = compiled.asm["ptx"]
    found = {name: bool(rx.search(ptx)) for name, rx in FORBIDDEN.items()}
    return {
        "kernel": kernel.__name__,
        "constexprs": {k: v for k, v in constexprs.items()},
        "compile_s": round(time.perf_counter() - t0, 2),
        "cubin_bytes": len(compiled.asm.get("cubin", b"")),
        "violations": [name for name, hit in found.items() if hit],
        "div_rn_f32": "div.rn.f32" in ptx,
        "cvt_rn_f32_f64": "cvt.rn.f32.f64" in ptx,
        "cvt_rn_f16_f32": bool(re.search(r"cvt\.rn\.f16(x2)?\.f32", ptx)),
        "vector_loads": sorted(set(re.findall(r"ld\.global(?:\.[a-z0-9]+)*\.v\d", ptx))),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, default=90, help="CUDA compute capability (90 = H100/H200)")
    p.add_argument("--limit", type=int, help="compile only the first N specializations")
    p.add_argument("--representative", action="store_true", help="one per kernel code path")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    specs = collect(args.limit)
    if args.representative:
        specs = representative(specs)
    print(f"triton {triton.__version__}: {len(specs)} kernel specializations for sm_{args.arch}")
    results = []
    for kernel, kargs, meta in specs.values():
        r = compile_spec(kernel, kargs, meta, args.arch)
        results.append(r)
        flags = ",".join(r["violations"]) or "ok"
        keys = {k: v for k, v in r["constexprs"].items() if k in _SHOWN}
        print(
            f"  {r['kernel']:<16} {r['compile_s']:>5}s div.rn={r['div_rn_f32']!s:<5} "
            f"vec={','.join(r['vector_loads']) or '-':<18} {flags:<4} {keys}"
        )
    bad = [r for r in results if r["violations"]]
    # Every fp64->fp32 narrowing must round to nearest (NVFP4's scale): checked where present.
    if args.json:
        args.json.write_text(
            json.dumps({"triton": triton.__version__, "results": results}, indent=1)
        )
    print(f"{len(results)} compiled, {len(bad)} with forbidden instructions")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
