"""The layerwise checkpoint store: layer states and cached inputs survive a round trip bit for
bit, a checkpoint of another run is refused with what differs, a write interrupted at any point
leaves a checkpoint that resumes at the last committed window, and windows commit every
``save_every`` layers. The truth is the model calibrated in the same test (its layers'
``state_dict``, quantizer states and outputs) and hand-written values."""

import json
import os

import pytest
import qruntime
import torch
import zoo
from qconfig.algorithms import algorithm_class
from qruntime.calibrate.layer_checkpoint import (
    CheckpointMismatchError,
    LayerCheckpoint,
    fingerprint,
)

INT4_AWQ = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 4, "block_sizes": {-1: 8}}},
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8, "axis": None}},
    ],
    "algorithm": {"method": "awq_lite"},
}
W4A8_SEQUENTIAL = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {
            "quantizer_name": "*weight_quantizer",
            "cfg": [
                {"num_bits": 4, "block_sizes": {-1: 8, "type": "static"}},
                {"num_bits": (4, 3)},
            ],
        },
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": (4, 3)}},
    ],
    "algorithm": "max",
}
INT8_BF16 = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8, "axis": None}},
    ],
    "algorithm": "max",
}
FP = {"model": "m" * 64, "config": "c" * 64, "data": "d" * 64}


def _models(config, dtype=torch.float32, n_layers=3):
    """(calibrated, fresh): the same llama, calibrated, and quantized without calibration."""

    def build():
        torch.manual_seed(0)
        return zoo.LlamaLike(n_layers).eval().to(dtype)

    calibrated = qruntime.quantize(build(), config, zoo.forward_loop("llama"))
    fresh = qruntime.quantize(build(), {**config, "algorithm": None}, None)
    return calibrated, fresh


