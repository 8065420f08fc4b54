"""The QAT example (examples/qat/qat_minilm.py) runs offline and does what it says: a few steps
of lsq fine-tuning lower the distillation loss and raise the fidelity of the quantized
all-MiniLM-L6-v2 to the float model on held-out sentences."""

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "qat" / "qat_minilm.py"


def _example():
    spec = importlib.util.spec_from_file_location("qat_minilm", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def test_a_few_steps_lower_the_loss_and_recover_fidelity():
    lines = []
    result = _example().run(8, train_sentences=128, eval_sentences=64, log=lines.append)
    assert result.learned_quantizers == 6 * 6 + 3  # 6 layers x 6 linears, 3 embedding tables
    losses = result.losses
    assert len(losses) == 8
    assert sum(losses[-3:]) < 0.9 * sum(losses[:3]), losses
    assert result.fidelity_after > result.fidelity_before + 0.01
    assert lines[0].startswith("quantized: 39 learned-amax") and "->" in lines[-1]
