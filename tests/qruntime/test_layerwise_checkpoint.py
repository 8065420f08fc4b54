"""The layerwise driver with ``checkpoint_dir``: a run interrupted after some blocks resumes from
the checkpoint and ends bit-identical to an uninterrupted run, for float and quantized
activations from the previous block (max, awq_lite, gptq), ``save_every`` windows, weights kept
out (``calib_mutates_weights: false``) and offloaded inputs; a resumed run captures the first
block again (to compare the data) and then only the blocks it still calibrates. The truth is
the same driver run without interruption, in the same test. (A real SIGKILL between processes:
tests/e2e/test_layerwise_resume.py.)"""

import json

import pytest
import qruntime
import torch
import zoo
from qconfig.algorithms import algorithm_class
from qruntime.calibrate import CalibrationContext, algorithm_for
from qruntime.calibrate.layerwise import LayerwiseDriver, LayerwiseOptions, find_layers

N = 4
QUANT_CFG = [
    {"quantizer_name": "*", "enable": False},
    {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 4, "block_sizes": {-1: 8}}},
    {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8, "axis": None}},
]


class Stop(Exception):
    """The interruption: raised by the loop at a chosen full-model pass."""


def _run(algorithm, checkpoint_dir=None, *, stop_at=None, offload=False):
    """Quantize a zoo llama, then calibrate it block by block with the driver; ``stop_at``: the
    full-model pass (1-based) at which the loop raises Stop. Returns (model, driver)."""
    torch.manual_seed(0)
    model = zoo.LlamaLike(n_layers=N).eval()
    qruntime.quantize(model, {"quant_cfg": QUANT_CFG, "algorithm": None}, None)
    layerwise = {"enable": True, **algorithm.pop("layerwise", {})}
    if checkpoint_dir is not None:
        layerwise["checkpoint_dir"] = str(checkpoint_dir)
    config = algorithm_class(algorithm["method"]).model_validate(
        {**algorithm, "layerwise": layerwise}
    )
    batches = [zoo.example_inputs("llama", seed=s) for s in (0, 1, 2)]
    passes = [0]

    def loop(m):
        passes[0] += 1
        if passes[0] == stop_at:
            raise Stop
        for batch in batches:
            m(*batch)

    calibrate = algorithm_for(config)
    driver = LayerwiseDriver(
        find_layers(model),
        config.layerwise,
        LayerwiseOptions(offload_inputs=offload),
        config=config,
    )
    with torch.no_grad():
        driver.run(
            model,
            loop,
            lambda layer, layer_loop: calibrate.run(
                CalibrationContext(model=layer, config=config, forward_loop=layer_loop)
            ),
        )
    return model, driver


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


CASES = {
    "max": {"method": "max"},
    "max-amax-only-every-2": {
        "method": "max",
        "layerwise": {"calib_mutates_weights": False, "save_every": 2},
    },
    "awq_lite-every-2": {"method": "awq_lite", "layerwise": {"save_every": 2}},
    "gptq-quantized-activations": {"method": "gptq"},
    "gptq-float-activations": {
        "method": "gptq",
        "layerwise": {"get_qdq_activations_from_prev_layer": False},
    },
}


@pytest.mark.parametrize("name", list(CASES))
def test_an_interrupted_run_resumes_bit_identical(name, tmp_path, capsys):
    reference, _ = _run(dict(CASES[name]))
    # pass 1 captures block 0, pass k + 1 block k, and a block is saved after the capture of
    # the next: stopping at pass 4 leaves blocks 0 and 1 saved, committed by save_every 1 or 2
    with pytest.raises(Stop):
        _run(dict(CASES[name]), tmp_path, stop_at=4)
    start = json.loads((tmp_path / "manifest.json").read_text())["last_completed_layer"] + 1
    assert start == 2
    capsys.readouterr()
    resumed, driver = _run(dict(CASES[name]), tmp_path)
    assert f"resuming layerwise calibration at layer {start} of {N}" in capsys.readouterr().err
    _same(reference, resumed)
    # the first block's capture (for the data fingerprint), then one per block still to do
    assert driver.forward_loop_calls == 1 + (N - 1 - start)
    assert json.loads((tmp_path / "manifest.json").read_text())["last_completed_layer"] == N - 1


def test_an_uncommitted_first_window_starts_from_scratch(tmp_path, capsys):
    reference, _ = _run({"method": "max", "layerwise": {"save_every": 3}})
    with pytest.raises(Stop):
        _run({"method": "max", "layerwise": {"save_every": 3}}, tmp_path, stop_at=4)
    assert not (tmp_path / "manifest.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "layer_00000.safetensors",
        "layer_00001.safetensors",
    ]
    again, driver = _run({"method": "max", "layerwise": {"save_every": 3}}, tmp_path)
    assert "resuming" not in capsys.readouterr().err and driver.forward_loop_calls == N
    _same(reference, again)


def test_offloaded_inputs_resume_bit_identical(tmp_path):
    reference, _ = _run({"method": "awq_lite"}, offload=True)
    with pytest.raises(Stop):
        _run({"method": "awq_lite"}, tmp_path, stop_at=3, offload=True)
    resumed, _ = _run({"method": "awq_lite"}, tmp_path, offload=True)
    _same(reference, resumed)


def test_a_completed_checkpoint_calibrates_afresh(tmp_path, capsys):
    first, _ = _run({"method": "max"}, tmp_path)
    again, driver = _run({"method": "max"}, tmp_path)
    assert "holds a completed run of 4 layers; calibrating afresh" in capsys.readouterr().err
    assert driver.forward_loop_calls == N
    _same(first, again)


def test_the_driver_needs_the_config_for_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = zoo.LlamaLike(n_layers=2).eval()
    settings = algorithm_class("max").model_validate(
        {"layerwise": {"enable": True, "checkpoint_dir": str(tmp_path)}}
    )
    with pytest.raises(ValueError, match=r"needs the algorithm config \(config=\.\.\.\)"):
        LayerwiseDriver(find_layers(model), settings.layerwise)
