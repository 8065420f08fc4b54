"""``CompressConfig``: weight compression after quantization (docs/model-optimizer-rules.md, 'Config objects').

Apart from :mod:`qconfig.quantize` because only ``real_quantize`` uses it: defining a model costs
every ``qconfig lint`` start, which never validates one (docs/performance.md, "Start-up").
"""

from pydantic import Field

from qconfig.base import ConfigBase

__all__ = ["CompressConfig"]


class CompressConfig(ConfigBase):
    """Weight compression after quantization (mode ``real_quantize``)."""

    compress: dict[str, bool] = Field(
        default={"*": True}, description="Compress the weights of modules matching a pattern."
    )
    quant_gemm: bool = Field(default=True, description="Use quantized GEMMs after compression.")
