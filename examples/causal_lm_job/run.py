"""``run(options)``: the causal-LM job, step by step.

1. lint the config against the manifest of the model built on the meta device
   (``AutoModelForCausalLM``), and stop before a single weight is read if there are errors;
2. load the model and the tokenizer saved beside it, print the plan;
3. compute the float model's next-token log-probabilities on the held-out text, calibrate on the
   calibration text, compute them again (tqdm progress bars on stderr, only on a terminal unless
   ``options.progress`` says otherwise);
4. with ``--kv-cache PRESET``, quantize a fresh copy of the model with the config plus the
   preset's entries (the attention's k/v bmm quantizers) and measure it the same way;
5. report KL divergence, top-1 agreement and perplexity as a table (a row for the float model,
   one per quantized run) and the effective bits; optionally save the quantizer state.

The steps every job shares are ``qruntime.job_steps.JobRun``'s; what is specific to a causal LM
is the model (``model.py``), the batches (``data.py``) and the measurement (``metrics.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch
from qruntime.config_source import resolve_config
from qruntime.job import JobError, QuantizeOptions, QuantizeReport
from qruntime.job_steps import JobRun, enabled_count, kv_quantizer_counts
from qruntime.report import results_table
from torch import nn

from .data import (
    DEFAULT_CALIBRATION,
    DEFAULT_CONFIG,
    DEFAULT_EVALUATION,
    display_path,
    load_sentences,
    token_batches,
)
from .metrics import NextTokenFidelity, next_token_fidelity, next_token_log_probs
from .model import load_causal_lm, load_tokenizer, meta_causal_lm

__all__ = ["CausalLMReport", "run"]

_COLUMNS = [
    "run",
    "quantizers",
    "KV quantizers",
    "KL (nats/token)",
    "top-1 agreement",
    "perplexity",
]


@dataclass
class CausalLMReport(QuantizeReport):
    """The job's report: the generic fields plus the next-token fidelity on the held-out text
    (``kv_fidelity``: the ``--kv-cache`` run's, None without one)."""

    calibration_sentences: int = 0
    evaluation_sentences: int = 0
    fidelity: NextTokenFidelity | None = None
    kv_fidelity: NextTokenFidelity | None = None
    kv_quantizers: int = 0


def _row(label: str, enabled: int, kv: int, fidelity: NextTokenFidelity) -> list[str]:
    return [
        label,
        str(enabled),
        str(kv),
        f"{fidelity.kl:.4g}",
        f"{fidelity.top1:.4f}",
        f"{fidelity.perplexity_quantized:.3f}",
    ]


def run(
    options: QuantizeOptions, out: TextIO | None = None, err: TextIO | None = None
) -> CausalLMReport:
    """Run the whole job, printing the report to ``out`` and progress to ``err``."""
    if options.model is None:
        raise JobError(
            "the causal-LM job needs --model DIR: a local Hugging Face causal LM folder "
            "(config.json, weights and tokenizer); none is bundled"
        )
    job = JobRun(options, out, err)
    config_spec = options.config if options.config is not None else display_path(DEFAULT_CONFIG)
    source, config_label = resolve_config(config_spec)
    calib_path = Path(options.calib_data or DEFAULT_CALIBRATION)
    eval_path = Path(options.eval_data or DEFAULT_EVALUATION)
    calib_sentences = load_sentences(calib_path, options.calib_size)
    eval_sentences = load_sentences(eval_path, options.eval_size)
    model_dir = Path(options.model)
    model_label = str(model_dir)

    # 1. lint against the manifest of the model built on the meta device
    linted = job.lint_model(
        source,
        lambda: meta_causal_lm(model_dir),
        (model_label, model_dir),
        config_label,
        (calib_path, len(calib_sentences), eval_path, len(eval_sentences)),
    )
    report = CausalLMReport(
        False, model_label, config_label, linted.diagnostics, seconds=job.seconds
    )
    if not job.print_lint(linted):
        return report

    # 2. the tokenizer (before the weights: a folder without one fails fast), model, plan
    tokenizer = load_tokenizer(model_dir)
    with job.timed("load"):
        model = load_causal_lm(model_dir)
    config, plan = job.plan(model, source)
    report.plan = plan

    # 3. float reference, calibration, quantized
    eval_batches = token_batches(tokenizer, eval_sentences, options.batch_size, options.max_length)
    calib_batches = token_batches(
        tokenizer, calib_sentences, options.batch_size, options.max_length
    )

    def log_probs(m: nn.Module, label: str) -> tuple[torch.Tensor, torch.Tensor]:
        with job.timed("evaluate"), job.bar(len(eval_batches), label) as bar:
            return next_token_log_probs(m, eval_batches, bar.update)

    job.say()
    reference, targets = log_probs(model, "predict (float)")
    if targets.numel() == 0:
        raise JobError(f"{display_path(eval_path)}: no sentence has two tokens to predict from")
    methods = ", ".join(str(a.method) for a in plan.algorithm) or "none"
    job.say(
        f"calibration ({methods}): {len(calib_sentences)} sentences in "
        f"{len(calib_batches)} batches of up to {options.batch_size}"
    )
    if not job.calibrate(model, plan, calib_batches):
        job.say("  no forward pass was needed (nothing to calibrate from activations)")
    fidelity = next_token_fidelity(reference, log_probs(model, "predict (quantized)")[0], targets)
    report.fidelity = fidelity
    float_row = ["float", "0", "0", "-", "-", f"{fidelity.perplexity_float:.3f}"]
    rows = [
        float_row,
        _row(config_label, enabled_count(plan), kv_quantizer_counts(model)[0], fidelity),
    ]

    # 4. the same config with the KV-cache entries appended, on a fresh copy of the model
    if options.kv_cache is not None:
        with job.timed("load"):
            kv_model = load_causal_lm(model_dir)
        kv_plan, kv_label = job.kv_cache_plan(kv_model, config)
        job.calibrate(kv_model, kv_plan, calib_batches, "calibrate (KV)")
        report.kv_quantizers = job.check_kv_quantizers(kv_model, kv_label)
        kv = next_token_fidelity(reference, log_probs(kv_model, "predict (KV)")[0], targets)
        rows.append(_row(f"+ {kv_label}", enabled_count(kv_plan), report.kv_quantizers, kv))
        report.kv_fidelity = kv
        del kv_model

    # 5. the report
    job.say()
    job.say(
        f"result on {len(eval_sentences)} held-out sentences ({fidelity.tokens} predicted "
        "tokens), next-token distributions vs the float model:"
    )
    job.show(results_table(_COLUMNS, rows))
    report.calibration_sentences = len(calib_sentences)
    report.evaluation_sentences = len(eval_sentences)
    job.finish(report, model)
    return report
