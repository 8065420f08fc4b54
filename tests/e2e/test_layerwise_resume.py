"""A layerwise calibration killed with SIGKILL resumes from its checkpoint and ends bit-identical
to a run that was never interrupted; a run with another config, other data or another model
refuses the checkpoint instead of mixing results.

Real processes: the killed run is a subprocess, stopped by SIGKILL once its manifest commits a
few layers (no chance to clean up: whatever it was writing stays half-written); the resumed
run is a fresh subprocess. The truth is a third subprocess calibrating without interruption.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import qruntime
import torch
import zoo
from qruntime.calibrate.layer_checkpoint import CheckpointMismatchError
from safetensors.torch import load_file

N_LAYERS = 6
KILL_AFTER = 2  # layers committed before the kill

CHILD = """
import sys
import torch
from safetensors.torch import save_file
from test_layerwise_resume import calibrate

torch.set_num_threads(1)
checkpoint_dir, out, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
model = calibrate(checkpoint_dir, delay=delay)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)
"""


def _config(**options):
    return {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 4, "block_sizes": {-1: 8}}},
            {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8, "axis": None}},
        ],
        "algorithm": {"method": "awq_lite", "layerwise": {"enable": True}, **options},
    }


def calibrate(checkpoint_dir, *, delay=0.0, seed=0, seeds=(0, 1, 2), **options):
    """Layerwise awq_lite of a zoo llama with ``qruntime.quantize``, checkpointed in
    ``checkpoint_dir`` (also what the child processes run). ``delay``: seconds of sleep per
    full-model pass."""
    config = _config(**options)
    config["algorithm"]["layerwise"]["checkpoint_dir"] = str(checkpoint_dir)
    torch.manual_seed(seed)
    model = zoo.LlamaLike(n_layers=N_LAYERS).eval()
    batches = [zoo.example_inputs("llama", seed=s) for s in seeds]

    def loop(m):
        for batch in batches:
            m(*batch)
        time.sleep(delay)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the head outside the blocks stays uncalibrated
        return qruntime.quantize(model, config, loop)


def _child(tmp_path, name, checkpoint, delay=0.0):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    here = str(Path(__file__).parent)
    path = os.pathsep.join([here, str(Path(zoo.__file__).parent), *sys.path])
    argv = [sys.executable, str(script), str(checkpoint), str(tmp_path / name), str(delay)]
    return argv, {**os.environ, "PYTHONPATH": path}


def _manifest(checkpoint: Path) -> dict | None:
    try:
        return json.loads((checkpoint / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def test_a_killed_run_resumes_bit_identical(tmp_path):
    argv, env = _child(tmp_path, "reference.safetensors", tmp_path / "ref_ckpt")
    reference = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert reference.returncode == 0, reference.stderr

    checkpoint = tmp_path / "ckpt"
    argv, env = _child(tmp_path, "never.safetensors", checkpoint, delay=0.4)
    killed = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            manifest = _manifest(checkpoint)
            if manifest and manifest["last_completed_layer"] + 1 >= KILL_AFTER:
                break
            assert killed.poll() is None, killed.communicate()[1].decode()
            time.sleep(0.01)
        else:
            pytest.fail("the killed run committed no layers in time")
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    assert killed.returncode == -signal.SIGKILL
    committed = _manifest(checkpoint)["last_completed_layer"] + 1
    assert KILL_AFTER <= committed < N_LAYERS
    kept = tmp_path / "kept"
    shutil.copytree(checkpoint, kept)  # for the refusals below: a checkpoint of an unfinished run

    argv, env = _child(tmp_path, "resumed.safetensors", checkpoint)
    resumed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    line = f"resuming layerwise calibration at layer {committed} of {N_LAYERS} from {checkpoint}"
    assert line in resumed.stderr.splitlines()
    want = load_file(str(tmp_path / "reference.safetensors"))
    got = load_file(str(tmp_path / "resumed.safetensors"))
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key
    assert _manifest(checkpoint)["last_completed_layer"] == N_LAYERS - 1
    assert not list(checkpoint.glob("*.tmp"))

    # a checkpoint of an unfinished run refuses a run that is not the same run
    with pytest.raises(CheckpointMismatchError, match="the algorithm config differs"):
        calibrate(str(kept), alpha_step=0.25)
    with pytest.raises(CheckpointMismatchError, match="the calibration data"):
        calibrate(str(kept), seeds=(0, 1, 3))
    with pytest.raises(CheckpointMismatchError, match=r"the model \(parameters"):
        calibrate(str(kept), seed=1)
    assert _manifest(kept)["last_completed_layer"] + 1 == committed  # refusals wrote nothing
