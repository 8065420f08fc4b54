"""Small configs and data shared by the calibration unit tests (test_calibrate_*.py)."""

import torch
from torch import nn

W = "*weight_quantizer"
INPUTS = "*input_quantizer"


def weight_input_config(weight_cfg, input_cfg=None, algorithm="max"):
    """Everything off, then the weight quantizers (and optionally the inputs) configured."""
    entries = [{"quantizer_name": "*", "enable": False}, {"quantizer_name": W, "cfg": weight_cfg}]
    if input_cfg is not None:
        entries.append({"quantizer_name": INPUTS, "cfg": input_cfg})
    return {"quant_cfg": entries, "algorithm": algorithm}


def batch(seed):
    """A (4, 3, 40) batch for the two-Linear test nets."""
    return torch.randn(4, 3, 40, generator=torch.Generator().manual_seed(seed))


def two_batches(model):
    """The forward loop of the calibration tests: two seeded batches."""
    for seed in (0, 1):
        model(batch(seed))


def loop_failing_on_pass(n, loop, before_failing=None):
    """``loop`` as a forward loop that raises ``RuntimeError("data source went away")`` at the
    end of its ``n``-th call, after ``before_failing(model)`` (a look at the model then);
    ``.calls`` counts the calls, for rollback tests."""

    def failing(model):
        failing.calls += 1
        loop(model)
        if failing.calls == n:
            if before_failing is not None:
                before_failing(model)
            raise RuntimeError("data source went away")

    failing.calls = 0
    return failing


def assert_same_state(model, original):
    """Every ``state_dict`` entry of ``model`` equal to ``original``'s, bit for bit."""
    for key, value in model.state_dict().items():
        assert torch.equal(value, original[key]), key


class WithDeadLayer(nn.Module):
    """Two 16 -> 16 linears; ``dead`` is never called (no statistics, no search)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.live = nn.Linear(16, 16)
        self.dead = nn.Linear(16, 16)

    def forward(self, x):
        return self.live(x)


#: The calibration methods qruntime registers on import, sorted.
BUILTIN_METHODS = [
    "awq_clip",
    "awq_full",
    "awq_lite",
    "gptq",
    "local_hessian",
    "lsq",
    "max",
    "mse",
    "nvfp4_act_headroom",
    "smoothquant",
    "svdquant",
]
