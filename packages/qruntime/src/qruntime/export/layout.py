"""What a quantized model holds, read once for every exporter: quantized linears, their
activation quantizers, KV-cache scales, and the plain tensors around them.

Why one reader for both formats: the rules for what is exportable at all (a quantizer that no
format stores, an output quantizer, a SequentialQuantizer) do not depend on the format, and the
error must name the quantizer the same way. Format-specific limits live in the writers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

import torch
from qconfig.spec import resolve_spec
from torch import nn

from qruntime.compress.layer import PACKED_NAME, is_compressed, packed_weight
from qruntime.export.errors import ExportError
from qruntime.export.experts import expert_projections, is_fused_experts
from qruntime.export.weights import QuantizedWeight, check_weight, nvfp4_from_codes, quantize_weight
from qruntime.modules.convert import is_converted, original_class
from qruntime.packing import unpack_fp4
from qruntime.quantizer import SequentialQuantizer, TensorQuantizer

__all__ = ["ActivationQuant", "KVScales", "LinearExport", "ModelExport", "read_model"]

_LINEAR_QUANTIZERS = ("weight_quantizer", "input_quantizer", "output_quantizer")
_KV_QUANTIZERS = ("k_bmm_quantizer", "v_bmm_quantizer")
_ATTENTION_QUANTIZERS = ("q_bmm_quantizer", "k_bmm_quantizer", "v_bmm_quantizer", "p_bmm_quantizer")


@dataclass(frozen=True)
class ActivationQuant:
    """An input quantizer: ``kind`` and its calibrated float32 ``amax`` (None when dynamic)."""

    kind: Literal["int8", "fp8", "fp8_token", "nvfp4", "mxfp4", "mxfp8"]
    amax: torch.Tensor | None


@dataclass
class LinearExport:
    """One linear (``nn.Linear`` or GPT-2's ``Conv1D``, weight ``[out, in]``) with a quantized
    weight."""

    name: str
    module: nn.Module
    weight: QuantizedWeight
    inputs: ActivationQuant | None
    pre_quant_scale: torch.Tensor | None
    conv1d: bool
    #: The fused experts container this projection was split from (None for a real linear).
    experts: str | None = None


@dataclass(frozen=True)
class KVScales:
    """FP8 KV-cache amaxes of one attention module (float32 scalars)."""

    k_amax: torch.Tensor
    v_amax: torch.Tensor


@dataclass
class ModelExport:
    """Everything an exporter writes: quantized linears, KV scales, the unquantized linears
    (ignore lists) and the model's other tensors (``plain``, keyed by state_dict name)."""

    linears: dict[str, LinearExport] = field(default_factory=dict)
    kv: dict[str, KVScales] = field(default_factory=dict)
    unquantized: list[str] = field(default_factory=list)
    plain: dict[str, torch.Tensor] = field(default_factory=dict)
    dtype: torch.dtype = torch.float32
    dropped: list[str] = field(default_factory=list)
    #: Names of the fused experts containers split into per-expert linears.
    experts: list[str] = field(default_factory=list)
    #: ``config.model_type`` of a Hugging Face model (hub tensor names of fused experts).
    model_type: str | None = None


def _enabled(q: object) -> bool:
    return isinstance(q, TensorQuantizer) and q.is_enabled


def _is_conv1d(module: nn.Module) -> bool:
    return original_class(module).__name__ == "Conv1D"


def _activation(name: str, q: TensorQuantizer) -> ActivationQuant:
    # the configured attributes, not the runtime ones: a forward rewrites per-token blocks
    # into an axis, which would read as per channel
    spec = resolve_spec(q.config)
    amax = q.amax.detach().float() if q.amax is not None else None
    if spec.rotate.enable or spec.bias is not None or spec.unsigned:
        raise ExportError(
            f"{name}: a rotated, affine or unsigned activation quantizer; checkpoint formats "
            "store symmetric per-tensor (or dynamic per-token FP8) input scales only"
        )
    family = spec.family
    if family == "nvfp4" and spec.is_dynamic_block and spec.dynamic_block_size(2) == 16:
        if amax is None:
            raise ExportError(f"{name}: NVFP4 inputs without a calibrated global amax; calibrate")
        return ActivationQuant("nvfp4", amax.amax().reshape(()))
    if family == "mx" and spec.dynamic_block_size(2) == 32 and spec.num_bits in ((2, 1), (4, 3)):
        return ActivationQuant("mxfp4" if spec.num_bits == (2, 1) else "mxfp8", None)
    if family == "fp" and spec.num_bits == (4, 3) and spec.strategy == "token" and spec.is_dynamic:
        return ActivationQuant("fp8_token", None)
    if spec.strategy == "tensor" and not spec.is_dynamic and amax is not None and amax.numel() == 1:
        if family == "int" and spec.num_bits == 8:
            return ActivationQuant("int8", amax.reshape(()))
        if family == "fp" and spec.num_bits == (4, 3):
            return ActivationQuant("fp8", amax.reshape(()))
    raise ExportError(
        f"{name}: input quantizer {spec.describe()} is not expressible; checkpoints store static "
        "per-tensor INT8/FP8 input scales, dynamic per-token FP8, or NVFP4 with a global amax"
    )


class _Policy:
    """What to do with a quantizer no checkpoint field holds: raise (default), or, when the
    caller asked to drop such quantizers, warn once per quantizer and go on without it."""

    def __init__(self, drop: bool) -> None:
        self.drop = drop
        self.dropped: list[str] = []

    def __call__(self, quantizer: str, message: str) -> None:
        if not self.drop:
            raise ExportError(
                f"{quantizer}: {message}; disable it, or pass drop_unexportable=True "
                "(CLI --drop-unexportable) to write the checkpoint without it"
            )
        self.dropped.append(quantizer)
        warnings.warn(
            f"{quantizer}: {message}; dropped: the checkpoint computes without it",
            UserWarning,
            stacklevel=4,
        )


def _kv(name: str, module: nn.Module, policy: _Policy) -> KVScales | None:
    for attr in ("q_bmm_quantizer", "p_bmm_quantizer"):
        if _enabled(getattr(module, attr, None)):
            policy(f"{name}.{attr}", f"attention {attr[0]} quantization has no checkpoint field")
    k, v = (getattr(module, a, None) for a in _KV_QUANTIZERS)
    if not (_enabled(k) or _enabled(v)):
        return None
    amaxes = []
    for attr, q in zip(_KV_QUANTIZERS, (k, v), strict=True):
        spec = q.spec if isinstance(q, TensorQuantizer) else None
        ok = (
            _enabled(q)
            and spec is not None
            and spec.family == "fp"
            and spec.num_bits == (4, 3)
            and spec.strategy == "tensor"
            and q.amax is not None
            and q.amax.numel() == 1
        )
        if not ok:
            policy(
                f"{name}.{attr}",
                "KV-cache quantization other than calibrated per-tensor FP8 with both K and V "
                "enabled (FP8_KV_CFG) has no checkpoint field",
            )
            return None
        amaxes.append(q.amax.detach().float().reshape(()))
    return KVScales(*amaxes)


def _check_children(name: str, module: nn.Module, linear: bool, policy: _Policy) -> None:
    """Every enabled quantizer of a module that is not a linear's weight/input, nor a K/V one,
    has no checkpoint field (a LayerNorm's input quantizer, an embedding's weight quantizer, an
    output quantizer)."""
    if isinstance(module, nn.ModuleList) and all(isinstance(q, TensorQuantizer) for q in module):
        return  # a list of per-expert quantizers: its owner checks it
    kind = original_class(module).__name__
    experts = is_fused_experts(module)
    for attr, child in module.named_children():
        if experts and attr.endswith(("_input_quantizer", "_weight_quantizers")):
            continue  # read by expert_projections
        if isinstance(child, SequentialQuantizer):
            raise ExportError(
                f"{name}.{attr}: a SequentialQuantizer (e.g. W4A8's two-level weight "
                "quantizer) is not written by this exporter; use a single weight format"
            )
        if isinstance(child, nn.ModuleList):
            for i, q in enumerate(child):
                if _enabled(q):
                    raise ExportError(
                        f"{name}.{attr}.{i}: fused-expert quantizers are not written by this "
                        "exporter yet; exclude the experts (e.g. '*experts*': enable false)"
                    )
            continue
        if not _enabled(child) or attr in _ATTENTION_QUANTIZERS:
            continue
        if linear and attr in ("weight_quantizer", "input_quantizer"):
            continue
        if attr == "output_quantizer":
            policy(f"{name}.{attr}", "output quantization has no checkpoint field")
        else:
            policy(
                f"{name}.{attr}",
                f"a quantizer on a {kind} has no checkpoint field (checkpoints quantize Linear "
                "and Conv1D weights and inputs, and K/V caches)",
            )


def read_model(model: nn.Module, *, drop_unexportable: bool = False) -> ModelExport:
    """Read ``model`` (a qruntime-quantized model) into a :class:`ModelExport`.

    A quantizer no checkpoint field holds raises :class:`ExportError`; with
    ``drop_unexportable`` it is left out with a warning instead (the checkpoint then computes
    without it). A quantizer a field holds but in a layout the formats cannot express always
    raises.
    """
    policy = _Policy(drop_unexportable)
    owners: dict[int, list[str]] = {}
    for pname, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(pname)
    out = ModelExport()
    params = [p for p in model.parameters() if p.is_floating_point()]
    out.dtype = params[0].dtype if params else torch.float32
    out.model_type = getattr(getattr(model, "config", None), "model_type", None)
    quantizer_prefixes: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, (TensorQuantizer, SequentialQuantizer)):
            quantizer_prefixes.append(name + ".")
            continue
        linear = isinstance(module, nn.Linear) or _is_conv1d(module)
        _check_children(name, module, linear, policy)
        if is_fused_experts(module):
            for p in expert_projections(name, module):
                iq = p.input_quantizer
                inputs = _activation(p.input_name, iq) if _enabled(iq) else None
                pqs = iq.pre_quant_scale
                pqs = None if pqs is None else pqs.detach()
                out.linears[p.name] = LinearExport(
                    p.name, p.module, p.weight, inputs, pqs, False, name
                )
                if name not in out.experts:
                    out.experts.append(name)
            continue
        kv = _kv(name, module, policy)
        if kv is not None:
            out.kv[name] = kv
        wq = getattr(module, "weight_quantizer", None)
        if not isinstance(wq, TensorQuantizer):
            if isinstance(module, nn.Linear):
                out.unquantized.append(name)
            continue
        weight = getattr(module, "weight", None)
        iq = getattr(module, "input_quantizer", None)
        if not linear:
            continue  # its enabled quantizers were reported above
        if not wq.is_enabled:
            if _enabled(iq):
                policy(
                    f"{name}.input_quantizer",
                    "input quantization without weight quantization has no checkpoint field",
                )
            out.unquantized.append(name)
            continue
        if not isinstance(weight, torch.Tensor):
            raise ExportError(f"{name}.weight_quantizer: the module has no weight tensor")
        tied = [o for o in owners.get(id(weight), []) if o != f"{name}.weight"]
        if tied:
            raise ExportError(
                f"{name}.weight_quantizer: the weight is tied to {tied[0]}, which a checkpoint "
                "stores once: a quantized copy cannot be tied; disable this quantizer (as the "
                "presets do for lm_head) or untie the weights before quantizing"
            )
        qw = _weight(f"{name}.weight_quantizer", module, weight, wq)
        inputs = _activation(f"{name}.input_quantizer", iq) if _enabled(iq) else None
        pqs = iq.pre_quant_scale if isinstance(iq, TensorQuantizer) else None
        out.linears[name] = LinearExport(
            name, module, qw, inputs, None if pqs is None else pqs.detach(), _is_conv1d(module)
        )
    out.plain = _plain_tensors(model, quantizer_prefixes, out)
    out.dropped = policy.dropped
    return out


