"""The job's inputs: its default config and text (the same files as the embedding job's), and
token batches for a causal LM.

Why its own batching: a causal LM's tokenizer often has no padding token (Llama's has none), so
the batches are padded here, on the right, with an attention mask; padded positions are never
predicted nor predicted from (``metrics.py`` reads only real next tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from qruntime.job_steps import display_path, load_sentences

__all__ = [
    "DEFAULT_CALIBRATION",
    "DEFAULT_CONFIG",
    "DEFAULT_EVALUATION",
    "display_path",
    "load_sentences",
    "token_batches",
]

_EXAMPLES = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = _EXAMPLES / "configs" / "int8_default.yaml"
DEFAULT_CALIBRATION = _EXAMPLES / "data" / "calibration.txt"
DEFAULT_EVALUATION = _EXAMPLES / "data" / "evaluation.txt"


def token_batches(
    tokenizer: Any, sentences: Sequence[str], batch_size: int, max_length: int = 256
) -> list[dict[str, torch.Tensor]]:
    """``{"input_ids", "attention_mask"}`` batches of up to ``batch_size`` sentences, each
    tokenized as the tokenizer does by itself (special tokens such as BOS included), truncated
    to ``max_length`` tokens and right-padded to the longest of its batch."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = []
    for i in range(0, len(sentences), batch_size):
        encoded = tokenizer(
            list(sentences[i : i + batch_size]), truncation=True, max_length=max_length
        )
        rows = [list(ids) for ids in encoded["input_ids"]]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[r, : len(row)] = 1
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches
