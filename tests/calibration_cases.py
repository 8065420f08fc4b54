"""Small configs and data shared by the calibration unit tests (test_calibrate_*.py)."""

import torch

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


#: The calibration methods qruntime registers on import, sorted.
BUILTIN_METHODS = [
    "awq_clip",
    "awq_full",
    "awq_lite",
    "gptq",
    "local_hessian",
    "max",
    "mse",
    "nvfp4_act_headroom",
    "smoothquant",
    "svdquant",
]
