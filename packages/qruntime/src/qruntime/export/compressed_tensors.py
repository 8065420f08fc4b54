"""The compressed-tensors checkpoint (``quant_method: "compressed-tensors"``): what vLLM and
Hugging Face transformers load.

Per quantized Linear (docs/export.md has the tables): INT4/INT8 weight-only as
``pack-quantized`` (``weight_packed`` int32, ``weight_scale``, ``weight_shape``), INT weights with
quantized inputs as ``int-quantized`` (int8 ``weight``), FP8 as ``float-quantized`` (or
``naive-quantized`` without quantized inputs), NVFP4 as ``nvfp4-pack-quantized`` (uint8
``weight_packed``, E4M3 ``weight_scale``, float32 ``weight_global_scale`` divisor). Scales are in
the model dtype (float32 global scales); KV-cache scales sit on the attention module as
``k_scale``/``v_scale``. The format has no ``pre_quant_scale`` and compresses only ``Linear``.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from qruntime.export.errors import ExportError
from qruntime.export.layout import LinearExport, ModelExport
from qruntime.numerics.fp8 import e4m3_scales
from qruntime.packing import pack_fp4, pack_int32

__all__ = ["FORMAT_VERSION", "compressed_tensors_checkpoint"]

#: The compressed-tensors version whose layout this writer follows (written as ``version``).
FORMAT_VERSION = "0.20.1"


def _args(num_bits: int, kind: str, strategy: str, **extra: Any) -> dict[str, Any]:
    args = {
        "num_bits": num_bits,
        "type": kind,
        "symmetric": True,
        "strategy": strategy,
        "group_size": None,
        "dynamic": False,
    }
    args.update(extra)
    return args


def _weight_args(lin: LinearExport) -> dict[str, Any]:
    w = lin.weight
    if w.kind == "nvfp4":
        return _args(4, "float", "tensor_group", group_size=16, scale_dtype="torch.float8_e4m3fn")
    if w.kind in ("mxfp4", "mxfp8"):
        return _args(w.num_bits, "float", "group", group_size=32, scale_dtype="torch.uint8")
    kind = "int" if w.kind == "int" else "float"
    if w.strategy == "group":
        return _args(w.num_bits, kind, "group", group_size=w.group_size)
    return _args(w.num_bits, kind, w.strategy)


def _input_args(lin: LinearExport) -> dict[str, Any] | None:
    a = lin.inputs
    if a is None:
        return None
    if a.kind == "int8":
        return _args(8, "int", "tensor")
    if a.kind == "fp8":
        return _args(8, "float", "tensor")
    if a.kind == "fp8_token":
        return _args(8, "float", "token", dynamic=True)
    if a.kind in ("mxfp4", "mxfp8"):
        bits = 4 if a.kind == "mxfp4" else 8
        return _args(bits, "float", "group", group_size=32, dynamic=True, scale_dtype="torch.uint8")
    return _args(4, "float", "tensor_group", group_size=16, dynamic="local",
                 scale_dtype="torch.float8_e4m3fn")  # fmt: skip


def _format(lin: LinearExport) -> str:
    """The compressor compressed-tensors picks for this scheme (its inference order)."""
    w, a = lin.weight, lin.inputs
    if w.kind == "nvfp4":
        return "nvfp4-pack-quantized"
    if w.kind == "mxfp4":
        return "mxfp4-pack-quantized"
    if w.kind == "mxfp8":
        return "mxfp8-quantized"
    if w.kind == "int":
        if a is not None:
            return "int-quantized"
        return "pack-quantized"
    return "float-quantized" if a is not None else "naive-quantized"


def _scale(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.to(dtype).contiguous()


def _linear_tensors(lin: LinearExport, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    w = lin.weight
    p = lin.name
    out: dict[str, torch.Tensor] = {}
    fmt = _format(lin)
    if fmt == "mxfp4-pack-quantized":
        out[f"{p}.weight_packed"] = pack_fp4(w.codes)
        out[f"{p}.weight_scale"] = w.scale.contiguous()
    elif fmt == "mxfp8-quantized":
        out[f"{p}.weight"] = w.codes
        out[f"{p}.weight_scale"] = w.scale.contiguous()
    elif fmt == "nvfp4-pack-quantized":
        assert w.global_scale is not None
        out[f"{p}.weight_packed"] = pack_fp4(w.codes)
        out[f"{p}.weight_scale"] = w.scale.contiguous()
        out[f"{p}.weight_global_scale"] = w.global_scale.to(torch.float32).reshape(1)
    elif fmt == "pack-quantized":
        out[f"{p}.weight_packed"] = pack_int32(w.codes, w.num_bits)
        out[f"{p}.weight_scale"] = _scale(w.scale, dtype)
        out[f"{p}.weight_shape"] = torch.tensor(list(w.codes.shape), dtype=torch.int64)
    else:
        out[f"{p}.weight"] = w.codes
        scale = w.scale.reshape(1) if w.strategy == "tensor" else w.scale
        out[f"{p}.weight_scale"] = _scale(scale, dtype)
    bias = getattr(lin.module, "bias", None)
    if isinstance(bias, torch.Tensor):
        out[f"{p}.bias"] = bias.detach()
    a = lin.inputs
    if a is not None and a.amax is not None:
        if a.kind == "nvfp4":
            g = torch.div(torch.tensor(6.0 * 448.0), a.amax.to(torch.float32))
            out[f"{p}.input_global_scale"] = g.reshape(1)
        else:
            qmax = 127.0 if a.kind == "int8" else 448.0
            if a.kind == "fp8":
                _, inv = e4m3_scales(a.amax)  # the multiplier the fake quantization used
            else:
                inv = torch.reciprocal(torch.div(torch.tensor(qmax), a.amax.float()))
            out[f"{p}.input_scale"] = _scale(inv.reshape(1), dtype)
    return out


def _check(lin: LinearExport) -> None:
    if lin.conv1d:
        raise ExportError(
            f"{lin.name}.weight_quantizer: compressed-tensors compresses only Linear and "
            "Embedding modules, not GPT-2's Conv1D; export format='modelopt-hf' instead"
        )
    if lin.pre_quant_scale is not None:
        raise ExportError(
            f"{lin.name}.input_quantizer: a pre_quant_scale (AWQ/SmoothQuant) has no field in "
            "compressed-tensors; fold it into the preceding layer before exporting, or export "
            "format='modelopt-hf', which stores <module>.pre_quant_scale"
        )
    w = lin.weight
    a = lin.inputs.kind if lin.inputs is not None else None
    if a in ("nvfp4", "mxfp4", "mxfp8") and w.kind != a:
        raise ExportError(
            f"{lin.name}.input_quantizer: {a.upper()} inputs with {w.kind.upper()} weights have "
            f"no compressed-tensors compressor; use {a.upper()} weights"
        )
    if w.kind in ("mxfp4", "mxfp8") and a not in (None, w.kind):
        raise ExportError(
            f"{lin.name}.input_quantizer: {w.kind.upper()} weights with {a} inputs have no "
            "compressed-tensors compressor; use the same MX inputs or none"
        )
    if w.kind == "nvfp4" and lin.inputs is not None and lin.inputs.kind != "nvfp4":
        raise ExportError(
            f"{lin.name}.input_quantizer: NVFP4 weights with {lin.inputs.kind} inputs have no "
            "compressed-tensors compressor; use NVFP4 or no input quantization"
        )


def compressed_tensors_checkpoint(
    info: ModelExport,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, quantization_config)`` of the compressed-tensors checkpoint of ``info``."""
    if info.experts:
        # not verified against a compressed-tensors loader of per-expert MoE tensors yet
        raise ExportError(
            f"{info.experts[0]}: fused MoE experts are not written in compressed-tensors by "
            "this exporter; use format='modelopt-hf', or exclude the experts "
            "(e.g. '*experts*': enable false)"
        )
    tensors = dict(info.plain)
    schemes: list[tuple[str, dict[str, Any]]] = []  # (format, scheme) per distinct scheme
    targets: list[list[str]] = []
    for lin in info.linears.values():
        _check(lin)
        tensors.update(_linear_tensors(lin, info.dtype))
        scheme = {
            "weights": _weight_args(lin),
            "input_activations": _input_args(lin),
            "output_activations": None,
        }
        key = (_format(lin), scheme)
        if key in schemes:
            targets[schemes.index(key)].append(lin.name)
        else:
            schemes.append(key)
            targets.append([lin.name])
    single = len(schemes) == 1
    groups = {}
    for i, ((fmt, scheme), names) in enumerate(zip(schemes, targets, strict=True)):
        groups[f"group_{i}"] = {
            "targets": ["Linear"] if single else names,
            "format": fmt,
            **scheme,
        }
    for name, kv in info.kv.items():
        _, k_inv = e4m3_scales(kv.k_amax)
        _, v_inv = e4m3_scales(kv.v_amax)
        tensors[f"{name}.k_scale"] = _scale(k_inv.reshape(1), info.dtype)
        tensors[f"{name}.v_scale"] = _scale(v_inv.reshape(1), info.dtype)
    formats = sorted({fmt for fmt, _ in schemes})
    config = {
        "quant_method": "compressed-tensors",
        "format": formats[0] if len(formats) == 1 else ("mixed-precision" if formats else "dense"),
        "quantization_status": "compressed",
        "config_groups": groups,
        "ignore": sorted(info.unquantized) if single else [],
        "kv_cache_scheme": _args(8, "float", "tensor") if info.kv else None,
        "global_compression_ratio": None,
        "sparsity_config": {},
        "transform_config": {},
        "version": FORMAT_VERSION,
    }
    json.dumps(config)  # fail here, not halfway through writing, if something is not JSON
    return tensors, config
