"""LSQ on CUDA against Model Optimizer 0.47.0's Triton FP4 cast.

On CPU Model Optimizer cannot run its LSQ FP4 cast (``FP4CastSTEFunction`` needs Triton), so
the CPU conformance suite (tests/conformance/test_lsq_conformance.py) lends it qruntime's. Here
its own Triton kernel runs: the E2M1 cast and its ``|x| <= 6`` gradient mask must equal
qruntime's bit for bit on every E2M1 tie, on the saturation edges and on random values, and a
whole ``lsq`` NVFP4-static model — calibration, steps, forward and every gradient — must match.
(In a dry run Model Optimizer's kernel is unavailable: only qruntime's side runs.)
"""

from __future__ import annotations

import copy
import warnings

import modelopt.torch.quantization as mtq
import modelopt.torch.quantization.tensor_quant as mo_tq
import pytest
import qruntime
import torch
import zoo
from conftest import DRY_RUN
from qruntime.numerics.ste import fp4_cast_ste

NVFP4_LSQ = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {
            "quantizer_name": "*weight_quantizer",
            "cfg": {
                "num_bits": (2, 1),
                "block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3)},
            },
        },
    ],
    "algorithm": {"method": "lsq", "scale_algorithm": {"method": "max"}},
}


def _cast_inputs(device: str) -> torch.Tensor:
    grid = torch.arange(-60, 61, dtype=torch.float32) / 8  # every tie of E2M1 between ±7.5
    edges = torch.tensor([0.0, -0.0, 6.0, -6.0, 6.0001, -6.0001, 1e-30, -1e-30, 100.0, -100.0])
    g = torch.Generator().manual_seed(0)
    rand = (torch.rand(16 * 64 - grid.numel() - edges.numel(), generator=g) - 0.5) * 16
    return torch.cat([grid, edges, rand]).reshape(-1, 16).to(device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp4_cast_and_mask_equal_modelopt_triton(device: str, dtype: torch.dtype) -> None:
    x = _cast_inputs(device).to(dtype)
    ours_in = x.clone().requires_grad_(True)
    ours = fp4_cast_ste(ours_in)
    grad = torch.randn_like(ours)
    ours.backward(grad)
    if DRY_RUN:
        assert ours.shape == x.shape
        return
    ref_in = x.clone().requires_grad_(True)
    ref = mo_tq.fp4_cast_ste(ref_in)
    ref.backward(grad)
    assert ref.dtype == ours.dtype
    assert torch.equal(ours, ref)
    assert torch.equal(ours_in.grad, ref_in.grad)


def test_lsq_nvfp4_llama_equals_modelopt_on_cuda(device: str) -> None:
    model = zoo.build("llama").to(device)
    batches = [tuple(t.to(device) for t in zoo.example_inputs("llama", seed=s)) for s in (0, 1)]

    def loop(m):
        for batch in batches:
            m(*batch)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = qruntime.quantize(copy.deepcopy(model), copy.deepcopy(NVFP4_LSQ), loop)
        if not DRY_RUN:
            ref = mtq.quantize(copy.deepcopy(model), copy.deepcopy(NVFP4_LSQ), loop)
    unseen = tuple(t.to(device) for t in zoo.example_inputs("llama", seed=2))
    our_out = ours(*unseen)
    our_out.float().square().mean().backward()
    if DRY_RUN:
        assert any(k.endswith("_amax_post") for k in ours.state_dict())
        return
    expected, got = ref.state_dict(), ours.state_dict()
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    ref_out = ref(*unseen)
    ref_out.float().square().mean().backward()
    assert torch.equal(our_out, ref_out)
    our_params = dict(ours.named_parameters())
    for key, param in ref.named_parameters():
        assert (param.grad is None) == (our_params[key].grad is None), key
        if param.grad is not None:
            assert torch.equal(our_params[key].grad, param.grad), key
