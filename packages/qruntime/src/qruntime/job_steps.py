"""The steps every ``qruntime quantize`` job runs the same way, whatever its model family.

Why a module: the repository's two jobs (sentence embeddings, causal LMs) differ only in how
they load a model, batch their text and measure the quantized model against the float one.
Reading the sentence files, linting the config against the manifest of the model built on the
meta device, printing the plan, calibrating with a progress bar, the optional KV-cache run,
effective bits, saving the state and the timings are the same steps, so they live here once
and a job is the part that differs (``examples/embedding_job``, ``examples/causal_lm_job``).

Output: the report goes to ``out`` through a rich console (:func:`qruntime.report.job_console`:
coloured on a terminal, plain text elsewhere); progress bars go to ``err`` through tqdm, drawn
only when ``err`` is a terminal unless ``QuantizeOptions.progress`` says otherwise, so a log
file never receives ``\\r`` redraws.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from qruntime.job import JobError, QuantizeOptions, QuantizeReport

if TYPE_CHECKING:
    from qconfig.errors import Diagnostic
    from qconfig.manifest import Manifest
    from qconfig.plan import Plan
    from rich.console import RenderableType
    from torch import nn
    from tqdm import tqdm

__all__ = [
    "KV_QUANTIZERS",
    "JobRun",
    "LintResult",
    "display_path",
    "enabled_count",
    "kv_quantizer_counts",
    "load_sentences",
    "with_entries",
]

#: The quantizers a KV-cache config sets: the attention's key and value inputs to its matmuls.
KV_QUANTIZERS = ("k_bmm_quantizer", "v_bmm_quantizer")

_BAR = "{desc:<18} [{bar:30}] {n_fmt}/{total_fmt} batches {elapsed_s:5.1f}s"


def display_path(path: str | Path) -> str:
    """``path`` relative to the current directory when it lies below it (what a user typed or
    would type), else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_sentences(path: str | Path, limit: int | None = None) -> list[str]:
    """Non-empty lines of a text file; lines starting with ``#`` are comments.

    Read through :func:`qconfig.fileio.read_text`, so a FIFO or ``/dev/zero`` is refused at once
    and bytes that are not UTF-8 are reported with their line and column (a JobError, exit 2).
    """
    from qconfig.fileio import InputFileError, read_text

    try:
        lines = read_text(path).splitlines()
    except InputFileError as exc:
        raise JobError(str(exc)) from None
    sentences = [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]
    if not sentences:
        raise JobError(f"{path}: no sentences")
    return sentences[:limit] if limit is not None else sentences


def with_entries(config: Any, extra: Any) -> dict[str, Any]:
    """``config`` (a loaded config or a mapping) as a plain mapping with ``extra``'s
    ``quant_cfg`` entries appended (the last matching entry wins, so they override), keeping
    ``config``'s calibration algorithm."""
    raw = _as_mapping(config)
    raw["quant_cfg"] = [*_entry_list(raw.get("quant_cfg")), *_entry_list(extra.get("quant_cfg"))]
    return raw


def _as_mapping(config: Any) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return copy.deepcopy(dict(config))
    raw = config.model_dump(exclude_unset=True)
    raw.setdefault("algorithm", config.model_dump()["algorithm"])  # a mapping's default differs
    return raw


def _entry_list(quant_cfg: Any) -> list[Any]:
    if quant_cfg is None:
        return []
    if isinstance(quant_cfg, Mapping):  # the legacy {pattern: cfg} form, as qconfig reads it
        import warnings

        from qconfig.normalize import normalize_quant_cfg_list

        with warnings.catch_warnings():  # compiling the config says it is deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            entries = normalize_quant_cfg_list(quant_cfg)
        return [e.model_dump(exclude_unset=True) for e in entries]
    return list(quant_cfg)


def kv_quantizer_counts(model: nn.Module) -> tuple[int, int]:
    """``(enabled, calibrated)``: the model's enabled KV quantizers (:data:`KV_QUANTIZERS`),
    and how many of them calibration reached: those holding an amax, and the fully dynamic ones
    (which never store one, so nothing tells them apart)."""
    from qruntime.state import quantizer_states

    enabled = calibrated = 0
    for name, state in quantizer_states(model).items():
        if name.rsplit(".", 1)[-1] not in KV_QUANTIZERS or not state["enable"]:
            continue
        enabled += 1
        amaxes = state["amax"] if isinstance(state["amax"], list) else [state["amax"]]
        attributes = state["attributes"]
        if not isinstance(attributes, list):
            attributes = [attributes]
        calibrated += all(
            amax is not None or (attrs.get("type") == "dynamic" and not attrs.get("block_sizes"))
            for amax, attrs in zip(amaxes, attributes, strict=True)
        )
    return enabled, calibrated


