"""Calibrating and training a model already sharded with FSDP2 (``fully_shard``), 2 gloo CPU
processes.

Each process shards the float model, then ``qruntime.quantize`` calibrates it on the process's
own batches (``max``: weight pass on the gathered weights, activation amaxes reduced over the
data-parallel group). What must hold, checked against independent truth:

* every amax equals, bit for bit, the amax of one process (this test process, no
  torch.distributed) calibrating the unsharded model on the union of both processes' batches —
  max of maxes is exact;
* the sharded model calibrated after sharding and the model quantized first and sharded after
  hold the same amaxes and give the same outputs, bit for bit, and train (QAT with the fake
  quantizers in the loop) to the same parameters on every process, the loss falling;
* algorithms that read weights outside a forward pass, write them or add parameters (``lsq``,
  ``smoothquant``, ``awq_lite``, ``gptq``) are refused with an error saying to quantize before sharding, and the model
  is left as it was.

One spawn runs every scenario (process start-up dominates); a deadline kills any process that
would hang.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sharded_training
import torch
from gloo_runs import load_results, run_scenarios
from sharded_training import Net, full_state, shard, train
from torch import nn

WORLD = 2
STEPS = 10
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
    "algorithm": "max",
}
REFUSED = {
    "lsq": {**CONFIG, "algorithm": {"method": "lsq", "scale_algorithm": {"method": "max"}}},
    "smoothquant": {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
            {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8}},
        ],
        "algorithm": {"method": "smoothquant", "alpha": 0.5},
    },
    "awq_lite": {**CONFIG, "algorithm": {"method": "awq_lite"}},
    "gptq": {**CONFIG, "algorithm": {"method": "gptq"}},
}


def data(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This test's batches: the ranks' inputs have different ranges, so the data-parallel sync
    changes the activation amaxes."""
    return sharded_training.data(rank, spread=True)


PROBE = torch.linspace(-3.0, 3.0, 5 * 16).reshape(5, 16)


def amaxes(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_buffers() if "amax" in k}


def _calibrate(rank: int) -> dict:
    import qruntime

    batches = data(rank)

    def loop(m):
        return [m(x) for x, _ in batches]

    first = shard(qruntime.quantize(Net(), CONFIG, loop))  # quantize, then shard
    after = qruntime.quantize(shard(Net()), CONFIG, loop)  # shard, then quantize
    kinds = {type(p).__name__ for p in after.parameters()}
    with torch.no_grad():
        outputs = {"first": first(PROBE), "after": after(PROBE)}
    result = {"kinds": kinds, "amax": {"first": amaxes(first), "after": amaxes(after)}}
    result["outputs"] = outputs
    result["losses"] = {
        "first": train(first, data(rank), STEPS),
        "after": train(after, data(rank), STEPS),
    }
    result["end"] = {"first": full_state(first), "after": full_state(after)}
    return result


def _refuse(rank: int) -> dict:
    import qruntime

    batches = data(rank)
    out = {}
    for name, config in REFUSED.items():
        model = shard(Net())
        before = full_state(model)
        cls = type(model.fc1)
        try:
            qruntime.quantize(model, config, lambda m: [m(x) for x, _ in batches])
            out[name] = {"error": None}
        except Exception as exc:
            out[name] = {"error": type(exc).__name__, "message": str(exc)}
        unchanged = type(model.fc1) is cls and all(
            torch.equal(v, before[k]) for k, v in full_state(model).items()
        )
        out[name]["unchanged"] = unchanged and set(full_state(model)) == set(before)
    return out


SCENARIOS = {"calibrate": _calibrate, "refuse": _refuse}


def _scenario(name: str, rank: int) -> dict:
    return SCENARIOS[name](rank)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    return run_scenarios(_scenario, list(SCENARIOS), out, world=WORLD, timeout_s=TIMEOUT_S)


def _load(out: Path, name: str) -> list[dict]:
    return load_results(out, name, WORLD)


def test_sharded_calibration_equals_one_process_on_the_union_of_the_data(results):
    import qruntime

    union = [batch for rank in range(WORLD) for batch in data(rank)]
    reference = qruntime.quantize(Net(), CONFIG, lambda m: [m(x) for x, _ in union])
    expected = amaxes(reference)
    assert sorted(expected) == [
        "fc1.input_quantizer._amax",
        "fc1.weight_quantizer._amax",
        "fc2.input_quantizer._amax",
        "fc2.weight_quantizer._amax",
    ]
    # the union's activation amax is rank 1's (wider inputs): the sync did change rank 0's
    alone = qruntime.quantize(Net(), CONFIG, lambda m: [m(x) for x, _ in data(0)])
    assert not torch.equal(
        amaxes(alone)["fc1.input_quantizer._amax"], expected["fc1.input_quantizer._amax"]
    )
    with torch.no_grad():
        expected_out = reference(PROBE)
    for run in _load(results, "calibrate"):
        assert run["kinds"] == {"DTensor"}
        got = run["amax"]["after"]
        assert sorted(got) == sorted(expected)
        for key, value in expected.items():
            assert got[key].dtype == value.dtype, key
            assert torch.equal(got[key], value), key
        assert torch.equal(run["outputs"]["after"], expected_out)


def test_calibrating_after_sharding_equals_quantizing_before(results):
    for run in _load(results, "calibrate"):
        first, after = run["amax"]["first"], run["amax"]["after"]
        assert list(first) == list(after)
        for key, value in first.items():
            assert torch.equal(after[key], value), key
        assert torch.equal(run["outputs"]["after"], run["outputs"]["first"])


def test_qat_of_a_model_calibrated_after_sharding(results):
    """The fake quantizers stay in the loop (STE to the weights); FSDP2 averages the gradients,
    so both processes hold the same model, and it is the model quantize-then-shard trains to."""
    runs = _load(results, "calibrate")
    for run in runs:
        losses = run["losses"]["after"]
        assert sum(losses[-3:]) < 0.7 * sum(losses[:3]), losses
        assert losses == run["losses"]["first"]
        end = run["end"]
        assert list(end["after"]) == list(end["first"])
        for key, value in end["first"].items():
            assert torch.equal(end["after"][key], value), key
    start = full_state(Net())
    for key, value in runs[0]["end"]["after"].items():
        assert torch.equal(runs[1]["end"]["after"][key], value), key
        if key in start:  # the weights did train
            assert not torch.equal(value, start[key]), key


@pytest.mark.parametrize("method", sorted(REFUSED))
def test_weight_reading_algorithms_are_refused_on_a_sharded_model(results, method):
    for run in _load(results, "refuse"):
        outcome = run[method]
        assert outcome["error"] == "ShardedModelError", outcome
        assert f"'{method}'" in outcome["message"]
        assert "Quantize before sharding" in outcome["message"]
        assert outcome["unchanged"]
