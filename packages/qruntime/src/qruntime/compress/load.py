"""Import a compressed-tensors checkpoint into qruntime's fake-quant form.

``load_quantized(directory, model)`` reads a checkpoint written by :func:`qruntime.export` or by
compressed-tensors itself and returns a float model whose quantized Linears hold the *decoded*
weights (``W' = (q - Z) * S`` and the FP4/MX variants, exactly as the format defines them) and
whose quantizers are configured from the ``quantization_config`` with amaxes derived from the
stored scales, so that the fake quantization reproduces the checkpoint's codes:

- INT ``b`` bits: ``amax = S * (2^(b-1) - 1)`` (the fake quant's scale ``qmax / amax`` is then
  ``1 / S``); FP8: ``amax = S * 448``; NVFP4: global ``amax = 448 * 6 / weight_global_scale``
  (compressed-tensors stores the reciprocal); MX: no amax (dynamic E8M0).
- static inputs: ``input_scale * 448`` (FP8) or ``* 127`` (INT8), NVFP4 inputs
  ``448 * 6 / input_global_scale``; dynamic inputs stay dynamic; ``k_scale``/``v_scale`` on an
  attention module become its ``k_bmm_quantizer``/``v_bmm_quantizer`` amax (``* 448``).

What the fake-quant model cannot hold is refused by name (asymmetric zero points, block
strategies, activation orders with ``g_idx``, transforms). Layers are matched to config groups
by compressed-tensors' rules: exact module name, ``re:`` prefix match, or a class name in the
module's MRO (``Linear``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from qruntime import packing
from qruntime.numerics.fp8 import e4m3_scales

__all__ = ["CheckpointImportError", "load_quantized"]


#: The per-layer tensors the decoders read; anything else of a quantized layer is refused.
_WEIGHT_TENSORS = ("weight", "weight_packed", "weight_scale", "weight_shape", "weight_global_scale")
_INPUT_TENSORS = ("input_scale", "input_global_scale")


class CheckpointImportError(ValueError):
    """A checkpoint (or one of its layers) that qruntime's fake-quant form cannot hold."""


# ------------------------------------------------------------------------------------- files
def _read_tensors(directory: Path) -> dict[str, torch.Tensor]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        out: dict[str, torch.Tensor] = {}
        for shard in shards:
            out.update(load_file(str(directory / shard)))
        return out
    single = directory / "model.safetensors"
    if not single.is_file():
        raise CheckpointImportError(f"{directory} has no model.safetensors (or index)")
    return load_file(str(single))


