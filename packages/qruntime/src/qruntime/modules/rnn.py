"""Quant mixin for ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (``QuantRNNFullBase``).

Quantizers: ``<param>_weight_quantizer`` for every parameter whose name starts with ``weight``
(named_parameters order), then per layer-and-direction index ``k`` in
``range(num_layers * num_directions)`` and direction ``d``: ``layer_{k}{_reverse}_input_quantizer``
and, with ``proj_size > 0``, ``proj_{k}{_reverse}_input_quantizer``.

Forward: while the original ``forward`` runs, reading a weight parameter returns its quantized
value, and the fused ``_VF.<mode>`` call is replaced by a Python loop over time steps that feeds
every cell input *and hidden state* through the input quantizer of that layer — what Model
Optimizer 0.47.0 computes (its ``VFRNNForward``), so outputs agree bit for bit. Layer ``i``,
direction ``j`` uses the ``(i * num_directions + j)``-th input quantizer in creation order.
A step whose input quantizer would change its shape (an amax or static bias with one value per
row of the calibration batch, on a shorter step of a packed sequence) is refused with a
``RuntimeError``; Model Optimizer's packed layer stops on a bare assertion there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch._VF as _VF
import torch.nn.functional as F
from torch import nn

from qruntime.modules.base import INT8_PER_TENSOR, QuantizerSlot, QuantModule
from qruntime.quantizer import SequentialQuantizer, TensorQuantizer

__all__ = ["QuantRNN"]

_CELLS: dict[str, Callable[..., Any]] = {
    "RNN_TANH": _VF.rnn_tanh_cell,
    "RNN_RELU": _VF.rnn_relu_cell,
    "LSTM": _VF.lstm_cell,
    "GRU": _VF.gru_cell,
}
_LAYER_CALLS = {"RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu", "LSTM": "lstm", "GRU": "gru"}
_MISSING = object()


def _lstm_cell_with_projection(
    input: torch.Tensor,
    hidden: tuple[torch.Tensor, torch.Tensor],
    *weights: torch.Tensor,
    proj_input_quantizer: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LSTM cell with ``proj_size > 0`` (``_VF.lstm_cell`` cannot project)."""
    if len(weights) == 3:
        w_ih, w_hh, w_hr = weights
        b_ih = b_hh = None
    else:
        w_ih, w_hh, b_ih, b_hh, w_hr = weights
    h, c = hidden
    gates = F.linear(input, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    if proj_input_quantizer is not None:
        h = proj_input_quantizer(h)
    return F.linear(h, w_hr), c


def _quantize(quantizer: nn.Module, t: torch.Tensor, what: str) -> torch.Tensor:
    """``quantizer(t)``, refused when the result does not have ``t``'s shape.

    A calibrated amax or static bias with one value per row of the calibration batch broadcasts
    a step with fewer rows (a packed sequence whose shorter sequences ended) up to the
    calibrated row count; the cell would then silently carry invented rows (Model Optimizer
    stops on an internal assertion at the end of the packed layer instead).
    """
    q = quantizer(t)
    if q.shape != t.shape:
        raise RuntimeError(
            f"an RNN input quantizer turned the {what} of shape {tuple(t.shape)} into "
            f"{tuple(q.shape)}: its calibrated amax or static bias has one value per row of "
            "the calibration batch, which does not fit a step with another number of rows; "
            "calibrate it per feature (reduce the batch dimension) instead"
        )
    return q


def _step(cell, x, hidden, weights, quantizer, proj):
    """One cell call with the input and the hidden state quantized by the layer's quantizer.

    The input is quantized before the hidden state, as Model Optimizer does: the order is seen
    by whatever depends on it — a static-block quantizer fixes its layout on the first shape, a
    running-mean bias rounds differently, ``track_amax`` lists batches in call order.
    """
    quant_x = _quantize(quantizer, x, "step input")
    if isinstance(hidden, tuple):
        hidden = (
            _quantize(quantizer, hidden[0], "hidden state"),
            _quantize(quantizer, hidden[1], "cell state"),
        )
    else:
        hidden = _quantize(quantizer, hidden, "hidden state")
    kwargs = {} if proj is None else {"proj_input_quantizer": proj}
    return cell(quant_x, hidden, *weights, **kwargs)


def _first(hidden: Any) -> torch.Tensor:
    return hidden[0] if isinstance(hidden, tuple) else hidden


def _run_fixed(cell, x, hidden, weights, quantizer, proj, reverse: bool):
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    outputs = []
    for t in steps:
        hidden = _step(cell, x[t], hidden, weights, quantizer, proj)
        outputs.append(_first(hidden))
    if reverse:
        outputs.reverse()
    return hidden, torch.stack(outputs, 0)


def _run_packed(cell, x, hidden, weights, quantizer, proj, batch_sizes):
    """Forward direction over a packed sequence: finished rows leave the hidden state."""
    flat = not isinstance(hidden, tuple)
    state = (hidden,) if flat else hidden
    outputs, finished, offset, last = [], [], 0, batch_sizes[0]
    for size in batch_sizes:
        step_x = x[offset : offset + size]
        offset += size
        drop = last - size
        if drop > 0:
            finished.append(tuple(h[-drop:] for h in state))
            state = tuple(h[:-drop] for h in state)
        last = size
        new = _step(cell, step_x, state[0] if flat else state, weights, quantizer, proj)
        state = (new,) if flat else new
        outputs.append(state[0])
    finished.append(state)
    finished.reverse()
    state = tuple(torch.cat(parts, 0) for parts in zip(*finished, strict=True))
    return (state[0] if flat else state), torch.cat(outputs, 0)


def _run_packed_reverse(cell, x, hidden, weights, quantizer, proj, batch_sizes):
    """Backward direction over a packed sequence: rows join as the sequence is read backwards."""
    flat = not isinstance(hidden, tuple)
    initial = (hidden,) if flat else hidden
    state = tuple(h[: batch_sizes[-1]] for h in initial)
    outputs, offset, last = [], x.shape[0], batch_sizes[-1]
    for index in range(len(batch_sizes) - 1, -1, -1):
        size = batch_sizes[index]
        if size - last > 0:
            state = tuple(
                torch.cat((h, h0[last:size]), 0) for h, h0 in zip(state, initial, strict=True)
            )
        last = size
        step_x = x[offset - size : offset]
        offset -= size
        new = _step(cell, step_x, state[0] if flat else state, weights, quantizer, proj)
        state = (new,) if flat else new
        outputs.append(state[0])
    outputs.reverse()
    return (state[0] if flat else state), torch.cat(outputs, 0)


class _QuantizedRNNCall:
    """Replacement for ``_VF.lstm``/``gru``/``rnn_*`` during one forward (both overloads)."""

    def __init__(self, module: nn.RNNBase, inputs: Sequence[nn.Module], projs: Sequence[nn.Module]):
        self.module = module
        self.inputs = inputs
        self.projs = projs

    def __call__(self, *args: Any) -> tuple[torch.Tensor, ...]:
        m = self.module
        if isinstance(args[3], bool):
            x, hidden, flat_weights = args[0], args[1], args[2]
            dropout, training = args[5], args[6]
            batch_sizes = None
        else:
            x, batch_sizes, hidden, flat_weights = args[0], args[1], args[2], args[3]
            dropout, training = args[6], args[7]
        directions = 2 if m.bidirectional else 1
        is_lstm = m.mode == "LSTM"
        has_proj = m.proj_size > 0
        cell = _lstm_cell_with_projection if has_proj else _CELLS[m.mode]
        per_layer = (4 if m.bias else 2) + int(has_proj)
        if is_lstm:
            hidden = list(zip(*hidden, strict=True))
        if m.batch_first and batch_sizes is None:
            x = x.transpose(0, 1)
        if batch_sizes is not None:
            sizes = [int(s) for s in batch_sizes]
        all_hidden = []
        for layer in range(m.num_layers):
            outputs = []
            for direction in range(directions):
                k = layer * directions + direction
                weights = flat_weights[k * per_layer : (k + 1) * per_layer]
                proj = self.projs[k] if has_proj else None
                if batch_sizes is None:
                    hx, out = _run_fixed(
                        cell, x, hidden[k], weights, self.inputs[k], proj, direction == 1
                    )
                elif direction == 1:
                    hx, out = _run_packed_reverse(
                        cell, x, hidden[k], weights, self.inputs[k], proj, sizes
                    )
                else:
                    hx, out = _run_packed(cell, x, hidden[k], weights, self.inputs[k], proj, sizes)
                all_hidden.append(hx)
                outputs.append(out)
            x = torch.cat(outputs, -1)
            if dropout != 0 and layer < m.num_layers - 1:
                x = F.dropout(x, p=dropout, training=training, inplace=False)
        if m.batch_first and batch_sizes is None:
            x = x.transpose(0, 1)
        if is_lstm:
            h, c = zip(*all_hidden, strict=True)
            return x, torch.stack(h, 0), torch.stack(c, 0)
        return x, torch.stack(all_hidden, 0)


class QuantRNN(QuantModule):
    """RNN/LSTM/GRU with per-parameter weight quantizers and per-layer input quantizers."""

    @classmethod
    def quantizer_slots(cls, module: nn.Module) -> list[QuantizerSlot]:
        assert isinstance(module, nn.RNNBase)
        slots = [
            QuantizerSlot(f"{name}_weight_quantizer", INT8_PER_TENSOR)
            for name, _ in module.named_parameters()
            if name.startswith("weight")
        ]
        directions = 2 if module.bidirectional else 1
        for k in range(module.num_layers * directions):
            for direction in range(directions):
                suffix = "_reverse" if direction == 1 else ""
                slots.append(QuantizerSlot(f"layer_{k}{suffix}_input_quantizer", INT8_PER_TENSOR))
                if module.proj_size > 0:
                    slots.append(
                        QuantizerSlot(f"proj_{k}{suffix}_input_quantizer", INT8_PER_TENSOR)
                    )
        return slots

    def _quantizer_lists(self) -> tuple[list[nn.Module], list[nn.Module]]:
        inputs = [m for n, m in self._modules.items() if n.startswith("layer_")]
        projs = [m for n, m in self._modules.items() if n.startswith("proj_")]
        return inputs, projs

    def __getattr__(self, name: str) -> Any:
        value = super().__getattr__(name)
        if name.startswith("weight") and self.__dict__.get("_quantize_weight"):
            quantizer = self._modules.get(f"{name}_weight_quantizer")
            if quantizer is not None and isinstance(value, torch.Tensor):
                return quantizer(value)
        return value

    def iter_weights_for_calibration(
        self,
    ) -> Iterator[tuple[torch.Tensor, TensorQuantizer | SequentialQuantizer]]:
        for name, weight in self._parameters.items():
            quantizer = self._modules.get(f"{name}_weight_quantizer")
            if name.startswith("weight") and weight is not None and quantizer is not None:
                yield weight, quantizer  # type: ignore[misc]

    def forward(self, input: Any, *args: Any, **kwargs: Any) -> Any:
        call_name = _LAYER_CALLS[self.mode]
        inputs, projs = self._quantizer_lists()
        previous = _VF.__dict__.get(call_name, _MISSING)
        setattr(_VF, call_name, _QuantizedRNNCall(self, inputs, projs))  # type: ignore[arg-type]
        self.__dict__["_quantize_weight"] = True
        try:
            return super().forward(input, *args, **kwargs)
        finally:
            self.__dict__["_quantize_weight"] = False
            if previous is _MISSING:
                delattr(_VF, call_name)
            else:
                setattr(_VF, call_name, previous)
