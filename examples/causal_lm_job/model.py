"""The causal LM: how to build it on the meta device and load it, with its own tokenizer.

Everything is loaded from the local folder only (``qruntime.hf_offline``): a Hugging Face folder
with ``config.json``, the weights and the tokenizer files saved beside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from qruntime.hf_folder import read_hf_config
from qruntime.hf_offline import import_transformers
from qruntime.job import JobError
from torch import nn

__all__ = ["TOKENIZER_FILES", "load_causal_lm", "load_tokenizer", "meta_causal_lm"]

#: Files one of which a folder holds when its tokenizer was saved with it.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
)


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def meta_causal_lm(model_dir: str | Path) -> nn.Module:
    """The folder's causal LM built on the meta device (no weights read): enough for
    ``inventory``. A config ``AutoModelForCausalLM`` cannot build is a :class:`JobError`."""
    folder = Path(model_dir)
    read_hf_config(folder)  # a folder without config.json says so in one line
    transformers = import_transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        with torch.device("meta"):
            return transformers.AutoModelForCausalLM.from_config(config)
    except Exception as exc:
        raise JobError(
            f"{folder}: AutoModelForCausalLM cannot build this model ({_one_line(exc)})"
        ) from None


def load_tokenizer(model_dir: str | Path) -> Any:
    """The tokenizer saved in the model folder; a folder without one is a :class:`JobError`
    (the job never falls back to another tokenizer: the text must be tokenized as the model
    was trained)."""
    folder = Path(model_dir)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise JobError(
            f"{folder}: no tokenizer in the model folder (none of {', '.join(TOKENIZER_FILES)}): "
            "the causal-LM job tokenizes its text with the model's own tokenizer; save it beside "
            "the model (tokenizer.save_pretrained(folder))"
        )
    transformers = import_transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        raise JobError(f"{folder}: cannot load its tokenizer ({_one_line(exc)})") from None


def load_causal_lm(model_dir: str | Path) -> nn.Module:
    """The folder's causal LM with its weights, in eval mode; never touches the network."""
    transformers = import_transformers()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        Path(model_dir), local_files_only=True
    )
    return model.eval()
