"""The kernels compile for a GPU (sm_90) and their PTX has none of the instructions that would
break bit-exactness: approximate division/reciprocal, flush-to-zero, fp32 FMA contraction.

Triton compiles and runs ``ptxas`` without a GPU, so this checks the code generation that the
interpreter tests (test_kernels.py) cannot see. It runs ``bench/check_ptx.py --representative``
(one specialization per kernel code path and dtype) in a subprocess, because the kernels must be
compiled, not interpreted, and ``make test`` sets ``TRITON_INTERPRET=1`` for this process.
The full audit of every specialization is ``python bench/check_ptx.py`` (docs/kernels.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_representative_kernels_compile_to_exact_ptx(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")  # compile for real, not from a cache
    out = tmp_path / "ptx.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-W",
            "ignore",
            str(ROOT / "bench" / "check_ptx.py"),
            "--representative",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    kernels = {r["kernel"] for r in results}
    assert kernels == {
        "_ew_kernel",
        "_row_kernel",
        "_tile_kernel",
        "_dynamic_kernel",
        "_static_kernel",
        "_mx_kernel",
    }
    assert all(not r["violations"] for r in results)
    # Every kernel with a division uses the correctly rounded one; fp16 outputs round to nearest.
    assert any(r["div_rn_f32"] for r in results)
    assert all(r["cvt_rn_f16_f32"] for r in results if r["constexprs"].get("OUT_KIND") == 1)
    nvfp4 = [r for r in results if r["kernel"] == "_dynamic_kernel"]
    assert nvfp4 and all(r["cvt_rn_f32_f64"] for r in nvfp4)  # NVFP4's fp64 scale narrows RNE
