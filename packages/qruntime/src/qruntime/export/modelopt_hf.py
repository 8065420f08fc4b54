"""Model Optimizer's unified Hugging Face checkpoint (``quant_method: "modelopt"``,
``hf_quant_config.json``): what TensorRT-LLM, vLLM and SGLang load.

Tensors follow Model Optimizer 0.47.0's exporter arithmetic so that they equal what its
``export_hf_checkpoint`` writes for the same quantized model: INT8 ``weight = round(W / s)`` with
``s = amax / 127`` (float32, ``(out,)``), INT4 ``round(W / (amax / 7))`` packed two output rows per
byte, FP8 ``e4m3(W / (amax / 448))`` with 0-d scales, NVFP4 E2M1 bytes with E4M3 block scales and
``weight_scale_2``; ``input_scale`` 0-d, ``pre_quant_scale`` in the model dtype, and the FP8 KV
scales on ``k_proj``/``v_proj``. Unlike Model Optimizer, the exporter does not re-smooth or fold
``pre_quant_scale`` into norms: every module that has one stores it (docs/export.md).
"""

from __future__ import annotations

from typing import Any

import torch

from qruntime.export.errors import ExportError
from qruntime.export.hub_names import hub_namer
from qruntime.export.layout import LinearExport, ModelExport
from qruntime.packing import pack_fp4, pack_int4_row_pairs

__all__ = ["modelopt_hf_checkpoint"]


def _algo(lin: LinearExport) -> tuple[str, int | None]:
    """``(quant_algo, group_size)`` of one linear, or ExportError."""
    w, a = lin.weight, lin.inputs
    akind = a.kind if a is not None else None
    if w.kind == "int" and w.num_bits == 8 and w.strategy == "channel" and akind in (None, "int8"):
        return ("W8A8_SQ_PER_CHANNEL" if akind else "W8A16"), None
    if w.kind == "int" and w.num_bits == 4 and w.strategy == "group" and akind is None:
        return "W4A16_AWQ", w.group_size
    if w.kind == "fp8" and w.strategy == "tensor" and akind in (None, "fp8"):
        return "FP8", None
    if w.kind == "fp8" and w.strategy == "channel" and akind == "fp8_token":
        return "FP8_PER_CHANNEL_PER_TOKEN", None
    if w.kind == "nvfp4" and akind in (None, "nvfp4"):
        return ("NVFP4" if akind else "W4A16_NVFP4"), 16
    if w.kind == "mxfp4" and akind in (None, "mxfp4"):
        return "mxfp4", None  # Model Optimizer writes it in lower case, without a group size
    if w.kind == "mxfp8" and akind in (None, "mxfp8"):
        return "MXFP8", 32
    raise ExportError(
        f"{lin.name}.weight_quantizer: {w.kind.upper()}{w.num_bits if w.kind == 'int' else ''} "
        f"{w.strategy} weights with {akind or 'unquantized'} inputs match no Model Optimizer "
        "quant_algo; expressible: INT8 per channel (+INT8 inputs), INT4 in groups, FP8 per "
        "tensor (+FP8 inputs), FP8 per channel + dynamic per-token FP8, NVFP4, MXFP4, MXFP8 "
        "(each with its own inputs or none)"
    )


