"""Shared set-up of the conformance suites (qruntime beside Model Optimizer 0.47.0)."""

import oracle
import pytest
import torch
from modelopt.torch.quantization.nn import TensorQuantizer as MoTensorQuantizer
from modelopt.torch.quantization.nn.modules.tensor_quantizer import StaticBlockScaleQuantizer
from qruntime.numerics import fake_quant


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The zoo models are tiny: intra-op threads only add overhead (and contention on CI)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def reference_fake_quant(monkeypatch):
    """Model Optimizer with its CPU-less formats — dynamic blocks (NVFP4, MX) and static NVFP4
    blocks — computed by qruntime's reference numerics, which are bit-exact with its CUDA
    kernels (docs/numerics.md); its structure, calibration and every other format stay its
    own."""
    dynamic_original = MoTensorQuantizer._fake_quantize
    static_original = StaticBlockScaleQuantizer._fake_quantize

    def numerics(self, inputs):
        # Model Optimizer rotates before calling _fake_quantize: the reference must not again
        attrs = {**oracle.tq_attributes(self), "rotate": False}
        amax = None if self.is_mx_format else self._get_amax(inputs)
        return fake_quant(inputs, attrs, amax, global_amax=getattr(self, "_global_amax", None))

    def dynamic(self, inputs):
        blocks = self._block_sizes
        if blocks is not None and blocks.get("type") == "dynamic":
            return numerics(self, inputs)
        return dynamic_original(self, inputs)

    def static(self, inputs):
        if self.is_nvfp4_static:
            return numerics(self, inputs)
        return static_original(self, inputs)

    monkeypatch.setattr(MoTensorQuantizer, "_fake_quantize", dynamic)
    monkeypatch.setattr(StaticBlockScaleQuantizer, "_fake_quantize", static)
