"""Distributed calibration with real processes: 2 and 4 gloo processes on the CPU.

The truth is one process: each distributed run calibrates shards of a data set, and the pytest
process (no process group) calibrates the union of the shards — the result every process must
end with. ``max`` (and the algorithms whose only statistics are amaxes) must agree bit for bit;
the algorithms whose statistics are sums (AWQ's activation means and losses, the Hessians of
GPTQ and local_hessian) add them in another order, so they agree to float32 rounding, while the
processes agree with each other exactly. One spawn per world size runs every scenario in turn
(process start-up dominates); the killed-process scenario runs last, since it ends the group.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

H = 16
N_BATCHES = 8
RARE = 5  # the only batch that reaches Net.branch: one process sees it, the others never do
TIMEOUT_S = 20  # the process group's timeout: a dead peer can never block longer than this

INT8 = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8}},
    ]
}
INT4 = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {
            "quantizer_name": "*weight_quantizer",
            "cfg": {"num_bits": 4, "block_sizes": {-1: 8, "type": "static"}},
        },
    ]
}
ALGORITHMS = {
    "max": (INT8, "max"),
    "mse": (INT8, {"method": "mse"}),
    "smoothquant": (INT8, {"method": "smoothquant", "alpha": 0.5}),
    "awq_lite": (INT4, {"method": "awq_lite", "alpha_step": 0.25}),
    "awq_clip": (INT4, {"method": "awq_clip"}),
    "awq_full": (INT4, {"method": "awq_full", "alpha_step": 0.5}),
    "svdquant": (INT4, {"method": "svdquant", "lowrank": 4}),
    "gptq": (INT4, {"method": "gptq", "block_size": 8}),
    "local_hessian": (INT4, {"method": "local_hessian", "block_size": 8, "fp8_scale_sweep": False}),
}
#: Tensor parallel: fc2's weight is per tensor (reduced over the tensor group), fc1's per channel.
TP_CONFIG = {
    "quant_cfg": [
        *INT8["quant_cfg"],
        {"quantizer_name": "fc2.weight_quantizer", "cfg": {"num_bits": 8}},
    ],
    "algorithm": "max",
}
RATIO_CONFIG = {**INT8, "algorithm": {"method": "max", "moe_calib_experts_ratio": 0.25}}
NVFP4_STATIC = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {
            "quantizer_name": "*weight_quantizer",
            "cfg": {
                "num_bits": (2, 1),
                "block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3)},
            },
        },
    ],
    "algorithm": "max",
}
LAYERWISE = {"method": "gptq", "block_size": 8, "layerwise": {"enable": True}}
#: Bit-exact: the only statistics are amaxes, reduced with MAX (exact in any order).
EXACT = {"max", "mse", "smoothquant"}


# ------------------------------------------------------------------------------ models, data
class Net(nn.Module):
    def __init__(self, shard: int | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(H, 2 * H)
        self.fc2 = nn.Linear(2 * H, H)
        self.branch = nn.Linear(H, H)
        if shard is not None:  # tensor parallel: each process holds another slice of weights
            with torch.no_grad():
                g = torch.Generator().manual_seed(200 + shard)
                for p in (self.fc1.weight, self.fc2.weight):
                    p.add_(torch.randn(p.shape, generator=g))

    def forward(self, batch):
        x, rare = batch
        y = self.fc2(torch.relu(self.fc1(x)))
        return y + self.branch(x) if rare else y


class Attention(nn.Module):
    """q/k/v siblings: their NVFP4-static weights share one global amax."""

    def __init__(self, shard: int = 0):
        super().__init__()
        torch.manual_seed(2)
        self.q_proj = nn.Linear(2 * H, 2 * H, bias=False)
        self.k_proj = nn.Linear(2 * H, 2 * H, bias=False)
        self.v_proj = nn.Linear(2 * H, 2 * H, bias=False)
        with torch.no_grad():  # tensor parallel: the slices differ, k's most on shard 1
            self.k_proj.weight.mul_(1.0 + shard)

    def forward(self, batch):
        x = batch[0].reshape(-1, H).repeat(1, 2)
        return self.q_proj(x) + self.k_proj(x) + self.v_proj(x)


class Expert(nn.Module):
    def __init__(self):
        super().__init__()
        self.up_proj = nn.Linear(H, 2 * H, bias=False)
        self.down_proj = nn.Linear(2 * H, H, bias=False)

    def forward(self, x):
        return self.down_proj(torch.relu(self.up_proj(x)))


class SparseMoe(nn.Module):
    """Tokens go only to the experts the router picks: an expert may see no token at all."""

    def __init__(self, n_experts: int = 4):
        super().__init__()
        self.top_k = 1
        self.num_experts = n_experts
        self.gate = nn.Linear(H, n_experts)
        self.experts = nn.ModuleList([Expert() for _ in range(n_experts)])
        with torch.no_grad():  # expert 3 only for tokens with a large first feature (RARE)
            self.gate.weight[3] = 0.0
            self.gate.weight[3, 0] = 10.0
            self.gate.bias.zero_()
            self.gate.bias[3] = -50.0

    def forward(self, x):
        flat = x.reshape(-1, H)
        chosen = self.gate(flat).topk(self.top_k, dim=-1).indices
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            rows = (chosen == e).any(-1).nonzero().squeeze(-1)
            if rows.numel():
                out[rows] += expert(flat[rows])
        return out.reshape(x.shape)


class MoeNet(nn.Module):
    def __init__(self, expert_set: int = 0):
        super().__init__()
        torch.manual_seed(1)
        self.proj = nn.Linear(H, H)
        self.moe = SparseMoe()
        with torch.no_grad():  # expert parallel: each expert set holds different experts
            g = torch.Generator().manual_seed(100 + expert_set)
            for p in self.moe.experts.parameters():
                p.add_(torch.randn(p.shape, generator=g))

    def forward(self, batch):
        x, _ = batch
        return self.moe(self.proj(x) + x)


def batches() -> list[tuple[torch.Tensor, bool]]:
    g = torch.Generator().manual_seed(7)
    out = []
    for i in range(N_BATCHES):
        x = torch.randn(4, 3, H, generator=g) * (1 + i / 4)
        if i == RARE:
            x[..., 0] = 8.0
        out.append((x, i == RARE))
    return out


def shard(rank: int, world: int) -> list[int]:
    return list(range(rank, N_BATCHES, world))


def loop_over(indices, die=None):
    data = batches()

    def loop(model):
        for n, i in enumerate(indices):
            if die is not None and n == 1:
                die()
            model(data[i])

    return loop


def calibrate(model, name, indices, **kwargs):
    import qruntime

    cfg, algorithm = ALGORITHMS[name]
    config = {**cfg, "algorithm": algorithm}
    return qruntime.quantize(model, config, loop_over(indices), lint="off", **kwargs)


def amax_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------ the workers
def _groups(rank, world):
    """2 x 2 grid (4 processes): data groups {0,1},{2,3} hold the same experts, expert groups
    {0,2},{1,3} different ones. ``new_group`` is collective: every process makes all groups."""
    data = [dist.new_group([0, 1]), dist.new_group([2, 3])]
    expert = [dist.new_group([0, 2]), dist.new_group([1, 3])]
    return data[rank // 2], expert[rank % 2]


def _blocks(model):
    return [model.fc1, model.fc2]


def _scenario(name, rank, world):
    import qruntime
    from qruntime import ParallelState

    if name in ALGORITHMS:
        model = calibrate(Net(), name, shard(rank, world))
        return {"state": amax_state(model)}
    if name == "unsynced":
        cfg, _ = ALGORITHMS["max"]
        config = {**cfg, "algorithm": {"method": "max", "distributed_sync": False}}
        model = qruntime.quantize(Net(), config, loop_over(shard(rank, world)), lint="off")
        return {"state": amax_state(model)}
    if name in ("moe_ep", "moe_ep_weights"):
        weights = name == "moe_ep_weights"
        cfg, _ = ALGORITHMS["max"]
        config = {**cfg, "algorithm": {"method": "max", "sync_expert_weight_amax": weights}}
        parallel = ParallelState(expert=dist.group.WORLD)
        model = MoeNet(expert_set=rank)
        qruntime.quantize(
            model, config, loop_over(shard(rank, world)), lint="off", parallel=parallel
        )
        return {"state": amax_state(model)}
    if name == "grid":
        data, expert = _groups(rank, world)
        model = MoeNet(expert_set=rank // 2)
        parallel = ParallelState(data=data, expert=expert)
        calibrate(model, "max", shard(rank, world), parallel=parallel)
        return {"state": amax_state(model)}
    if name == "bias":  # a static (affine) bias stays per process, with a warning
        config = {
            "quant_cfg": [
                *INT8["quant_cfg"],
                {
                    "quantizer_name": "fc1.input_quantizer",
                    "cfg": {"num_bits": 8, "bias": {-1: None, "type": "static"}},
                },
            ],
            "algorithm": "max",
        }
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = qruntime.quantize(Net(), config, loop_over(shard(rank, world)), lint="off")
        messages = [str(w.message) for w in caught if "static bias" in str(w.message)]
        return {"state": amax_state(model), "warnings": messages}
    if name == "moe_ratio":  # experts not shared locally: some have no amax on some processes
        model = qruntime.quantize(MoeNet(), RATIO_CONFIG, loop_over(shard(rank, world)), lint="off")
        return {"state": amax_state(model)}
    if name == "nvfp4_tp":
        parallel = ParallelState(tensor=dist.group.WORLD)
        model = Attention(shard=rank)
        loop = loop_over(shard(rank, world))
        qruntime.quantize(model, NVFP4_STATIC, loop, lint="off", parallel=parallel)
        return {"state": amax_state(model)}
    if name == "tp":
        parallel = ParallelState(tensor=dist.group.WORLD)
        model = Net(shard=rank)
        qruntime.quantize(
            model, TP_CONFIG, loop_over(shard(rank, world)), lint="off", parallel=parallel
        )
        return {"state": amax_state(model)}
    if name == "gptq_layerwise":
        config = {**INT4, "algorithm": LAYERWISE}
        model = qruntime.quantize(
            Net(), config, loop_over(shard(rank, world)), lint="off", layers=_blocks
        )
        return {"state": amax_state(model)}
    if name == "hung":  # rank 1 stalls in its loop; the control group times out after 2 s
        control = dist.new_group([0, 1], timeout=timedelta(seconds=2))
        parallel = ParallelState(data=dist.group.WORLD, control=control)
        model = Net()
        before = amax_state(model)
        loop = loop_over(shard(rank, world), (lambda: time.sleep(4)) if rank == 1 else None)
        start = time.monotonic()
        try:
            config = {**INT8, "algorithm": "max"}
            qruntime.quantize(model, config, loop, lint="off", parallel=parallel)
            error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.monotonic() - start
        after = amax_state(model)
        unchanged = all(torch.equal(after[k], before[k]) for k in before)
        return {"error": error, "unchanged": unchanged, "seconds": seconds}
    if name in ("failure", "refused", "killed"):
        model = Net()
        before = amax_state(model)
        die = None
        if rank == 1 and name == "failure":

            def die():
                raise ValueError("boom in the forward loop")

        if rank == 1 and name == "killed":

            def die():
                os._exit(3)

        start = time.monotonic()
        try:
            if rank == 1 and name == "refused":  # refused before the model is touched
                cfg, algorithm = ALGORITHMS["smoothquant"]
                qruntime.quantize(model, {**cfg, "algorithm": algorithm}, None, lint="off")
            else:
                cfg, algorithm = ALGORITHMS["smoothquant"]
                config = {**cfg, "algorithm": algorithm}
                qruntime.quantize(model, config, loop_over(shard(rank, world), die), lint="off")
            error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        after = amax_state(model)
        unchanged = type(model.fc1) is nn.Linear and after.keys() == before.keys()
        unchanged = unchanged and all(torch.equal(after[k], before[k]) for k in before)
        return {"error": error, "unchanged": unchanged, "seconds": time.monotonic() - start}
    raise KeyError(name)


def _worker(rank, world, init, out, names):
    sys.path[:0] = [p for p in os.environ.get("QRUNTIME_TEST_PATH", "").split(os.pathsep) if p]
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=world, timeout=timedelta(seconds=TIMEOUT_S)
    )
    for name in names:
        try:
            result = _scenario(name, rank, world)
        except Exception:
            result = {"crash": traceback.format_exc()}
        torch.save(result, Path(out) / f"{name}.{rank}.pt")
    if "killed" not in names:
        dist.destroy_process_group()


def _start(tmp_path: Path, world: int, names: list[str]) -> list:
    os.environ["QRUNTIME_TEST_PATH"] = os.pathsep.join(sys.path)
    init = f"file://{tmp_path / 'store'}"
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(r, world, init, str(tmp_path), names))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    return procs


def _join(procs: list, deadline: float) -> None:
    """Wait for the workers until ``deadline``; any still running then is killed, so a hang
    shows as a missing result, never as a test that does not end."""
    for p in procs:
        p.join(max(1.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()


def _load(out: Path, name: str, rank: int) -> dict:
    path = out / f"{name}.{rank}.pt"
    assert path.exists(), f"rank {rank} wrote no result for {name}"
    result = torch.load(path, weights_only=False)
    assert "crash" not in result, result.get("crash")
    return result


TWO = [
    *ALGORITHMS,
    "unsynced",
    "bias",
    "nvfp4_tp",
    "tp",
    "gptq_layerwise",
    "moe_ep",
    "moe_ep_weights",
    "moe_ratio",
    "failure",
    "refused",
    "hung",
    "killed",
]
FOUR = ["max", "awq_lite", "grid"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both spawns at once (their start-up and waits overlap); the result folders by size."""
    out = {2: tmp_path_factory.mktemp("two"), 4: tmp_path_factory.mktemp("four")}
    procs = _start(out[2], 2, TWO) + _start(out[4], 4, FOUR)
    _join(procs, time.monotonic() + 120)
    return out


