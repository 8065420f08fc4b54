"""QAT step time on CPU: float vs fake-quant (INT8 W8A8), eager vs ``torch.compile``.

One step = forward, backward and an AdamW update (the model is compiled, the optimizer is
not). For each model it prints the median step time (rounds alternate the variants) of the float model and of the max-calibrated INT8 W8A8 copy (weights per channel, inputs
per tensor), each eager and compiled (inductor, ``fullgraph=True``, ``dynamic=True``), the
fake-quant/float ratios and the first compiled step (the compilation) of each. The goal of
issue 16 is a compiled fake-quant step at most 1.5x the float step.

    .venv/bin/python bench/bench_qat_step.py [--models mlp llama] [--steps 5] [--rounds 6] [--threads 2]

Models: ``mlp`` (Linear 512 -> 2048 -> 512, GELU, 8 x 128 tokens) and ``llama`` (the tests'
tiny Llama-style decoder: hidden 16, two layers, 8 x 32 tokens; dominated by per-op overhead,
where compilation matters most).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import qruntime
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]

W8A8 = [
    {"quantizer_name": "*", "enable": False},
    {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
    {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8}},
]


class MLP(nn.Module):
    def __init__(self, dim: int = 512, inner: int = 2048) -> None:
        super().__init__()
        self.up = nn.Linear(dim, inner)
        self.down = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(nn.functional.gelu(self.up(x)))


def _mlp() -> tuple[nn.Module, Callable[[], tuple[torch.Tensor, ...]], Callable]:
    torch.manual_seed(0)
    model = MLP()

    def batch() -> tuple[torch.Tensor, ...]:
        return (torch.randn(8, 128, 512),)

    def loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x).pow(2).mean()

    return model, batch, loss


def _llama() -> tuple[nn.Module, Callable[[], tuple[torch.Tensor, ...]], Callable]:
    sys.path.insert(0, str(ROOT / "tests"))
    import zoo

    model = zoo.build("llama").train()

    def batch() -> tuple[torch.Tensor, ...]:
        return (torch.randint(0, 32, (8, 32)),)

    def loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        logits = model(ids)
        return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())

    return model, batch, loss


MODELS = {"mlp": _mlp, "llama": _llama}


def _stepper(model: nn.Module, loss_fn: Callable) -> Callable[..., None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(*batch: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model, *batch).backward()
        opt.step()

    return step


def bench(name: str, steps: int, rounds: int) -> None:
    model, batch, loss_fn = MODELS[name]()
    batches = [batch() for _ in range(4)]
    fq = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qruntime.quantize(
            fq,
            {"quant_cfg": W8A8, "algorithm": "max"},
            lambda m: [m(*b) for b in batches[:2]],
        )
    steppers: dict[tuple[str, str], Callable[..., None]] = {}
    first: dict[str, float] = {}
    for label, m in (("float", model), ("fake-quant", fq)):
        steppers[(label, "eager")] = _stepper(copy.deepcopy(m), loss_fn)
        compiled = torch.compile(copy.deepcopy(m), fullgraph=True, dynamic=True)
        steppers[(label, "compiled")] = _stepper(compiled, loss_fn)
        t0 = time.perf_counter()
        steppers[(label, "compiled")](*batches[0])
        first[label] = time.perf_counter() - t0
    for step in steppers.values():  # warm-up
        for b in batches[1:3]:
            step(*b)
    # Rounds alternate the four variants, so that a change in machine load hits all of them.
    times: dict[tuple[str, str], list[float]] = {key: [] for key in steppers}
    for r in range(rounds):
        for key, step in steppers.items():
            for i in range(steps):
                b = batches[(r + i) % len(batches)]
                t0 = time.perf_counter()
                step(*b)
                times[key].append(time.perf_counter() - t0)
    med = {key: statistics.median(v) for key, v in times.items()}
    n = steps * rounds
    print(f"\n{name}: median of {n} steps (forward + backward + AdamW), CPU")
    print(f"  {'':12} {'eager ms':>10} {'compiled ms':>12} {'first compiled step s':>22}")
    for label in ("float", "fake-quant"):
        e, c = med[(label, "eager")], med[(label, "compiled")]
        print(f"  {label:12} {e * 1e3:10.2f} {c * 1e3:12.2f} {first[label]:22.1f}")
    fe, fc = med[("float", "eager")], med[("float", "compiled")]
    qe, qc = med[("fake-quant", "eager")], med[("fake-quant", "compiled")]
    print(
        f"  fake-quant / float eager: eager {qe / fe:.2f}x, compiled {qc / fe:.2f}x; "
        f"compiled fake-quant / compiled float: {qc / fc:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["mlp", "llama"])
    parser.add_argument("--steps", type=int, default=5, help="steps per variant and round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models:
        bench(name, args.steps, args.rounds)


if __name__ == "__main__":
    main()