def _weight_tensors(lin: LinearExport, algo: str) -> dict[str, torch.Tensor]:
    w = lin.weight
    weight = lin.module.weight.detach()
    amax = w.amax
    if algo in ("W8A8_SQ_PER_CHANNEL", "W8A16"):
        s = amax.float().reshape(-1) / 127.0
        q = (weight / s[:, None]).round().clamp(-128, 127).to(torch.int8)
        return {"weight": q, "weight_scale": s}
    if algo == "W4A16_AWQ":
        assert w.group_size is not None
        out, n = weight.shape
        if out % 2:
            raise ExportError(f"{lin.name}.weight_quantizer: INT4 needs an even out_features")
        s = amax.float().reshape(out, n // w.group_size) / 7.0
        idx = torch.arange(n) // w.group_size
        q = (weight / s[:, idx]).round().clamp(-8, 7).to(torch.int8)
        return {"weight": pack_int4_row_pairs(q), "weight_scale": s}
    if algo == "FP8":
        s = amax.float().reshape(()) / 448.0
        return {"weight": (weight / s).to(torch.float8_e4m3fn), "weight_scale": s}
    if algo == "FP8_PER_CHANNEL_PER_TOKEN":
        s = amax.float().reshape(-1) / 448.0
        return {"weight": (weight / s[:, None]).to(torch.float8_e4m3fn), "weight_scale": s}
    if algo == "mxfp4":
        return {"weight": pack_fp4(w.codes), "weight_scale": w.scale.contiguous()}
    if algo == "MXFP8":
        return {"weight": w.codes, "weight_scale": w.scale.contiguous()}
    # NVFP4: the codes and E4M3 block scales of the fake quantization; weight_scale_2 = 1/t,
    # the reciprocal of compressed-tensors' global scale (t = 6 * 448 / amax).
    assert w.global_scale is not None
    return {
        "weight": pack_fp4(w.codes),
        "weight_scale": w.scale.contiguous(),
        "weight_scale_2": torch.reciprocal(w.global_scale.to(torch.float32)).reshape(()),
    }


def _linear_tensors(lin: LinearExport, algo: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    out = {f"{lin.name}.{k}": v for k, v in _weight_tensors(lin, algo).items()}
    bias = getattr(lin.module, "bias", None)
    if isinstance(bias, torch.Tensor):
        out[f"{lin.name}.bias"] = bias.detach()
    a = lin.inputs
    if a is not None and a.amax is not None:
        bound = {"int8": 127.0, "fp8": 448.0, "nvfp4": 6.0 * 448.0}[a.kind]  # MX: dynamic
        out[f"{lin.name}.input_scale"] = (a.amax.float() / bound).reshape(())
    if lin.pre_quant_scale is not None:
        out[f"{lin.name}.pre_quant_scale"] = lin.pre_quant_scale.to(dtype).contiguous()
    return out


def modelopt_hf_checkpoint(
    info: ModelExport, producer: dict[str, str]
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """``(tensors, hf_quant_config, config.json quantization_config)`` of ``info``."""
    tensors = dict(info.plain)
    layers: dict[str, dict[str, Any]] = {}
    for lin in info.linears.values():
        algo, group = _algo(lin)
        tensors.update(_linear_tensors(lin, algo, info.dtype))
        entry: dict[str, Any] = {"quant_algo": algo}
        if group is not None:
            entry["group_size"] = group
        if algo.endswith("_AWQ"):
            entry.update(has_zero_point=False, pre_quant_scale=True)
        layers[lin.name] = entry
    for name, kv in info.kv.items():
        tensors[f"{name}.k_proj.k_scale"] = (kv.k_amax / 448.0).reshape(())
        tensors[f"{name}.v_proj.v_scale"] = (kv.v_amax / 448.0).reshape(())
    kv_algo = "FP8" if info.kv else None
    distinct = {tuple(sorted(e.items())) for e in layers.values()}
    quant: dict[str, Any] = {}
    if len(distinct) == 1:
        quant = dict(next(iter(layers.values())))
        quant["kv_cache_quant_algo"] = kv_algo
        quant["exclude_modules"] = sorted(info.unquantized)
    else:
        quant = {
            "quant_algo": "MIXED_PRECISION" if layers else None,
            "kv_cache_quant_algo": kv_algo,
            "quantized_layers": layers,
        }
    hf_quant_config = {"producer": producer, "quantization": quant}
    config_block: dict[str, Any] = {
        "quant_method": "modelopt",
        "quant_algo": quant["quant_algo"],
        "producer": producer,
        "ignore": quant.get("exclude_modules", []),
        "kv_cache_scheme": {"dynamic": False, "num_bits": 8, "type": "float"} if kv_algo else None,
    }
    if "group_size" in quant:
        config_block["group_size"] = quant["group_size"]
    if "quantized_layers" in quant:
        config_block["quantized_layers"] = layers
    if info.experts:
        tensors, hf_quant_config, config_block = _hub_names(
            info, tensors, hf_quant_config, config_block
        )
    return tensors, hf_quant_config, config_block


def _hub_names(
    info: ModelExport,
    tensors: dict[str, torch.Tensor],
    hf_quant_config: dict[str, Any],
    config_block: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Tensor and module names of a model with split fused experts as the hub checkpoint
    names them (``hub_names``), in the tensors and in both config blocks alike."""
    name = hub_namer(info.model_type)
    renamed = {name(k): v for k, v in tensors.items()}
    if len(renamed) != len(tensors):
        raise ExportError("renaming to the hub checkpoint's names made two tensor names equal")
    for block in (hf_quant_config["quantization"], config_block):
        for field in ("exclude_modules", "ignore"):
            if field in block:
                block[field] = sorted(name(m) for m in block[field])
        if "quantized_layers" in block:
            block["quantized_layers"] = {name(k): v for k, v in block["quantized_layers"].items()}
    return renamed, hf_quant_config, config_block