def _same_layer(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key
    ba, bb = dict(a.named_buffers()), dict(b.named_buffers())
    assert sorted(ba) == sorted(bb) and all(torch.equal(ba[k], bb[k]) for k in ba)
    qa, qb = qruntime.quantizer_states(a), qruntime.quantizer_states(b)
    assert {k: (v["enable"], v["attributes"]) for k, v in qa.items()} == {
        k: (v["enable"], v["attributes"]) for k, v in qb.items()
    }


def _store(path, n=3, save_every=1, fp=FP, **kw):
    return LayerCheckpoint(path, num_layers=n, save_every=save_every, fingerprint=fp, **kw)


def _inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return [((torch.randn(2, 8, zoo.H, generator=g),), {})]


def _checkpoint(path, calibrated, upto, n=3, save_every=1):
    """Save layers 0..upto of ``calibrated`` as a run would."""
    store = _store(path, n, save_every)
    assert store.start_layer() == 0
    for i in range(upto + 1):
        store.save(i, calibrated.model.layers[i], _inputs(i + 1) if i + 1 < n else None)


# ------------------------------------------------------------------------- layer state
@pytest.mark.parametrize(
    ("config", "dtype"),
    [(INT4_AWQ, torch.float32), (W4A8_SEQUENTIAL, torch.float32), (INT8_BF16, torch.bfloat16)],
    ids=["awq_lite", "sequential", "bf16"],
)
def test_layer_state_round_trip_is_bit_identical(config, dtype, tmp_path):
    calibrated, fresh = _models(config, dtype)
    _checkpoint(tmp_path, calibrated, upto=1)
    untouched = {k: v.clone() for k, v in fresh.model.layers[2].state_dict().items()}
    store = _store(tmp_path)
    assert store.start_layer() == 2
    store.restore_completed(fresh.model.layers)
    for i in (0, 1):
        _same_layer(calibrated.model.layers[i], fresh.model.layers[i])
    x = torch.randn(2, 8, zoo.H, generator=torch.Generator().manual_seed(7)).to(dtype)
    with torch.no_grad():
        for i in (0, 1):
            assert torch.equal(calibrated.model.layers[i](x), fresh.model.layers[i](x))
    after = fresh.model.layers[2].state_dict()
    assert sorted(after) == sorted(untouched)
    assert all(torch.equal(after[k], untouched[k]) for k in after)


def test_awq_round_trip_carries_what_calibration_changed(tmp_path):
    calibrated, fresh = _models(INT4_AWQ)
    layer, target = calibrated.model.layers[0], fresh.model.layers[0]
    # what the restore must bring back is really there, and really absent from a fresh layer
    assert not torch.equal(layer.mlp.up_proj.weight, target.mlp.up_proj.weight)
    assert layer.mlp.up_proj.input_quantizer.pre_quant_scale is not None
    assert target.mlp.up_proj.input_quantizer.pre_quant_scale is None
    assert target.mlp.up_proj.weight_quantizer.amax is None
    # what a calibration may change besides tensors: a quantizer switched off, a runtime axis
    layer.self_attn.q_proj.input_quantizer.disable()
    layer.self_attn.k_proj.input_quantizer.axis = -1
    layer.mlp.down_proj.weight_quantizer.register_buffer("_extra", torch.ones(2), persistent=False)
    _checkpoint(tmp_path, calibrated, upto=0)
    store = _store(tmp_path)
    assert store.start_layer() == 1
    store.restore_completed(fresh.model.layers)
    _same_layer(layer, target)


def test_amax_only_store_keeps_weights_out(tmp_path):
    calibrated, fresh = _models(INT8_BF16)
    store = _store(tmp_path, store_weights=False)
    store.start_layer()
    store.save(0, calibrated.model.layers[0], _inputs(1))
    from safetensors import safe_open

    with safe_open(str(tmp_path / "layer_00000.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert keys and all("_quantizer." in k for k in keys)
    assert "mlp.up_proj.weight_quantizer._amax" in keys
    store = _store(tmp_path, store_weights=False)
    assert store.start_layer() == 1
    store.restore_completed(fresh.model.layers)
    _same_layer(calibrated.model.layers[0], fresh.model.layers[0])


# ------------------------------------------------------------------------- cached inputs
def test_cached_inputs_round_trip(tmp_path):
    shared = torch.arange(6, dtype=torch.int64).reshape(2, 3)
    bf16 = torch.randn(2, 4, 16).to(torch.bfloat16)
    calls = [
        ((bf16, None), {"attention_mask": shared, "position_ids": shared, "use_cache": False}),
        (
            (bf16[:, 1:, :].transpose(1, 2), [1, 2.5, 0.1, -0.0, float("inf")]),
            {"cos_sin": (torch.ones(3), torch.zeros(3, dtype=torch.float16)), "name": "x"},
        ),
        ((), {"dtype": torch.bfloat16, "device": torch.device("cpu"), "empty": {}}),
    ]
    _, fresh = _models(INT8_BF16, n_layers=2)
    store = _store(tmp_path, n=2)
    store.start_layer()
    store.save(0, fresh.model.layers[0], calls)
    store = _store(tmp_path, n=2)
    assert store.start_layer() == 1
    got = store.next_inputs()
    (a0, n0), k0 = got[0]
    assert torch.equal(a0, bf16) and a0.dtype == torch.bfloat16 and n0 is None
    assert torch.equal(k0["attention_mask"], shared) and k0["use_cache"] is False
    assert k0["attention_mask"] is k0["position_ids"]  # one tensor object stays one
    (a1, numbers), k1 = got[1]
    assert torch.equal(a1, bf16[:, 1:, :].transpose(1, 2))
    assert [repr(v) for v in numbers] == ["1", "2.5", "0.1", "-0.0", "inf"]
    assert type(got[1][0]) is tuple and type(numbers) is list
    assert torch.equal(k1["cos_sin"][1], torch.zeros(3, dtype=torch.float16))
    assert k1["cos_sin"][1].dtype == torch.float16 and k1["name"] == "x"
    assert got[2] == ((), {"dtype": torch.bfloat16, "device": torch.device("cpu"), "empty": {}})
    assert store.next_inputs(device="meta")[0][0][0].device.type == "meta"


def test_inputs_that_cannot_be_stored_are_refused_with_their_place(tmp_path):
    class Cache:
        pass

    _, fresh = _models(INT8_BF16, n_layers=2)
    store = _store(tmp_path, n=2)
    store.start_layer()
    with pytest.raises(ValueError, match=r"\[0\]\[1\]\['past_key_values'\].*Cache"):
        store.save(0, fresh.model.layers[0], [((torch.ones(1),), {"past_key_values": Cache()})])
    assert not (tmp_path / "manifest.json").exists()
    with pytest.raises(ValueError, match="dict key 3 is not a string"):
        fingerprint(fresh, algorithm_class("max")(), [({3: torch.ones(1)},)])


# ------------------------------------------------------------------------- fingerprint
def _fp(model, config=None, inputs=None):
    return fingerprint(model, config or algorithm_class("max")(), inputs or _inputs(0))


def test_fingerprint_sees_model_config_and_data():
    _, fresh = _models(INT8_BF16, n_layers=2)
    _, twin = _models(INT8_BF16, n_layers=2)
    base = _fp(fresh)
    assert base == _fp(twin)
    with torch.no_grad():
        w = twin.model.layers[1].mlp.up_proj.weight
        w[0, 0] = torch.nextafter(w[0, 0], torch.tensor(1.0, dtype=w.dtype))
    assert _fp(twin)["model"] != base["model"]
    _, other_bits = _models({**INT8_BF16, "quant_cfg": [*INT8_BF16["quant_cfg"][:2]]}, n_layers=2)
    assert _fp(other_bits)["model"] != base["model"]  # quantizer settings, same weights
    assert _fp(fresh, algorithm_class("mse")())["config"] != base["config"]
    moved = algorithm_class("max").model_validate(
        {"layerwise": {"enable": True, "checkpoint_dir": "/elsewhere", "save_every": 4}}
    )
    enabled = algorithm_class("max").model_validate({"layerwise": {"enable": True}})
    assert _fp(fresh, moved)["config"] == _fp(fresh, enabled)["config"]
    assert _fp(fresh, inputs=_inputs(1))["data"] != base["data"]
    assert _fp(fresh, inputs=[((_inputs(0)[0][0][0],), {"flag": True})])["data"] != base["data"]


# ------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fp": {**FP, "model": "x" * 64}}, r"the model \(parameters, buffers"),
        ({"fp": {**FP, "config": "x" * 64}}, "the algorithm config differs"),
        ({"fp": {**FP, "data": "x" * 64}}, r"the calibration data \(the first layer's inputs\)"),
        ({"n": 4}, "num_layers was 3, now 4"),
        ({"save_every": 2}, "save_every was 1, now 2"),
        ({"store_weights": False}, "store_weights was True, now False"),
    ],
    ids=["model", "config", "data", "num_layers", "save_every", "store_weights"],
)
def test_every_mismatch_is_refused_with_its_name(change, message, tmp_path):
    calibrated, _ = _models(INT8_BF16)
    _checkpoint(tmp_path, calibrated, upto=0)
    with pytest.raises(CheckpointMismatchError, match=message) as info:
        _store(tmp_path, **change).start_layer()
    assert str(tmp_path) in str(info.value) and "fresh checkpoint_dir" in str(info.value)


def test_several_differences_are_named_together(tmp_path):
    calibrated, _ = _models(INT8_BF16)
    _checkpoint(tmp_path, calibrated, upto=0)
    with pytest.raises(CheckpointMismatchError) as info:
        _store(tmp_path, save_every=2, fp={**FP, "data": "x" * 64}).start_layer()
    assert "calibration data" in str(info.value) and "save_every was 1" in str(info.value)
    assert "model" not in str(info.value).split("different run:")[1]


def test_a_completed_run_starts_afresh_and_says_so(tmp_path, capsys):
    calibrated, _ = _models(INT8_BF16)
    _checkpoint(tmp_path, calibrated, upto=2)
    store = _store(tmp_path, n=5, fp={**FP, "model": "x" * 64})  # anything: nothing resumes
    assert store.start_layer() == 0
    assert "holds a completed run of 3 layers; calibrating afresh" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="captures its own inputs"):
        store.next_inputs()


