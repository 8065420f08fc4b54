"""Transaction: a failed apply leaves every parameter and buffer bit-identical and the same object,
whoever wrote into it in place (the loop, the model's forward, an algorithm)."""

import dataclasses
import threading
from typing import Literal

import pytest
import qruntime
import torch
import zoo
from hypothesis import given, settings
from hypothesis import strategies as st
from qconfig.algorithms import MaxCalibConfig, QuantizeAlgorithmConfig
from qconfig.compile import compile_plan
from qruntime import (
    AlgorithmCapabilities,
    CalibrationContext,
    register_algorithm,
    unregister_algorithm,
)
from qruntime.tensor_journal import TensorJournal, written_arguments
from qruntime.transaction import Transaction, current_transaction
from torch import nn


class Counting(nn.Module):
    """A forward that writes its own buffers: a call counter and a cache of the last input."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("cache", torch.zeros(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        self.cache.copy_(x[0])
        return self.lin(x)


def toy() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), Counting(), nn.Linear(8, 4))
    model[3].weight.grad = torch.randn(4, 8)
    return model


def state(model: nn.Module) -> list:
    """Every tensor's name, object, bits, view and autograd fields."""
    out = []
    for name, t in model.state_dict(keep_vars=True).items():
        out.append(
            (
                name,
                t,
                t.detach().clone(),
                t.untyped_storage()._cdata,
                t.storage_offset(),
                t.shape,
                t.stride(),
                t.dtype,
                t.device,
                t.requires_grad,
                t.grad,
            )
        )
    return out


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8)


def same(before: list, after: list) -> bool:
    if [row[0] for row in before] != [row[0] for row in after]:
        return False
    for b, a in zip(before, after, strict=True):
        if a[1] is not b[1] or a[10] is not b[10] or a[3:10] != b[3:10]:
            return False
        # bit-identical, NaNs and signed zeros included
        if not torch.equal(_bits(a[2]), _bits(b[2])):
            return False
    return True


def fails(model: nn.Module, write, **kwargs) -> None:
    with pytest.raises(KeyError, match="loop failed"), Transaction(model, **kwargs):
        with torch.no_grad():
            write(model)
        raise KeyError("loop failed")


def _set_(m: nn.Module) -> None:
    m[0].weight.set_(torch.zeros(3))


WRITES = {
    "data": lambda m: m[0].weight.data.mul_(2),
    "view": lambda m: m[0].weight[:, :3].add_(1),
    "out": lambda m: torch.add(m[0].bias, 1, out=m[0].bias),
    "out_data_alias": lambda m: torch.mul(m[0].bias, 3, out=m[0].bias.data),
    "out_resizes": lambda m: torch.add(torch.ones(100), 1, out=m[0].bias.data),
    "copy_": lambda m: m[3].weight.copy_(torch.zeros(4, 8)),
    "foreach": lambda m: torch._foreach_add_([m[0].weight, m[3].bias], 1.0),
    "grad_in_place": lambda m: m[3].weight.grad.zero_(),
    "grad_replaced": lambda m: setattr(m[3].weight, "grad", None),
    "requires_grad": lambda m: m[0].bias.requires_grad_(False),
    "data_replaced": lambda m: setattr(m[0].weight, "data", torch.zeros(2, 2)),
    "dtype_changed": lambda m: m.half(),
    "parameter_replaced": lambda m: setattr(m[0], "weight", nn.Parameter(torch.zeros(8, 8))),
    "metadata": lambda m: m[0].weight.unsqueeze_(0).transpose_(1, 2),
    "resize_": lambda m: m[1].running_mean.resize_(1000).fill_(3),
    "resize_data_alias": lambda m: m[0].bias.data.resize_(1000),
    "set_": _set_,
    "buffer_fill": lambda m: m[1].running_var.fill_(float("nan")),
    "tensor_attribute_in_place": lambda m: m[2].lin.weight.neg_(),
    "autocast_forward": lambda m: _autocast_forward(m),
}


