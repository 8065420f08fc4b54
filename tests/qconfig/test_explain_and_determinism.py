"""explain() on the example manifests, and byte-identical plan JSON across processes."""

import os
import subprocess
import sys
from pathlib import Path

from qconfig import explain, presets
from qconfig.compile import compile_plan
from qconfig.manifest import Manifest
from qconfig.plan import Plan

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "manifests"
LLAMA = Manifest.load(EXAMPLES / "llama_decoder.json")

CONFIG = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 4, "axis": 0}},
        {
            "quantizer_name": "*mlp*weight_quantizer",
            "cfg": [{"num_bits": 4, "axis": 0}, {"num_bits": (4, 3)}],
        },
        {"quantizer_name": "*mlp.down_proj*", "cfg": {"num_bits": 8, "axis": 0}},
        {"quantizer_name": "lm_head*", "enable": False},
        {"quantizer_name": "*LM_HEAD*", "enable": False},
        {"quantizer_name": "*lm_head*", "parent_class": "nn.Embedding", "enable": False},
    ],
    "algorithm": "max",
}


def test_explain_lists_effects_in_order():
    out = explain(CONFIG, LLAMA, "model.layers.1.mlp.down_proj.weight_quantizer")
    assert [(i, effect) for i, _, _, effect in out.steps] == [
        (0, "toggle off"),
        (1, "replace"),
        (2, "make sequential (2 quantizers)"),
        (3, "back to single (sequential replaced)"),
    ]
    assert out.final_enable and out.final_format == "INT8 per-channel(0)"
    text = str(out)
    assert "[3] '*mlp.down_proj*': back to single" in text


def test_explain_near_misses():
    out = explain(CONFIG, LLAMA, "lm_head.weight_quantizer")
    # 'lm_head*' matches the top-level lm_head (anchored at the start only): disabled
    assert not out.final_enable and out.steps[-1][:2] == (4, "lm_head*")
    why = {i: reason for i, _, reason in out.near_misses}
    assert set(why) == {5, 6}
    assert "case is ignored" in why[5]
    assert "parent_class 'nn.Embedding'" in why[6]


def test_explain_anchor_near_miss():
    config = {"quant_cfg": [{"quantizer_name": "layers.0.mlp*", "enable": False}]}
    out = explain(config, LLAMA, "model.layers.0.mlp.up_proj.weight_quantizer")
    ((index, _, reason),) = out.near_misses
    assert index == 0 and "anchored at the start" in reason


def test_explain_unknown_quantizer_suggests_names():
    try:
        explain(CONFIG, LLAMA, "lm_head.weight")
    except KeyError as exc:
        assert "lm_head.weight_quantizer" in str(exc)
    else:
        raise AssertionError("expected KeyError")


def test_plan_json_round_trip():
    plan = compile_plan(presets.get("W4A8_AWQ_BETA_CFG"), LLAMA)
    again = Plan.from_json(plan.to_json())
    assert again.quantizers == plan.quantizers
    assert again.algorithm == plan.algorithm
    assert again.to_json() == plan.to_json()


SCRIPT = """
import sys
from qconfig import presets
from qconfig.compile import compile_plan
from qconfig.manifest import Manifest
m = Manifest.load(sys.argv[1])
sys.stdout.write(compile_plan(presets.get("NVFP4_MLP_ONLY_CFG"), m).to_json())
"""


def test_plan_json_is_byte_identical_across_hash_seeds():
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(EXAMPLES / "moe.json")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1 and outputs.pop().startswith('{"format":"qconfig.plan/v2"')