def test_a_resume_says_where_it_resumes(tmp_path, capsys):
    calibrated, _ = _models(INT8_BF16)
    _checkpoint(tmp_path, calibrated, upto=1)
    capsys.readouterr()
    assert _store(tmp_path).start_layer() == 2
    err = capsys.readouterr().err
    assert err == f"resuming layerwise calibration at layer 2 of 3 from {tmp_path}\n"


def test_bad_use_is_refused(tmp_path, monkeypatch):
    calibrated, _ = _models(INT8_BF16)
    layer = calibrated.model.layers[0]
    with pytest.raises(ValueError, match="num_layers must be an int >= 1"):
        _store(tmp_path, n=0)
    with pytest.raises(ValueError, match="save_every must be an int >= 1"):
        _store(tmp_path, save_every=0)
    with pytest.raises(ValueError, match="fingerprint must be what fingerprint"):
        _store(tmp_path, fp={"model": "x"})
    store = _store(tmp_path)
    with pytest.raises(RuntimeError, match="start_layer"):
        store.save(0, layer, _inputs(1))
    store.start_layer()
    with pytest.raises(ValueError, match="expected layer 0, got 1"):
        store.save(1, layer, _inputs(1))
    with pytest.raises(ValueError, match="None exactly for the last layer"):
        store.save(0, layer, None)
    with pytest.raises(ValueError, match="got 2 layers, the store has 3"):
        store.restore_completed(calibrated.model.layers[:2])
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    with pytest.raises(RuntimeError, match="group of 2 processes"):
        _store(tmp_path)


