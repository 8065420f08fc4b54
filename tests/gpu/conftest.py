"""tests/gpu: kernel checks that need a CUDA GPU. Not part of `make test` (pytest.ini ignores
this folder); bench/gpu_check.sh runs them on a GPU machine.

Without CUDA this conftest stops the run with an error instead of letting every test skip: a
skipped GPU check must never read as a passed one. ``QRUNTIME_GPU_DRY_RUN=1`` (set by
``bench/gpu_check.sh --dry-run``) runs the same tests on CPU tensors in Triton's interpreter
with small shapes, to check the script and the tests themselves before spending device time.
"""

from __future__ import annotations

import os

import pytest

DRY_RUN = os.environ.get("QRUNTIME_GPU_DRY_RUN") == "1"
if DRY_RUN:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module imports triton

import torch  # noqa: E402

if not DRY_RUN and not torch.cuda.is_available():
    raise pytest.UsageError(
        "tests/gpu needs a CUDA GPU (torch.cuda.is_available() is False). Run it through "
        "bench/gpu_check.sh on a GPU machine, or set QRUNTIME_GPU_DRY_RUN=1 for a CPU dry run."
    )

#: Where the tensors live, and how much larger than the CPU test shapes they are.
DEVICE = "cpu" if DRY_RUN else "cuda"
SCALE = 1 if DRY_RUN else 16


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "large: needs a >4 GiB tensor (GPU runs only)")


@pytest.fixture
def device() -> str:
    """The device the tensors of these tests live on ("cuda", or "cpu" in a dry run)."""
    return DEVICE


@pytest.fixture
def scale() -> int:
    """How much larger than the CPU suite's shapes the shapes here are."""
    return SCALE