def _autocast_forward(m: nn.Module) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        m.train()(torch.randn(5, 8))
        torch.mm(m[0].weight, m[0].weight, out=m[0].weight.data)


GUARDS = ["dispatch", "kernels"]


@pytest.mark.filterwarnings("ignore:An output with one or more elements was resized")
@pytest.mark.parametrize("guard", GUARDS)
@pytest.mark.parametrize("kind", sorted(WRITES))
def test_in_place_write_then_failure_restores_bits_and_objects(kind, guard):
    model = toy()
    alias = model[0].weight.data  # a reference a user holds: stays valid and restored
    before, held = state(model), alias.clone()
    fails(model, WRITES[kind], guard=guard)
    assert same(before, state(model))
    assert torch.equal(alias, held) and alias.untyped_storage()._cdata == before[0][3]


@pytest.mark.parametrize("guard", GUARDS)
def test_forward_updating_buffers_then_failure_restores_them(guard):
    model = toy()
    before = state(model)

    def loop(m: nn.Module) -> None:
        m.train()  # batch norm updates running statistics in place
        for _ in range(3):
            m(torch.randn(5, 8))
        assert int(m[2].calls) == 3 and int(m[1].num_batches_tracked) == 3

    fails(model, loop, guard=guard)
    assert same(before, state(model))


def test_success_keeps_the_writes_and_drops_the_copies():
    model = toy()
    weight = model[0].weight
    with Transaction(model) as txn:
        with torch.no_grad():
            weight.mul_(0)
            model.train()(torch.randn(5, 8))
        assert current_transaction() is txn and txn.saved_bytes > 0
    assert current_transaction() is None and txn.saved_bytes == 0
    assert model[0].weight is weight and not weight.any()
    assert int(model[2].calls) == 1


def test_declared_write_is_restored_even_where_the_guard_cannot_see_it():
    """An algorithm writing through a raw pointer (here numpy) declares it with ``save``."""
    model = toy()
    before = state(model)
    with pytest.raises(RuntimeError, match="algorithm failed"):
        with Transaction(model, writes_weights=True, guard=None) as txn:
            weight, norm = model[0].weight, model[1].weight
            with txn.writing(weight, norm):
                weight.detach().numpy()[:] = 7.0  # invisible to the dispatcher
                norm.detach().numpy()[:] /= 2.0
            txn.save(weight)  # a second save of the same storage is a no-op
            assert txn.saved_bytes == (weight.numel() + norm.numel()) * 4
            raise RuntimeError("algorithm failed")
    assert same(before, state(model))


def test_keyboard_interrupt_and_a_host_stash_restore_too():
    model = toy()
    before = state(model)
    with pytest.raises(KeyboardInterrupt), Transaction(model, stash_device="cpu"):
        with torch.no_grad():
            model.train()(torch.randn(5, 8))
            model[0].weight.zero_()
        raise KeyboardInterrupt
    assert same(before, state(model))


@pytest.mark.parametrize("guard", ["kernels", "dispatch"])
def test_a_disk_stash_keeps_no_copy_in_memory_and_restores_the_bits(guard):
    """Writes caught by the guard and declared ones, tied storages: the copies go to a
    temporary file (nothing in memory), rollback reads them back into the same tensors."""
    model = toy()
    model[3].weight = model[0].weight.__class__(model[0].weight.data[:4])  # shares storage
    before = state(model)
    weight = model[0].weight
    with (
        pytest.raises(KeyError),
        Transaction(model, writes_weights=True, guard=guard, stash_device="disk") as txn,
    ):
        with torch.no_grad():
            model.train()(torch.randn(5, 8))
            weight.mul_(3)
            model[3].weight.add_(1)
        txn.save(model[1].weight)
        model[1].weight.data.fill_(7)
        assert txn.saved_bytes == 0
        assert txn._journal.stashed_bytes >= (8 * 8) * 4
        raise KeyError
    assert same(before, state(model))
    assert model[0].weight is weight