@pytest.fixture(scope="module")
def two(runs):
    return runs[2]


@pytest.fixture(scope="module")
def four(runs):
    return runs[4]


# ------------------------------------------------------------------------------ the checks
def _single(name, indices, model=None):
    return amax_state(calibrate(model if model is not None else Net(), name, indices))


def _assert_same(got, want, exact, label):
    assert got.keys() == want.keys(), label
    for key in want:
        if exact:
            assert torch.equal(got[key], want[key]), f"{label}: {key}"
        else:
            # sums over the same numbers in another order: float32 rounding, relative 1e-5
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=label + key)


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_two_processes_calibrate_as_one_on_the_union(two, name):
    union = _single(name, list(range(N_BATCHES)))
    states = [_load(two, name, r)["state"] for r in range(2)]
    for key in states[0]:  # the processes agree exactly with each other
        assert torch.equal(states[0][key], states[1][key]), key
    assert "branch.input_quantizer._amax" in union or name not in ("max", "smoothquant")
    _assert_same(states[0], union, name in EXACT, name)


@pytest.mark.parametrize("name", ["max", "awq_lite"])
def test_four_processes_calibrate_as_one_on_the_union(four, name):
    union = _single(name, list(range(N_BATCHES)))
    states = [_load(four, name, r)["state"] for r in range(4)]
    for state in states:
        _assert_same(state, union, name in EXACT, name)
    for key in states[0]:
        assert all(torch.equal(s[key], states[0][key]) for s in states), key


