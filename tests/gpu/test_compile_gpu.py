"""torch.compile (inductor) of fake-quantized Linears on CUDA, through the Triton kernels.

What only a GPU can show (tests/qruntime/test_compile.py covers the rest on CPU): with
``backend="auto"`` on CUDA tensors each quantizer is one ``qruntime::format_kernel`` node in
the compiled graph, the kernels run (no fallback), one compilation serves two batch/sequence
shapes, and output and gradients equal eager's (which runs the same kernels) bit for bit.
In a dry run (CPU, Triton's interpreter) the quantizers ask for ``backend="triton"``.
"""

from __future__ import annotations

import pytest
import qruntime
import torch
import torch._dynamo
from conftest import DRY_RUN
from qruntime.kernels import KERNEL_STATS
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend

NVFP4 = {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)}}
MXFP8 = {"num_bits": (4, 3), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}}
CASES = {
    "int8": (
        {"num_bits": 8, "axis": 0},
        {"num_bits": 8, "type": "dynamic", "block_sizes": {-1: None}},
        "int",
    ),
    "fp8": ({"num_bits": (4, 3)}, {"num_bits": (4, 3), "pass_through_bwd": False}, "fp8_e4m3"),
    "nvfp4": (NVFP4, NVFP4, "nvfp4_dynamic"),
    "mxfp8": (MXFP8, MXFP8, "mx"),
}
IN, OUT = 256, 128


def _model(case: str, device: str) -> nn.Module:
    weight_cfg, input_cfg, _ = CASES[case]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(IN, OUT)).to(device)
    quant_cfg = [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": weight_cfg},
        {"quantizer_name": "*input_quantizer", "cfg": input_cfg},
    ]

    def loop(m: nn.Module) -> None:
        m(torch.randn(4, 16, IN, device=device))

    qruntime.quantize(model, {"quant_cfg": quant_cfg, "algorithm": "max"}, loop, lint="off")
    if DRY_RUN:
        for quantizer in (model[0].weight_quantizer, model[0].input_quantizer):
            quantizer.backend = "triton"
    return model


def _step(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    torch._dynamo.mark_dynamic(x, 0)
    torch._dynamo.mark_dynamic(x, 1)
    out = model(x)
    (
        out * torch.linspace(-1, 1, out.numel(), device=out.device).reshape(out.shape)
    ).sum().backward()
    weight = next(p for name, p in model.named_parameters() if name.endswith("weight"))
    return out.detach(), x.grad, weight.grad


@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_kernels_equal_eager(case, device):
    model = _model(case, device)
    fmt = CASES[case][2]
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    for i, (batch, seq) in enumerate(((2, 24), (3, 40))):
        x = torch.randn(batch, seq, IN, generator=torch.Generator().manual_seed(i)).to(device)
        KERNEL_STATS.clear()
        expected = _step(model, x)
        assert KERNEL_STATS == {(fmt, "triton"): 2}
        KERNEL_STATS.clear()
        with torch.compiler.set_stance("fail_on_recompile" if i else "default"):
            got = _step(compiled, x)
        assert KERNEL_STATS == {(fmt, "triton"): 2}
        for name, g, e in zip(("output", "input grad", "weight grad"), got, expected, strict=True):
            assert torch.equal(g, e), f"{case} {name}: max |diff| {(g - e).abs().max().item()}"
    targets = [node.target for gm in counter.graphs for node in gm.graph.nodes]
    assert targets.count(torch.ops.qruntime.format_kernel.default) == 2
