"""Checking a state file's tensors against the plan and the model before anything is touched.

Why a module: a state file may have been truncated, edited by hand or be some other file, and
``restore_state`` is all-or-nothing. Every tensor must belong to a quantizer of the plan, under a
buffer name a quantizer has, in a float dtype, with the shape the quantizer's calibration gives
on that layer's weight (where the plan and model decide it), finite, an amax not negative, and
listed in the metadata ``tensors``. The header is checked before any tensor is loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from qconfig.attributes import QuantizerAttributeConfig
from qconfig.errors import DocumentError
from qconfig.plan import Plan
from qconfig.spec import QuantizerSpec
from safetensors import SafetensorError
from torch import nn

from qruntime.inventory import inventory
from qruntime.modules.base import quantized_weight
from qruntime.modules.low_rank import LORA_A, LORA_B, LOW_RANK_BUFFERS
from qruntime.quantizer import TensorQuantizer
from qruntime.state.file import metadata_json
from qruntime.state.learned import LEARNED_TENSORS, LearnedAmax, check_learned_tensors

__all__ = [
    "BUFFER_NAMES",
    "Owner",
    "check_header",
    "check_listing",
    "load_tensors",
    "tensor_owners",
]

#: The buffers a quantizer holds (Model Optimizer's names); a state file holds nothing else.
#: A weight quantizer of a linear may also hold SVDQuant's low-rank factors.
BUFFER_NAMES = ("_amax", "_pre_quant_scale", "_global_amax", "_bias_value", *LOW_RANK_BUFFERS)

#: safetensors dtype names a quantizer buffer may have.
_FLOAT_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
#: Buffers that hold a maximum of absolute values.
_AMAX_BUFFERS = ("_amax", "_global_amax")


@dataclass(frozen=True)
class Owner:
    """One ``TensorQuantizer`` of the plan (an element of a sequential one is its own owner)."""

    name: str
    attrs: QuantizerAttributeConfig
    spec: QuantizerSpec
    weight: tuple[int, ...] | None  # the shape of the weight it quantizes, if it is one
    hard_disabled: bool


def tensor_owners(model: nn.Module, plan: Plan) -> dict[str, Owner]:
    """The tensor-owning quantizers the plan gives the model, by ``state_dict`` prefix."""
    modules = dict(model.named_modules())
    out = {}
    for name, module, site in inventory(model).iter_sites():
        q = plan.quantizers[name]
        weight = quantized_weight(modules[module.name], site.attribute)
        shape = tuple(weight.shape) if weight is not None else None
        specs = q.spec if isinstance(q.spec, tuple) else (q.spec,)
        elements = q.attributes if isinstance(q.attributes, tuple) else (q.attributes,)
        for index, (attrs, spec) in enumerate(zip(elements, specs, strict=True)):
            owner = f"{name}.{index}" if q.is_sequential else name
            out[owner] = Owner(owner, attrs, spec, shape, site.hard_disabled)
    return out


def _calibrated_shapes(owner: Owner, cache: dict) -> dict[str, tuple[int, ...] | None]:
    """``_amax`` / ``_bias_value`` shapes a max calibration gives this quantizer, found by
    running a quantizer with its attributes on a meta tensor of its weight's shape (None where
    the shape is not decided by the plan and the model: activations, custom calibrators)."""
    spec = owner.spec
    if spec.constant_amax is not None or spec.use_constant_amax:
        return {"_amax": ()}
    if spec.calibrator != "max" or spec.is_dynamic:
        return {}
    if owner.weight is None:
        per_tensor = spec.block_sizes is None and spec.axis is None
        return {"_amax": ()} if per_tensor else {}
    key = (id(owner.attrs), owner.weight)
    if key not in cache:
        cache[key] = _simulate(owner.attrs, spec, owner.weight)
    return cache[key]


def _simulate(
    attrs: QuantizerAttributeConfig, spec: QuantizerSpec, shape: tuple[int, ...]
) -> dict[str, tuple[int, ...] | None]:
    q = TensorQuantizer(attrs.model_copy(update={"enable": True}), spec.replace(enable=True))
    try:
        q.disable_quant()
        q.enable_calib()
        with torch.no_grad():
            q(torch.empty(shape, device="meta"))
        amax = q.calibrator.compute_amax()
        bias = q.bias_calibrator.compute_bias() if q.has_static_bias else None
    except Exception:  # a layout the meta device cannot run: the shape stays unchecked
        return {}
    out: dict[str, tuple[int, ...] | None] = {}
    if amax is not None:
        out["_amax"] = tuple(amax.shape)
    if bias is not None:
        out["_bias_value"] = tuple(bias.shape)
    return out


def _fail(file: str, key: str, message: str) -> DocumentError:
    return DocumentError(message, file=file, path=(key,))


def _check_entry(
    file: str,
    key: str,
    shape: tuple[int, ...],
    dtype: str,
    owners: dict[str, Owner],
    cache: dict,
    learned: Mapping[str, LearnedAmax],
) -> None:
    """One tensor of the file, from its header only (nothing is loaded yet)."""
    owner_name, _, buffer = key.rpartition(".")
    owner = owners.get(owner_name)
    if owner is None:
        raise _fail(file, key, f"belongs to no quantizer of the plan ({owner_name!r} is not one)")
    if buffer in LEARNED_TENSORS and owner_name not in learned:
        raise _fail(
            file,
            key,
            f"{owner_name} does not learn its amax (not in the metadata 'learned'): it has no "
            f"{buffer}",
        )
    if buffer == "_amax" and owner_name in learned:
        raise _fail(
            file, key, f"{owner_name} learns its amax: it holds _amax_post/_amax_pre, not _amax"
        )
    if buffer not in BUFFER_NAMES and buffer not in LEARNED_TENSORS:
        names = ", ".join((*BUFFER_NAMES, *LEARNED_TENSORS))
        raise _fail(file, key, f"unknown buffer {buffer!r}: a quantizer holds {names}")
    if owner.hard_disabled and not (buffer == "_amax" and owner.spec.constant_amax is not None):
        raise _fail(file, key, f"{owner_name} is hard-disabled and holds no tensors")
    if dtype not in _FLOAT_DTYPES:
        raise _fail(
            file, key, f"has dtype {dtype}; quantizer buffers are float16/bfloat16/float32/float64"
        )
    if 0 in shape:
        raise _fail(file, key, f"is empty (shape {list(shape)})")
    _check_role(file, key, owner, buffer)
    expected = _expected_shape(owner, buffer, cache)
    if expected is not None and shape != expected:
        on = f" on its weight of shape {list(owner.weight)}" if owner.weight is not None else ""
        raise _fail(
            file,
            key,
            f"has shape {list(shape)}; {owner_name} (as the plan configures it{on}) has a "
            f"{buffer} of shape {list(expected)}",
        )


def _check_role(file: str, key: str, owner: Owner, buffer: str) -> None:
    """Buffers that the quantizer's format never reads are not stored by anything."""
    if buffer == "_global_amax" and owner.spec.family != "nvfp4":
        raise _fail(file, key, f"{owner.name} is not an NVFP4 quantizer: it has no global amax")
    bias = owner.spec.bias
    if buffer == "_bias_value" and (bias is None or bias.get("type", "static") != "static"):
        raise _fail(file, key, f"{owner.name} has no static bias attribute: it has no bias value")
    if buffer in LOW_RANK_BUFFERS and (owner.weight is None or len(owner.weight) != 2):
        raise _fail(file, key, f"{owner.name} quantizes no 2-D weight: it has no low-rank branch")