# ------------------------------------------------------------------------- interruptions
def test_stale_temp_files_are_ignored_and_removed(tmp_path):
    calibrated, _ = _models(INT8_BF16)
    _checkpoint(tmp_path, calibrated, upto=0)
    (tmp_path / "manifest.json.tmp").write_text('{"last_completed_layer": 2')
    (tmp_path / "layer_00001.safetensors.tmp").write_bytes(b"\0" * 10)
    (tmp_path / "notes.tmp").write_text("not the store's")
    store = _store(tmp_path)
    assert store.start_layer() == 1
    assert sorted(os.listdir(tmp_path)) == [
        "inputs_00001.safetensors",
        "layer_00000.safetensors",
        "manifest.json",
        "notes.tmp",
    ]
    assert torch.equal(store.next_inputs()[0][0][0], _inputs(1)[0][0][0])


def test_a_commit_killed_before_the_manifest_resumes_at_the_previous_window(tmp_path, monkeypatch):
    calibrated, fresh = _models(INT8_BF16, n_layers=5)
    layers = calibrated.model.layers
    store = _store(tmp_path, n=5, save_every=2)
    store.start_layer()
    for i in range(3):
        store.save(i, layers[i], _inputs(i + 1))
    real_replace = os.replace

    def killed(src, dst):
        if str(dst).endswith("manifest.json"):
            raise KeyboardInterrupt  # the process dies between the inputs and the manifest
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        store.save(3, layers[3], _inputs(4))
    monkeypatch.setattr(os, "replace", real_replace)
    resumed = _store(tmp_path, n=5, save_every=2)
    assert resumed.start_layer() == 2
    assert torch.equal(resumed.next_inputs()[0][0][0], _inputs(2)[0][0][0])
    resumed.restore_completed(fresh.model.layers)
    for i in (0, 1):
        _same_layer(layers[i], fresh.model.layers[i])
    assert not list(tmp_path.glob("*.tmp"))


def test_a_missing_layer_file_refuses_the_resume(tmp_path):
    calibrated, _ = _models(INT8_BF16)
    _checkpoint(tmp_path, calibrated, upto=1)
    (tmp_path / "layer_00000.safetensors").unlink()
    with pytest.raises(CheckpointMismatchError, match=r"layer_00000\.safetensors, listed in the"):
        _store(tmp_path).start_layer()


def test_a_changed_layer_file_is_refused_before_any_layer_changes(tmp_path):
    calibrated, fresh = _models(INT8_BF16)
    _checkpoint(tmp_path, calibrated, upto=1)
    path = tmp_path / "layer_00001.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # same size, one bit of a tensor flipped
    path.write_bytes(bytes(data))
    store = _store(tmp_path)
    assert store.start_layer() == 2
    before = {k: v.clone() for k, v in fresh.model.layers[0].state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match=r"layer_00001\.safetensors does not have"):
        store.restore_completed(fresh.model.layers)
    after = fresh.model.layers[0].state_dict()
    assert sorted(after) == sorted(before) and all(torch.equal(after[k], before[k]) for k in after)


def test_a_manifest_that_is_not_one_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointMismatchError, match="not a layer checkpoint manifest"):
        _store(tmp_path).start_layer()
    manifest = {"format_version": 99}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointMismatchError, match="format_version 99"):
        _store(tmp_path).start_layer()