def test_a_quantizer_without_statistics_on_one_process_gets_the_others_amax(two):
    """The branch is reached by one batch, on rank 1: rank 0 has no amax for its input
    quantizer before the sync, and ends with rank 1's (the union's)."""
    alone = _single("max", shard(0, 2))
    assert "branch.input_quantizer._amax" not in alone
    state = _load(two, "max", 0)["state"]
    assert torch.equal(state["branch.input_quantizer._amax"], batches()[RARE][0].abs().max())


def test_distributed_sync_false_keeps_per_process_results(two):
    for rank in range(2):
        state = _load(two, "unsynced", rank)["state"]
        alone = _single("max", shard(rank, 2))
        _assert_same(state, alone, True, f"rank {rank}")
    s0, s1 = (_load(two, "unsynced", r)["state"] for r in range(2))
    assert not torch.equal(s0["fc1.input_quantizer._amax"], s1["fc1.input_quantizer._amax"])


def test_static_biases_stay_per_process_with_a_warning(two):
    r0, r1 = (_load(two, "bias", r) for r in range(2))
    assert len(r0["warnings"]) == 1 and "fc1.input_quantizer" in r0["warnings"][0]
    bias = [key for key in r0["state"] if key.startswith("fc1.input_quantizer") and "bias" in key]
    assert bias and not torch.equal(r0["state"][bias[0]], r1["state"][bias[0]])
    assert torch.equal(
        r0["state"]["fc1.input_quantizer._amax"], r1["state"]["fc1.input_quantizer._amax"]
    )