def _expected_shape(owner: Owner, buffer: str, cache: dict) -> tuple[int, ...] | None:
    if buffer in ("_amax", "_bias_value"):
        return _calibrated_shapes(owner, cache).get(buffer)
    if buffer in LEARNED_TENSORS:  # each side starts as the calibrated _amax
        return _calibrated_shapes(owner, cache).get("_amax")
    if buffer == "_global_amax":
        return ()
    return None  # _pre_quant_scale: checked against the weight by broadcasting


def _check_pre_quant_scale(file: str, key: str, shape: tuple[int, ...], owner: Owner) -> None:
    if owner.weight is None:
        return
    try:
        fits = tuple(torch.broadcast_shapes(shape, owner.weight)) == owner.weight
    except RuntimeError:
        fits = False
    if not fits:
        raise _fail(
            file,
            key,
            f"has shape {list(shape)}, which does not scale the weight of shape "
            f"{list(owner.weight)} elementwise",
        )


def _check_low_rank(
    file: str, shapes: dict[str, tuple[int, ...]], owners: dict[str, Owner]
) -> None:
    """SVDQuant's factors come in pairs, ``A`` (``r x cin``) and ``B`` (``cout x r``) for the
    quantizer's weight (``cout x cin``): one without the other, or factors of another layer,
    would add a wrong branch to the output."""
    for owner_name in sorted(
        {k.rpartition(".")[0] for k in shapes if k.rpartition(".")[2] in LOW_RANK_BUFFERS}
    ):
        key_a, key_b = f"{owner_name}.{LORA_A}", f"{owner_name}.{LORA_B}"
        if key_a not in shapes or key_b not in shapes:
            missing = key_a if key_a not in shapes else key_b
            raise _fail(file, missing, "is missing: low-rank factors come in pairs")
        weight = owners[owner_name].weight
        assert weight is not None
        a, b = shapes[key_a], shapes[key_b]
        if len(a) != 2 or len(b) != 2 or a[1] != weight[1] or b[0] != weight[0] or a[0] != b[1]:
            raise _fail(
                file,
                key_a,
                f"and {LORA_B} have shapes {list(a)} and {list(b)}; the weight of shape "
                f"{list(weight)} needs [r, {weight[1]}] and [{weight[0]}, r]",
            )