# ------------------------------------------------------------------------- windows
def test_save_every_commits_windows(tmp_path):
    calibrated, _ = _models(INT8_BF16, n_layers=5)
    layers = calibrated.model.layers
    store = _store(tmp_path, n=5, save_every=2)
    store.start_layer()

    def manifest():
        path = tmp_path / "manifest.json"
        return json.loads(path.read_text()) if path.exists() else None

    store.save(0, layers[0], _inputs(1))
    assert manifest() is None and not (tmp_path / "inputs_00001.safetensors").exists()
    store.save(1, layers[1], _inputs(2))
    m = manifest()
    assert m["last_completed_layer"] == 1
    assert [f["name"] for f in m["files"]["layers"]] == [
        "layer_00000.safetensors",
        "layer_00001.safetensors",
    ]
    assert m["files"]["inputs"]["name"] == "inputs_00002.safetensors"
    store.save(2, layers[2], _inputs(3))
    assert manifest()["last_completed_layer"] == 1
    assert (tmp_path / "layer_00002.safetensors").exists()  # written, not yet committed
    store.save(3, layers[3], _inputs(4))
    assert manifest()["last_completed_layer"] == 3
    assert not (tmp_path / "inputs_00002.safetensors").exists()  # superseded
    store.save(4, layers[4], None)  # the last layer ends a window of one
    m = manifest()
    assert m["last_completed_layer"] == 4 and m["files"]["inputs"] is None
    assert not list(tmp_path.glob("inputs_*"))
    assert len(m["files"]["layers"]) == 5 and m["save_every"] == 2 and m["num_layers"] == 5
    assert m["format_version"] == 1 and m["fingerprint"] == FP


def test_a_resumed_run_extends_the_checkpoint(tmp_path):
    calibrated, fresh = _models(INT8_BF16, n_layers=4)
    layers = calibrated.model.layers
    _checkpoint(tmp_path, calibrated, upto=1, n=4)
    store = _store(tmp_path, n=4)
    assert store.start_layer() == 2
    store.save(2, layers[2], _inputs(3))
    assert not (tmp_path / "inputs_00002.safetensors").exists()
    store = _store(tmp_path, n=4)
    assert store.start_layer() == 3
    store.restore_completed(fresh.model.layers)
    for i in range(3):
        _same_layer(layers[i], fresh.model.layers[i])


def test_output_meta_round_trips_and_refuses_tensors(tmp_path):
    calibrated, _ = _models(INT8_BF16)
    layers = calibrated.model.layers
    metas = [
        ("tensor", (2, 8, 16), torch.bfloat16),
        ("tuple", (("tensor", (2, 8, 16), torch.float32), ("value", None))),
    ]
    store = _store(tmp_path)
    store.start_layer()
    with pytest.raises(ValueError, match="output_meta of layer 0 may not hold tensors"):
        store.save(0, layers[0], _inputs(1), output_meta=("tensor", torch.ones(1)))
    for i, meta in enumerate(metas):
        store.save(i, layers[i], _inputs(i + 1), output_meta=meta)
    store = _store(tmp_path)
    assert store.start_layer() == 2
    assert store.output_metas() == metas


@pytest.mark.parametrize(
    ("config", "dtype", "message"),
    [
        (
            INT8_BF16,
            torch.float32,
            r"input_layernorm\.weight is torch\.bfloat16 \[16\], the layer.s torch\.float32",
        ),
        (W4A8_SEQUENTIAL, torch.bfloat16, "its quantizers differ from the stored ones"),
    ],
    ids=["dtype", "quantizers"],
)
def test_a_layer_file_that_does_not_fit_the_layer_changes_nothing(config, dtype, message, tmp_path):
    calibrated, _ = _models(INT8_BF16, torch.bfloat16)
    _checkpoint(tmp_path, calibrated, upto=1)
    _, other = _models(config, dtype)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    store = _store(tmp_path)
    assert store.start_layer() == 2
    with pytest.raises(
        CheckpointMismatchError, match=f"layer 0 does not fit this model: .*{message}"
    ):
        store.restore_completed(other.model.layers)
    after = other.state_dict()
    assert sorted(after) == sorted(before) and all(torch.equal(after[k], before[k]) for k in after)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["files"].update(inputs=None), "files.inputs is not listed exactly"),
        (lambda m: m["files"]["layers"].pop(), "files.layers does not list every"),
        (lambda m: m["files"]["layers"][0].update(name="../x"), "a bad files entry"),
        (lambda m: m.pop("save_every"), "KeyError"),
    ],
    ids=["no-inputs", "layer-missing", "path", "key"],
)
def test_an_edited_manifest_is_refused(edit, message, tmp_path):
    calibrated, _ = _models(INT8_BF16)
    _checkpoint(tmp_path, calibrated, upto=1)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    edit(manifest)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        CheckpointMismatchError, match=f"not a layer checkpoint manifest.*{message}"
    ):
        _store(tmp_path).start_layer()
