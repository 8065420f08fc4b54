"""``run(options)``: the sentence-embedding job, step by step.

1. lint the config against the manifest of the model built on the meta device, and stop before
   a single weight is read if there are errors;
2. print the plan: quantizers per format, and for the disabled ones the config entry that turned
   them off, with its file position;
3. embed the held-out sentences with the float model, calibrate, embed them again (tqdm
   progress bars on stderr, only on a terminal unless ``options.progress`` says otherwise);
4. with ``--kv-cache PRESET``, quantize a fresh copy of the model with the config plus the
   preset's entries (the attention's k/v bmm quantizers) and measure it the same way;
5. report the cosine similarity against the float embeddings as a table (one row per run) and
   the effective bits per weight element (``qruntime.bits``); optionally save the state.

The steps every job shares are ``qruntime.job_steps.JobRun``'s; what is specific to sentence
embeddings is the model (``model.py``), the batches (``data.py``) and the cosine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import torch
from qruntime.config_source import resolve_config
from qruntime.job import QuantizeOptions, QuantizeReport
from qruntime.job_steps import JobRun, enabled_count, kv_quantizer_counts
from qruntime.report import results_table
from torch import nn

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

__all__ = ["EmbeddingReport", "run"]

_COLUMNS = ["run", "quantizers", "KV quantizers", "mean cosine", "min", "max"]


@dataclass
class EmbeddingReport(QuantizeReport):
    """The job's report: the generic fields plus what it measured on the sentences
    (``kv_cosine``: the ``--kv-cache`` run's, empty without one)."""

    calibration_sentences: int = 0
    evaluation_sentences: int = 0
    cosine: list[float] = field(default_factory=list)
    kv_cosine: list[float] = field(default_factory=list)
    kv_quantizers: int = 0

    @property
    def mean_cosine(self) -> float:
        return self.mean(self.cosine)


def _row(label: str, enabled: int, kv: int, cosine: torch.Tensor) -> list[str]:
    values = (cosine.mean().item(), cosine.min().item(), cosine.max().item())
    return [label, str(enabled), str(kv), *(f"{v:.4f}" for v in values)]


def run(
    options: QuantizeOptions, out: TextIO | None = None, err: TextIO | None = None
) -> EmbeddingReport:
    """Run the whole job, printing the report to ``out`` and progress to ``err``."""
    job = JobRun(options, out, err)
    config_spec = options.config if options.config is not None else display_path(DEFAULT_CONFIG)
    source, config_label = resolve_config(config_spec)
    calib_path = Path(options.calib_data or DEFAULT_CALIBRATION)
    eval_path = Path(options.eval_data or DEFAULT_EVALUATION)
    calib_sentences = load_sentences(calib_path, options.calib_size)
    eval_sentences = load_sentences(eval_path, options.eval_size)
    model_dir = Path(options.model) if options.model is not None else bundled_model_dir()
    model_label = BUNDLED_MODEL if options.model is None else str(model_dir)

    # 1. lint against the manifest of the model built on the meta device
    linted = job.lint_model(
        source,
        lambda: meta_embedding_model(model_dir),
        (model_label, model_dir),
        config_label,
        (calib_path, len(calib_sentences), eval_path, len(eval_sentences)),
    )
    report = EmbeddingReport(
        False, model_label, config_label, linted.diagnostics, seconds=job.seconds
    )
    if not job.print_lint(linted):
        return report

    # 2. the real model and its plan
    with job.timed("load"):
        model, tokenizer = load_embedding_model(model_dir)
    config, plan = job.plan(model, source)
    report.plan = plan

    # 3. float reference, calibration
    eval_batches = make_batches(tokenizer, eval_sentences, options.batch_size, options.max_length)
    calib_batches = make_batches(tokenizer, calib_sentences, options.batch_size, options.max_length)

    def embed(m: nn.Module, label: str) -> torch.Tensor:
        with job.timed("evaluate"), job.bar(len(eval_batches), label) as bar:
            return sentence_embeddings(m, eval_batches, bar.update)

    job.say()
    reference = embed(model, "embed (float)")
    methods = ", ".join(str(a.method) for a in plan.algorithm) or "none"
    job.say(
        f"calibration ({methods}): {len(calib_sentences)} sentences in "
        f"{len(calib_batches)} batches of up to {options.batch_size}"
    )
    if not job.calibrate(model, plan, calib_batches):
        job.say("  no forward pass was needed (nothing to calibrate from activations)")
    cosine = cosine_similarities(embed(model, "embed (quantized)"), reference)
    rows = [_row(config_label, enabled_count(plan), kv_quantizer_counts(model)[0], cosine)]

    # 4. the same config with the KV-cache entries appended, on a fresh copy of the model
    if options.kv_cache is not None:
        with job.timed("load"):
            kv_model = load_embedding_model(model_dir)[0]
        kv_plan, kv_label = job.kv_cache_plan(kv_model, config)
        job.calibrate(kv_model, kv_plan, calib_batches, "calibrate (KV)")
        report.kv_quantizers = job.check_kv_quantizers(kv_model, kv_label)
        kv_cosine = cosine_similarities(embed(kv_model, "embed (KV)"), reference)
        rows.append(_row(f"+ {kv_label}", enabled_count(kv_plan), report.kv_quantizers, kv_cosine))
        report.kv_cosine = [float(c) for c in kv_cosine]
        del kv_model

    # 5. the report
    job.say()
    job.say(
        f"result on {len(eval_sentences)} held-out sentences, cosine similarity vs float "
        "(embedding = mean pooling over the attention mask, L2-normalised):"
    )
    job.show(results_table(_COLUMNS, rows))
    report.cosine = [float(c) for c in cosine]
    report.calibration_sentences = len(calib_sentences)
    report.evaluation_sentences = len(eval_sentences)
    job.finish(report, model)
    return report
