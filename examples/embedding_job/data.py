"""The job's inputs: sentence files, tokenized batches, and its default config and data.

Reading the sentence files is the library's (``qruntime.job_steps.load_sentences``, shared with
the causal-LM job), re-exported here because ``bench/`` reads them through this job. The
defaults are found relative to this file (``examples/configs``, ``examples/data``), never
relative to qruntime: the job and its data travel together, qruntime may be installed anywhere.
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
    "make_batches",
]

_EXAMPLES = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = _EXAMPLES / "configs" / "int8_default.yaml"
DEFAULT_CALIBRATION = _EXAMPLES / "data" / "calibration.txt"
DEFAULT_EVALUATION = _EXAMPLES / "data" / "evaluation.txt"


def make_batches(
    tokenizer: Any, sentences: Sequence[str], batch_size: int, max_length: int = 256
) -> list[dict[str, torch.Tensor]]:
    """Tokenized, padded batches (padding only to the longest sentence of each batch)."""
    return [
        dict(
            tokenizer(
                list(sentences[i : i + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
        )
        for i in range(0, len(sentences), batch_size)
    ]
