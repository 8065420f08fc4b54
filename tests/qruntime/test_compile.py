"""torch.compile of fake-quantized models: one graph, no recompiles, eager's numbers.

What is asserted, per format (one tiny quantized Linear per case, calibrated by max):

* ``torch._dynamo.explain`` finds zero graph breaks in the forward;
* ``torch.compile(fullgraph=True, dynamic=True)`` traces once for several batch sizes and
  sequence lengths (a compile counter counts the frames), and the compiled forward and backward
  (input and weight gradients through the straight-through estimator) equal eager bit for bit.
  ``aot_eager`` runs the same aten ops as eager, so equality is exact; inductor (the CPU code
  generator) is checked on a few formats, where it is exact too (it keeps every float32 op).

With ``backend="triton"`` the kernels are the custom op ``qruntime::format_kernel`` in the
graph (its fake implementation checked by ``torch.library.opcheck``), with the same bits.

Eager behaviour the compile path must not change (errors for a negative amax, an unsigned
quantizer's negative input) is asserted in eager and, traced, as a run-time ``RuntimeError``.
"""

from __future__ import annotations

import copy
import os
import warnings

# The Triton kernels run in Triton's CPU interpreter (set before triton is imported), as in
# test_kernels.py: the custom-op path is exercised on CPU; a GPU run checks the real launches.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import qruntime
import torch
import torch._dynamo
import zoo
from qconfig.spec import resolve_spec
from qruntime.kernels.dispatch import KERNEL_STATS, format_kernel, format_kernel_key
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend

NVFP4 = {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)}}
NVFP4_STATIC = {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3)}}
PER_TOKEN_INT8 = {"num_bits": 8, "type": "dynamic", "block_sizes": {-1: None}}

