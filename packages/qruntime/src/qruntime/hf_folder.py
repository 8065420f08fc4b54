"""What kind of Hugging Face model a local folder holds, and so which job quantizes it.

Why: ``qruntime quantize --model DIR`` without ``--job`` must pick the job that can measure the
model: a causal LM is judged by its next-token distribution (``examples/causal_lm_job``), a text
encoder by its sentence embeddings (``examples/embedding_job``). The folder's ``config.json``
says which, without reading a weight: its ``architectures`` when present (``BertModel`` is an
encoder even though BERT also has a causal-LM head class), else its ``model_type``, looked up in
transformers' own auto-class tables (names only; no model class is imported).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from qruntime.job import CAUSAL_LM_JOB, DEFAULT_JOB, JobError

__all__ = ["ModelKind", "hf_model_kind", "job_folder_for", "read_hf_config"]

ModelKind = Literal["causal-lm", "text-encoder"]


def read_hf_config(model_dir: str | Path) -> dict[str, Any]:
    """The folder's ``config.json`` as a mapping; a folder without one (or a file that is not a
    JSON object) is a :class:`JobError` naming it."""
    from qconfig.fileio import InputFileError, read_text

    folder = Path(model_dir)
    file = folder / "config.json"
    try:
        is_file = file.is_file()
    except OSError:
        is_file = False
    if not is_file:
        raise JobError(f"{folder}: not a Hugging Face model folder (no config.json)")
    try:
        data = json.loads(read_text(file))
    except InputFileError as exc:
        raise JobError(str(exc)) from None
    except ValueError as exc:
        raise JobError(f"{file}: not a JSON config ({exc})") from None
    if not isinstance(data, dict):
        raise JobError(f"{file}: not a JSON object")
    return data


def _class_names(table: Any) -> set[str]:
    """Every class name of an auto-class table (a value may be one name or a tuple)."""
    names: set[str] = set()
    for value in table.values():
        names.update([value] if isinstance(value, str) else value)
    return names


def hf_model_kind(model_dir: str | Path) -> ModelKind:
    """``"causal-lm"`` when ``AutoModelForCausalLM`` builds the folder's model (its
    ``architectures`` name a causal-LM class, or, without them, its ``model_type`` has a
    causal-LM class and no masked-LM one); ``"text-encoder"`` when its ``model_type`` has a
    masked-LM class (BERT, RoBERTa, MPNet, ...: what sentence-embedding models are built on).
    Anything else is a :class:`JobError` in one line."""
    from qruntime.hf_offline import import_transformers

    config = read_hf_config(model_dir)
    import_transformers()  # offline and quiet before transformers' tables are imported
    from transformers.models.auto import modeling_auto

    causal = modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    masked = modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list):
        architectures = [architectures]
    if architectures:
        if set(map(str, architectures)) & _class_names(causal):
            return "causal-lm"
    elif model_type in causal and (model_type not in masked or config.get("is_decoder")):
        return "causal-lm"
    if model_type in masked:
        return "text-encoder"
    shown = ", ".join(map(str, architectures)) or "no architectures"
    raise JobError(
        f"{model_dir}: a {model_type or 'model without model_type'} model ({shown}) is neither a "
        "causal LM (AutoModelForCausalLM) nor a text encoder (sentence embeddings): no bundled "
        "job measures it; pass --job PATH with a job of your own"
    )


def job_folder_for(model_dir: str | Path | None) -> str:
    """The repository job (relative to a checkout's root) for ``--model DIR``; without a model,
    the sentence-embedding job with its bundled model."""
    if model_dir is None:
        return DEFAULT_JOB
    return CAUSAL_LM_JOB if hf_model_kind(model_dir) == "causal-lm" else DEFAULT_JOB
