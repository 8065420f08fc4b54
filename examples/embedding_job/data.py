"""The job's inputs: sentence files, tokenized batches, and its default config and data.

The defaults are found relative to this file (``examples/configs``, ``examples/data``), never
relative to qruntime: the job and its data travel together, qruntime may be installed anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from qconfig.fileio import InputFileError, read_text
from qruntime.job import JobError

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


def display_path(path: str | Path) -> str:
    """``path`` relative to the current directory when it lies below it (what a user typed or
    would type), else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_sentences(path: str | Path, limit: int | None = None) -> list[str]:
    """Non-empty lines of a text file; lines starting with ``#`` are comments.

    Read through :func:`qconfig.fileio.read_text`, so a FIFO or ``/dev/zero`` is refused at once
    and bytes that are not UTF-8 are reported with their line and column (a JobError, exit 2).
    """
    try:
        lines = read_text(path).splitlines()
    except InputFileError as exc:
        raise JobError(str(exc)) from None
    sentences = [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]
    if not sentences:
        raise JobError(f"{path}: no sentences")
    return sentences[:limit] if limit is not None else sentences


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