@dataclass
class LintResult:
    """What linting against the meta-device manifest found, before any weight is read."""

    manifest: Manifest
    parameters: int
    diagnostics: list[Diagnostic]

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)


class JobRun:
    """One run of a job: its options, where it prints, the console, and the time per step."""

    def __init__(
        self, options: QuantizeOptions, out: TextIO | None = None, err: TextIO | None = None
    ) -> None:
        from qruntime.report import job_console

        self.options = options
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.console = job_console(self.out)
        self.seconds: dict[str, float] = {}
        self._kv_entries: dict[str, Any] = {}
        self._kv_label = ""
        if options.kv_cache is not None:  # a bad name or file fails now, not after a run
            from qruntime.config_source import load_for_quantize, resolve_config

            source, label = resolve_config(options.kv_cache)
            self._kv_entries = _as_mapping(load_for_quantize(source))
            self._kv_label = label.removeprefix("preset ")

    # -- printing -------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        """One or more lines of report text, printed as written."""
        self.console.print(text)
        self.out.flush()

    def show(self, renderable: RenderableType) -> None:
        """A table or other rich renderable."""
        self.console.print(renderable)
        self.out.flush()

    def bar(self, total: int, label: str) -> tqdm:
        """``label [#####.....] 7/14 batches 3.1s`` on ``err``; drawn only when ``err`` is a
        terminal unless ``options.progress`` (tqdm's ``disable=None``)."""
        from tqdm import tqdm

        enabled = self.options.progress
        return tqdm(
            total=total,
            desc=label,
            file=self.err,
            bar_format=_BAR,
            ascii=".#",
            disable=None if enabled is None else not enabled,
        )

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Add the seconds the block takes to ``seconds[step]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - start

    # -- the shared steps ------------------------------------------------------------------

    def lint(self, source: Any, meta_model: nn.Module) -> LintResult:
        """Lint the config against the manifest of ``meta_model`` (built on the meta device)."""
        from qconfig import lint

        from qruntime.inventory import inventory
        from qruntime.quantize import weight_check_from_environment

        with self.timed("lint"):
            params = sum(p.numel() for p in meta_model.parameters())
            manifest = inventory(meta_model, type(meta_model).__name__)
            diagnostics = lint(source, manifest, weight_check=weight_check_from_environment())
        return LintResult(manifest, params, list(diagnostics))

    def lint_model(
        self,
        source: Any,
        build_meta: Callable[[], nn.Module],
        model: tuple[str, Path],
        config_label: str,
        data: tuple[Path, int, Path, int],
    ) -> LintResult:
        """Step 1 of every job: lint against the manifest of the model ``build_meta`` builds on
        the meta device (building it counts as linting), then print what is run. ``model`` is
        (label, folder); ``data`` is (calibration file, sentences, evaluation file, sentences)."""
        with self.timed("lint"):
            meta_model = build_meta()
        linted = self.lint(source, meta_model)
        del meta_model
        calib_path, calib_count, eval_path, eval_count = data
        self.print_header(
            *model,
            config_label,
            linted,
            f"{calib_count} calibration sentences ({display_path(calib_path)}), "
            f"{eval_count} held-out evaluation sentences ({display_path(eval_path)})",
        )
        return linted

    def print_header(
        self, model_label: str, model_dir: Path, config_label: str, linted: LintResult, data: str
    ) -> None:
        """What is run: model, config, data."""
        millions = linted.parameters / 1e6
        self.say("qruntime quantize")
        self.say(f"  model:  {model_label} ({linted.manifest.model}, {millions:.1f}M parameters)")
        self.say(f"          {model_dir}")
        self.say(f"  config: {config_label}")
        self.say(f"  data:   {data}")

    def print_lint(self, linted: LintResult) -> bool:
        """The lint findings; False (and a line saying nothing was quantized) on errors."""
        from qruntime.report import lint_renderable

        manifest = linted.manifest
        sites = sum(len(m.quantizers) for m in manifest.modules)
        self.say()
        self.say(
            f"lint: qconfig.lint against the model's manifest "
            f"({sites} quantizers in {len(manifest.modules)} modules)"
        )
        self.show(lint_renderable(linted.diagnostics, self.options.show_info))
        if not linted.ok:
            self.say("\nnothing was quantized: fix the errors above first")
        return linted.ok

    def plan(self, model: nn.Module, source: Any) -> tuple[Any, Plan]:
        """``(config, plan)``: the config loaded for quantizing (``--algorithm`` applied) and
        its plan for ``model``, printed with each disabled group's config entry."""
        from qruntime.config_source import config_entries, entry_locator, load_for_quantize
        from qruntime.quantize import compile_for
        from qruntime.report import plan_renderable

        config = load_for_quantize(source, self.options.algorithm)
        plan = compile_for(model, config, lint="off")  # linted before, with file positions
        self.say()
        self.say("plan:")
        self.show(plan_renderable(plan, config_entries(config), entry_locator(source)))
        if self.options.algorithm is not None:
            self.say(
                f"  (calibration algorithm overridden on the command line: {self.options.algorithm})"
            )
        return config, plan

    def calibrate(
        self,
        model: nn.Module,
        plan: Plan,
        batches: Sequence[Mapping[str, Any]],
        label: str = "calibrate",
    ) -> int:
        """Apply ``plan`` to ``model`` in place, calibrating on ``batches``; returns how many
        forward loops calibration asked for (0: nothing needed activations)."""
        import torch

        from qruntime.apply import apply_plan

        calls: list[int] = []

        def forward_loop(m: nn.Module) -> None:
            calls.append(1)
            with self.bar(len(batches), label) as bar, torch.no_grad():
                for batch in batches:
                    m(**batch)
                    bar.update()

        with self.timed("calibrate"):
            apply_plan(model, plan, forward_loop)
        return len(calls)

    def kv_cache_plan(self, model: nn.Module, config: Any) -> tuple[Plan, str]:
        """``(plan, label)``: ``config`` with the ``--kv-cache`` config's entries appended,
        compiled for ``model`` (a fresh copy: the KV-cache run is a second quantization)."""
        from qruntime.quantize import compile_for

        kv_config, label = self.kv_cache_config(config)
        return compile_for(model, kv_config, lint="off"), label

    def kv_cache_config(self, config: Any) -> tuple[dict[str, Any], str]:
        """``(config + the --kv-cache entries, label)`` for the KV-cache run."""
        if self.options.kv_cache is None:
            raise JobError("no --kv-cache config given")
        return with_entries(config, self._kv_entries), self._kv_label

    def check_kv_quantizers(self, model: nn.Module, label: str) -> int:
        """The number of KV quantizers the KV-cache run enabled and calibrated; a
        :class:`JobError` when there are none (the model's attention has no KV-cache sites, so
        the row would repeat the first one) or calibration never reached them."""
        enabled, calibrated = kv_quantizer_counts(model)
        if enabled == 0:
            raise JobError(
                f"--kv-cache {label} enabled no KV-cache quantizer ({' / '.join(KV_QUANTIZERS)}) "
                f"in {type(model).__name__}: qruntime has no attention sites for this model, so "
                "there is no KV-cache row to report"
            )
        if calibrated < enabled:
            raise JobError(
                f"--kv-cache {label}: {enabled - calibrated} of {enabled} KV-cache quantizers "
                "were never calibrated (the attention forward did not call them)"
            )
        return enabled

    def finish(self, report: QuantizeReport, model: nn.Module) -> None:
        """Effective bits, the optional state file and the timings; marks the report ok."""
        from qruntime.bits import effective_bits
        from qruntime.state import save_state

        bits = effective_bits(model)
        self.say(f"  effective bits (weights): {bits.describe()}")
        report.bits = bits
        if self.options.save_state is not None:
            path = Path(self.options.save_state)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_state(model, path)
            report.state_path = path
            self.say(
                f"  quantizer state: {path} (qruntime.restore_state(fresh_model, path) restores it)"
            )
        timing = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        self.say(f"  time: {timing}")
        report.seconds = self.seconds
        report.ok = True
        report.quantized = model


def enabled_count(plan: Plan) -> int:
    """How many quantizers ``plan`` enables."""
    return sum(1 for q in plan.quantizers.values() if q.enable)
