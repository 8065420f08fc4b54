"""GPTQ's fused NVFP4 block kernel on the device: every quantized value lies on the NVFP4 grid
of its block, and the kernel follows the torch reference (bit for bit in the interpreter of a
dry run; on a GPU, where Triton may contract ``w - err * u`` into an FMA and lower fp32 division
approximately, almost every value and a close error)."""

from __future__ import annotations

import pytest
import torch
from conftest import DRY_RUN
from qruntime.calibrate.gptq_update import fused_nvfp4_block, fused_nvfp4_qdq
from qruntime.kernels.gptq_fused import gptq_nvfp4_block


def _case(rows, width, quant_block, device, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, width, generator=g)
    amax = w.abs().reshape(rows, -1, quant_block).amax(-1)
    global_amax = float(amax.max())
    u = torch.linalg.cholesky(torch.eye(width) + 0.1 * torch.ones(width, width), upper=True)
    return w.to(device), amax.to(device), global_amax / (6 * 448), u.to(device)


SHAPES = [(1, 16), (33, 32)] + ([] if DRY_RUN else [(128, 128), (257, 64), (4096, 128)])


@pytest.mark.parametrize(("rows", "width"), SHAPES)
def test_fused_block_on_device(rows, width, device):
    quant_block = 16
    w, amax, g, u = _case(rows, width, quant_block, device, rows + width)
    q, err = gptq_nvfp4_block(w, amax, g, u, quant_block, 0)
    want_q, want_err = fused_nvfp4_block(w.cpu(), amax.cpu(), g, u.cpu(), quant_block, 0)
    q, err = q.cpu(), err.cpu()
    for j in range(width):  # on the grid: quantizing the quantized column changes nothing
        column_amax = amax.cpu()[:, j // quant_block]
        assert torch.equal(fused_nvfp4_qdq(q[:, j], column_amax, g), q[:, j])
    if DRY_RUN:
        assert torch.equal(q, want_q) and torch.equal(err, want_err)
    else:
        assert (q == want_q).float().mean() >= 0.99
        torch.testing.assert_close(err, want_err, rtol=1e-3, atol=1e-4)
