"""The repository's ``qruntime quantize`` job for Hugging Face causal LMs: quantize the model
in a local folder and measure how far its next-token distributions moved.

``qruntime quantize --model DIR`` runs it when ``DIR/config.json`` is a causal LM
(``qruntime.hf_folder``); ``--job examples/causal_lm_job`` runs it explicitly. No model is
bundled: the folder holds the weights and the tokenizer saved beside them. It calibrates on the
bundled text (``examples/data/calibration.txt``) and compares with the float model on the
held-out text (``examples/data/evaluation.txt``): KL divergence (mean per token, float ||
quantized), top-1 agreement and the perplexity of both. The shared steps (lint, plan,
calibration, KV-cache row, bits, state) are ``qruntime.job_steps``'s, as for the
sentence-embedding job next to this one. Its requirements beyond qruntime are in
``requirements.txt`` here.
"""

from .data import DEFAULT_CALIBRATION, DEFAULT_CONFIG, DEFAULT_EVALUATION, token_batches
from .metrics import NextTokenFidelity, next_token_fidelity, next_token_log_probs
from .model import TOKENIZER_FILES, load_causal_lm, load_tokenizer, meta_causal_lm
from .run import CausalLMReport, run

__all__ = [
    "DEFAULT_CALIBRATION",
    "DEFAULT_CONFIG",
    "DEFAULT_EVALUATION",
    "TOKENIZER_FILES",
    "CausalLMReport",
    "NextTokenFidelity",
    "load_causal_lm",
    "load_tokenizer",
    "meta_causal_lm",
    "next_token_fidelity",
    "next_token_log_probs",
    "run",
    "token_batches",
]
