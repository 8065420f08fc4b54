"""Sparse MoE blocks during calibration: experts share one input amax, or see more tokens.

Model Optimizer gives every expert of a sparse MoE block (the blocks :mod:`qruntime.sites.moe`
detects) the element-wise max of the experts' input amaxes, and with ``sync_expert_weight_amax``
their weight amaxes too. Experts that saw no tokens get the shared value as well, so an expert
the calibration data never routed to is still calibrated (docs/model-optimizer-rules.md, "MoE
expert amax sharing").

With ``moe_calib_experts_ratio`` (every algorithm's config) a block routes each calibration
batch a second time: first to ``max(top_k, round(ratio * num_experts))`` experts, output
discarded, so that more experts collect statistics from real tokens, then with its own
``top_k`` for the output the rest of the model sees. Each expert is then calibrated on its own
tokens, so the amax sharing above is skipped for those blocks, and the block counts the tokens
each expert received during the widened pass (``expert_token_count``) when not every expert is
forced (ratio < 1).
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from qruntime.quantizer import TensorQuantizer
from qruntime.sites.moe import moe_blocks

__all__ = ["force_experts", "forced_ratio", "sync_expert_amax", "sync_moe_experts"]

#: Blocks currently widened by :func:`force_experts`, with their ratio.
_FORCED: weakref.WeakKeyDictionary[nn.Module, float] = weakref.WeakKeyDictionary()


def forced_ratio(block: nn.Module) -> float | None:
    """The ``moe_calib_experts_ratio`` a block is calibrated with right now (None: not forced)."""
    return _FORCED.get(block)


@torch.no_grad()
def sync_expert_amax(block: nn.Module, sync_weight_amax: bool = False) -> None:
    """Give every expert of ``block`` the element-wise max of the experts' input amaxes.

    Quantizers are matched by their name inside the expert; experts whose quantizer saw no
    tokens get the shared value too. Weight amaxes are shared only with ``sync_weight_amax``.
    A block calibrated with ``moe_calib_experts_ratio`` is left alone: its experts saw tokens of
    their own.
    """
    if forced_ratio(block) is not None:
        return
    shared: dict[str, torch.Tensor] = {}
    experts = list(block.experts)  # type: ignore[arg-type]
    for expert in experts:
        for name, q in expert.named_modules():
            if not isinstance(q, TensorQuantizer) or q.amax is None:
                continue
            if "input_quantizer" in name or (sync_weight_amax and "weight_quantizer" in name):
                value = q.amax.detach()
                shared[name] = value if name not in shared else torch.maximum(shared[name], value)
    for expert in experts:
        for name, q in expert.named_modules():
            if isinstance(q, TensorQuantizer) and name in shared:
                q.amax = shared[name]


def sync_moe_experts(model: nn.Module, sync_weight_amax: bool = False) -> None:
    """:func:`sync_expert_amax` for every sparse MoE block of ``model``."""
    for block in moe_blocks(model):
        sync_expert_amax(block, sync_weight_amax)


def _expert_count(block: nn.Module, owner: nn.Module) -> int:
    """The number of experts the router chooses from, where the block's code keeps it."""
    for obj in (owner, block):
        for attr in ("num_experts", "n_routed_experts"):
            if hasattr(obj, attr):
                return int(getattr(obj, attr))
    return len(block.experts)  # type: ignore[arg-type]


def _top_k_owner(block: nn.Module) -> nn.Module:
    """Where ``top_k`` lives: the router (``gate``) when it has one, else the block."""
    gate = getattr(block, "gate", None)
    return gate if gate is not None and hasattr(gate, "top_k") else block


def _count_tokens(block: nn.Module, counts: torch.Tensor, output: Any) -> None:
    """Add the experts a router output chose to ``counts``: a ``(logits, scores, indices)``
    router output names them, plain logits are reduced to the router's ``top_k`` choices."""
    if isinstance(output, tuple) and len(output) >= 3:
        indices = output[2]
    else:
        logits = output[0] if isinstance(output, tuple) else output
        _, indices = torch.topk(logits.float(), int(_top_k_owner(block).top_k), dim=-1)
    counts += torch.bincount(indices.reshape(-1), minlength=counts.numel()).to(counts.device)


def _is_calibrating(block: nn.Module) -> bool:
    return any(
        isinstance(m, TensorQuantizer) and m.is_calibrating
        for m in block.experts.modules()  # type: ignore[union-attr]
    )


def _widened_forward(block: nn.Module, ratio: float) -> Any:
    """The block's forward while forced: a widened pass first whenever its experts collect."""
    forward = type(block).forward
    owner = _top_k_owner(block)
    gate = getattr(block, "gate", None)
    counting = {"on": False}
    counts: torch.Tensor | None = None
    if ratio < 1.0 and isinstance(gate, nn.Module):
        device = next(block.parameters()).device
        counts = torch.zeros(_expert_count(block, owner), dtype=torch.long, device=device)
        block.register_buffer("expert_token_count", counts, persistent=False)

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if counting["on"]:
                _count_tokens(block, counts, output)

        handle = gate.register_forward_hook(hook)
    else:
        handle = None

    def widened(*args: Any, **kwargs: Any) -> Any:
        if _is_calibrating(block):
            original = owner.top_k
            owner.top_k = max(original, round(_expert_count(block, owner) * ratio))
            counting["on"] = counts is not None
            try:
                forward(block, *args, **kwargs)
            finally:
                owner.top_k = original
                counting["on"] = False
        return forward(block, *args, **kwargs)

    return widened, handle


@contextlib.contextmanager
def force_experts(model: nn.Module, ratio: float | None) -> Iterator[list[nn.Module]]:
    """Calibrate the sparse MoE blocks of ``model`` with ``moe_calib_experts_ratio`` = ``ratio``.

    Yields the blocks it widened (none when ``ratio`` is None). A ratio given to a model without
    a sparse MoE block whose ``top_k`` can be raised is a ``UserWarning``: nothing would use it.
    Every block gets its own forward back on exit, error or not; the token counts stay on the
    blocks (``expert_token_count``, not part of the state dict).
    """
    if ratio is None:
        yield []
        return
    blocks = [b for b in moe_blocks(model) if hasattr(_top_k_owner(b), "top_k")]
    if not blocks:
        warnings.warn(
            f"moe_calib_experts_ratio={ratio} has no effect: the model has no sparse MoE block "
            "with a top_k to raise.",
            UserWarning,
            stacklevel=3,
        )
    installed = []
    try:
        for block in blocks:
            forward, handle = _widened_forward(block, float(ratio))
            block.__dict__["forward"] = forward
            _FORCED[block] = float(ratio)
            installed.append((block, handle))
        yield blocks
    finally:
        for block, handle in installed:
            block.__dict__.pop("forward", None)
            _FORCED.pop(block, None)
            if handle is not None:
                handle.remove()
