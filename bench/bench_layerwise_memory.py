"""Peak memory and time of layer-by-layer calibration against whole-model calibration.

Why: ``layerwise.enable`` exists so that calibration holds one block's activations for the whole
calibration set at a time instead of whatever the algorithm keeps for every layer at once
(GPTQ's Hessians, AWQ's search tables). This bench shows how the two modes' peak memory grows
with the calibration set, for qruntime and, where it runs, Model Optimizer 0.47.0.

The model is a Hugging Face Llama built from a ``LlamaConfig`` (random init, fixed seed, no
download; 24 layers, hidden 256, intermediate 704 by default: small enough for two shared CPU
cores, large enough for the Hessians and the held activations to show in MiB). The config is
INT4_BLOCKWISE_WEIGHT_ONLY_CFG (INT4 weights in blocks of 128) with its ``algorithm`` replaced
by ``{method: max|gptq, layerwise: {enable: false|true}}``; both libraries find the blocks at
``model.layers`` themselves. The forward loop feeds random token batches (``--batch-size``
sequences of ``--seq-len`` tokens) of sizes ``--sizes``.

Each measurement runs in a fresh subprocess, which imports its one library, builds the model
and the data, runs one float forward of one sequence (so that torch's one-time costs of a first
forward are not counted as calibration), then reads its resident memory (``/proc/self/statm``, after ``gc`` and
``malloc_trim``) and calls ``quantize``. Printed per row:

* ``peak+``: ``ru_maxrss`` after ``quantize`` minus that resident memory: what calibration
  added on top of weights and data. ``^`` marks a row whose peak never passed the peak of the
  model's construction (the figure is then an upper bound).
Workers run with glibc's mmap threshold fixed at 128 KiB (``MALLOC_MMAP_THRESHOLD_``; ``--malloc
glibc`` keeps glibc's default): by default glibc raises the threshold each time a large block is
freed, up to 32 MiB, after which large temporaries come from the heap and, once freed, stay
resident. The peak then counts allocator slack that grows with the number of forwards and
blocks (on the default 24-layer model, layerwise ``max`` at 8 sequences: +91 MiB with the
default, +25 MiB fixed, +13 MiB still live afterwards), not memory calibration holds. The fixed
threshold costs time where code allocates many large temporaries (an mmap and page faults each):
Model Optimizer's whole-model ``gptq`` at 8 sequences took 14 s with glibc's default and 57 s
fixed. Compare times from a ``--malloc glibc`` run.

* ``wall`` / ``cpu``: ``time.perf_counter`` and ``time.process_time`` of the ``quantize`` call.

The header gives the computed sizes to compare with: the model's weight bytes, one block's
activations for the calibration set (``sizes x seq_len x hidden x 4`` bytes: what the layerwise
driver holds per block, twice while it replays a block into the next one's inputs) and GPTQ's
Hessians (``in_features**2 x 4`` bytes per linear layer) for one block and for the model.
Nothing is asserted.

    .venv/bin/python bench/bench_layerwise_memory.py [--sizes 8 32 128] [--methods max gptq]
        [--modes whole layerwise] [--no-modelopt] [--threads 1] [--malloc fixed|glibc] [--quick]
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The marker before the worker's JSON result on its stdout.
RESULT = "LAYERWISE-MEMORY-RESULT "
PRESET = "INT4_BLOCKWISE_WEIGHT_ONLY_CFG"
MiB = 1024 * 1024
LIBRARIES = ("qruntime", "modelopt")
MODES = ("whole", "layerwise")
#: glibc's initial mmap threshold; setting it also turns off glibc's dynamic raising of it.
MMAP_THRESHOLD = str(128 * 1024)
METHODS = ("max", "gptq")


@dataclasses.dataclass(frozen=True)
class Shape:
    """The Llama the bench builds and the calibration data it feeds."""

    layers: int = 24
    hidden: int = 256
    intermediate: int = 704
    heads: int = 8
    vocab: int = 1000
    seq_len: int = 128
    batch_size: int = 8

    def llama_config(self) -> Any:
        """A ``LlamaConfig`` of this shape (no KV cache: calibration never generates)."""
        from transformers import LlamaConfig

        return LlamaConfig(
            hidden_size=self.hidden,
            intermediate_size=self.intermediate,
            num_attention_heads=self.heads,
            num_key_value_heads=self.heads,
            num_hidden_layers=self.layers,
            vocab_size=self.vocab,
            max_position_embeddings=max(self.seq_len, 16),
            use_cache=False,
        )

    def weight_bytes(self) -> int:
        """The float32 parameters' bytes (embeddings, blocks, norm, untied lm_head)."""
        h, i = self.hidden, self.intermediate
        block = 4 * h * h + 3 * h * i + 2 * h
        return 4 * (2 * self.vocab * h + self.layers * block + h)

    def block_activation_bytes(self, sequences: int) -> int:
        """One block's float32 input hidden states for the whole calibration set."""
        return 4 * sequences * self.seq_len * self.hidden

    def block_hessian_bytes(self) -> int:
        """GPTQ's float32 Hessians of one block: q, k, v, o, gate, up (in = hidden) and down."""
        return 4 * (6 * self.hidden**2 + self.intermediate**2)