def _weight(
    name: str, module: nn.Module, weight: torch.Tensor, wq: TensorQuantizer
) -> QuantizedWeight:
    """Codes and scales of a layer's weight; a compressed layer's (``qruntime.compress``) come
    from its packed form where re-deriving them from the decoded weight could change them
    (NVFP4 block scales), else from the decoded weight, which is already fake-quantized."""
    if not is_compressed(module):
        return quantize_weight(name, weight, wq)
    packed = packed_weight(module)
    decoded = module.weight
    if packed.kind == "nvfp4" and len(packed.shape) == 2 and packed.block == 16:
        encoded = packed.encoded()
        assert encoded.extra is not None
        out, n = packed.shape
        codes = unpack_fp4(encoded.codes).reshape(out, -1)[:, :n]
        qw = nvfp4_from_codes(name, codes.contiguous(), encoded.scale, encoded.extra)
        check_weight(name, qw, wq, decoded)
        return qw
    if packed.kind == "mx" and len(packed.shape) == 2 and packed.block == 32:
        encoded = packed.encoded()
        out, n = packed.shape
        if encoded.num_bits == 4:
            codes = unpack_fp4(encoded.codes).reshape(out, -1)[:, :n].contiguous()
            kind = "mxfp4"
        else:
            codes = encoded.codes.reshape(out, -1)[:, :n].contiguous()
            kind = "mxfp8"
        scale = encoded.scale.reshape(out, -1)[:, : n // 32].contiguous()
        bits = encoded.num_bits
        qw = QuantizedWeight(kind, codes, scale, bits, "group", 32, torch.empty(0))
        check_weight(name, qw, wq, decoded)
        return qw
    return quantize_weight(name, decoded, wq, reference=decoded)


def _plain_tensors(
    model: nn.Module, quantizer_prefixes: list[str], out: ModelExport
) -> dict[str, torch.Tensor]:
    """The state_dict without quantizer buffers, quantized weights, or a second copy of a tied
    tensor; unquantized Conv1D weights back in Hugging Face's ``[in, out]`` layout."""
    quantized = {f"{n}.weight" for n in out.linears}
    for name in out.experts:
        module = model.get_submodule(name)
        quantized |= {f"{name}.{p}" for p in (module.first_projection, "down_proj")}
    quantizer_prefixes = quantizer_prefixes + [
        f"{n}.{PACKED_NAME}." for n, m in model.named_modules() if is_compressed(m)
    ]
    conv1d_plain = {
        f"{n}.weight"
        for n, m in model.named_modules()
        if _is_conv1d(m) and n not in out.linears and is_converted(m)
    }
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    plain = {}
    for key, tensor in model.state_dict().items():
        if key in quantized or any(key.startswith(p) for p in quantizer_prefixes):
            continue
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and ident in seen:
            continue  # a tied weight: Hugging Face re-ties it on load
        seen.add(ident)
        plain[key] = tensor.t().contiguous() if key in conv1d_plain else tensor
    return plain