def test_a_disk_stash_keeps_the_writes_on_success():
    model = toy()
    with Transaction(model, writes_weights=True, stash_device="disk") as txn, torch.no_grad():
        txn.save(model[0].weight)
        model[0].weight.fill_(2)
    assert bool((model[0].weight == 2).all())


def test_nested_transactions_roll_back_their_own_writes():
    model = toy()
    outer_state = state(model)
    weight = model[0].weight
    with pytest.raises(KeyError, match="outer"), Transaction(model) as outer:
        with torch.no_grad():
            weight.add_(1)
        inner_state = state(model)
        with pytest.raises(KeyError, match="inner"), Transaction(model) as inner:
            assert current_transaction() is inner
            with torch.no_grad():
                weight.mul_(3)
                model[1].running_mean.fill_(5)
            raise KeyError("inner")
        assert current_transaction() is outer
        assert same(inner_state, state(model))
        raise KeyError("outer")
    assert same(outer_state, state(model))


def test_declared_write_needs_the_capability():
    model = toy()
    with Transaction(model) as txn, pytest.raises(RuntimeError, match="writes_weights"):
        txn.save(model[0].weight)


def test_tied_weights_are_saved_once():
    model = toy()
    model[3].weight = model[0].weight.__class__(model[0].weight.data[:4])  # shares storage
    before = state(model)
    with pytest.raises(KeyError), Transaction(model) as txn:
        with torch.no_grad():
            model[0].weight.add_(1)
            model[3].weight.add_(1)
        assert txn.saved_bytes == 8 * 8 * 4
        raise KeyError
    assert same(before, state(model))


def test_reads_and_activation_writes_copy_nothing():
    model = toy().eval()
    with Transaction(model) as txn, torch.no_grad():
        model[0](torch.randn(5, 8)).relu_()  # in place on an activation
        model[1](torch.randn(5, 8))
        assert txn.saved_bytes == 0


def test_batch_norm_schema_hides_its_writes():
    """``native_batch_norm`` updates running statistics its schema does not mark as written."""
    op = torch.ops.aten.native_batch_norm.default
    assert not op._schema.is_mutable
    assert {name for _, name, _ in written_arguments(op)} == {"running_mean", "running_var"}
    assert [n for _, n, _ in written_arguments(torch.ops.aten.add.out)] == ["out"]
    assert written_arguments(torch.ops.aten.unsqueeze_.default) == ()
    assert written_arguments(torch.ops.aten.mm.default) == ()


def test_journal_watches_by_storage():
    w = torch.randn(4, 4)
    journal = TensorJournal([w])
    assert journal.watches(w.data) and journal.watches(w[1:]) and not journal.watches(w.clone())


# ---------------------------------------------------------------- through apply_plan

INT8 = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8}},
    ],
    "algorithm": "max",
}


def _zoo_state(model: nn.Module) -> list:
    return [(k, v, v.detach().clone()) for k, v in model.state_dict(keep_vars=True).items()]


def test_apply_plan_loop_writing_weights_then_failing_restores_them():
    model = zoo.build("subclass")
    plan = compile_plan(INT8, qruntime.inventory(model))
    before = _zoo_state(model)
    batch = zoo.example_inputs("subclass", seed=0)

    def loop(m: nn.Module) -> None:
        m(*batch)
        for p in m.parameters():
            p.data.mul_(2)
            p.add_(1)
        m.train()(*batch)
        raise KeyError("data loader failed")

    with pytest.raises(KeyError, match="data loader"):
        qruntime.apply_plan(model, plan, loop)
    after = _zoo_state(model)
    assert [(k, id(v)) for k, v, _ in before] == [(k, id(v)) for k, v, _ in after]
    assert all(torch.equal(a, b) for (_, _, a), (_, _, b) in zip(before, after, strict=True))


