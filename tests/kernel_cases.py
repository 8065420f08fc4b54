"""Shared cases and helpers of the kernel tests: tests/qruntime/test_kernels.py (Triton
interpreter on CPU, small shapes) and tests/gpu/test_kernels_gpu.py (CUDA, larger shapes).

One table of formats keeps the CPU and GPU checks about the same configurations; the GPU tests
scale the shapes up. Helpers assert bit equality (NaN positions equal, sign of zero included)
and that a kernel, not a fallback to the reference, produced the output under test.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from qruntime.kernels import KERNEL_STATS
from qruntime.numerics import fake_quant, reduce_amax

__all__ = [
    "CASES",
    "DTYPES",
    "E2M1_TIES",
    "E4M3_MIDPOINTS",
    "EDGE_IDS",
    "INF",
    "INT_TIES",
    "NAN",
    "amax_for",
    "assert_bits",
    "dyn",
    "edge_cases",
    "make_input",
    "run_both",
]

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
NAN, INF = float("nan"), float("inf")


def assert_bits(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Same shape/dtype, same NaN positions, same bit pattern everywhere else (-0 != +0)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    na, ne = torch.isnan(actual), torch.isnan(expected)
    assert torch.equal(na, ne), f"NaN positions differ: {int((na ^ ne).sum())} elements"
    view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[actual.element_size()]
    a = actual[~na].contiguous().view(view)
    e = expected[~ne].contiguous().view(view)
    bad = a != e
    if bool(bad.any()):
        i = bad.nonzero()[:5, 0]
        raise AssertionError(
            f"{int(bad.sum())} elements differ; kernel {actual[~na][i].tolist()} "
            f"vs reference {expected[~ne][i].tolist()}"
        )


def make_input(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    seed: int,
    *,
    ties: tuple[float, ...] = (),
    specials: bool = True,
    transposed: bool = False,
    scale: float = 3.0,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Random normal data with ties, ±0, subnormals of ``dtype`` and (optionally) NaN/±inf at
    random positions; ``transposed`` returns a non-contiguous view of the same shape. The data
    is made on the CPU (same values on every device) and then moved to ``device``."""
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    flat = torch.randn(n, generator=g) * scale
    sub = torch.finfo(dtype).tiny / 4  # a subnormal of the dtype
    vals = [*ties, *(-t for t in ties)]
    vals += [0.0, -0.0, sub, -3 * sub]
    if specials:
        vals += [NAN, INF, -INF]
    vals = vals[:n]
    pos = torch.randperm(n, generator=g)[: len(vals)]
    flat[pos] = torch.tensor(vals, dtype=torch.float32)
    x = flat.to(dtype).to(device)
    if not transposed or len(shape) < 2:
        return x.reshape(shape)
    t = x.reshape(*shape[:-2], shape[-1], shape[-2]).transpose(-1, -2)
    assert not t.is_contiguous()
    return t


def run_both(x: torch.Tensor, cfg: Any, amax: torch.Tensor | None = None, **kw: Any):
    """``(kernel, reference)`` outputs; asserts the kernel (not a fallback) produced the first."""
    before = KERNEL_STATS.copy()
    got = fake_quant(x, cfg, amax, backend="triton", **kw)
    ran = KERNEL_STATS - before
    assert sum(v for (_, how), v in ran.items() if how == "triton") >= 1, f"no kernel ran: {ran}"
    assert not any(how == "fallback" for (_, how) in ran), f"fell back: {ran}"
    return got, fake_quant(x, cfg, amax, backend="torch", **kw)


def dyn(bits: Any, block: int, scale_bits: tuple[int, int]) -> dict:
    return {
        "num_bits": bits,
        "block_sizes": {-1: block, "type": "dynamic", "scale_bits": scale_bits},
    }


INT_TIES = (0.5, 1.5, 2.5, 126.5, 127.5, 128.5)
E4M3_MIDPOINTS = (1.0625, 1.1875, 0.5 * 2**-9, 1.5 * 2**-9, 13.0, 15.0, 26.0, 440.0, 464.0)
E2M1_TIES = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0)

