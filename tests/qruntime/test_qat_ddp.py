"""Quantization-aware training with real processes: DDP and FSDP2 on 2 gloo CPU processes.

Each process calibrates its shard of the data (data-parallel sync: every process ends with the
same amaxes), ``lsq`` makes the static-block weight amaxes learnable, then the model trains
under ``DistributedDataParallel`` on the process's own batches. What must hold, and is checked
here: the loss falls on every process and the processes stay identical — every parameter
(weights and learned amaxes) and every quantizer buffer bit for bit — after all steps, and the
learned amaxes did move. The FSDP2 scenario (``fully_shard``) calibrates and quantizes first,
then shards and trains: the learned amaxes become sharded DTensor parameters like the weights
(checked), and the gathered model must again be identical on both processes. (Calibrating a
model already sharded is tests/qruntime/test_fsdp_calibration.py.) One spawn runs every scenario
(process start-up dominates); a deadline kills any process that would hang.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gloo_runs import load_results, run_scenarios
from sharded_training import Net, data, full_state, shard, train
from torch import nn

WORLD = 2
STEPS = 12
TIMEOUT_S = 20
CONFIG = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {
            "quantizer_name": "*weight_quantizer",
            "cfg": {"num_bits": 4, "block_sizes": {-1: 8, "type": "static"}},
        },
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8}},
    ],
    "algorithm": {"method": "lsq", "scale_algorithm": {"method": "max"}},
}


def quantized(rank: int) -> nn.Module:
    import qruntime

    batches = data(rank)
    return qruntime.quantize(Net(), CONFIG, lambda m: [m(x) for x, _ in batches])


def _scenario(name: str, rank: int) -> dict:
    from qruntime.quantizer.learned import LearnedAmaxQuantizer

    model = quantized(rank)
    start = full_state(model)
    learned = [n for n, m in model.named_modules() if isinstance(m, LearnedAmaxQuantizer)]
    if name == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        losses = train(DistributedDataParallel(model), data(rank), STEPS)
    elif name == "fsdp2":
        losses = train(shard(model), data(rank), STEPS)
        kinds = {type(p).__name__ for p in model.parameters()}
        assert kinds == {"DTensor"}, kinds
    else:
        raise KeyError(name)
    return {"start": start, "end": full_state(model), "losses": losses, "learned": learned}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("qat")
    return run_scenarios(_scenario, ["ddp", "fsdp2"], out, world=WORLD, timeout_s=TIMEOUT_S)


def _load(out: Path, name: str) -> list[dict]:
    return load_results(out, name, WORLD)


def _check(runs: list[dict]) -> None:
    first = runs[0]
    assert first["learned"] == ["fc1.weight_quantizer", "fc2.weight_quantizer"]
    for run in runs:
        losses = run["losses"]
        assert sum(losses[-4:]) < 0.7 * sum(losses[:4]), losses
    for key, value in first["end"].items():
        for run in runs[1:]:
            assert torch.equal(run["end"][key], value), key
    # the calibration was synced (each process saw other data) and the amaxes were learned
    for key in ("fc1.input_quantizer._amax", "fc1.weight_quantizer._amax_post"):
        assert torch.equal(runs[1]["start"][key], first["start"][key]), key
    moved = first["end"]["fc1.weight_quantizer._amax_post"]
    assert not torch.equal(moved, first["start"]["fc1.weight_quantizer._amax_post"])


def test_ddp_trains_a_quantized_model_and_processes_stay_identical(results):
    _check(_load(results, "ddp"))


def test_fsdp2_trains_a_sharded_quantized_model_and_processes_stay_identical(results):
    _check(_load(results, "fsdp2"))


def test_fsdp2_and_ddp_reach_the_same_model(results):
    """Both average the same gradients: the sharded run must land where the replicated one did
    (to float rounding: the reductions divide by the world size at different points). This is
    what makes the FSDP2 run meaningful — its gathered parameters agree across processes by
    construction."""
    ddp, fsdp2 = _load(results, "ddp")[0], _load(results, "fsdp2")[0]
    assert list(fsdp2["end"]) == list(ddp["end"])
    for key, value in ddp["end"].items():
        torch.testing.assert_close(fsdp2["end"][key], value, rtol=1e-4, atol=1e-5, msg=key)