def test_apply_plan_max_calibration_copies_nothing():
    model = zoo.build("subclass")
    plan = compile_plan(INT8, qruntime.inventory(model))
    seen = []

    def loop(m: nn.Module) -> None:
        m(*zoo.example_inputs("subclass", seed=0))
        txn = current_transaction()
        seen.append(None if txn is None else txn.saved_bytes)

    qruntime.apply_plan(model, plan, loop)
    assert seen == [0]


class HalveWeightsConfig(QuantizeAlgorithmConfig):
    """A toy weight-writing calibration: halves every quantized weight, then maybe fails."""

    method: Literal["halve_weights"] = "halve_weights"
    fail: bool = False


def halve_weights(ctx: CalibrationContext) -> None:
    txn = current_transaction()
    assert txn is not None
    for pair in ctx.weight_pairs():
        with txn.writing(pair.weight):
            pair.weight.detach().numpy()[...] *= 0.5  # a raw write the guard cannot see
    ctx.run_forward_loop()
    if ctx.config.fail:
        raise RuntimeError("toy algorithm failed")


@pytest.fixture(params=[True, False], ids=["declared", "undeclared"])
def halving(request):
    register_algorithm(
        HalveWeightsConfig,
        halve_weights,
        capabilities=AlgorithmCapabilities(writes_weights=request.param),
    )
    yield request.param
    unregister_algorithm(HalveWeightsConfig)


@pytest.mark.parametrize("fail", [False, True])
def test_weight_writing_algorithm_through_apply_plan(halving, fail):
    model = zoo.build("subclass")
    plan = compile_plan(INT8, qruntime.inventory(model))
    plan = dataclasses.replace(plan, algorithm=(MaxCalibConfig(), HalveWeightsConfig(fail=fail)))
    before = _zoo_state(model)
    weight = model.mlp[0].weight
    expected = weight.detach() * 0.5

    def loop(m: nn.Module) -> None:
        m(*zoo.example_inputs("subclass", seed=0))

    if not halving:  # a write without the declared capability is refused, and rolled back
        with pytest.raises(RuntimeError, match="writes_weights"):
            qruntime.apply_plan(model, plan, loop)
    elif fail:
        with pytest.raises(RuntimeError, match="toy algorithm failed"):
            qruntime.apply_plan(model, plan, loop)
    else:
        qruntime.apply_plan(model, plan, loop)
        assert model.mlp[0].weight is weight and torch.equal(weight, expected)
        return
    after = _zoo_state(model)
    assert [(k, id(v)) for k, v, _ in before] == [(k, id(v)) for k, v, _ in after]
    assert all(torch.equal(a, b) for (_, _, a), (_, _, b) in zip(before, after, strict=True))


# ---------------------------------------------------------------- property

_OPS = [
    lambda t, v: t.mul_(v),
    lambda t, v: t.data.add_(v),
    lambda t, v: t.view(-1)[:: max(1, t.numel() // 3)].fill_(v),
    lambda t, v: torch.mul(t, v, out=t),
    lambda t, v: t.copy_(torch.full_like(t, v)),
    lambda t, v: t.clamp_(max=v),
    lambda t, v: torch._foreach_mul_([t], v),
    lambda t, v: t.data.zero_(),
]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 100),
            st.integers(0, len(_OPS) - 1),
            st.one_of(st.floats(-4, 4, width=32), st.sampled_from([float("nan"), -float("inf")])),
        ),
        min_size=1,
        max_size=12,
    ),
    st.integers(0, 1),
    st.sampled_from(GUARDS),
)
def test_random_in_place_writes_then_failure_leave_the_state_equal(steps, use_counting, guard):
    model = toy()
    if use_counting:
        model.train()
    before = state(model)
    tensors = list(model.state_dict(keep_vars=True).values())

    def loop(m: nn.Module) -> None:
        for index, op, value in steps:
            t = tensors[index % len(tensors)]
            if t.dtype.is_floating_point:
                _OPS[op](t, value)
            else:
                t.add_(int(value) if value == value and abs(value) < 4 else 1)
            if use_counting:
                m(torch.randn(3, 8))

    fails(model, loop, guard=guard)
    assert same(before, state(model))