# (id, config, shape, amax modes, ties). "static" amax = a calibration of a finite copy of x
# scaled by 0.75 (so some values clip); "dynamic" = None; a float = that constant amax.
CASES: list[tuple[str, dict, tuple[int, ...], tuple[Any, ...], tuple[float, ...]]] = [
    ("int8-tensor", {"num_bits": 8}, (5, 37), ("dynamic", "static", 127.0), INT_TIES),
    ("int4-axis0", {"num_bits": 4, "axis": 0}, (7, 19), ("dynamic", "static"), ()),
    ("int8-axis-1", {"num_bits": 8, "axis": -1}, (6, 13), ("dynamic", "static"), ()),
    ("int8-axis1-3d", {"num_bits": 8, "axis": 1}, (3, 5, 7), ("dynamic", "static"), ()),
    ("int8-axis02", {"num_bits": 8, "axis": (0, 2)}, (3, 4, 5), ("dynamic", "static"), ()),
    ("uint8", {"num_bits": 8, "unsigned": True}, (4, 9), ("dynamic", 255.0), INT_TIES),
    (
        "int4-narrow-token",
        {"num_bits": 4, "narrow_range": True, "block_sizes": {-1: None}},
        (2, 3, 11),
        ("dynamic",),
        (),
    ),
    (
        "int4-block16-pad",
        {"num_bits": 4, "block_sizes": {-1: 16}},
        (3, 40),
        ("dynamic", "static"),
        (),
    ),
    (
        "int8-block2d-pad",
        {"num_bits": 8, "block_sizes": {-1: 8, -2: 4}},
        (6, 12),
        ("dynamic", "static"),
        (),
    ),
    ("int6-axis0", {"num_bits": 6, "axis": 0}, (4, 33), ("dynamic",), ()),
    ("fp8-tensor", {"num_bits": (4, 3)}, (5, 37), ("dynamic", "static", 448.0), E4M3_MIDPOINTS),
    ("fp8-axis0", {"num_bits": (4, 3), "axis": 0}, (7, 19), ("dynamic", "static"), ()),
    (
        "fp8-token",
        {"num_bits": (4, 3), "block_sizes": {-1: None, "type": "dynamic"}},
        (2, 3, 11),
        ("dynamic",),
        (),
    ),
    (
        "fp8-block16",
        {"num_bits": (4, 3), "block_sizes": {-1: 16}},
        (3, 40),
        ("dynamic", "static"),
        (),
    ),
    (
        "fp8-block2d",
        {"num_bits": (4, 3), "block_sizes": {-1: 8, -2: 8}},
        (13, 11),
        ("dynamic", "static"),
        (),
    ),
    (
        "fp8-constant",
        {"num_bits": (4, 3), "use_constant_amax": True},
        (4, 9),
        ("dynamic",),
        E4M3_MIDPOINTS,
    ),
    ("nvfp4-16", dyn((2, 1), 16, (4, 3)), (3, 70), ("dynamic", "static", 2688.0), E2M1_TIES),
    ("nvfp4-32", dyn((2, 1), 32, (4, 3)), (2, 75), ("dynamic", "static"), E2M1_TIES),
    ("nvfp4-8-1d", dyn((2, 1), 8, (4, 3)), (45,), ("dynamic",), ()),
    (
        "nvfp4-static",
        {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3)}},
        (3, 40),
        ("dynamic", "static"),
        E2M1_TIES,
    ),
    (
        "nvfp4-4over6",
        {
            "num_bits": (2, 1),
            "block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3), "four_over_six": True},
        },
        (4, 32),
        ("static",),
        E2M1_TIES,
    ),
    ("mxfp4", dyn((2, 1), 32, (8, 0)), (3, 75), ("dynamic",), (*E2M1_TIES, 6.0)),
    (
        "mxfp6-e3m2",
        dyn((3, 2), 32, (8, 0)),
        (3, 75),
        ("dynamic",),
        (28.0, 0.03125 * 1.5, 4.5, 18.0),
    ),
    ("mxfp6-e2m3", dyn((2, 3), 32, (8, 0)), (3, 75), ("dynamic",), (7.5, 0.0625, 2.125, 5.25)),
    ("mxfp8-e4m3", dyn((4, 3), 32, (8, 0)), (3, 75), ("dynamic",), (448.0, *E4M3_MIDPOINTS[:6])),
    ("mxfp8-e5m2", dyn((5, 2), 16, (8, 0)), (3, 70), ("dynamic",), (57344.0, 1.125, 3.5, 2**-15)),
    ("mxint8", dyn(8, 8, (8, 0)), (3, 70), ("dynamic",), (127.0, 0.5, 1.5, 2.5, 126.5)),
]