def _quantization_config(directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointImportError(f"{directory} has no config.json")
    config = json.loads(path.read_text())
    qc = config.get("quantization_config")
    if not isinstance(qc, dict) or qc.get("quant_method") != "compressed-tensors":
        raise CheckpointImportError(
            f"{path}: quantization_config.quant_method is not 'compressed-tensors' "
            f"(got {None if not isinstance(qc, dict) else qc.get('quant_method')!r})"
        )
    if qc.get("quantization_status", "compressed") != "compressed":
        raise CheckpointImportError(
            f"{path}: quantization_status {qc.get('quantization_status')!r}; only 'compressed' "
            "checkpoints hold packed weights"
        )
    if qc.get("transform_config"):
        raise CheckpointImportError(f"{path}: transform_config (rotations) is not supported")
    return config, qc


def _build_model(directory: Path, config: dict[str, Any]) -> nn.Module:
    import transformers  # only needed when no model is given

    archs = config.get("architectures") or []
    if not archs or not hasattr(transformers, archs[0]):
        raise CheckpointImportError(
            f"{directory}/config.json names no transformers architecture ({archs!r}); pass model="
        )
    plain = {k: v for k, v in config.items() if k != "quantization_config"}
    hf_config = transformers.AutoConfig.for_model(**plain)
    cls = getattr(transformers, archs[0])
    dtype = getattr(torch, str(plain.get("torch_dtype") or plain.get("dtype") or "float32"))
    return cls(hf_config).to(dtype).eval()


# ---------------------------------------------------------------------------------- matching
def _matches(entry: str, name: str, module: nn.Module) -> bool:
    if entry == name:
        return True
    if entry.startswith("re:"):
        return re.match(entry[3:], name) is not None
    return any(cls.__name__ == entry for cls in type(module).__mro__)


def _scheme_for(
    name: str, module: nn.Module, groups: Mapping[str, Any], ignore: list[str]
) -> dict[str, Any] | None:
    if any(_matches(entry, name, module) for entry in ignore):
        return None
    for group in groups.values():
        if isinstance(group, dict) and any(_matches(t, name, module) for t in group["targets"]):
            return group
    return None


# ---------------------------------------------------------------------------------- decoding
def _strategy(args: Mapping[str, Any]) -> str:
    strategy = args.get("strategy")
    if strategy:
        return str(strategy)
    gs = args.get("group_size")
    return "tensor" if gs is None else ("channel" if gs == -1 else "group")


def _expand(scale: torch.Tensor, shape: tuple[int, int], strategy: str, gs: Any) -> torch.Tensor:
    s = scale.to(torch.float32)
    if strategy == "tensor":
        return s.reshape(1, 1)
    if strategy == "channel":
        return s.reshape(-1, 1)
    return s.reshape(shape[0], -1).repeat_interleave(int(gs), dim=1)[:, : shape[1]]


def _weight_quantizer(name: str, args: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """The qruntime weight attributes of compressed-tensors args."""
    strategy, bits, kind = _strategy(args), int(args["num_bits"]), args.get("type", "int")
    if strategy not in ("tensor", "channel", "group", "tensor_group"):
        raise CheckpointImportError(f"{name}: weight strategy {strategy!r} is not supported")
    if not args.get("symmetric", True):
        raise CheckpointImportError(
            f"{name}: asymmetric weights (zero points) have no qruntime fake-quant form yet"
        )
    if args.get("actorder") in ("group", "dynamic", True):
        raise CheckpointImportError(f"{name}: activation order with g_idx is not supported")
    gs = args.get("group_size")
    if fmt == "nvfp4-pack-quantized":
        return {
            "num_bits": (2, 1),
            "block_sizes": {-1: int(gs or 16), "type": "dynamic", "scale_bits": (4, 3)},
        }
    if fmt == "mxfp4-pack-quantized":
        return {
            "num_bits": (2, 1),
            "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)},
        }
    if fmt == "mxfp8-quantized":
        return {
            "num_bits": (4, 3),
            "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)},
        }
    num_bits: Any = (4, 3) if kind == "float" and bits == 8 else bits
    if kind == "float" and bits != 8:
        raise CheckpointImportError(f"{name}: float weights of {bits} bits outside NVFP4/MX")
    attrs: dict[str, Any] = {"num_bits": num_bits}
    if strategy == "channel":
        attrs["axis"] = 0
    elif strategy == "group":
        attrs["block_sizes"] = {-1: int(gs)}
    return attrs


def _ulps(start: torch.Tensor, radius: int) -> list[torch.Tensor]:
    """``start`` and its float32 neighbours, nearest first (up to ``radius`` ulps away)."""
    out, up, down = [start], start, start
    for _ in range(radius):
        up = torch.nextafter(up, torch.full_like(up, float("inf")))
        down = torch.nextafter(down, torch.zeros_like(down))
        out += [up, down]
    return out


def _search(start: torch.Tensor, fn: Any, target: torch.Tensor, radius: int = 8) -> torch.Tensor:
    """The float32 value nearest ``start`` (within ``radius`` ulps) for which ``fn(value) ==
    target`` elementwise; ``start`` where none is."""
    best, found = start.clone(), torch.zeros_like(start, dtype=torch.bool)
    for cand in _ulps(start, radius):
        hit = ~found & (fn(cand) == target)
        best = torch.where(hit, cand, best)
        found = found | hit
    return best


def _amax_for(scale: torch.Tensor, factor: Any, numerator: float) -> torch.Tensor:
    """An amax whose fake-quant factor ``factor(amax)`` (the INT divisor, the E4M3 multiplier)
    has the stored multiplier ``S`` as its float32 reciprocal.

    The exporter stored ``S = f32(1 / s)``. Several ``s`` may share that reciprocal and not
    every ``s`` is some ``factor(amax)``; the nearest ``f32(1 / S)`` that is both is taken,
    which is the exporter's own ``s`` unless two candidates qualify (then within one ulp).
    """
    stored = scale.to(torch.float32)
    best = torch.div(torch.tensor(numerator), torch.reciprocal(stored))
    found = torch.zeros_like(stored, dtype=torch.bool)
    for s in _ulps(torch.reciprocal(stored), 4):
        ok = ~found & (torch.reciprocal(s) == stored)
        if not bool(ok.any()):
            continue
        amax = _search(torch.div(torch.tensor(numerator), s), factor, s)
        hit = ok & (factor(amax) == s)
        best = torch.where(hit, amax, best)
        found = found | hit
    return best


def _int_amax(scale: torch.Tensor, qmax: float) -> torch.Tensor:
    """INT: the divisor is ``f32(qmax / amax)``."""
    return _amax_for(scale, lambda a: torch.div(torch.tensor(qmax), a), qmax)


def _fp8_amax(scale: torch.Tensor) -> torch.Tensor:
    """FP8: the multiplier is ``f32(f32(1 / amax) * 448)``."""
    return _amax_for(scale, lambda a: e4m3_scales(a)[0], 448.0)


def _nvfp4_amax(global_scale: torch.Tensor) -> torch.Tensor:
    """A global amax whose ``f32(6 / amax)`` times 448 (in float64, rounded to float32) is the
    stored ``weight_global_scale`` (or ``input_global_scale``)."""
    g = global_scale.to(torch.float32).reshape(())
    u = (g.to(torch.float64) / 448.0).to(torch.float32)
    u = _search(u, lambda v: (v.to(torch.float64) * 448.0).to(torch.float32), g)
    start = torch.div(torch.tensor(6.0), u)
    return _search(start, lambda a: torch.div(torch.tensor(6.0), a), u)


def _decode_weight(
    name: str, tensors: Mapping[str, torch.Tensor], args: Mapping[str, Any], fmt: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(W' in float32, the weight quantizer's amax or None)``.

    ``W'`` is computed with the fake quantization's own last step (INT: ``q / f32(qmax / amax)``,
    FP8: ``c * f32(1 / scale)``, NVFP4: ``e2m1 * f32(f64(block scale) / t)``) from the amax the
    stored scales give, not with the format's ``q * S``: the two differ by at most an ulp, and
    this way a checkpoint of :func:`qruntime.export` comes back bit for bit (the re-quantization
    of ``W'`` by the restored quantizer returns ``W'`` itself).
    """
    p = f"{name}."
    strategy, gs = _strategy(args), args.get("group_size")
    if f"{p}weight_zero_point" in tensors:
        raise CheckpointImportError(f"{name}: asymmetric weights (zero points) are not supported")
    if fmt in ("nvfp4-pack-quantized", "mxfp4-pack-quantized"):
        vals = packing.fp4_values(packing.unpack_fp4(tensors[f"{p}weight_packed"]))
        cols = vals.shape[1]
        scale = tensors[f"{p}weight_scale"]
        if fmt == "mxfp4-pack-quantized":
            factor = packing.e8m0_decode(scale).repeat_interleave(32, dim=1)[:, :cols]
            return vals * factor, None
        block = int(gs or 16)
        amax = _nvfp4_amax(tensors[f"{p}weight_global_scale"])
        t = torch.div(torch.tensor(6.0), amax).to(torch.float64) * 448.0
        unscale = (scale.to(torch.float64) / t).to(torch.float32)
        return vals * unscale.repeat_interleave(block, dim=1)[:, :cols], amax
    if fmt == "mxfp8-quantized":
        codes = tensors[f"{p}weight"].to(torch.float32)
        factor = packing.e8m0_decode(tensors[f"{p}weight_scale"])
        return codes * factor.repeat_interleave(32, dim=1)[:, : codes.shape[1]], None
    scale = tensors[f"{p}weight_scale"]
    bits, kind = int(args["num_bits"]), args.get("type", "int")
    if fmt == "pack-quantized":
        shape = tuple(int(v) for v in tensors[f"{p}weight_shape"].tolist())
        q = packing.unpack_int32(tensors[f"{p}weight_packed"], bits, shape).to(torch.float32)
    else:
        q = tensors[f"{p}weight"].to(torch.float32)
    shape2 = (q.shape[0], q.shape[1])
    if kind == "float":
        amax = _fp8_amax(scale)
        w = q * _expand(e4m3_scales(amax)[1], shape2, strategy, gs)
    else:
        amax = _int_amax(scale, float(2 ** (bits - 1) - 1))
        divisor = torch.div(torch.tensor(float(2 ** (bits - 1) - 1)), amax)
        w = q / _expand(divisor, shape2, strategy, gs)
    # the quantizer's amax layout: 0-d per tensor, (out, 1) per channel, one row per group
    return w, amax.reshape(()) if strategy == "tensor" else amax.reshape(-1, 1)


def _input_quantizer(
    name: str, args: Mapping[str, Any] | None, tensors: Mapping[str, torch.Tensor]
) -> tuple[dict[str, Any], torch.Tensor | None] | None:
    if args is None:
        return None
    bits, kind, dynamic = int(args["num_bits"]), args.get("type", "int"), args.get("dynamic")
    strategy = _strategy(args)
    if not args.get("symmetric", True):
        raise CheckpointImportError(f"{name}: asymmetric input activations are not supported")
    p = f"{name}."
    if kind == "float" and bits == 4:
        attrs = {
            "num_bits": (2, 1),
            "block_sizes": {-1: int(args.get("group_size") or 16), "type": "dynamic"},
        }
        attrs["block_sizes"]["scale_bits"] = (4, 3)
        gscale = tensors.get(f"{p}input_global_scale")
        if gscale is None:
            raise CheckpointImportError(f"{name}: NVFP4 inputs without input_global_scale")
        return attrs, _nvfp4_amax(gscale)
    num_bits: Any = (4, 3) if kind == "float" else bits
    if dynamic:
        if strategy == "token":
            return {"num_bits": num_bits, "type": "dynamic", "block_sizes": {-1: None}}, None
        if strategy == "tensor":
            return {"num_bits": num_bits, "type": "dynamic"}, None
        raise CheckpointImportError(f"{name}: dynamic input strategy {strategy!r}")
    if strategy != "tensor":
        raise CheckpointImportError(f"{name}: static input strategy {strategy!r}")
    scale = tensors.get(f"{p}input_scale")
    if scale is None:
        raise CheckpointImportError(f"{name}: static input quantization without input_scale")
    if kind == "float":
        return {"num_bits": num_bits}, _fp8_amax(scale).reshape(())
    return {"num_bits": num_bits}, _int_amax(scale, float(2 ** (bits - 1) - 1)).reshape(())


# ------------------------------------------------------------------------------------ import
def load_quantized(directory: str | Path, model: nn.Module | None = None) -> nn.Module:
    """A fake-quant model equivalent to the compressed-tensors checkpoint in ``directory``.

    ``model``: a float model of the checkpoint's architecture (its weights are overwritten); by
    default one is built from ``config.json`` with transformers. Every tensor of the checkpoint
    must be used: a leftover tensor (a field this importer does not understand) is an error,
    never silently dropped.
    """
    from qruntime.quantize import quantize  # the import runs after the model is read

    d = Path(directory)
    config, qc = _quantization_config(d)
    tensors = _read_tensors(d)
    if model is None:
        model = _build_model(d, config)
    groups, ignore = qc.get("config_groups") or {}, list(qc.get("ignore") or [])
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    quant_cfg: list[dict[str, Any]] = [{"quantizer_name": "*", "enable": False}]
    amaxes: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        scheme = _scheme_for(name, module, groups, ignore)
        weights = scheme.get("weights") if scheme else None
        if f"{name}.weight" in tensors and f"{name}.weight_scale" not in tensors:
            continue  # unquantized (the generic load below takes it)
        if weights is None:
            if any(k.startswith(f"{name}.weight_") for k in tensors):
                raise CheckpointImportError(
                    f"{name}: packed tensors but no config group with weights targets it"
                )
            continue
        fmt = scheme.get("format") or qc.get("format")
        attrs = _weight_quantizer(name, weights, fmt)
        w, amax = _decode_weight(name, tensors, weights, fmt)
        used.update(f"{name}.{k}" for k in _WEIGHT_TENSORS if f"{name}.{k}" in tensors)
        state[f"{name}.weight"] = w.to(dtype)
        quant_cfg.append({"quantizer_name": f"{name}.weight_quantizer", "cfg": attrs})
        amaxes[f"{name}.weight_quantizer"] = (amax, None)
        inputs = _input_quantizer(name, scheme.get("input_activations"), tensors)
        if inputs is not None:
            iattrs, iamax = inputs
            used.update(f"{name}.{k}" for k in _INPUT_TENSORS if f"{name}.{k}" in tensors)
            quant_cfg.append({"quantizer_name": f"{name}.input_quantizer", "cfg": iattrs})
            amaxes[f"{name}.input_quantizer"] = (iamax, None)
    kv = qc.get("kv_cache_scheme")
    for key in [k for k in tensors if k.endswith((".k_scale", ".v_scale"))]:
        if kv is None:
            raise CheckpointImportError(f"{key}: a KV scale without kv_cache_scheme")
        owner, _, which = key.rpartition(".")
        quantizer = f"{owner}.{which[0]}_bmm_quantizer"
        if kv.get("type") == "float":
            num_bits: Any = (4, 3)
            kv_amax = _fp8_amax(tensors[key])
        else:
            num_bits = int(kv["num_bits"])
            kv_amax = _int_amax(tensors[key], float(2 ** (num_bits - 1) - 1))
        quant_cfg.append({"quantizer_name": quantizer, "cfg": {"num_bits": num_bits}})
        amaxes[quantizer] = (kv_amax.reshape(()), None)
        used.add(key)
    plain = {k: v for k, v in tensors.items() if k not in used}
    own = model.state_dict()
    unknown = sorted(set(plain) - set(own))
    if unknown:
        raise CheckpointImportError(
            f"tensors this importer does not understand: {unknown[:5]}"
            + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        )
    state.update({k: v.to(own[k].dtype) for k, v in plain.items()})
    missing = sorted(set(own) - set(state))
    tied = [k for k in missing if not _tied(model, k)]
    if tied:
        raise CheckpointImportError(f"the checkpoint lacks {tied[:5]}")
    model.load_state_dict(state, strict=False)
    quantize(model, {"quant_cfg": quant_cfg, "algorithm": None}, lint="off")
    for qname, (amax, _) in amaxes.items():
        quantizer = model.get_submodule(qname)
        if amax is not None:
            quantizer.amax = amax.to(next(model.parameters()).device)
    return model


def _tied(model: nn.Module, key: str) -> bool:
    """A parameter the checkpoint may omit because it is tied to another (``lm_head.weight``)."""
    config = getattr(model, "config", None)
    return bool(getattr(config, "tie_word_embeddings", False)) and key.endswith("lm_head.weight")
