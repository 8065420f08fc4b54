"""quantizer_states, save_state/restore_state (safetensors + plan JSON)."""

import pytest
import qruntime
import torch
import zoo
from qruntime.state import read_plan

W4A8 = {
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


def _loop(model):
    model(*zoo.example_inputs("subclass"))


@pytest.fixture
def quantized():
    return qruntime.quantize(zoo.build("subclass"), W4A8, _loop)


def test_quantizer_states_fold_sequential_elements(quantized):
    states = qruntime.quantizer_states(quantized)
    assert "mlp.0.weight_quantizer.0" not in states
    weight = states["mlp.0.weight_quantizer"]
    assert weight["enable"] is True
    assert [a["num_bits"] for a in weight["attributes"]] == [4, (4, 3)]
    assert weight["attributes"][0]["axis"] == (0,)  # runtime static-block axis
    assert [a.shape for a in weight["amax"]] == [(32, 1), ()]
    assert weight["pre_quant_scale"] == [None, None]
    inp = states["mlp.0.input_quantizer"]
    assert set(inp) == {"enable", "attributes", "amax", "pre_quant_scale"}
    assert len(inp["attributes"]) == 19 and inp["amax"].shape == ()
    assert states["emb.input_quantizer"]["enable"] is False
    assert states["mlp.0.output_quantizer"]["amax"] is None


def test_round_trip_is_bit_identical_and_keeps_toggles(quantized, tmp_path):
    quantized.lm_head.input_quantizer.disable()
    path = tmp_path / "q.safetensors"
    qruntime.save_state(quantized, path)
    plan = read_plan(path)
    assert plan.quantizers["lm_head.input_quantizer"].enable is False
    assert plan.quantizers["mlp.0.weight_quantizer"].is_sequential
    restored = qruntime.restore_state(zoo.build("subclass"), path)
    x = zoo.example_inputs("subclass", seed=5)
    with torch.no_grad():
        assert torch.equal(restored(*x), quantized(*x))
    assert not restored.lm_head.input_quantizer.is_enabled
    assert restored.state_dict().keys() == quantized.state_dict().keys()


def test_restore_onto_another_architecture_changes_nothing(quantized, tmp_path):
    path = tmp_path / "q.safetensors"
    qruntime.save_state(quantized, path)
    other = zoo.build("llama")
    with pytest.raises(qruntime.PlanMismatchError):
        qruntime.restore_state(other, path)
    assert type(other.lm_head) is torch.nn.Linear


def test_restore_with_a_foreign_tensor_rolls_back(quantized, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = tmp_path / "q.safetensors"
    qruntime.save_state(quantized, path)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    tensors["mlp.1.weight_quantizer._amax"] = torch.tensor(1.0)
    save_file(tensors, str(path), metadata=metadata)
    fresh = zoo.build("subclass")
    with pytest.raises(ValueError, match=r"mlp\.1\.weight_quantizer"):
        qruntime.restore_state(fresh, path)
    assert type(fresh.mlp[0]) is torch.nn.Linear


def test_restore_refuses_other_files(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    with pytest.raises(ValueError, match=r"qruntime\.state/v1"):
        qruntime.restore_state(zoo.build("subclass"), path)


def test_current_plan_of_an_unquantized_model_is_an_error():
    with pytest.raises(ValueError, match="not quantized"):
        qruntime.current_plan(zoo.build("subclass"))


# ------------------------------------------------------------------ weights rewritten by calibration
SMOOTH = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*mlp*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        {"quantizer_name": "*mlp*input_quantizer", "cfg": {"num_bits": 8}},
    ],
    "algorithm": {"method": "smoothquant", "alpha": 0.5},
}


@pytest.fixture
def smoothed(recwarn):
    return qruntime.quantize(zoo.build("subclass"), SMOOTH, _loop)


def _file(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}


def test_weights_a_calibration_rewrote_travel_with_the_state(smoothed, tmp_path):
    path = tmp_path / "q.safetensors"
    qruntime.save_state(smoothed, path)
    metadata, tensors = _file(path)
    stored = [k for k in tensors if not k.rpartition(".")[2].startswith("_")]
    quantized_weights = [
        f"{name}.weight" for name, m in smoothed.named_modules() if hasattr(m, "weight_quantizer")
    ]
    assert sorted(stored) == sorted(quantized_weights)  # every weight a quantizer quantizes
    assert metadata["weights"] == '["' + '","'.join(sorted(stored)) + '"]'
    for key in stored:
        assert torch.equal(tensors[key], smoothed.get_parameter(key))
    fresh = zoo.build("subclass")
    assert not torch.equal(fresh.mlp[0].weight, smoothed.mlp[0].weight)
    restored = qruntime.restore_state(fresh, path)
    x = zoo.example_inputs("subclass", seed=5)
    with torch.no_grad():
        assert torch.equal(restored(*x), smoothed(*x))
    # saved again, a restored model still carries its weights
    again = tmp_path / "again.safetensors"
    qruntime.save_state(restored, again)
    assert _file(again)[0]["weights"] == metadata["weights"]


def test_max_calibration_stores_no_weights(quantized, tmp_path):
    path = tmp_path / "q.safetensors"
    qruntime.save_state(quantized, path)
    metadata, tensors = _file(path)
    assert "weights" not in metadata
    assert all(k.rpartition(".")[2].startswith("_") for k in tensors)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t, m: t.pop("mlp.0.weight"), r"\['mlp\.0\.weight'\]: is listed .* but missing"),
        (
            lambda t, m: t.__setitem__("mlp.0.weight", t["mlp.0.weight"][:, :-1].contiguous()),
            r"\['mlp\.0\.weight'\]: has shape .* the model's parameter has shape",
        ),
        (
            lambda t, m: t.__setitem__("mlp.0.weight", t["mlp.0.weight"].double()),
            r"\['mlp\.0\.weight'\]: has shape .* dtype F64",
        ),
        (
            lambda t, m: t["mlp.0.weight"].view(-1).__setitem__(0, float("nan")),
            r"\['mlp\.0\.weight'\]: holds NaN",
        ),
        (
            lambda t, m: (
                t.__setitem__("norm.weight", torch.zeros(1)),
                m.__setitem__("weights", m["weights"][:-1] + ',"norm.weight"]'),
            ),
            r"\['norm\.weight'\]: is not a weight of this model that a quantizer quantizes",
        ),
    ],
)
def test_stored_weights_are_checked_before_the_model_is_touched(smoothed, tmp_path, edit, message):
    from safetensors.torch import save_file

    path = tmp_path / "q.safetensors"
    qruntime.save_state(smoothed, path)
    metadata, tensors = _file(path)
    edit(tensors, metadata)
    save_file(tensors, str(path), metadata=metadata)
    fresh = zoo.build("subclass")
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        qruntime.restore_state(fresh, path)
    assert type(fresh.mlp[0]) is torch.nn.Linear
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())
