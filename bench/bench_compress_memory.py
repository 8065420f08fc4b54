"""Resident and peak memory of a compressed model (``qruntime.compress``) against its fake-quant
form, per weight format.

Why: compression exists to hold the weights in their packed size (INT4 ≈ 1/4 of bf16 plus the
scales); the fake-quant model holds the float weights and quantizes them at every forward. This
bench shows both, and that the outputs are identical.

The model is a Hugging Face Llama built from a ``LlamaConfig`` (random init, fixed seed, no
download; 4 layers, hidden 1024, intermediate 2816, vocab 8192, bf16 by default). Each
(format, mode) runs in a fresh subprocess, which builds the model, quantizes it with the preset
(max calibration on one batch), then for ``compressed`` calls ``compress`` (lm_head and the
embedding stay float, as the presets leave them). It then reads:

* ``tensors``: bytes of every parameter and buffer of the model (what ``state_dict`` holds);
* ``linears``: the same for the quantized Linear layers only (packed codes + scales vs float);
* ``rss``: resident memory (``/proc/self/statm``) after ``gc`` and ``malloc_trim``;
* ``fwd+``: the highest resident memory sampled every millisecond during one forward of
  ``--batch x --seq`` tokens, minus ``rss`` (the transient cost of the forward: the fake-quant
  model materialises a quantized copy of each weight, the compressed one a decoded copy);
* ``equal``: whether the compressed model's logits are ``torch.equal`` to the fake-quant
  model's (the worker computes both, the fake-quant ones before compressing).

Workers fix glibc's mmap threshold at 128 KiB so freed weight tensors leave the resident set.
Nothing is asserted. Run: ``.venv/bin/python bench/bench_compress_memory.py``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import threading
import time

PRESETS = {
    "int4-g128": "INT4_BLOCKWISE_WEIGHT_ONLY_CFG",
    "int8": "INT8_WEIGHT_ONLY_CFG",
    "fp8": "FP8_DEFAULT_CFG",
    "nvfp4": "W4A16_NVFP4_CFG",
    "mxfp4": "MXFP4_DEFAULT_CFG",
}
MIB = 1 << 20


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _peak_during(fn):  # type: ignore[no-untyped-def]
    """``(result, highest resident bytes sampled while fn runs)``."""
    peak = [_rss()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        out = fn()
    finally:
        stop.set()
        thread.join()
    return out, max(peak[0], _rss())


def _worker(args: argparse.Namespace) -> dict:
    import warnings

    import qruntime
    import torch
    from qconfig import presets
    from transformers import LlamaConfig, LlamaForCausalLM

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=16,
        num_key_value_heads=16,
        max_position_embeddings=args.seq,
    )
    model = LlamaForCausalLM(config).to(dtype).eval()
    ids = torch.randint(0, args.vocab, (args.batch, args.seq))
    cfg = {**presets.get(PRESETS[args.format])}
    cfg["algorithm"] = "max"
    with torch.no_grad():
        qruntime.quantize(model, cfg, lambda m: m(ids), lint="off")
        ref = model(ids).logits
        equal = None
        if args.mode == "compressed":
            qruntime.compress(model)
            equal = bool(torch.equal(model(ids).logits, ref))
    del ref
    linears = 0
    for _, module in model.named_modules():
        quantizer = getattr(module, "weight_quantizer", None)
        if quantizer is not None and quantizer.is_enabled:
            # own parameters plus every buffer below (packed weight, quantizer amaxes)
            tensors = [*module.parameters(recurse=False), *module.buffers()]
            linears += sum(t.numel() * t.element_size() for t in tensors)
    total = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    _trim()
    rss = _rss()
    with torch.no_grad():
        _, peak = _peak_during(lambda: model(ids))
    return {"tensors": total, "linears": linears, "rss": rss, "fwd": peak - rss, "equal": equal}


def _run(args: argparse.Namespace, fmt: str, mode: str) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    argv = [sys.executable, __file__, "--worker", "--format", fmt, "--mode", mode]
    for key in ("dtype", "layers", "hidden", "intermediate", "vocab", "batch", "seq"):
        argv += [f"--{key}", str(getattr(args, key))]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--formats", default=",".join(PRESETS))
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--intermediate", type=int, default=2816)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--format", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args)))
        return 0
    print(
        f"Llama {args.layers}x{args.hidden} (intermediate {args.intermediate}, vocab "
        f"{args.vocab}), {args.dtype}, forward of {args.batch}x{args.seq} tokens"
    )
    header = f"{'format':<10} {'mode':<11} {'tensors':>9} {'linears':>9} {'rss':>9} {'fwd+':>8}"
    print(header + "  equal  linears vs fake")
    for fmt in args.formats.split(","):
        rows = {mode: _run(args, fmt, mode) for mode in ("fake-quant", "compressed")}
        for mode, r in rows.items():
            if "error" in r:
                print(f"{fmt:<10} {mode:<11} error: {r['error']}")
                continue
            ratio = ""
            base = rows["fake-quant"]
            if mode == "compressed" and "error" not in base:
                ratio = f"{r['linears'] / base['linears']:.3f}x"
            eq = "" if r["equal"] is None else str(r["equal"])
            print(
                f"{fmt:<10} {mode:<11} {r['tensors'] / MIB:8.1f}M {r['linears'] / MIB:8.1f}M "
                f"{r['rss'] / MIB:8.1f}M {r['fwd'] / MIB:7.1f}M  {eq:<5}  {ratio}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
