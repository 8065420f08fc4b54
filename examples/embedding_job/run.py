"""``run(options)``: the sentence-embedding job, step by step.

1. lint the config against the manifest of the model built on the meta device, and stop before
   a single weight is read if there are errors;
2. print the plan (``qruntime.report.plan_report``): quantizers per format, and for the disabled
   ones the config entry that turned them off, with its file position;
3. embed the held-out sentences with the float model, calibrate, embed them again, with tqdm
   progress bars on stderr (only on a terminal unless ``options.progress`` says otherwise);
4. report the mean cosine similarity against the float embeddings and the effective bits per
   weight element (``qruntime.bits``); optionally save the quantizer state.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import torch

# qconfig's lazy export, not `from qconfig.lint import lint`: importing the submodule first would
# leave `qconfig.lint` naming the module for every later `from qconfig import lint`
from qconfig import lint
from qruntime.bits import effective_bits
from qruntime.config_source import (
    config_entries,
    entry_locator,
    load_for_quantize,
    resolve_config,
)
from qruntime.inventory import inventory
from qruntime.job import QuantizeOptions, QuantizeReport
from qruntime.quantize import compile_for, quantize, weight_check_from_environment
from qruntime.report import lint_report, plan_report
from qruntime.state import save_state
from torch import nn
from tqdm import tqdm

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

_BAR = "{desc:<18} [{bar:30}] {n_fmt}/{total_fmt} batches {elapsed_s:5.1f}s"


@dataclass
class EmbeddingReport(QuantizeReport):
    """The job's report: the generic fields plus what it measured on the sentences."""

    calibration_sentences: int = 0
    evaluation_sentences: int = 0
    cosine: list[float] = field(default_factory=list)

    @property
    def mean_cosine(self) -> float:
        return self.mean(self.cosine)


def _bar(total: int, label: str, err: TextIO, enabled: bool | None) -> tqdm:
    """``label [#####.....] 7/14 batches 3.1s``; ``enabled=None``: only when ``err`` is a
    terminal (tqdm's ``disable=None``)."""
    return tqdm(
        total=total,
        desc=label,
        file=err,
        bar_format=_BAR,
        ascii=".#",
        disable=None if enabled is None else not enabled,
    )


def run(
    options: QuantizeOptions, out: TextIO | None = None, err: TextIO | None = None
) -> EmbeddingReport:
    """Run the whole job, printing the report to ``out`` and progress to ``err``."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    seconds: dict[str, float] = {}

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    config_spec = options.config if options.config is not None else display_path(DEFAULT_CONFIG)
    source, config_label = resolve_config(config_spec)
    calib_path = Path(options.calib_data or DEFAULT_CALIBRATION)
    eval_path = Path(options.eval_data or DEFAULT_EVALUATION)
    calib_sentences = load_sentences(calib_path, options.calib_size)
    eval_sentences = load_sentences(eval_path, options.eval_size)
    model_dir = Path(options.model) if options.model is not None else bundled_model_dir()
    model_label = BUNDLED_MODEL if options.model is None else str(model_dir)

    # 1. lint against the manifest of the model built on the meta device
    start = time.perf_counter()
    meta_model = meta_embedding_model(model_dir)
    params = sum(p.numel() for p in meta_model.parameters())
    manifest = inventory(meta_model, type(meta_model).__name__)
    del meta_model
    diagnostics = lint(source, manifest, weight_check=weight_check_from_environment())
    seconds["lint"] = time.perf_counter() - start
    say("qruntime quantize")
    say(f"  model:  {model_label} ({manifest.model}, {params / 1e6:.1f}M parameters)")
    say(f"          {model_dir}")
    say(f"  config: {config_label}")
    say(
        f"  data:   {len(calib_sentences)} calibration sentences ({display_path(calib_path)}), "
        f"{len(eval_sentences)} held-out evaluation sentences ({display_path(eval_path)})"
    )

    sites = sum(len(m.quantizers) for m in manifest.modules)
    say()
    say(
        f"lint: qconfig.lint against the model's manifest "
        f"({sites} quantizers in {len(manifest.modules)} modules)"
    )
    say(lint_report(diagnostics, options.show_info))
    report = EmbeddingReport(False, model_label, config_label, diagnostics, seconds=seconds)
    if any(d.severity == "error" for d in diagnostics):
        say("\nnothing was quantized: fix the errors above first")
        return report

    # 2. the real model and its plan
    start = time.perf_counter()
    model, tokenizer = load_embedding_model(model_dir)
    seconds["load"] = time.perf_counter() - start
    config = load_for_quantize(source, options.algorithm)
    plan = compile_for(model, config, lint="off")  # linted above, with file positions
    say()
    say("plan: " + plan_report(plan, config_entries(config), entry_locator(source)))
    if options.algorithm is not None:
        say(f"  (calibration algorithm overridden on the command line: {options.algorithm})")
    report.plan = plan

    # 3. float reference, calibration
    eval_batches = make_batches(tokenizer, eval_sentences, options.batch_size, options.max_length)
    calib_batches = make_batches(tokenizer, calib_sentences, options.batch_size, options.max_length)
    say()
    start = time.perf_counter()
    with _bar(len(eval_batches), "embed (float)", err, options.progress) as bar:
        reference = sentence_embeddings(model, eval_batches, bar.update)
    seconds["reference"] = time.perf_counter() - start

    calls = []

    def forward_loop(m: nn.Module) -> None:
        calls.append(1)
        with _bar(len(calib_batches), "calibrate", err, options.progress) as bar:
            with torch.no_grad():
                for batch in calib_batches:
                    m(**batch)
                    bar.update()

    methods = ", ".join(str(a.method) for a in plan.algorithm) or "none"
    say(
        f"calibration ({methods}): {len(calib_sentences)} sentences in "
        f"{len(calib_batches)} batches of up to {options.batch_size}"
    )
    start = time.perf_counter()
    quantize(model, config, forward_loop, lint="off")
    seconds["calibrate"] = time.perf_counter() - start
    if not calls:
        say("  no forward pass was needed (nothing to calibrate from activations)")

    # 4. evaluation
    start = time.perf_counter()
    with _bar(len(eval_batches), "embed (quantized)", err, options.progress) as bar:
        quantized = sentence_embeddings(model, eval_batches, bar.update)
    seconds["evaluate"] = time.perf_counter() - start
    cosine = cosine_similarities(quantized, reference)
    bits = effective_bits(model)
    say()
    say(
        f"result on {len(eval_sentences)} held-out sentences "
        "(embedding = mean pooling over the attention mask, L2-normalised):"
    )
    say(
        f"  mean cosine similarity vs float: {cosine.mean().item():.4f} "
        f"(min {cosine.min().item():.4f}, max {cosine.max().item():.4f})"
    )
    say(f"  effective bits (weights): {bits.describe()}")
    report.cosine = [float(c) for c in cosine]
    report.bits = bits
    report.calibration_sentences = len(calib_sentences)
    report.evaluation_sentences = len(eval_sentences)
    if options.save_state is not None:
        path = Path(options.save_state)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_state(model, path)
        report.state_path = path
        say(f"  quantizer state: {path} (qruntime.restore_state(fresh_model, path) restores it)")
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items())
    say(f"  time: {timing}")
    report.ok = True
    report.quantized = model
    return report
