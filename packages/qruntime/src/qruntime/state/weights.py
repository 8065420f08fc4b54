"""The weights a calibration rewrote, carried by the state file.

Why: SmoothQuant (and the AWQ and GPTQ families) change the weights of the layers they
calibrate — SmoothQuant divides each input channel's column by the scale it puts in the input
quantizer's ``pre_quant_scale``. Quantizer buffers alone then rebuild a model whose weights do
not match its scales, and a fresh model restored from them would compute something else without
any error. So once an algorithm that writes weights has run on a model (``apply_plan`` marks it,
:data:`WEIGHTS_REWRITTEN`), ``save_state`` also stores every weight a quantizer quantizes, under
its parameter name, listed in the metadata ``weights``; ``restore_state`` checks them against
the model (a parameter of the model that a quantizer quantizes, same shape, same dtype, finite)
before anything is touched and writes them into the parameters last.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from qconfig.errors import DocumentError
from torch import nn

from qruntime.apply import WEIGHTS_REWRITTEN
from qruntime.inventory import inventory
from qruntime.modules.base import quantized_weight
from qruntime.state.file import metadata_json

__all__ = [
    "WEIGHTS_REWRITTEN",
    "check_weight_entries",
    "listed_weights",
    "load_weights",
    "quantized_parameters",
    "rewritten_weights",
    "write_weights",
]

_SAFETENSORS_DTYPES = {
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
}


def quantized_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every parameter a weight quantizer of ``model`` quantizes, by ``state_dict`` name."""
    names = {id(p): name for name, p in model.named_parameters(remove_duplicate=False)}
    modules = dict(model.named_modules())
    out: dict[str, nn.Parameter] = {}
    for _, module, site in inventory(model).iter_sites():
        weight = quantized_weight(modules[module.name], site.attribute)
        # an unconverted module may answer with a view of the whole parameter in the
        # quantizer's layout (Conv1D: W.T); a per-expert slice is not the parameter
        base = weight if isinstance(weight, nn.Parameter) else getattr(weight, "_base", None)
        whole = isinstance(base, nn.Parameter) and base.numel() == weight.numel()
        if whole and id(base) in names:
            out[names[id(base)]] = weight
    return out


def rewritten_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights ``save_state`` stores: none unless a calibration rewrote weights."""
    if not model.__dict__.get(WEIGHTS_REWRITTEN, False):
        return {}
    return {
        name: p.detach().cpu().contiguous().clone()
        for name, p in quantized_parameters(model).items()
    }


def listed_weights(metadata: dict[str, str], file: str) -> list[str]:
    """The metadata ``weights`` list (empty for a file without one)."""
    if "weights" not in metadata:
        return []
    where: tuple[int | str, ...] = ("__metadata__", "weights")
    listed = metadata_json(metadata["weights"], file, where)
    if not isinstance(listed, list) or not all(isinstance(k, str) for k in listed):
        raise DocumentError("must be a JSON list of parameter names", file=file, path=where)
    return listed


def check_weight_entries(
    handle: Any, file: str, keys: Iterable[str], parameters: dict[str, nn.Parameter]
) -> None:
    """Each listed weight, from the header: a quantized parameter of the model, same shape,
    same dtype; and the file must hold it."""
    present = set(handle.keys())
    for key in keys:
        if key not in present:
            raise DocumentError(
                "is listed in the file's metadata 'weights' but missing: truncated or edited?",
                file=file,
                path=(key,),
            )
        parameter = parameters.get(key)
        if parameter is None:
            raise DocumentError(
                "is not a weight of this model that a quantizer quantizes",
                file=file,
                path=(key,),
            )
        part = handle.get_slice(key)
        shape, dtype = tuple(part.get_shape()), _SAFETENSORS_DTYPES.get(part.get_dtype())
        if shape != tuple(parameter.shape) or dtype != parameter.dtype:
            raise DocumentError(
                f"has shape {list(shape)} and dtype {part.get_dtype()}; the model's parameter "
                f"has shape {list(parameter.shape)} and dtype {parameter.dtype}",
                file=file,
                path=(key,),
            )


def load_weights(
    handle: Any, file: str, keys: Iterable[str], parameters: dict[str, nn.Parameter]
) -> dict[str, torch.Tensor]:
    """The listed weights, finite, already on their parameter's device."""
    out = {}
    for key in keys:
        value = handle.get_tensor(key)
        if not bool(torch.isfinite(value).all()):
            raise DocumentError("holds NaN or infinite values", file=file, path=(key,))
        out[key] = value.to(parameters[key].device)
    return out


@torch.no_grad()
def write_weights(
    model: nn.Module, parameters: dict[str, nn.Parameter], weights: dict[str, torch.Tensor]
) -> None:
    """Copy the stored weights into the parameters (the last step of a restore)."""
    for key, value in weights.items():
        parameters[key].copy_(value)
    if weights:
        model.__dict__[WEIGHTS_REWRITTEN] = True