QUICK = Shape(layers=2, hidden=128, intermediate=256, heads=4, vocab=64, seq_len=16, batch_size=2)


@dataclasses.dataclass(frozen=True)
class Case:
    """One measurement: a library, a method and a mode on a calibration set of ``sequences``."""

    library: str
    method: str
    mode: str
    sequences: int


# --------------------------------------------------------------------------- the worker


def _resident_bytes() -> int:
    """This process's resident memory now (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _max_rss_bytes() -> int:
    """The process's peak resident memory so far (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _settle() -> None:
    """Free what Python and glibc hold but no longer use, so the baseline is the live data."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the baseline keeps the allocator's slack
        pass


def _config(method: str, layerwise: bool) -> dict[str, Any]:
    from qconfig import presets

    config = presets.get(PRESET)
    config["algorithm"] = {"method": method, "layerwise": {"enable": layerwise}}
    return config


def _import_quantize(library: str) -> Any:
    """The library's ``quantize(model, config, forward_loop)``; Model Optimizer imported quietly
    (its banner and deprecation warnings would drown the table)."""
    if library == "qruntime":
        from qruntime import quantize

        return quantize
    import contextlib
    import io
    import warnings

    warnings.filterwarnings("ignore")
    with contextlib.redirect_stdout(io.StringIO()):
        import modelopt.torch.quantization as mtq
    return mtq.quantize


def measure(case: Case, shape: Shape, threads: int) -> dict[str, Any]:
    """Build the model and data, then time ``quantize`` and measure the memory it adds."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    quantize = _import_quantize(case.library)
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(shape.llama_config()).eval()
    tokens = torch.randint(0, shape.vocab, (case.sequences, shape.seq_len))
    batches = list(tokens.split(shape.batch_size))
    config = _config(case.method, case.mode == "layerwise")

    def forward_loop(m: Any) -> None:
        with torch.no_grad():
            for batch in batches:
                m(input_ids=batch)

    with torch.no_grad():  # one-time costs of the first float forward (kernels, buffers)
        model(input_ids=batches[0][:1])
    _settle()
    baseline = _resident_bytes()
    build_peak = _max_rss_bytes()
    wall, cpu = time.perf_counter(), time.process_time()
    quantize(model, config, forward_loop)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = _max_rss_bytes()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "peak_growth": peak - baseline,
        "bounded": peak <= build_peak,
        "wall": wall,
        "cpu": cpu,
        "weights": weights,
    }


def _worker(spec: str) -> int:
    request = json.loads(spec)
    case, shape = Case(**request["case"]), Shape(**request["shape"])
    try:
        result = measure(case, shape, request["threads"])
    except Exception as exc:  # reported as an error row by the parent
        text = " ".join(str(exc).split())[:160] or type(exc).__name__
        result = {"error": f"{type(exc).__name__}: {text}"}
    print(RESULT + json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------- the parent


def run_case(
    case: Case, shape: Shape, threads: int, timeout: float, fixed_malloc: bool = True
) -> dict[str, Any]:
    """Measure ``case`` in a fresh interpreter; a crash or timeout becomes an ``error``.
    ``fixed_malloc``: glibc's mmap threshold fixed (module docstring)."""
    spec = {"case": dataclasses.asdict(case), "shape": dataclasses.asdict(shape)}
    spec["threads"] = threads
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = dict(os.environ)
    if fixed_malloc:
        env["MALLOC_MMAP_THRESHOLD_"] = MMAP_THRESHOLD
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT) :])
    tail = " ".join(done.stderr.strip().splitlines()[-1:])[:160]
    return {"error": f"worker exited {done.returncode}: {tail or 'no output'}"}


def _mib(n: float) -> str:
    return f"{n / MiB:.1f}"


def _header(shape: Shape, sizes: Sequence[int], fixed_malloc: bool) -> list[str]:
    acts = ", ".join(f"{n}: {_mib(shape.block_activation_bytes(n))}" for n in sizes)
    hessian = shape.block_hessian_bytes()
    return [
        f"Llama {shape.layers} layers, hidden {shape.hidden}, intermediate {shape.intermediate}, "
        f"{shape.heads} heads, vocab {shape.vocab}; {PRESET}; batches of {shape.batch_size} x "
        f"{shape.seq_len} tokens",
        f"weights {_mib(shape.weight_bytes())} MiB; one block's activations (MiB) per "
        f"calibration set: {acts}; GPTQ Hessians {_mib(hessian)} MiB per block, "
        f"{_mib(hessian * shape.layers)} MiB for the model",
        "glibc mmap threshold fixed at 128 KiB (peaks without allocator slack)"
        if fixed_malloc
        else "glibc's default malloc (peaks include its slack)",
    ]