def amax_for(mode: Any, x: torch.Tensor, cfg: dict) -> torch.Tensor | None:
    if mode == "dynamic":
        return None
    if isinstance(mode, float):
        return torch.tensor(mode, device=x.device)
    finite = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0).to(x.dtype)
    a = reduce_amax(finite, cfg)
    return None if a is None else a * 0.75


def edge_cases(
    device: str | torch.device,
) -> dict[str, tuple[torch.Tensor, dict, torch.Tensor | None, list[int] | None]]:
    """``id -> (x, config, amax, rows to compare or None)`` for the rules that random data
    rarely reaches:

    * INT/FP8 per channel with amax 0, 2^-24 (still "zero"), 2^-25, 1.5 * 2^-24, 1e-38, inf,
      NaN (docs/numerics.md, 'INT-N' and 'FP8 E4M3'), in every dtype;
    * NVFP4 with a zero / inf / NaN / huge global amax and a block whose E4M3 scale rounds to 0;
    * MX: an all-zero block, an inf in a block (its finite elements become 0), a NaN, a block
      amax near FLT_MAX and one of fp32 subnormals (E8M0 exponent at both ends, 2^-127
      unscale — also what shows flush-to-zero on a GPU), an amax just above a power of two.
      MXINT8 of inf is undefined behaviour in the CUDA source (docs/numerics.md, 'Choices',
      item 3): that row is not compared.
    """
    out: dict[str, tuple[torch.Tensor, dict, torch.Tensor | None, list[int] | None]] = {}
    amax = torch.tensor([0.0, 2**-24, 2**-25, 2**-24 * 1.5, 1e-38, INF, NAN, 2.0]).reshape(8, 1)
    for dname, dtype in zip(("fp32", "bf16", "fp16"), DTYPES, strict=True):
        x = make_input((8, 9), dtype, 3, device=device)
        for fname, cfg in (
            ("int8", {"num_bits": 8, "axis": 0}),
            ("fp8", {"num_bits": (4, 3), "axis": 0}),
        ):
            out[f"{fname}-edge-amax-{dname}"] = (x, cfg, amax.to(device), None)
    x = make_input((2, 48), torch.float32, 5, specials=False, device=device)
    x[1, 16:32] *= 1e-9  # far below the global grid: its E4M3 scale becomes 0
    for g in (0.0, INF, NAN, 1e30, 5.0):
        out[f"nvfp4-global-{g}"] = (
            x,
            dyn((2, 1), 16, (4, 3)),
            torch.tensor(g, device=device),
            None,
        )
    x = torch.randn(6, 32, generator=torch.Generator().manual_seed(1))
    x[0] = 0.0
    x[1, 3] = INF
    x[2, 5] = NAN
    x[3] *= 3e38 / x[3].abs().max()
    x[4] = torch.finfo(torch.float32).tiny / 8 * torch.arange(32)
    x[5] = 6.0 * (1 + 2**-23)
    x = x.to(device)
    for bits in ((2, 1), (3, 2), (2, 3), (4, 3), (5, 2), 8):
        keep = [0, 2, 3, 4, 5] if bits == 8 else None
        out[f"mx-{bits}-edge-blocks"] = (x, dyn(bits, 32, (8, 0)), None, keep)
    return out


EDGE_IDS = sorted(edge_cases("cpu"))
