"""Next-token fidelity: how far the quantized model's next-token distributions are from the
float model's on the same held-out text.

Why these three numbers: perplexity alone can hide a changed model (errors that cancel on the
real next token); the KL divergence of the whole distribution, ``KL(float || quantized)`` in
nats averaged over predicted tokens, sees every probability; top-1 agreement says how often
greedy decoding would pick the same token. Perplexity is ``exp`` of the mean negative
log-likelihood of the real next tokens, for both models. A position is predicted when it and
the token after it are real (not padding); every predicted token of every sentence counts once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["NextTokenFidelity", "next_token_fidelity", "next_token_log_probs"]


@dataclass(frozen=True)
class NextTokenFidelity:
    """The quantized model against the float one over ``tokens`` predicted tokens."""

    tokens: int
    kl: float  # mean per token of KL(float || quantized), nats
    top1: float  # fraction of tokens whose most likely next token is the same
    perplexity_float: float
    perplexity_quantized: float


def next_token_log_probs(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    progress: Callable[[], object] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_probs, targets)``: the model's float32 log-probabilities of the next token at
    every predicted position (rows, in batch order) and the real next token there."""
    rows, targets = [], []
    with torch.no_grad():
        for batch in batches:
            logits = model(**batch).logits[:, :-1].float()
            ids, mask = batch["input_ids"], batch["attention_mask"]
            predicted = (mask[:, 1:] * mask[:, :-1]).bool()
            rows.append(torch.log_softmax(logits[predicted], dim=-1))
            targets.append(ids[:, 1:][predicted])
            if progress is not None:
                progress()
    return torch.cat(rows), torch.cat(targets)


def next_token_fidelity(
    float_log_probs: torch.Tensor, quantized_log_probs: torch.Tensor, targets: torch.Tensor
) -> NextTokenFidelity:
    """The fidelity of two models' next-token log-probabilities (``[tokens, vocab]`` each,
    e.g. from :func:`next_token_log_probs`) over the real next tokens ``targets``."""
    if float_log_probs.shape != quantized_log_probs.shape or float_log_probs.ndim != 2:
        raise ValueError(
            f"log-probabilities of different shapes: {tuple(float_log_probs.shape)} and "
            f"{tuple(quantized_log_probs.shape)} (expected [tokens, vocab] each)"
        )
    tokens = float_log_probs.shape[0]
    if tokens == 0:
        raise ValueError("no token to predict: every sentence is a single token")
    p, q = float_log_probs.double(), quantized_log_probs.double()
    # 0 * log 0 is 0: a token the float model gives probability 0 adds nothing
    kl = torch.where(p > -math.inf, p.exp() * (p - q), torch.zeros_like(p)).sum(-1)
    top1 = (p.argmax(-1) == q.argmax(-1)).double().mean()
    index = targets.long().unsqueeze(-1)
    nll_float = -p.gather(-1, index).mean()
    nll_quantized = -q.gather(-1, index).mean()
    return NextTokenFidelity(
        tokens=tokens,
        kl=float(kl.mean()),
        top1=float(top1),
        perplexity_float=math.exp(float(nll_float)),
        perplexity_quantized=math.exp(float(nll_quantized)),
    )
