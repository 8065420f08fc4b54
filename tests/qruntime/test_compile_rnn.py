"""torch.compile of quantized RNNs: the zoo's LSTM + GRU model as one graph, eager's numbers.

torch traces ``nn.RNN``/``nn.LSTM``/``nn.GRU`` modules only with
``torch._dynamo.config.allow_rnn = True`` (otherwise each runs eagerly between graphs). With it,
the quantized model (a two-layer bidirectional LSTM with projections and a GRU, quantized with
the INT8, FP8 and NVFP4 default presets, calibrated by max) must explain to zero graph breaks,
and the ``fullgraph=True`` compiled forward must equal eager bit for bit (``aot_eager`` runs
eager's aten ops), as must the input gradient. A weight is used at every time step, so its
gradient is a sum that eager autograd and the compiled backward may add up in different orders:
bit-equal under INT8 and FP8 when this was written, within a few float32 ulps of the largest
entry under NVFP4 (measured: 6e-8 on entries up to 1.7). The quantized RNN's forward must also
leave the process-wide ``torch._VF`` functions alone, so that an RNN in another thread is unaffected.
"""

from __future__ import annotations

import copy

import pytest
import qruntime
import torch
import torch._dynamo
import zoo
from qconfig import presets
from torch import nn

PRESETS = ["INT8_DEFAULT_CFG", "FP8_DEFAULT_CFG", "NVFP4_DEFAULT_CFG"]


def _quantized_rnn(preset: str) -> nn.Module:
    config = {**presets.get(preset)}
    config.setdefault("algorithm", "max")
    model = qruntime.quantize(zoo.build("rnn"), config, zoo.forward_loop("rnn"), lint="off")
    assert model.lstm.layer_0_input_quantizer.amax is not None
    assert model.gru.weight_ih_l0_weight_quantizer.amax is not None
    return model


def _step(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Output and every gradient (input and parameters) of a fixed loss."""
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    out = model(x)
    (out * torch.linspace(-1.0, 1.0, out.numel()).reshape(out.shape)).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    return [out.detach(), x.grad, *grads]


@pytest.fixture
def allow_rnn():
    with torch._dynamo.config.patch(allow_rnn=True):
        torch._dynamo.reset()
        yield
    torch._dynamo.reset()


@pytest.mark.parametrize("preset", PRESETS)
def test_quantized_rnn_model_is_one_graph_and_equals_eager(preset, allow_rnn):
    eager = _quantized_rnn(preset)
    twin = copy.deepcopy(eager)
    x = zoo.example_inputs("rnn", batch=3, seed=4)[0]
    explained = torch._dynamo.explain(twin)(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
    torch._dynamo.reset()
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)
    got = _step(compiled, x)
    expected = _step(eager, x)
    names = ["output", "input grad"] + [name for name, _ in eager.named_parameters()]
    for name, g, e in zip(names, got, expected, strict=True):
        if name in ("output", "input grad") or preset != "NVFP4_DEFAULT_CFG":
            assert torch.equal(g, e), f"{name} differs: {(g - e).abs().max().item()}"
        else:
            ulps = 8 * torch.finfo(torch.float32).eps * e.abs().max().item()
            torch.testing.assert_close(g, e, rtol=0.0, atol=ulps, msg=name)
    # the quantizers did something: the unquantized model gives another output
    plain = zoo.build("rnn")
    assert not torch.equal(plain(x), expected[0])


def test_quantized_rnn_forward_leaves_torch_vf_alone():
    """While a quantized LSTM runs its steps, ``torch._VF.lstm`` is still torch's own."""
    model = _quantized_rnn("INT8_DEFAULT_CFG")
    original = torch._VF.lstm
    seen = []
    model.lstm.layer_0_input_quantizer.register_forward_pre_hook(
        lambda module, args: seen.append(torch._VF.lstm is original)
    )
    model(zoo.example_inputs("rnn")[0])
    assert seen and all(seen)
    assert torch._VF.lstm is original