#: case -> (weight quantizer attributes, input quantizer attributes)
CASES = {
    "int8_per_tensor": ({"num_bits": 8}, {"num_bits": 8}),
    "int8_per_channel_per_token": ({"num_bits": 8, "axis": 0}, PER_TOKEN_INT8),
    "int4_static_block": ({"num_bits": 4, "block_sizes": {-1: 16, "type": "static"}}, None),
    "int8_unsigned_input": ({"num_bits": 8}, {"num_bits": 8, "unsigned": True}),
    "fp8": ({"num_bits": (4, 3)}, {"num_bits": (4, 3)}),
    "fp8_per_channel_per_token": (
        {"num_bits": (4, 3), "axis": 0},
        {"num_bits": (4, 3), "type": "dynamic", "block_sizes": {-1: None}},
    ),
    "nvfp4_dynamic": (NVFP4, NVFP4),
    "nvfp4_static_weight": (NVFP4_STATIC, NVFP4),
    "mxfp4": (
        {"num_bits": (2, 1), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
        {"num_bits": (2, 1), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
    ),
    "mxfp8": (
        {"num_bits": (4, 3), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
        {"num_bits": (4, 3), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
    ),
    "int8_static_affine_bias": (
        {"num_bits": 8, "axis": 0},
        {"num_bits": 8, "bias": {0: None, 1: None, "type": "static"}},
    ),
    "fp8_dynamic_affine_bias": (
        {"num_bits": (4, 3)},
        {"num_bits": (4, 3), "bias": {-1: None, "type": "dynamic", "method": "max_min"}},
    ),
    "nvfp4_rotate": (NVFP4, {**NVFP4, "rotate": True}),
    "int8_clipped_ste": (
        {"num_bits": 8, "axis": 0, "pass_through_bwd": False},
        {"num_bits": 8, "pass_through_bwd": False},
    ),
}

#: (batch, sequence) shapes every compiled case runs; sizes >= 2 (torch specializes 0 and 1).
SHAPES = ((2, 5), (3, 7), (4, 3))
IN, OUT = 64, 32


def _inputs(batch: int, seq: int, seed: int, unsigned: bool = False) -> torch.Tensor:
    x = torch.randn(batch, seq, IN, generator=torch.Generator().manual_seed(seed))
    return x.abs() if unsigned else x


def _unsigned(case: str) -> bool:
    return bool((CASES[case][1] or {}).get("unsigned"))


def _quantized_linear(case: str) -> nn.Module:
    weight_cfg, input_cfg = CASES[case]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(IN, OUT))
    quant_cfg = [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": weight_cfg},
    ]
    if input_cfg is not None:
        quant_cfg.append({"quantizer_name": "*input_quantizer", "cfg": input_cfg})
    unsigned = _unsigned(case)

    def loop(m: nn.Module) -> None:
        for seed in (0, 1):
            m(_inputs(2, 4, seed, unsigned))

    qruntime.quantize(model, {"quant_cfg": quant_cfg, "algorithm": "max"}, loop, lint="off")
    if case == "int8_per_tensor":  # the pre_quant_scale of SmoothQuant/AWQ, on one case
        model[0].input_quantizer.pre_quant_scale = torch.linspace(0.5, 1.5, IN)
    return model


def _step(model: nn.Module, x: torch.Tensor, dynamic: bool = False) -> tuple[torch.Tensor, ...]:
    """Forward and backward of a fixed loss; returns output, input and weight gradients.
    ``dynamic``: mark the batch and sequence dims dynamic (compile once for all of them)."""
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    if dynamic:
        torch._dynamo.mark_dynamic(x, 0)
        torch._dynamo.mark_dynamic(x, 1)
    out = model(x)
    grad_out = torch.linspace(-1.0, 1.0, out.numel()).reshape(out.shape)
    (out * grad_out).sum().backward()
    weight = next(p for name, p in model.named_parameters() if name.endswith("weight"))
    return out.detach(), x.grad, weight.grad


def _assert_same(compiled: tuple[torch.Tensor, ...], eager: tuple[torch.Tensor, ...]) -> None:
    for name, c, e in zip(("output", "input grad", "weight grad"), compiled, eager, strict=True):
        assert torch.equal(c, e), f"{name} differs: max |diff| {(c - e).abs().max().item()}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_graph_breaks_one_graph_for_all_shapes_and_eager_numbers(case):
    model = _quantized_linear(case)
    unsigned = _unsigned(case)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(_inputs(2, 5, 7, unsigned))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1

    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=True)
    for i, (batch, seq) in enumerate(SHAPES):
        x = _inputs(batch, seq, 10 + i, unsigned)
        expected = _step(model, x)
        assert expected[0].abs().sum() > 0
        # After the first call any recompilation raises.
        with torch.compiler.set_stance("fail_on_recompile" if i else "default"):
            _assert_same(_step(compiled, x), expected)


@pytest.mark.parametrize("case", ["int8_per_channel_per_token", "nvfp4_dynamic", "mxfp4"])
def test_inductor_equals_eager(case):
    model = _quantized_linear(case)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    for i, (batch, seq) in enumerate(SHAPES[:2]):
        x = _inputs(batch, seq, 20 + i)
        with torch.compiler.set_stance("fail_on_recompile" if i else "default"):
            _assert_same(_step(compiled, x, dynamic=not i), _step(model, x))


W8A8 = [
    {"quantizer_name": "*", "enable": False},
    {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
    {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8}},
]


def _train(model: nn.Module, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """SGD steps of next-token cross entropy; returns the losses (the model is updated)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for ids in batches:
        logits = model(ids)
        loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return losses


def test_quantized_llama_compiles_as_one_graph_and_trains_like_eager():
    """The zoo's Llama-style decoder, INT8 W8A8 calibrated by max: fullgraph, one compilation
    for three batch/sequence shapes, and losses and updated weights equal to eager's."""
    eager = qruntime.quantize(
        zoo.build("llama"), {"quant_cfg": W8A8, "algorithm": "max"}, zoo.forward_loop("llama")
    )
    assert eager.lm_head.input_quantizer.amax is not None
    twin = copy.deepcopy(eager)
    g = torch.Generator().manual_seed(3)
    batches = [torch.randint(0, 32, shape, generator=g) for shape in ((2, 8), (3, 6), (4, 5))]
    torch._dynamo.reset()
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True, dynamic=True)
    expected = _train(eager, batches)
    got = _train(compiled, batches[:1])
    with torch.compiler.set_stance("fail_on_recompile"):
        got += _train(compiled, batches[1:])
    assert expected[-1] < expected[0]
    for g_loss, e_loss in zip(got, expected, strict=True):
        assert torch.equal(g_loss, e_loss)
    for (name, p), q in zip(eager.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_autocast_bf16_under_compile_equals_eager_autocast():
    model = _quantized_linear("int8_per_channel_per_token")
    x = _inputs(3, 5, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = _step(model, x)
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        got = _step(compiled, x)
    assert expected[0].dtype == torch.bfloat16
    _assert_same(got, expected)


def test_value_errors_stay_eager_errors_and_fail_the_compiled_call():
    """Eager raises what Model Optimizer raises; traced, the same check fails the call with a
    RuntimeError carrying the message (it is in the graph, not a graph break)."""
    model = _quantized_linear("int8_unsigned_input")
    negative = -_inputs(2, 3, 5, unsigned=True)
    with pytest.raises(qruntime.quantizer.QuantizerInputError, match="unsigned quantizer"):
        model(negative)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    compiled(-negative)  # traced with valid input
    with pytest.raises(RuntimeError, match="Negative values encountered in unsigned"):
        compiled(negative)

    model = _quantized_linear("int8_per_tensor")
    model[0].weight_quantizer.amax = torch.tensor(-1.0)
    with pytest.raises(ValueError, match="Negative values in amax"):
        model(_inputs(2, 3, 5))
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with pytest.raises(RuntimeError, match="Negative values in amax"):
        compiled(_inputs(2, 3, 5))


@pytest.mark.parametrize(
    "case", ["int8_per_channel_per_token", "int8_clipped_ste", "fp8", "nvfp4_dynamic", "mxfp4"]
)
def test_triton_kernels_are_one_custom_op_node_in_the_graph(case):
    model = _quantized_linear(case)
    fmt = {"fp8": "fp8_e4m3", "nvfp4_dynamic": "nvfp4_dynamic", "mxfp4": "mx"}.get(case, "int")
    for quantizer in (model[0].weight_quantizer, model[0].input_quantizer):
        quantizer.backend = "triton"
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=True)
    for i, (batch, seq) in enumerate(SHAPES[:2]):
        x = _inputs(batch, seq, 30 + i)
        KERNEL_STATS.clear()
        expected = _step(model, x)
        assert KERNEL_STATS == {(fmt, "triton"): 2}  # eager ran the kernels, no fallback
        KERNEL_STATS.clear()
        with torch.compiler.set_stance("fail_on_recompile" if i else "default"):
            _assert_same(_step(compiled, x), expected)
        assert KERNEL_STATS == {(fmt, "triton"): 2}  # and so did the compiled graph
    targets = [node.target for gm in counter.graphs for node in gm.graph.nodes]
    assert targets.count(torch.ops.qruntime.format_kernel.default) == 2


def test_format_kernel_op_passes_opcheck():
    """Schema, fake implementation (shapes under dynamic shapes) and no autograd leaks."""
    x = torch.randn(6, 32, generator=torch.Generator().manual_seed(0))
    examples = [
        ({"num_bits": 8, "axis": 0}, "int", None),
        ({"num_bits": 8}, "int", torch.tensor(2.0)),
        (NVFP4, "nvfp4_dynamic", torch.tensor(3.0)),
    ]
    for attrs, fmt, amax in examples:
        key = format_kernel_key(resolve_spec(attrs))
        for need_amax in (False, True):
            torch.library.opcheck(format_kernel, (x, amax, None, fmt, key, "triton", need_amax))


def test_in_place_ops_on_a_quantizer_output_train_in_eager_and_compiled():
    """Residual code like ``h += x`` on a fake-quantized tensor: the straight-through output is
    a tensor of its own, not a view of an input (which autograd forbids to modify)."""
    model = _quantized_linear("int8_clipped_ste")
    quantizer = model[0].input_quantizer

    def forward(x: torch.Tensor) -> torch.Tensor:
        y = quantizer(x)
        y += 1.0
        return y

    x = 3 * _inputs(2, 3, 6)  # beyond the calibrated amax in places: clipped gradients
    results = []
    for fn in (forward, torch.compile(forward, backend="aot_eager", fullgraph=True)):
        leaf = x.clone().requires_grad_(True)
        fn(leaf).pow(2).sum().backward()
        results.append(leaf.grad)
    assert torch.equal(results[0], results[1])
    assert (results[0] == 0).any() and (results[0] != 0).any()  # clipped and passed elements


def test_cuda_without_triton_compiles_to_the_reference(monkeypatch):
    """``backend="auto"`` on a (pretended) CUDA tensor without Triton: eager warns once and runs
    the reference; traced, the same choice is made without the warning (a graph break)."""
    from qruntime.kernels import dispatch

    monkeypatch.setattr(dispatch, "_is_cuda", lambda x: True)
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    dispatch.reset_warnings()
    model = _quantized_linear("fp8")
    x = _inputs(2, 5, 8)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    KERNEL_STATS.clear()
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        got = _step(compiled, x)
    assert not [w for w in shown if "triton" in str(w.message)]  # none from the traced path
    assert not KERNEL_STATS
    with pytest.warns(RuntimeWarning, match="triton is not installed"):
        expected = _step(model, x)
    _assert_same(got, expected)
    dispatch.reset_warnings()
