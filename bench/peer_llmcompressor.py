"""llm-compressor 0.14 as a second, independent anchor for INT4 weight-only calibration on
all-MiniLM-L6-v2: its round-to-nearest baseline, GPTQ and AWQ, on the model, calibration
sentences, held-out sentences and cosine metric of bench/bench_accuracy.py.

Why a peer: Model Optimizer is the reference qruntime is built against, so agreeing with it
says nothing about whether an algorithm is good; a second implementation of the same algorithm
family says whether a cosine is typical for this model and format.

llm-compressor pins transformers 5.15 to 5.17 and the dev venv pins 5.24, so this script runs in
its own git-ignored venv (``make peers``); bench/bench_accuracy.py ``--peers`` calls it in a
subprocess with ``--json``. It never runs inside qruntime's process or test venv.

The format: compressed-tensors' W4A16 preset, INT4 symmetric, one scale per group of 128
input channels, min-max observer. It differs from Model Optimizer's INT4 block-128 in the
scale: compressed-tensors divides the group's absolute maximum by 7.5 (half the code range)
and clamps codes to [-8, 7], so the largest positive weight of a group is clipped by half a
step, where Model Optimizer divides by 7 and never clips. Every ``nn.Linear`` is quantized
(pooler included, which mean pooling does not use); the model stays in fake-quant form (float
weights, quantized at each forward), so the cosine is computed by plain torch.

BERT is post-LayerNorm: a LayerNorm's output feeds the next linears *and* the residual
branch, so dividing that LayerNorm by AWQ's scales changes the residual too, which AWQ's loss
(the balance layers' parent output only) does not see. The rows therefore show three
mappings:

* ``awq folded``: the only mapping that folds exactly in BERT, attention.self.value ->
  attention.output.dense (the attention mixes value rows with weights that sum to one, so a
  per-channel scale of value passes through it, bias included). query/key/value,
  intermediate.dense and output.dense (after GELU) are not smoothed;
* ``awq layernorm``: the LLM-style mapping (previous block's output.LayerNorm, or the
  embeddings' LayerNorm -> query/key/value; attention.output.LayerNorm -> intermediate.dense;
  plus value -> attention.output.dense). It runs, but it is wrong for a post-LN model (above);
  shown to say so with a number;
* ``awq input-scales``: an explicit per-channel scale module (ones at start) inserted before
  each of the six encoder linears of every block and used as the smooth layer, one mapping per
  linear: the structure of Model Optimizer's awq_lite, whose pre_quant_scale stays an explicit
  multiply in its fake-quant model. All 36 encoder linears are smoothed.

The pipeline is llm-compressor's ``sequential`` one (one BertLayer at a time, each calibrated on
the outputs of the already quantized layers before it; traced with torch.fx), the one it
recommends for AWQ and GPTQ. Its ``basic`` pipeline is not usable for AWQ in 0.14.0.1: it ends
the calibration pass before calling the modifiers, so AWQ computes its float reference outputs
with weight quantization switched back on and the weight scales not yet computed (uninitialised
memory): the chosen scales then changed from run to run.

Calibration seconds are process time (user + system CPU of this process) of the ``oneshot``
call, with ``--threads`` torch threads (default 1, like the other benches).

    .venv-peers/bin/python bench/peer_llmcompressor.py [--rows rtn gptq ...] [--calib-size 32]
        [--eval-size N] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # llm-compressor's progress bars
os.environ.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "ERROR")  # and its log lines

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _minilm import MiniLM, load_minilm  # bench/ is not a package: found through sys.path

SCHEME = "W4A16"  # compressed-tensors preset: INT4 symmetric, group 128, weights only
GROUP_SIZE = 128
CALIB_SIZE = 32
ENCODER_LINEARS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


class InputScale(nn.Module):
    """``x * weight`` per input channel, ones at start: a smooth layer AWQ can divide by its
    scales where the model has none that folds (the role of Model Optimizer's
    pre_quant_scale)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


def n_layers(model: nn.Module) -> int:
    return len(model.encoder.layer)


def folded_mappings(model: nn.Module) -> list[Any]:
    from llmcompressor.modifiers.transform.awq import AWQMapping

    return [
        AWQMapping(
            f"encoder.layer.{i}.attention.self.value", [f"encoder.layer.{i}.attention.output.dense"]
        )
        for i in range(n_layers(model))
    ]


def layernorm_mappings(model: nn.Module) -> list[Any]:
    from llmcompressor.modifiers.transform.awq import AWQMapping

    mappings = []
    for i in range(n_layers(model)):
        block = f"encoder.layer.{i}"
        before = "embeddings.LayerNorm" if i == 0 else f"encoder.layer.{i - 1}.output.LayerNorm"
        qkv = [f"{block}.attention.self.{name}" for name in ("query", "key", "value")]
        mappings.append(AWQMapping(before, qkv))
        mappings.append(
            AWQMapping(f"{block}.attention.output.LayerNorm", [f"{block}.intermediate.dense"])
        )
    return mappings + folded_mappings(model)


