"""Static NVFP4 block scales on CUDA: qruntime's reading of Model Optimizer's ``amax / 6.0``.

Model Optimizer computes its static NVFP4 block scales with torch expressions on CUDA tensors
(``amax / 6.0`` and ``global * (448 / M8) / 6.0``); qruntime follows torch's CUDA reading of
them — a multiplication by ``f32(1/6)`` — on every device (docs/numerics.md, 'Static NVFP4 and
four-over-six'). On a GPU this checks the claim itself: the same expressions evaluated by torch
on CUDA give qruntime's block scales, bit for bit. (In a dry run on CPU, torch divides exactly,
so the dry run checks only that the test runs.)
"""

from __future__ import annotations

import pytest
import torch
from conftest import DRY_RUN
from qruntime.numerics.floats import cast_e4m3
from qruntime.numerics.fp8 import e4m3_scales
from qruntime.numerics.nvfp4 import nvfp4_static_block_scales


@pytest.mark.parametrize("four_over_six", [False, True])
def test_block_scales_equal_torch_cuda_division(device: str, four_over_six: bool) -> None:
    g = torch.Generator().manual_seed(0)
    amax = (torch.rand(4096, 1, generator=g) * 4).to(device)
    global_amax = amax.max()
    m8 = 256.0 if four_over_six else 448.0
    s = amax / 6.0  # Model Optimizer's expression, evaluated by torch on the device
    big_g = global_amax * (448.0 / m8) / 6.0
    scale, inv = e4m3_scales(big_g)
    expected = cast_e4m3(s * scale) * inv
    ours = nvfp4_static_block_scales(amax, global_amax, four_over_six=four_over_six)
    if DRY_RUN:
        assert ours.shape == expected.shape
        return
    assert torch.equal(ours, expected)