def test_kernel_guard_keeps_version_counters_and_leaves_no_kernels_behind():
    model = toy()
    weight = model[0].weight
    with torch.no_grad(), Transaction(model, guard="kernels") as txn:
        version = weight._version
        weight.add_(1)
        torch.mul(weight, 2, out=weight)
        assert weight._version == version + 2 and txn.saved_bytes == weight.numel() * 4
    with torch.no_grad(), Transaction(model, guard=None) as txn:
        weight.add_(1)  # no guard: no kernels left registered, nothing saved
        assert txn.saved_bytes == 0


@pytest.mark.parametrize("guard", GUARDS)
def test_writes_under_inference_mode_are_restored(guard):
    model = toy()
    with torch.inference_mode():
        frozen = nn.Linear(4, 4)  # inference tensors: no version counter, no autograd keys
    model.append(frozen)
    before = state(model)
    with pytest.raises(KeyError), torch.inference_mode(), Transaction(model, guard=guard):
        model[0].weight.data.mul_(2)
        frozen.weight.mul_(2)
        raise KeyError
    assert same(before, state(model))


def test_kernel_guard_also_saves_writes_from_other_threads():
    model = toy()
    before = state(model)
    with pytest.raises(KeyError), Transaction(model, guard="kernels"):
        worker = threading.Thread(target=lambda: model[0].weight.data.fill_(9.0))
        worker.start()
        worker.join()
        raise KeyError
    assert same(before, state(model))


def test_kernels_guard_that_cannot_install_falls_back_to_the_dispatch_guard(monkeypatch):
    """A torch release whose internals the kernels guard does not fit still gets a full
    rollback: the dispatch-mode guard takes over, with a warning."""
    import qruntime.transaction as transaction

    def refuse(self):
        raise RuntimeError("no such dispatch key")

    monkeypatch.setattr(transaction.KernelWriteGuard, "__enter__", refuse)
    monkeypatch.setattr(transaction, "_KERNELS_FAILED", False)
    model = nn.Linear(4, 4)
    before = model.weight.detach().clone()
    with pytest.warns(RuntimeWarning, match="dispatch-mode guard"):
        with pytest.raises(ValueError, match="boom"):
            with Transaction(model):
                model.weight.data.mul_(3.0)
                raise ValueError("boom")
    assert torch.equal(model.weight, before)
    assert transaction._KERNELS_FAILED


@pytest.mark.parametrize("guard", ["kernels", "dispatch"])
def test_paused_guard_lifts_interception_for_the_block_only(guard):
    """qruntime's own searches write only their temporaries: inside ``paused_guard`` nothing is
    intercepted (so an undeclared write to the model there would not be restored), declared
    saves still are, and the guard is back after the block, also when the block raises."""
    model = toy()
    before = state(model)
    with pytest.raises(RuntimeError, match="late failure"):
        with Transaction(model, writes_weights=True, guard=guard) as txn, torch.no_grad():
            with txn.paused_guard():
                scratch = torch.ones(3)
                scratch.mul_(2)  # a temporary: not the model's, nothing to save
                assert txn.saved_bytes == 0
                txn.save(model[0].bias)
                model[0].bias.zero_()
            saved = txn.saved_bytes
            assert saved == model[0].bias.numel() * model[0].bias.element_size()
            model[0].weight.mul_(3)  # after the block: caught by the guard again
            assert txn.saved_bytes > saved
            raise RuntimeError("late failure")
    assert same(before, state(model))
    with Transaction(model, guard=guard) as txn:
        with pytest.raises(ValueError, match="inside"), txn.paused_guard():
            raise ValueError("inside")
        with torch.no_grad():
            model[0].weight.add_(1)
        assert txn.saved_bytes > 0  # re-opened after the error
