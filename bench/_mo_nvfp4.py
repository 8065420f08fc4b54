"""Model Optimizer's NVFP4 fake quantization on CPU, computed by qruntime's reference numerics.

Model Optimizer 0.47.0 quantizes NVFP4 with CUDA-only code (dynamic blocks assert a CUDA amax;
static blocks need its Triton kernel), so on CPU its NVFP4 rows cannot be evaluated. Its
calibration algorithms are plain torch around that one call; with the call replaced by
``qruntime.numerics.fake_quant`` — bit-exact with Model Optimizer's kernels for every format,
which tests/conformance checks, and the same swap its ``reference_fake_quant`` fixture makes —
Model Optimizer's own mse / local_hessian / nvfp4_act_headroom run on CPU and their accuracy can
be compared with qruntime's. Their *speed* then measures our numerics inside their algorithm,
not their kernels: the benches label such rows.

Imported only after every qruntime run (it imports Model Optimizer).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"


class Uses:
    """How many fake quantizations the reference numerics computed in Model Optimizer's place
    (0: the run was entirely Model Optimizer's own)."""

    def __init__(self) -> None:
        self.calls = 0


def _is_nvfp4_dynamic(tq) -> bool:
    blocks = tq._block_sizes
    return (
        blocks is not None
        and blocks.get("type") == "dynamic"
        and tuple(blocks.get("scale_bits") or ()) == (4, 3)
        and tq._num_bits == (2, 1)
    )


@contextlib.contextmanager
def reference_nvfp4() -> Iterator[Uses]:
    """While open, Model Optimizer's NVFP4 quantizers (dynamic and static blocks) fake-quantize
    through ``qruntime.numerics.fake_quant``; every other format is theirs. Yields the count of
    replaced calls."""
    for folder in (TESTS, TESTS / "conformance"):  # oracle (and the zoo it imports)
        if str(folder) not in sys.path:
            sys.path.append(str(folder))
    import oracle
    from modelopt.torch.quantization.nn import TensorQuantizer
    from modelopt.torch.quantization.nn.modules.tensor_quantizer import StaticBlockScaleQuantizer
    from qruntime.numerics import fake_quant

    dynamic_original = TensorQuantizer._fake_quantize
    static_original = StaticBlockScaleQuantizer._fake_quantize

    uses = Uses()

    def numerics(self, inputs):
        uses.calls += 1
        amax = None if self.is_mx_format else self._get_amax(inputs)
        global_amax = getattr(self, "_global_amax", None)
        return fake_quant(inputs, oracle.tq_attributes(self), amax, global_amax=global_amax)

    def dynamic(self, inputs):
        if _is_nvfp4_dynamic(self):
            return numerics(self, inputs)
        return dynamic_original(self, inputs)

    def static(self, inputs):
        if self.is_nvfp4_static and not self._lsq:
            return numerics(self, inputs)
        return static_original(self, inputs)

    TensorQuantizer._fake_quantize = dynamic
    StaticBlockScaleQuantizer._fake_quantize = static
    try:
        yield uses
    finally:
        TensorQuantizer._fake_quantize = dynamic_original
        StaticBlockScaleQuantizer._fake_quantize = static_original
