"""The module types Model Optimizer 0.47.0 converts with plain torch, and their quant mixins.

:mod:`qruntime.sites.registry` registers them, in this order, before anything else: the order is
Model Optimizer's import order, and it matters for the subclass rule (the first registered base
with the same ``forward`` wins, docs/manifest-and-plan.md). Keys are ``"nn.<Class>"``.
"""

from __future__ import annotations

from torch import nn

from qruntime.modules.layers import QuantEmbedding, QuantInput, QuantLinearConv
from qruntime.modules.rnn import QuantRNN

__all__ = ["BUILTIN_TYPES"]

BUILTIN_TYPES: tuple[tuple[type[nn.Module], type], ...] = (
    (nn.LeakyReLU, QuantInput),
    (nn.BatchNorm1d, QuantInput),
    (nn.BatchNorm2d, QuantInput),
    (nn.BatchNorm3d, QuantInput),
    (nn.Conv1d, QuantLinearConv),
    (nn.Conv2d, QuantLinearConv),
    (nn.Conv3d, QuantLinearConv),
    (nn.ConvTranspose1d, QuantLinearConv),
    (nn.ConvTranspose2d, QuantLinearConv),
    (nn.ConvTranspose3d, QuantLinearConv),
    (nn.Embedding, QuantEmbedding),
    (nn.InstanceNorm1d, QuantInput),
    (nn.InstanceNorm2d, QuantInput),
    (nn.InstanceNorm3d, QuantInput),
    (nn.LayerNorm, QuantInput),
    (nn.Linear, QuantLinearConv),
    (nn.MaxPool1d, QuantInput),
    (nn.MaxPool2d, QuantInput),
    (nn.MaxPool3d, QuantInput),
    (nn.AvgPool1d, QuantInput),
    (nn.AvgPool2d, QuantInput),
    (nn.AvgPool3d, QuantInput),
    (nn.AdaptiveAvgPool1d, QuantInput),
    (nn.AdaptiveAvgPool2d, QuantInput),
    (nn.AdaptiveAvgPool3d, QuantInput),
    (nn.RNN, QuantRNN),
    (nn.LSTM, QuantRNN),
    (nn.GRU, QuantRNN),
)