def test_tensor_parallel_shares_nvfp4_global_amax_of_sibling_groups(two):
    """The q/k/v group's global amax is the MAX over the slices of each process's shared value;
    the per-block amaxes stay the slice's own."""
    import qruntime

    local = []
    for rank in range(2):
        model = Attention(shard=rank)
        qruntime.quantize(model, NVFP4_STATIC, loop_over(shard(rank, 2)), lint="off")
        local.append(amax_state(model))
    keys = [f"{p}_proj.weight_quantizer._global_amax" for p in "qkv"]
    assert not torch.equal(local[0][keys[0]], local[1][keys[0]])
    for rank in range(2):
        got = _load(two, "nvfp4_tp", rank)["state"]
        for key in keys:
            assert torch.equal(got[key], torch.maximum(local[0][key], local[1][key])), key
            amax = key.replace("_global_amax", "_amax")
            assert torch.equal(got[amax], local[rank][amax]), amax


def test_tensor_parallel_reduces_per_tensor_amaxes_only(two):
    """Hand-derived from one process per slice: per-tensor amaxes (inputs, fc2's weight) are
    the MAX over the slices; fc1's per-channel weight amax describes the local rows."""
    import qruntime

    local = [
        amax_state(qruntime.quantize(Net(shard=r), TP_CONFIG, loop_over(shard(r, 2)), lint="off"))
        for r in range(2)
    ]
    for rank in range(2):
        got = _load(two, "tp", rank)["state"]
        for key, value in got.items():
            if key == "fc1.weight_quantizer._amax" or not key.endswith("_amax"):
                assert torch.equal(value, local[rank][key]), (rank, key)
            else:
                present = [s[key] for s in local if key in s]
                assert torch.equal(value, torch.stack(present).amax(0)), (rank, key)
    assert not torch.equal(
        *(_load(two, "tp", r)["state"]["fc1.weight_quantizer._amax"] for r in range(2))
    )