def insert_input_scales(model: nn.Module) -> list[Any]:
    """Replace each encoder linear L by ``Sequential(InputScale, L)``; one mapping per linear
    (its own scale -> it), as Model Optimizer's awq_lite scales each linear alone."""
    from llmcompressor.modifiers.transform.awq import AWQMapping

    mappings = []
    for i in range(n_layers(model)):
        for path in ENCODER_LINEARS:
            parent_path, _, attr = f"encoder.layer.{i}.{path}".rpartition(".")
            parent = model.get_submodule(parent_path)
            linear = getattr(parent, attr)
            setattr(parent, attr, nn.Sequential(InputScale(linear.in_features), linear))
            name = f"{parent_path}.{attr}"
            mappings.append(AWQMapping(f"{name}.0", [f"{name}.1"]))
    return mappings


@dataclasses.dataclass(frozen=True)
class PeerRow:
    """One llm-compressor recipe; ``prepare`` may change the model and returns AWQ mappings."""

    name: str
    kind: str  # "rtn", "gptq" or "awq"
    smoothed: str
    prepare: Callable[[nn.Module], list[Any]] | None = None


ROWS: tuple[PeerRow, ...] = (
    PeerRow("rtn", "rtn", "none (round to nearest, min-max scales)"),
    PeerRow("gptq", "gptq", "none (GPTQ defaults: block 128, dampening 0.01, static act-order)"),
    PeerRow("awq folded", "awq", "value -> attention.output.dense", folded_mappings),
    PeerRow(
        "awq layernorm",
        "awq",
        "LayerNorm -> q/k/v, LayerNorm -> intermediate.dense, value -> attention.output.dense "
        "(changes the post-LN residual)",
        layernorm_mappings,
    ),
    PeerRow(
        "awq input-scales",
        "awq",
        "an explicit input scale before every encoder linear",
        insert_input_scales,
    ),
)


def recipe(row: PeerRow, model: nn.Module) -> list[Any]:
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier

    if row.kind == "gptq":
        return [GPTQModifier(targets=["Linear"], scheme=SCHEME)]
    quantize = QuantizationModifier(targets=["Linear"], scheme=SCHEME)
    if row.kind == "rtn":
        return [quantize]
    assert row.prepare is not None
    return [AWQModifier(mappings=row.prepare(model)), quantize]


def import_llmcompressor() -> str:
    """Import llm-compressor without its warnings; returns its version.

    On a machine without an accelerator its AWQ fails before the first grid point: it pins the
    cached activations (``IntermediatesCache.pin_memory``, for faster host-to-device copies),
    which CPU-only torch refuses ("Cannot access accelerator device when none is
    available"). Pinning changes no value, so there it is replaced by a no-op.
    """
    warnings.filterwarnings("ignore")
    import llmcompressor
    from llmcompressor.pipelines.cache import IntermediatesCache

    if not torch.accelerator.is_available():
        IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    return llmcompressor.__version__


def quantize(row: PeerRow, model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> float:
    """Apply ``row`` to ``model`` in place; returns the process seconds of the ``oneshot`` call
    (the mapping and module insertion of ``recipe`` included)."""
    from llmcompressor import oneshot
    from torch.utils.data import DataLoader

    loader = DataLoader(batches, batch_size=None, collate_fn=lambda batch: batch)
    start = time.process_time()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        oneshot(
            model=model,
            recipe=recipe(row, model),
            dataset=loader,
            num_calibration_samples=len(batches),
            pipeline="sequential",
            sequential_targets=["BertLayer"],
        )
    return time.process_time() - start


def run_row(data: MiniLM, row: PeerRow, batches: list[dict[str, torch.Tensor]]) -> dict:
    """One row on a deep copy: cosine and seconds, or the error."""
    model = copy.deepcopy(data.model)
    result: dict[str, Any] = {"name": row.name, "smoothed": row.smoothed}
    try:
        result["seconds"] = quantize(row, model, batches)
        result["cosine"] = data.cosine(model)
    except Exception as exc:  # a row, not a crash
        text = " ".join(str(exc).split())[:160]
        result["error"] = f"{type(exc).__name__}: {text}"
    return result


def select(names: list[str] | None) -> list[PeerRow]:
    if not names:
        return list(ROWS)
    known = {row.name: row for row in ROWS}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; known: {list(known)}")
    return [known[name] for name in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=None, help=f"of {[r.name for r in ROWS]}")
    parser.add_argument("--calib-size", type=int, default=CALIB_SIZE)
    parser.add_argument("--eval-size", type=int, default=None, help="default: all (117)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    rows = select(args.rows)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    version = import_llmcompressor()
    data = load_minilm(args.eval_size, args.batch_size)
    calibration = data.calibration(args.calib_size)
    results = [run_row(data, row, calibration.batches) for row in rows]
    report = {
        "peer": f"llm-compressor {version}",
        "scheme": f"{SCHEME} (INT4 symmetric, group {GROUP_SIZE}, scale = absmax / 7.5)",
        "calibration": calibration.describe(),
        "model": data.describe(),
        "rows": results,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['peer']}, {report['scheme']}; {report['calibration']}; {report['model']}")
        for result in results:
            if "error" in result:
                print(f"  {result['name']:<18} error: {result['error']}")
            else:
                print(
                    f"  {result['name']:<18} cosine {result['cosine']:.5f}  "
                    f"{result['seconds']:.2f} s  smoothed: {result['smoothed']}"
                )
    return 1 if any("error" in result for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
