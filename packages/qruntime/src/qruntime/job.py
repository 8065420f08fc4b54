"""What a ``qruntime quantize`` job is, and how the command finds one.

Why jobs live outside the library: the command's contract is "config + model -> report"
(docs/getting-started.md), but what a model is, which data calibrates it and what its accuracy
means depend on the model family. A sentence-embedding model is measured by the cosine of its
pooled embeddings, a causal LM by its perplexity. So the library owns the command line, the
options (:class:`QuantizeOptions`), the generic report fields (:class:`QuantizeReport`) and the
steps every job shares (``qruntime.config_source``, ``qruntime.report``, ``qruntime.bits``);
a job is any callable ``job(options, out, err)`` returning an object with ``ok``.

``--job`` names it as

* ``PATH`` or ``PATH:function``: a Python file or a package folder, loaded from that path (no
  ``sys.path`` change; a package's relative imports work), function ``run`` by default;
* ``module:function`` (or ``module``, function ``run``): an importable module, e.g. a job
  installed with your own package.

Without ``--job`` the command runs a job of the repository, found in the current directory or
the nearest parent that has it: with ``--model DIR`` the one for the kind of Hugging Face model
the folder holds (``qruntime.hf_folder``: a causal LM goes to ``examples/causal_lm_job``, a text
encoder to ``examples/embedding_job``), without ``--model`` the sentence-embedding job and its
bundled model.
The library never derives a path from its own location: installed from a wheel it has no
repository, and without ``--job`` outside a checkout the command says so in one line.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, TextIO

if TYPE_CHECKING:
    from qconfig.errors import Diagnostic
    from qconfig.plan import Plan
    from torch import nn

    from qruntime.bits import EffectiveBits

__all__ = [
    "CAUSAL_LM_JOB",
    "DEFAULT_JOB",
    "JobError",
    "JobResult",
    "QuantizeJob",
    "QuantizeOptions",
    "QuantizeReport",
    "find_default_job",
    "import_job_module",
    "load_job",
]

#: The repository's reference job (sentence embeddings), relative to a checkout's root.
DEFAULT_JOB = "examples/embedding_job"
#: The repository's job for Hugging Face causal LMs (next-token fidelity).
CAUSAL_LM_JOB = "examples/causal_lm_job"
_DEFAULT_FUNCTION = "run"


class JobError(Exception):
    """A problem with the inputs or the environment (exit status 2), said in one line."""


@dataclass
class QuantizeOptions:
    """Everything ``qruntime quantize`` can be told (the command's flags, one to one). ``None``
    leaves the choice to the job (its bundled model, config and data)."""

    model: str | Path | None = None  # a model the job can load (for HF jobs: a local folder)
    config: str | Path | None = None  # file path or preset name
    algorithm: str | None = None  # replaces the config's calibration algorithm
    calib_data: str | Path | None = None
    eval_data: str | Path | None = None
    calib_size: int | None = None  # None: every sample in the file
    eval_size: int | None = None
    batch_size: int = 16
    max_length: int = 256  # tokens per sample, for text models
    save_state: str | Path | None = None
    show_info: bool = False
    progress: bool | None = None  # None: progress bars only when stderr is a terminal
    kv_cache: str | None = None  # a KV-cache preset run a second time on top of the config


@dataclass
class QuantizeReport:
    """What every job reports; ``ok`` is False when the job stopped (e.g. on lint errors).
    Jobs subclass it with their own measurements."""

    ok: bool
    model: str
    config: str
    diagnostics: list[Diagnostic] = field(default_factory=list)
    plan: Plan | None = None
    bits: EffectiveBits | None = None
    state_path: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    quantized: nn.Module | None = field(default=None, repr=False)  # the quantized model

    @staticmethod
    def mean(values: Sequence[float]) -> float:
        """The mean of ``values``; NaN when there are none."""
        return sum(values) / len(values) if values else math.nan


class JobResult(Protocol):
    """The part of a job's result the command reads: ``ok`` decides the exit status."""

    ok: bool


class QuantizeJob(Protocol):
    """A job: print the report to ``out`` and progress to ``err``."""

    def __call__(self, options: QuantizeOptions, out: TextIO, err: TextIO) -> JobResult: ...


def find_default_job(start: str | Path | None = None, job: str = DEFAULT_JOB) -> Path:
    """The folder ``job`` (a repository job such as ``examples/embedding_job``) under ``start``
    (default: the current directory) or its nearest parent that has one, like git finds its
    repository."""
    here = Path.cwd() if start is None else Path(start)
    for folder in (here, *here.resolve().parents):
        candidate = folder / job
        if (candidate / "__init__.py").is_file():
            return candidate
    what = "sentence-embedding" if job == DEFAULT_JOB else "causal-LM"
    raise JobError(
        f"no --job given and no {job} in {here} or a parent directory (the {what} job of the "
        "qconfig/qruntime repository): run from a checkout, or pass --job PATH[:function] or "
        "--job module:function"
    )


def _split(spec: str) -> tuple[str, str | None]:
    """``(target, function)``: the function after the last ``:`` when it is a (dotted) name,
    so that ``C:\\jobs\\mine.py`` stays a path."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and len(head) > 1 and all(p.isidentifier() for p in tail.split(".")):
        return head, tail
    return spec, None


def _module_name(path: Path) -> str:
    stem = path.name if path.is_dir() else path.stem
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in stem)
    return name if name.isidentifier() else f"job_{name}"


def _import_path(path: Path) -> ModuleType:
    path = path.resolve()
    init = path / "__init__.py" if path.is_dir() else path
    if not init.is_file() or init.suffix != ".py":
        raise JobError(f"{path}: not a Python file or package folder (with __init__.py)")
    name = _module_name(path)
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == init:
            return loaded
        raise JobError(f"{path}: a different module named {name!r} is already imported")
    locations = [str(path)] if path.is_dir() else None
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=locations)
    if spec is None or spec.loader is None:
        raise JobError(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the job's own code (or its file) is at fault: say so in a line
        del sys.modules[name]
        raise JobError(f"{path}: cannot import the job ({_failure(exc)})") from None
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _failure(exc: BaseException) -> str:
    """``Type: first line of the message`` (a SyntaxError keeps its line number)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if isinstance(exc, ImportError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def import_job_module(spec: str | Path) -> ModuleType:
    """The module a ``--job`` spec names (without its ``:function``): a file or package folder
    when one exists at that path or the spec looks like a path, else an importable module."""
    target = _split(str(spec))[0]
    path = Path(target)
    if path.exists() or target.endswith(".py") or "/" in target or "\\" in target:
        return _import_path(path)
    try:
        return importlib.import_module(target)
    except Exception as exc:
        raise JobError(f"--job {spec}: cannot import {target!r} ({_failure(exc)})") from None


def load_job(spec: str | Path | None = None) -> QuantizeJob:
    """The job callable ``spec`` names; ``None``: the repository's default job."""
    spec = find_default_job() if spec is None else spec
    module = import_job_module(spec)
    function = _split(str(spec))[1] or _DEFAULT_FUNCTION
    job: Any = module
    for part in function.split("."):
        job = getattr(job, part, None)
    if not callable(job):
        raise JobError(f"--job {spec}: {module.__name__} has no callable {function!r}")
    return job
