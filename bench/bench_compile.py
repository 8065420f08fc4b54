"""Compile time of big MoE manifests, beside Model Optimizer's ``set_quantizer_by_cfg``.

Builds manifests of 1k, 20k and 100k quantizers named like a MoE
(``model.layers.L.mlp.experts.E.{gate,up,down}_proj.{input,output,weight}_quantizer``), compiles
``NVFP4_MLP_ONLY_CFG`` (35 entries) and ``INT8_DEFAULT_CFG``, and prints the times, the plan
JSON size and — when nvidia-modelopt is installed — Model Optimizer applying the same config to
the equivalent meta-device model, with the ratio.

    .venv/bin/python bench/bench_compile.py [--sizes 1000 20000 100000] [--modelopt-max 20000]
"""

import argparse
import statistics
import time
import warnings

from qconfig import presets
from qconfig.attributes import QuantizerAttributeConfig
from qconfig.compile import compile_plan
from qconfig.manifest import Manifest, ModuleSite, QuantizerSite

PROJS = ("gate_proj", "up_proj", "down_proj")
KEYS = [
    "nn.Linear",
    "nn.Embedding",
    "nn.LayerNorm",
    "nn.Conv2d",
    "nn.BatchNorm1d",
    "nn.BatchNorm2d",
    "nn.BatchNorm3d",
    "nn.LeakyReLU",
]


def layout(quantizers: int, experts: int = 64) -> tuple[int, int]:
    per_layer = experts * len(PROJS) * 3
    return max(1, round(quantizers / per_layer)), experts


def build_manifest(layers: int, experts: int) -> Manifest:
    inp = QuantizerAttributeConfig(num_bits=8)
    out = QuantizerAttributeConfig(num_bits=8, enable=False)
    wgt = QuantizerAttributeConfig(num_bits=8, axis=0)
    sites = [
        QuantizerSite(attribute="input_quantizer", defaults=inp),
        QuantizerSite(attribute="output_quantizer", defaults=out),
        QuantizerSite(attribute="weight_quantizer", defaults=wgt),
    ]
    modules = [
        ModuleSite(
            name=f"model.layers.{layer}.mlp.experts.{e}.{proj}",
            class_name="Linear",
            registry_key="nn.Linear",
            parent_class_keys=["nn.Linear"],
            weight_shape=[64, 64],
            weight_dtype="bfloat16",
            quantizers=sites,
        )
        for layer in range(layers)
        for e in range(experts)
        for proj in PROJS
    ]
    return Manifest(model=f"moe-{layers}x{experts}", registry_keys=KEYS, modules=modules)


def modelopt_seconds(layers: int, experts: int, quant_cfg) -> float | None:
    try:
        import torch
        from modelopt.torch.quantization.conversion import (
            replace_quant_module,
            set_quantizer_by_cfg,
        )
        from torch import nn
    except ImportError:
        return None

    def mlp():
        return nn.ModuleDict({p: nn.Linear(64, 64, bias=False) for p in PROJS})

    with torch.device("meta"):
        model = nn.Module()
        model.model = nn.Module()
        model.model.layers = nn.ModuleList(
            nn.ModuleDict(
                {"mlp": nn.ModuleDict({"experts": nn.ModuleList(mlp() for _ in range(experts))})}
            )
            for _ in range(layers)
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        replace_quant_module(model)
        start = time.perf_counter()
        set_quantizer_by_cfg(model, quant_cfg)
    return time.perf_counter() - start


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 20000, 100000])
    parser.add_argument(
        "--modelopt-max",
        type=int,
        default=20000,
        help="largest size to run Model Optimizer on (it is linear and slow)",
    )
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    header = f"{'quantizers':>10} {'config':<20} {'qconfig s':>10} {'plan MB':>8} {'modelopt s':>11} {'speedup':>8}"
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        layers, experts = layout(size)
        manifest = build_manifest(layers, experts)
        n = len(manifest.quantizer_names())
        for preset in ("NVFP4_MLP_ONLY_CFG", "INT8_DEFAULT_CFG"):
            config = presets.get(preset)
            ours = timed(lambda c=config, m=manifest: compile_plan(c, m), args.repeat)
            plan_mb = len(compile_plan(config, manifest).to_json().encode()) / 1e6
            theirs = (
                modelopt_seconds(layers, experts, config["quant_cfg"])
                if n <= args.modelopt_max
                else None
            )
            theirs_text = f"{theirs:11.3f}" if theirs is not None else f"{'-':>11}"
            ratio = f"{theirs / ours:7.0f}x" if theirs is not None else f"{'-':>8}"
            print(f"{n:>10} {preset:<20} {ours:10.3f} {plan_mb:8.2f} {theirs_text} {ratio}")


if __name__ == "__main__":
    main()
