"""save_state / restore_state of models whose weight quantizers learn their amax (``lsq``).

The truth is the saved model itself, trained a few steps after ``lsq`` so that its amaxes are
no longer what any calibration of the fresh model would give: the restored model must hold the
same quantizer classes, the same tensors as parameters or buffers, bit-identical values, and
give bit-identical outputs and gradients. A hostile file is refused before the model changes.
"""

import copy
import json
import re

import pytest
import qruntime
import torch
from qconfig.errors import DocumentError
from qruntime.quantizer.learned import LearnedAmaxQuantizer
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

INT4 = {"num_bits": 4, "block_sizes": {-1: 8, "type": "static"}}
NVFP4 = {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3)}}
LEARN = {
    "post": {"learnable_amax": ["post"]},
    "pre+post": {"learnable_amax": ["pre", "post"]},
    "tied": {"learnable_amax": ["pre", "post"], "tied_amax": True},
}


def _float_model(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 16), nn.GELU(), nn.Linear(16, 4)).to(dtype)


def _cfg(fmt, learn, per_channel_first=False):
    entries = [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": fmt},
    ]
    if per_channel_first:  # lsq leaves a per-channel weight quantizer calibrated, unconverted
        entries.append({"quantizer_name": "0.weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}})
    return {
        "quant_cfg": entries,
        "algorithm": {"method": "lsq", "scale_algorithm": {"method": "max"}, **learn},
    }


def _trained(fmt, learn, dtype=torch.float32, per_channel_first=False):
    """(lsq model trained 5 steps, a float copy of the model as it was before quantizing)."""
    model = _float_model(dtype)
    fresh = copy.deepcopy(model)
    model = qruntime.quantize(model, _cfg(fmt, learn, per_channel_first))
    x = torch.randn(8, 32, dtype=dtype)
    opt = torch.optim.SGD([p for n, p in model.named_parameters() if "_amax" in n], lr=0.05)
    for _ in range(5):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    model.zero_grad()
    # the restored weights are the fresh model's: only the amaxes moved
    return model, fresh


def _output_and_grads(model):
    torch.manual_seed(1)
    x = torch.randn(5, 32, dtype=next(model.parameters()).dtype)
    model.zero_grad()
    y = model(x)
    y.square().sum().backward()
    return y.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _assert_same(saved, restored):
    for (name, a), (_, b) in zip(saved.named_modules(), restored.named_modules(), strict=True):
        assert type(a) is type(b), name
    assert [n for n, _ in saved.named_parameters()] == [n for n, _ in restored.named_parameters()]
    assert [n for n, _ in saved.named_buffers()] == [n for n, _ in restored.named_buffers()]
    sa, sb = saved.state_dict(), restored.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key
    (ya, ga), (yb, gb) = _output_and_grads(saved), _output_and_grads(restored)
    assert torch.equal(ya, yb)
    assert list(ga) == list(gb)
    for name in ga:
        assert torch.equal(ga[name], gb[name]), name


@pytest.mark.parametrize("learn", sorted(LEARN))
@pytest.mark.parametrize("fmt", ["int4", "nvfp4"])
def test_learned_amaxes_round_trip_onto_a_fresh_float_model(tmp_path, fmt, learn):
    model, fresh = _trained({"int4": INT4, "nvfp4": NVFP4}[fmt], LEARN[learn])
    q = model[0].weight_quantizer
    assert isinstance(q, LearnedAmaxQuantizer)
    if learn == "pre+post":  # training moved the two sides apart: both must be stored
        assert not torch.equal(q.amax_pre, q.amax_post)
    path = tmp_path / "lsq.qstate"
    qruntime.save_state(model, path)
    restored = qruntime.restore_state(fresh, path)
    _assert_same(model, restored)
    rq = restored[0].weight_quantizer
    assert rq.learnable_amax == q.learnable_amax and rq.tied_amax == q.tied_amax
    assert rq.quantize_scales == (fmt == "nvfp4")


def test_the_file_records_each_learned_quantizer(tmp_path):
    model, _ = _trained(INT4, LEARN["post"], per_channel_first=True)
    path = tmp_path / "lsq.qstate"
    qruntime.save_state(model, path)
    with safe_open(str(path), framework="pt") as f:
        learned, keys = json.loads(f.metadata()["learned"]), sorted(f.keys())
    assert learned == {
        "2.weight_quantizer": {
            "learnable": ["post"],
            "tied": False,
            "parameters": ["post"],
            "dtype": {"post": "float32", "pre": "float32"},
            "quantize_scales": False,
            "quantize_pre_scale": True,
        }
    }
    assert keys == [
        "0.weight_quantizer._amax",
        "2.weight_quantizer._amax_post",
        "2.weight_quantizer._amax_pre",
    ]


def test_bf16_amaxes_and_a_side_made_a_parameter_later_are_restored_as_saved(tmp_path):
    """``set_amax_tensor`` may turn the pre side into a parameter after conversion: the file
    keeps which tensors are parameters, and their dtype (the weight's, bf16)."""
    model, fresh = _trained(INT4, LEARN["post"], dtype=torch.bfloat16)
    q = model[2].weight_quantizer
    q.set_amax_tensor("pre", q.amax_pre * 0.75, learnable=True)
    path = tmp_path / "lsq.qstate"
    qruntime.save_state(model, path)
    restored = qruntime.restore_state(fresh, path)
    rq = restored[2].weight_quantizer
    assert isinstance(rq.amax_pre, nn.Parameter) and rq.amax_pre.dtype == torch.bfloat16
    assert not isinstance(restored[0].weight_quantizer.amax_pre, nn.Parameter)
    _assert_same(model, restored)


def test_restoring_onto_a_model_converted_otherwise_gives_the_file_state(tmp_path):
    saved, _ = _trained(INT4, LEARN["tied"], per_channel_first=True)
    path = tmp_path / "lsq.qstate"
    qruntime.save_state(saved, path)
    # the target learned every weight, untied: after restoring, only the file's state is left
    target = qruntime.quantize(_float_model(), _cfg(INT4, LEARN["pre+post"]))
    assert isinstance(target[0].weight_quantizer, LearnedAmaxQuantizer)
    qruntime.restore_state(target, path)
    assert type(target[0].weight_quantizer) is not LearnedAmaxQuantizer
    _assert_same(saved, target)


def test_summary_shows_learned_quantizers_as_learned(tmp_path):
    model, fresh = _trained(INT4, LEARN["post"], per_channel_first=True)
    path = tmp_path / "lsq.qstate"
    qruntime.save_state(model, path)
    for m in (model, qruntime.restore_state(fresh, path)):
        lines = [re.split(r"\s{2,}", line.strip()) for line in qruntime.summary(m).splitlines()]
        header = lines[0]
        rows = {cells[0]: dict(zip(header, cells, strict=True)) for cells in lines[1:3]}
        assert header == ["format", "enabled", "calibrated", "learned"]
        assert rows["INT4 block 8"] == {
            "format": "INT4 block 8",
            "enabled": "1",
            "calibrated": "0",
            "learned": "1",
        }
        assert rows["INT8 per-channel(0)"]["calibrated"] == "1"


# ------------------------------------------------------------------------------ hostile files
def _edit(src, dst, *, tensors=None, metadata=None):
    """Rewrite a state file with some tensors or metadata entries changed (None drops one)."""
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        data = {k: f.get_tensor(k) for k in f.keys()}
    for key, value in (tensors or {}).items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    for key, value in (metadata or {}).items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value if isinstance(value, str) else json.dumps(value)
    meta["tensors"] = json.dumps(sorted(data))
    save_file(data, str(dst), metadata=meta)


@pytest.fixture
def saved_file(tmp_path):
    model, _ = _trained(INT4, LEARN["post"], per_channel_first=True)
    path = tmp_path / "lsq.qstate"
    qruntime.save_state(model, path)
    with safe_open(str(path), framework="pt") as f:
        learned = json.loads(f.metadata()["learned"])
        post = f.get_tensor("2.weight_quantizer._amax_post")
        amax0 = f.get_tensor("0.weight_quantizer._amax")
    return path, learned, post, amax0


ENTRY = "2.weight_quantizer"


def _hostile(tmp_path, saved_file, name):
    path, learned, post, amax0 = saved_file
    entry = learned[ENTRY]
    cases = {
        "learned dropped": ({}, {"learned": None}, "does not learn its amax"),
        "unknown quantizer": (
            {},
            {"learned": {**learned, "9.weight_quantizer": entry}},
            "names no quantizer of the plan",
        ),
        "tied one side": (
            {"2.weight_quantizer._amax_pre": None},
            {"learned": {ENTRY: {**entry, "tied": True, "dtype": {"post": "float32"}}}},
            "learnable on both sides or on none",
        ),
        "unknown field": ({}, {"learned": {ENTRY: {**entry, "lr": 1}}}, "unknown \\['lr'\\]"),
        "pre missing": ({"2.weight_quantizer._amax_pre": None}, {}, "is missing"),
        "dtype changed": (
            {"2.weight_quantizer._amax_post": post.double()},
            {},
            "the metadata 'learned' says float32",
        ),
        "shapes differ": (
            {"2.weight_quantizer._amax_pre": torch.ones(2, 1)},
            {},
            "has shape \\[2, 1\\]",
        ),
        "plain amax on a learned one": (
            {"2.weight_quantizer._amax": post},
            {},
            "learns its amax: it holds _amax_post",
        ),
        "per-channel quantizer claimed learned": (
            {
                "0.weight_quantizer._amax": None,
                "0.weight_quantizer._amax_post": amax0,
                "0.weight_quantizer._amax_pre": amax0.clone(),
            },
            {"learned": {**learned, "0.weight_quantizer": entry}},
            "cannot be restored as a learned-amax quantizer.*static-block",
        ),
        "not finite": (
            {"2.weight_quantizer._amax_post": torch.full_like(post, float("nan"))},
            {},
            "NaN",
        ),
    }
    tensors, metadata, match = cases[name]
    bad = tmp_path / "bad.qstate"
    _edit(path, bad, tensors=tensors, metadata=metadata)
    return bad, match


@pytest.mark.parametrize(
    "case",
    [
        "learned dropped",
        "unknown quantizer",
        "tied one side",
        "unknown field",
        "pre missing",
        "dtype changed",
        "shapes differ",
        "plain amax on a learned one",
        "per-channel quantizer claimed learned",
        "not finite",
    ],
)
def test_a_hostile_learned_state_is_refused_before_the_model_changes(tmp_path, saved_file, case):
    bad, match = _hostile(tmp_path, saved_file, case)
    model = _float_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DocumentError, match=match):
        qruntime.restore_state(model, bad)
    assert not any(n.endswith("quantizer") for n, _ in model.named_modules())
    assert list(model.state_dict()) == list(before)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_negative_learned_amax_is_a_state_training_can_reach(tmp_path, saved_file):
    """The step of a negative amax is floored (docs/qat.md), so unlike a calibrated ``_amax``
    the learned ones may hold negative values; the file restores them."""
    path, _, post, _ = saved_file
    neg = tmp_path / "neg.qstate"
    _edit(path, neg, tensors={"2.weight_quantizer._amax_post": -post})
    restored = qruntime.restore_state(_float_model(), neg)
    assert torch.equal(restored[2].weight_quantizer.amax_post.detach(), -post)
