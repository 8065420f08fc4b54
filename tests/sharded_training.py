"""The small regression model and training loop the QAT/DDP and FSDP2 tests share.

Why shared: both compare processes bit for bit, so the model, its data, the way it is sharded,
the optimizer steps and the gathered state must be exactly the same code in both.
"""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 8)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def data(rank: int, spread: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Rank ``rank``'s batches of a regression task a float teacher defines; with ``spread``
    the ranks' inputs have different ranges (so a data-parallel sync changes activation amaxes)."""
    teacher = Net()
    g = torch.Generator().manual_seed(100 + rank)
    out = []
    for _ in range(4):
        x = torch.randn(16, 16, generator=g)
        if spread:
            x = x * (1.0 + rank)
        with torch.no_grad():
            out.append((x, teacher(x) * 1.5))
    return out


def shard(model: nn.Module) -> nn.Module:
    """FSDP2 ``fully_shard`` of both layers and the root (in place; returns the model)."""
    from torch.distributed.fsdp import fully_shard

    fully_shard(model.fc1)
    fully_shard(model.fc2)
    fully_shard(model)
    return model


def train(model: nn.Module, batches: list, steps: int) -> list[float]:
    """``steps`` Adam steps on ``batches`` in turn; the losses."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(steps):
        x, y = batches[step % len(batches)]
        opt.zero_grad()
        loss = (model(x) - y).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict with sharded tensors gathered (``full_tensor()``), copied."""
    out = {}
    for key, value in model.state_dict().items():
        full = getattr(value, "full_tensor", None)
        out[key] = (full() if callable(full) else value).detach().clone()
    return out