def _row(case: Case, result: dict[str, Any]) -> str:
    label = f"{case.library:9} {case.method:5} {case.mode:10} {case.sequences:5d}"
    if "error" in result:
        return f"{label}  {'error':>9} {'n/a':>8} {'n/a':>8}"
    mark = "^" if result["bounded"] else " "
    peak = f"{_mib(result['peak_growth'])}{mark}"
    return f"{label}  {peak:>9} {result['wall']:8.2f} {result['cpu']:8.2f}"


def reading(shape: Shape, results: dict[Case, dict[str, Any]]) -> list[str]:
    """Per library, method and size: the layerwise peak growth split into the two blocks'
    activations the driver holds while replaying (inputs and next inputs) and the rest, beside
    the whole-model growth; then, per library and method, how the layerwise/whole ratio moves
    as the calibration set grows."""
    lines = []
    for (library, method), cases in _grouped(results).items():
        ratios = []
        for n, modes in sorted(cases.items()):
            whole, layer = _ok(modes.get("whole")), _ok(modes.get("layerwise"))
            if layer is None:
                continue
            held = 2 * shape.block_activation_bytes(n)
            grown = layer["peak_growth"]
            text = f"{library:9} {method:5} {n:5d}: layerwise +{_mib(grown)} MiB"
            text += f" (2 blocks' activations {_mib(held)}, rest {_mib(grown - held)})"
            if whole is not None and whole["peak_growth"] > 0:
                ratios.append(grown / whole["peak_growth"])
                text += f", whole-model +{_mib(whole['peak_growth'])} MiB: {ratios[-1]:.2f}x"
            lines.append(text)
        if len(ratios) > 1:
            trend = "falls" if ratios[-1] < ratios[0] else "does not fall"
            steps = " -> ".join(f"{r:.2f}" for r in ratios)
            lines.append(
                f"{library:9} {method:5} layerwise/whole {steps}: {trend} as the set grows"
            )
    return lines


def _ok(result: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if result is None or "error" in result else result


def _grouped(
    results: dict[Case, dict[str, Any]],
) -> dict[tuple[str, str], dict[int, dict[str, dict[str, Any]]]]:
    grouped: dict[tuple[str, str], dict[int, dict[str, dict[str, Any]]]] = {}
    for case, result in results.items():
        by_size = grouped.setdefault((case.library, case.method), {})
        by_size.setdefault(case.sequences, {})[case.mode] = result
    return grouped


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="calibration sequences per run")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--no-modelopt", action="store_true", help="qruntime only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    parser.add_argument("--layers", type=int, help="decoder layers (default 24)")
    parser.add_argument("--hidden", type=int, help="hidden size (default 256)")
    parser.add_argument("--intermediate", type=int, help="MLP size (default 704)")
    parser.add_argument("--seq-len", type=int, help="tokens per sequence (default 128)")
    parser.add_argument("--batch-size", type=int, help="sequences per batch (default 8)")
    parser.add_argument(
        "--malloc",
        choices=("fixed", "glibc"),
        default="fixed",
        help="workers' glibc mmap threshold: fixed at 128 KiB (default) or glibc's dynamic one",
    )
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per run")
    parser.add_argument("--quick", action="store_true", help="a 2-layer toy model, 4 sequences")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _shape(args: argparse.Namespace) -> Shape:
    shape = QUICK if args.quick else Shape()
    overrides = {
        "layers": args.layers,
        "hidden": args.hidden,
        "intermediate": args.intermediate,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
    }
    return dataclasses.replace(shape, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    """Run every case in its own subprocess and print the table and its reading; returns 1 when
    a qruntime case failed (a Model Optimizer failure is printed, not counted)."""
    args = parse_args(argv)
    if args.worker is not None:
        return _worker(args.worker)
    shape = _shape(args)
    sizes = args.sizes or ([4] if args.quick else [8, 32, 128])
    if min(sizes) < 1:
        raise SystemExit("--sizes must be positive")
    libraries = LIBRARIES[:1] if args.no_modelopt else LIBRARIES
    fixed_malloc = args.malloc == "fixed"
    for line in _header(shape, sizes, fixed_malloc):
        print(line)
    print(
        f"{'library':9} {'meth':5} {'mode':10} {'seqs':>5}  {'peak+ MiB':>9} {'wall s':>8} "
        f"{'cpu s':>8}"
    )
    results: dict[Case, dict[str, Any]] = {}
    for library in libraries:
        for method in args.methods:
            for n in sizes:
                for mode in args.modes:
                    case = Case(library, method, mode, n)
                    results[case] = run_case(case, shape, args.threads, args.timeout, fixed_malloc)
                    print(_row(case, results[case]), flush=True)
    errors = [(c, r["error"]) for c, r in results.items() if "error" in r]
    for case, error in errors:
        print(f"{case.library} {case.method} {case.mode} {case.sequences}: {error}")
    print("^: the peak never passed the model construction's; the figure is an upper bound")
    print("reading (peak+ of layerwise against the activations it holds and the whole-model run):")
    for line in reading(shape, results):
        print(f"  {line}")
    return 1 if any(case.library == "qruntime" for case, _ in errors) else 0


if __name__ == "__main__":
    sys.exit(main())