def check_listing(file: str, metadata: dict[str, str], keys: list[str]) -> None:
    """``tensors`` (written by save_state) and the file's tensors must agree: a tensor dropped
    or added afterwards would silently change what is restored."""
    if "tensors" not in metadata:  # a file from before the listing: nothing to compare
        return
    where: tuple[int | str, ...] = ("__metadata__", "tensors")
    listed = metadata_json(metadata["tensors"], file, where)
    if not isinstance(listed, list) or not all(isinstance(k, str) for k in listed):
        raise DocumentError("must be a JSON list of tensor names", file=file, path=where)
    present = set(keys)
    for key in sorted(set(listed) - present):
        raise _fail(file, key, "is listed in the file's metadata but missing: truncated or edited?")
    for key in sorted(present - set(listed)):
        raise _fail(file, key, "is not listed in the file's metadata 'tensors': added by hand?")


def check_header(
    handle: Any,
    file: str,
    owners: dict[str, Owner],
    weights: Iterable[str] = (),
    learned: Mapping[str, LearnedAmax] | None = None,
) -> list[str]:
    """Every quantizer tensor of the file, from the header (shapes and dtypes; nothing is
    loaded); the names in ``weights`` are the stored weights, checked elsewhere; ``learned``
    (the metadata's, :mod:`qruntime.state.learned`) the quantizers that learn their amax."""
    learned = learned or {}
    cache: dict = {}
    keys = sorted(set(handle.keys()) - set(weights))
    shapes, dtypes = {}, {}
    for key in keys:
        part = handle.get_slice(key)
        shape, dtype = tuple(part.get_shape()), part.get_dtype()
        _check_entry(file, key, shape, dtype, owners, cache, learned)
        if key.endswith("._pre_quant_scale"):
            _check_pre_quant_scale(file, key, shape, owners[key.rpartition(".")[0]])
        shapes[key], dtypes[key] = shape, _FLOAT_DTYPES[dtype]
    _check_low_rank(file, shapes, owners)
    check_learned_tensors(file, learned, owners, shapes, dtypes)
    return keys


def load_tensors(handle: Any, file: str, keys: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors, each checked for values no quantizer can compute with."""
    for key in keys:
        try:
            value = handle.get_tensor(key)
        except SafetensorError as exc:
            raise _fail(file, key, f"cannot be read ({exc})") from None
        if not bool(torch.isfinite(value).all()):
            kind = "NaN" if bool(torch.isnan(value).any()) else "infinite"
            raise _fail(file, key, f"holds {kind} values")
        if key.rpartition(".")[2] in _AMAX_BUFFERS and bool((value < 0).any()):
            raise _fail(file, key, "holds negative values; an amax is a maximum of |x|")
        yield key, value
