"""Triton kernels vs the torch reference on CUDA tensors, bit for bit (docs/kernels.md).

The CPU suite proves the kernels' arithmetic in Triton's interpreter; this proves what only a
GPU can: the compiled code (PTX rounding modes, no FTZ, no contraction, Triton's lowering on the
installed version) gives the reference's bits on the reference's own CUDA execution. Shapes are
the CPU cases scaled up (odd sizes, partial blocks), both contiguous and transposed, with and
without NaN/inf, in fp32/bf16/fp16.
"""

from __future__ import annotations

import os

import pytest
import torch
from kernel_cases import (
    CASES,
    DTYPES,
    EDGE_IDS,
    amax_for,
    assert_bits,
    edge_cases,
    make_input,
    run_both,
)
from qruntime.kernels import KERNEL_STATS, dispatch
from qruntime.numerics import fake_quant

DRY_RUN = os.environ.get("QRUNTIME_GPU_DRY_RUN") == "1"

pytestmark = [
    pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning"),
]


def _scaled(shape: tuple[int, ...], scale: int) -> tuple[int, ...]:
    if scale == 1:
        return shape
    return tuple(n * scale + (i % 2) for i, n in enumerate(shape))  # odd sizes on odd dims


@pytest.mark.parametrize(
    ("cfg", "shape", "modes", "ties"),
    [pytest.param(c, s, m, t, id=i) for i, c, s, m, t in CASES],
)
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16", "fp16"])
def test_kernel_matches_reference_on_device(cfg, shape, modes, ties, dtype, device, scale):
    shape = _scaled(shape, scale)
    # (specials, transposed): all four on a GPU, two in a dry run (the interpreter is slow).
    combos = [(0, 0), (1, 1)] if DRY_RUN else [(0, 0), (0, 1), (1, 0), (1, 1)]
    for k, mode in enumerate(modes):
        for specials, transposed in combos:
            x = make_input(
                shape,
                dtype,
                100 * k + 2 * specials + transposed,
                ties=ties,
                specials=bool(specials),
                transposed=bool(transposed),
                device=device,
            )
            if cfg.get("unsigned"):
                x = torch.where(x < 0, -x, x)
            got, want = run_both(x, cfg, amax_for(mode, x, cfg))
            assert_bits(got, want)


@pytest.mark.parametrize("case", EDGE_IDS)
def test_edge_cases_on_device(case, device):
    """Edge amaxes and blocks (kernel_cases.edge_cases), incl. fp32 subnormals: flush-to-zero."""
    x, cfg, amax, keep = edge_cases(device)[case]
    got, want = run_both(x, cfg, amax)
    if keep is not None:
        got, want = got[keep], want[keep]
    assert_bits(got, want)


GRAD_CASES = [
    {"num_bits": 8, "axis": 0, "pass_through_bwd": False},
    {"num_bits": (4, 3), "block_sizes": {-1: 16, -2: 4}, "pass_through_bwd": False},
    {
        "num_bits": (2, 1),
        "block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3)},
        "pass_through_bwd": False,
    },
    {
        "num_bits": (2, 1),
        "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)},
        "pass_through_bwd": False,
    },
]


@pytest.mark.parametrize("cfg", GRAD_CASES, ids=lambda c: str(c)[:40])
def test_backward_on_device(cfg, device):
    base = make_input((64, 96), torch.bfloat16, 1, specials=False, device=device)
    outs, grads = [], []
    for backend in ("triton", "torch"):
        x = base.clone().requires_grad_(True)
        y = fake_quant(x, cfg, backend=backend)
        w = torch.arange(y.numel(), device=device, dtype=y.dtype).reshape(y.shape)
        (y * w).float().sum().backward()
        outs.append(y.detach())
        grads.append(x.grad)
    assert_bits(outs[0], outs[1])
    assert_bits(grads[0], grads[1])


def test_auto_backend_runs_kernels_for_device_tensors(device, monkeypatch):
    if DRY_RUN:  # CPU tensors stand in for CUDA ones in a dry run
        monkeypatch.setattr(dispatch, "_is_cuda", lambda t: True)
    x = make_input((32, 64), torch.bfloat16, 2, device=device)
    before = KERNEL_STATS.copy()
    y = fake_quant(x, {"num_bits": (4, 3), "axis": 0}, backend="auto")
    assert (KERNEL_STATS - before)[("fp8_e4m3", "triton")] == 1
    assert_bits(y, fake_quant(x, {"num_bits": (4, 3), "axis": 0}, backend="torch"))


@pytest.mark.parametrize(
    ("cfg", "shape", "modes", "ties"),
    [pytest.param(c, s, m, t, id=i) for i, c, s, m, t in CASES],
)
def test_reference_is_the_same_on_cpu_and_device(cfg, shape, modes, ties, device, scale):
    """The truth the kernels are held to must not depend on the device it runs on."""
    shape = _scaled(shape, scale)
    for k, mode in enumerate(modes):
        x = make_input(shape, torch.float32, 7 + k, ties=ties, device=device)
        if cfg.get("unsigned"):
            x = x.abs()
        amax = amax_for(mode, x, cfg)
        on_device = fake_quant(x, cfg, amax, backend="torch")
        on_cpu = fake_quant(x.cpu(), cfg, None if amax is None else amax.cpu(), backend="torch")
        assert_bits(on_device.cpu(), on_cpu)


@pytest.mark.large
@pytest.mark.parametrize(
    "cfg",
    [
        {"num_bits": 8},
        {"num_bits": (4, 3), "block_sizes": {-1: None, "type": "dynamic"}},
        {"num_bits": (4, 3), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
    ],
    ids=["int8-static", "fp8-token", "mxfp8"],
)
def test_more_than_2_31_elements(cfg, device):
    """64-bit offsets: a bf16 tensor just over 2^31 elements (4 GiB), compared in full."""
    assert device == "cuda", "deselect with -m 'not large' in a dry run"
    x = torch.randn(2**31 // 4096 + 3, 4096, device="cuda", dtype=torch.bfloat16)
    amax = torch.tensor(3.0, device="cuda") if cfg == {"num_bits": 8} else None
    got, want = run_both(x, cfg, amax)
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))
