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