def test_layerwise_gptq_in_two_processes(two):
    """Each block's own max pass and Hessian are synced: as one process on the union."""
    import qruntime

    config = {**INT4, "algorithm": LAYERWISE}
    with pytest.warns(UserWarning, match="uncalibrated"):
        model = qruntime.quantize(
            Net(), config, loop_over(range(N_BATCHES)), lint="off", layers=_blocks
        )
    union = amax_state(model)
    states = [_load(two, "gptq_layerwise", r)["state"] for r in range(2)]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    _assert_same(states[0], union, False, "layerwise gptq")


def _routed_weight(key: str) -> bool:
    return key.startswith("moe.experts.") and "weight_quantizer" in key


def _expert_parallel_truth(local: list[dict], rank: int, weights: bool) -> dict:
    """Hand-derived: amaxes are MAX over the expert group where present, except the weight
    amaxes of routed experts (each process's own experts) unless ``sync_expert_weight_amax``."""
    out = {}
    for key in set().union(*local):
        if not key.endswith("_amax") or (_routed_weight(key) and not weights):
            if key in local[rank]:
                out[key] = local[rank][key]
            continue
        present = [s[key] for s in local if key in s]
        out[key] = torch.stack(present).amax(0)
    return out


@pytest.mark.parametrize("name", ["moe_ep", "moe_ep_weights"])
def test_expert_parallel_moe(two, name):
    weights = name == "moe_ep_weights"
    cfg, _ = ALGORITHMS["max"]
    config = {**cfg, "algorithm": {"method": "max", "sync_expert_weight_amax": weights}}
    import qruntime

    local = []
    for rank in range(2):
        model = qruntime.quantize(MoeNet(rank), config, loop_over(shard(rank, 2)), lint="off")
        local.append(amax_state(model))
    # expert 3 sees tokens only in RARE, on rank 1: rank 0's model got it from the local sync
    for rank in range(2):
        got = _load(two, name, rank)["state"]
        truth = _expert_parallel_truth(local, rank, weights)
        for key, value in truth.items():
            assert torch.equal(got[key], value), (rank, key)
    w0, w1 = (
        _load(two, name, r)["state"]["moe.experts.0.up_proj.weight_quantizer._amax"]
        for r in range(2)
    )
    assert torch.equal(w0, w1) == weights


