"""Quant mixin for ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (``QuantRNNFullBase``).

Quantizers: ``<param>_weight_quantizer`` for every parameter whose name starts with ``weight``
(named_parameters order), then per layer-and-direction index ``k`` in
``range(num_layers * num_directions)`` and direction ``d``: ``layer_{k}{_reverse}_input_quantizer``
and, with ``proj_size > 0``, ``proj_{k}{_reverse}_input_quantizer``.

Forward: the module's own forward does what torch's RNN/LSTM/GRU forward does (argument checks,
packed and unbatched inputs, default and permuted hidden states) and, in place of the fused
``_VF.<mode>`` call, runs a Python loop over time steps with the quantized weights that feeds
every cell input *and hidden state* through the input quantizer of that layer — what Model
Optimizer 0.47.0 computes (its ``VFRNNForward``, swapped into ``torch._VF`` during the call), so
outputs agree bit for bit, without changing ``torch._VF`` for other threads and in a form that
``torch.compile`` traces as one graph (given ``torch._dynamo.config.allow_rnn = True``).
Layer ``i``, direction ``j`` uses the ``(i * num_directions + j)``-th input quantizer in creation
order. A step whose input quantizer would change its shape (an amax or static bias with one
value per row of the calibration batch, on a shorter step of a packed sequence) is refused with
a ``RuntimeError``; Model Optimizer's packed layer stops on a bare assertion there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch._VF as _VF
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from qruntime.modules.base import INT8_PER_TENSOR, QuantizerSlot, QuantModule
from qruntime.quantizer import SequentialQuantizer, TensorQuantizer

__all__ = ["QuantRNN"]

_CELLS: dict[str, Callable[..., Any]] = {
    "RNN_TANH": _VF.rnn_tanh_cell,
    "RNN_RELU": _VF.rnn_relu_cell,
    "LSTM": _VF.lstm_cell,
    "GRU": _VF.gru_cell,
}


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


def _run_layers(
    module: nn.RNNBase,
    x: torch.Tensor,
    hidden: Any,
    weights: Sequence[torch.Tensor],
    batch_sizes: list[int] | None,
    inputs: Sequence[nn.Module],
    projs: Sequence[nn.Module],
) -> tuple[torch.Tensor, Any]:
    """Every layer and direction as a quantized step loop; what ``_VF.<mode>`` would compute.

    ``x`` is time-major (or packed), ``hidden`` the stacked initial state (an ``(h, c)`` pair
    for LSTM) and ``weights`` the quantized flat weights in ``_flat_weights_names`` order.
    Returns the output and the stacked final state in the same form as ``hidden``.
    """
    directions = 2 if module.bidirectional else 1
    is_lstm = module.mode == "LSTM"
    has_proj = module.proj_size > 0
    cell = _lstm_cell_with_projection if has_proj else _CELLS[module.mode]
    per_layer = (4 if module.bias else 2) + int(has_proj)
    per_cell = list(zip(*hidden, strict=True)) if is_lstm else hidden
    all_hidden = []
    for layer in range(module.num_layers):
        outputs = []
        for direction in range(directions):
            k = layer * directions + direction
            w = weights[k * per_layer : (k + 1) * per_layer]
            proj = projs[k] if has_proj else None
            if batch_sizes is None:
                hx, out = _run_fixed(cell, x, per_cell[k], w, inputs[k], proj, direction == 1)
            elif direction == 1:
                hx, out = _run_packed_reverse(cell, x, per_cell[k], w, inputs[k], proj, batch_sizes)
            else:
                hx, out = _run_packed(cell, x, per_cell[k], w, inputs[k], proj, batch_sizes)
            all_hidden.append(hx)
            outputs.append(out)
        x = torch.cat(outputs, -1)
        if module.dropout != 0 and layer < module.num_layers - 1:
            x = F.dropout(x, p=module.dropout, training=module.training, inplace=False)
    if is_lstm:
        h, c = zip(*all_hidden, strict=True)
        return x, (torch.stack(h, 0), torch.stack(c, 0))
    return x, torch.stack(all_hidden, 0)


def _permute(hidden: Any, permutation: torch.Tensor | None) -> Any:
    """``hidden`` (a tensor or an LSTM pair) with its batch dimension reordered."""
    if permutation is None:
        return hidden
    if isinstance(hidden, tuple):
        return tuple(h.index_select(1, permutation) for h in hidden)
    return hidden.index_select(1, permutation)


class QuantRNN(QuantModule):
    """RNN/LSTM/GRU with per-parameter weight quantizers and per-layer input quantizers.

    ``forward`` is its own: torch's forward ends in the fused ``_VF.<mode>`` call, which has no
    place for an input quantizer between time steps, and replacing ``_VF.<mode>`` around it (as
    Model Optimizer does) changes a process-wide name that an RNN in another thread would see
    and that ``torch.compile`` cannot trace without graph breaks.
    """

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

    def iter_weights_for_calibration(
        self,
    ) -> Iterator[tuple[torch.Tensor, TensorQuantizer | SequentialQuantizer]]:
        for name, weight in self._parameters.items():
            quantizer = self._modules.get(f"{name}_weight_quantizer")
            if name.startswith("weight") and weight is not None and quantizer is not None:
                yield weight, quantizer  # type: ignore[misc]

    def _quantized_flat_weights(self) -> list[torch.Tensor]:
        """The flat weight list of the fused call, each ``weight*`` through its quantizer.

        The quantizers are called as often, and in the order, as under Model Optimizer, whose
        forward quantizes on every attribute read: torch's forward reads the first weight twice
        to detect replaced parameters, then every flat weight twice (``hasattr`` then
        ``getattr``) to rebuild the list. Only the last value is used; the extra calls matter to
        calibrators that count calls (a running-mean static bias, ``track_amax``).
        """
        flat = []
        for index, name in enumerate(self._flat_weights_names):
            value = getattr(self, name)
            quantizer = self._modules.get(f"{name}_weight_quantizer")
            if name.startswith("weight") and quantizer is not None:
                for _ in range(4 if index == 0 else 2):
                    quantized = quantizer(value)
                value = quantized
            flat.append(value)
        return flat

    def _initial_state(self, x: torch.Tensor, batch: int) -> Any:
        """Zeros for every layer and direction (``h`` has the projected size under LSTM)."""
        layers = self.num_layers * (2 if self.bidirectional else 1)
        h_size = self.proj_size if self.proj_size > 0 else self.hidden_size
        h = torch.zeros(layers, batch, h_size, dtype=x.dtype, device=x.device)
        if self.mode != "LSTM":
            return h
        c = torch.zeros(layers, batch, self.hidden_size, dtype=x.dtype, device=x.device)
        return (h, c)

    def forward(self, input: Any, hx: Any = None) -> Any:
        """torch's RNN/LSTM/GRU forward (same argument checks and result forms), with the
        quantized step loop in place of the fused ``_VF.<mode>`` call."""
        is_lstm = self.mode == "LSTM"
        kind = {"LSTM": "LSTM", "GRU": "GRU"}.get(self.mode, "RNN")
        packed = isinstance(input, PackedSequence)
        if packed:
            x, batch_sizes, sorted_indices, unsorted_indices = input
            batched, batch_dim = True, 1
            max_batch = int(batch_sizes[0])
        else:
            x, batch_sizes, sorted_indices, unsorted_indices = input, None, None, None
            if x.dim() not in (2, 3):
                raise ValueError(f"{kind}: Expected input to be 2D or 3D, got {x.dim()}D instead")
            batched, batch_dim = x.dim() == 3, 0 if self.batch_first else 1
            if not batched:
                x = x.unsqueeze(batch_dim)
            max_batch = x.size(batch_dim)
        if hx is None:
            hx = self._initial_state(x, max_batch)
        else:
            parts = hx if is_lstm else (hx,)
            want = 3 if batched else 2
            if not packed and any(h.dim() != want for h in parts):
                dims = ", ".join(f"{h.dim()}-D" for h in parts)
                raise RuntimeError(
                    f"For {'batched 3-D' if batched else 'unbatched 2-D'} input, the hidden "
                    f"state should also be {want}-D but got ({dims}) tensors"
                )
            if not batched:
                parts = tuple(h.unsqueeze(1) for h in parts)
            hx = _permute(tuple(parts) if is_lstm else parts[0], sorted_indices)
        self.check_forward_args(x, hx, batch_sizes)
        weights = self._quantized_flat_weights()
        inputs, projs = self._quantizer_lists()
        sizes = None if batch_sizes is None else [int(s) for s in batch_sizes]
        if self.batch_first and not packed:
            x = x.transpose(0, 1)
        output, hidden = _run_layers(self, x, hx, weights, sizes, inputs, projs)
        if self.batch_first and not packed:
            output = output.transpose(0, 1)
        if packed:
            output = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
        elif not batched:
            output = output.squeeze(batch_dim)
            hidden = tuple(h.squeeze(1) for h in hidden) if is_lstm else hidden.squeeze(1)
        return output, _permute(hidden, unsorted_indices)
