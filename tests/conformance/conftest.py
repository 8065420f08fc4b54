"""Shared set-up of the conformance suites (qruntime beside Model Optimizer 0.47.0)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The zoo models are tiny: intra-op threads only add overhead (and contention on CI)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