def test_moe_calib_experts_ratio_over_data_parallel_is_the_union(two):
    """With the ratio, each expert keeps its own tokens' amax (no local sharing): an expert the
    router never chose on one process has no amax there before the sync."""
    import qruntime

    alone = qruntime.quantize(MoeNet(), RATIO_CONFIG, loop_over(shard(0, 2)), lint="off")
    assert alone.moe.experts[3].up_proj.input_quantizer.amax is None
    union = qruntime.quantize(MoeNet(), RATIO_CONFIG, loop_over(range(N_BATCHES)), lint="off")
    assert union.moe.experts[3].up_proj.input_quantizer.amax is not None
    for rank in range(2):
        _assert_same(_load(two, "moe_ratio", rank)["state"], amax_state(union), True, "ratio")


def test_data_and_expert_groups_on_a_2x2_grid(four):
    import qruntime

    cfg, _ = ALGORITHMS["max"]
    local = []
    for rank in range(4):
        config = {**cfg, "algorithm": "max"}
        model = qruntime.quantize(MoeNet(rank // 2), config, loop_over(shard(rank, 4)), lint="off")
        local.append(amax_state(model))
    for rank in range(4):
        got = _load(four, "grid", rank)["state"]
        for key, value in got.items():
            if not key.endswith("_amax"):
                continue
            if _routed_weight(key):  # own experts: the data group holds the same ones
                assert torch.equal(value, local[rank][key]), (rank, key)
            else:  # data group, then expert group: every process of the grid
                assert torch.equal(value, torch.stack([s[key] for s in local]).amax(0)), key


def test_a_failing_process_fails_every_process_with_models_unchanged(two):
    r0, r1 = (_load(two, "failure", r) for r in range(2))
    assert r1["error"] == "ValueError: boom in the forward loop"
    assert r0["error"].startswith("DistributedCalibrationError")
    assert "rank 1: ValueError: boom in the forward loop" in r0["error"]
    assert r0["unchanged"] and r1["unchanged"]


def test_a_process_refused_before_calibration_fails_its_peers(two):
    r0, r1 = (_load(two, "refused", r) for r in range(2))
    assert r1["error"].startswith("UnsupportedAlgorithmError") and "forward_loop" in r1["error"]
    assert r0["error"].startswith("DistributedCalibrationError") and "rank 1" in r0["error"]
    assert r0["unchanged"] and r1["unchanged"]


def test_a_stalled_process_fails_the_others_after_the_group_timeout(two):
    r0 = _load(two, "hung", 0)
    assert r0["error"].startswith("DistributedCalibrationError")
    assert "stopped answering" in r0["error"]
    assert 2 <= r0["seconds"] < TIMEOUT_S  # the control timeout (2 s), not the group's (20 s)
    assert r0["unchanged"]


def test_a_killed_process_fails_the_others_within_the_timeout(two):
    assert not (two / "killed.1.pt").exists()  # rank 1 died in its forward loop
    r0 = _load(two, "killed", 0)
    assert r0["error"].startswith("DistributedCalibrationError")
    assert "stopped answering" in r0["error"]
    assert r0["seconds"] < TIMEOUT_S + 5
    assert r0["unchanged"]


def test_parallel_without_torch_distributed_is_an_error():
    import qruntime

    group = object()
    with pytest.raises(TypeError, match="ProcessGroup"):
        qruntime.ParallelState(data=group)
    assert not dist.is_initialized()
    with pytest.raises(ValueError, match="not initialised"):
        calibrate(Net(), "max", [0], parallel=qruntime.ParallelState())
