"""Reading, saving and restoring the quantizer state of a patched model.

``save_state`` writes one safetensors file: every quantizer buffer under its ``state_dict`` key
(``<module>.weight_quantizer._amax``, ``..._pre_quant_scale``, ``..._global_amax``, ...) and, in
the file's metadata, the plan JSON of the *current* quantizer states (enable toggles and
sequential structure included, so a plan plus buffers rebuilds the model; compare Model
Optimizer's recorded quantizer state, docs/model-optimizer-rules.md, 'Save and restore'), the
list of the tensors written (``tensors``) and, for calibrators given as a class or
``(class, args, kwargs)``, how to rebuild them (``calibrators``).

``restore_state`` applies that plan to a fresh model of the same architecture and loads the
buffers, all-or-nothing; the restored model's outputs are bit-identical. A state file may have
been truncated, edited by hand or be some other file, so everything is checked before the model
is touched (docs/errors.md): the file is a regular safetensors file with the metadata above, the
plan is a valid plan that fits the model (``PlanMismatchError``), and every tensor belongs to a
quantizer of the plan, under a buffer name a quantizer has, in a float dtype, with the shape the
quantizer's calibration gives on that layer's weight (where the plan and model decide it),
finite, an amax not negative, and listed in ``tensors``. Each defect is one
:class:`~qconfig.errors.DocumentError` naming the file and the tensor (or metadata key).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from qconfig.attributes import QuantizerAttributeConfig
from qconfig.documents import parse_json
from qconfig.errors import DocumentError
from qconfig.fileio import check_regular_file
from qconfig.plan import Plan, QuantizerPlan
from qconfig.spec import QuantizerSpec
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from qruntime.apply import (
    PLAN_ATTRIBUTE,
    applied_plan,
    check_plan,
    patch_model,
    quantized_weight,
)
from qruntime.inventory import inventory
from qruntime.quantizer import SequentialQuantizer, TensorQuantizer, is_quantizer
from qruntime.transaction import ModelSnapshot

__all__ = [
    "BUFFER_NAMES",
    "STATE_FORMAT",
    "current_plan",
    "quantizer_states",
    "read_plan",
    "restore_state",
    "save_state",
]

STATE_FORMAT = "qruntime.state/v1"

#: The buffers a quantizer holds (Model Optimizer's names); a state file holds nothing else.
BUFFER_NAMES = ("_amax", "_pre_quant_scale", "_global_amax", "_bias_value")

#: safetensors dtype names a quantizer buffer may have.
_FLOAT_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
#: Buffers that hold a maximum of absolute values.
_AMAX_BUFFERS = ("_amax", "_global_amax")
#: ``calibrator`` values the plan JSON can hold; a constructor is written as "max" in the plan
#: and rebuilt from the ``calibrators`` metadata.
_NAMED_CALIBRATORS = ("max", "histogram")
_CALIBRATOR_METHODS = ("collect", "compute_amax", "reset")


def _tq_state(q: TensorQuantizer) -> dict[str, Any]:
    return {
        "enable": q.is_enabled,
        "attributes": q.attributes(),
        "amax": q._buffers.get("_amax"),
        "pre_quant_scale": q._buffers.get("_pre_quant_scale"),
    }


def quantizer_states(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Per quantizer (a ``SequentialQuantizer``'s elements folded into it): ``enable``,
    ``attributes`` (every ``QuantizerAttributeConfig`` field with its runtime value, or a list of
    such dicts), ``amax`` (the stored ``_amax``, or None while dynamic) and ``pre_quant_scale``
    (lists for a sequential quantizer)."""
    out: dict[str, dict[str, Any]] = {}
    inside: set[int] = set()
    for name, module in model.named_modules():
        if id(module) in inside:
            continue
        if isinstance(module, SequentialQuantizer):
            elements = [_tq_state(q) for q in module]
            inside.update(id(q) for q in module)
            out[name] = {
                "enable": module.is_enabled,
                "attributes": [e["attributes"] for e in elements],
                "amax": [e["amax"] for e in elements],
                "pre_quant_scale": [e["pre_quant_scale"] for e in elements],
            }
        elif isinstance(module, TensorQuantizer):
            out[name] = _tq_state(module)
    return out


def current_plan(model: nn.Module) -> Plan:
    """A plan that reproduces the model's quantizers as they are now (no calibration steps)."""
    applied = applied_plan(model)
    quantizers = {}
    for name, module, site in inventory(model).iter_sites():
        parent, _, attr = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        q = owner._modules.get(attr)
        if q is None or not is_quantizer(q):
            raise ValueError(f"{name} is not quantized; apply a plan first")
        before = applied.quantizers.get(name) if applied is not None else None
        quantizers[name] = QuantizerPlan(
            enable=q.is_enabled,
            attributes=q.config,
            parent_class=module.registry_key,
            sources=before.sources if before is not None else (),
            hard_disabled=site.hard_disabled,
        )
    return Plan(quantizers, (), [], applied.manifest_model if applied is not None else "")


# ------------------------------------------------------------------------------------ save
def save_state(model: nn.Module, path: str | Path) -> None:
    """Write the quantizer state of ``model`` to ``path`` (safetensors + plan JSON metadata).

    ``ValueError`` (nothing written) when a quantizer's ``calibrator`` is a constructor that a
    file cannot describe: only a class importable by name, alone or as ``(class, args, kwargs)``
    with arguments made of None, bools, numbers, strings, lists, tuples and dicts, is restored.
    """
    plan = current_plan(model)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, TensorQuantizer):
            for key, value in module._buffers.items():
                if value is not None and key not in module._non_persistent_buffers_set:
                    tensors[f"{name}.{key}"] = value.detach().cpu().contiguous().clone()
    plan, calibrators = _split_calibrators(plan)
    metadata = {
        "format": STATE_FORMAT,
        "plan": plan.to_json(),
        "tensors": json.dumps(sorted(tensors), separators=(",", ":")),
    }
    if calibrators:
        metadata["calibrators"] = json.dumps(calibrators, separators=(",", ":"), sort_keys=True)
    save_file(tensors, str(path), metadata=metadata)


def _split_calibrators(plan: Plan) -> tuple[Plan, dict[str, list[Any]]]:
    """The plan with constructor calibrators written as "max", and per quantizer the
    constructors (one entry per element, None where the element names its calibrator)."""
    calibrators: dict[str, list[Any]] = {}
    replaced: dict[int, QuantizerAttributeConfig] = {}
    quantizers = {}
    for name, q in plan.quantizers.items():
        elements = q.attributes if isinstance(q.attributes, tuple) else (q.attributes,)
        refs = [_calibrator_ref(name, a.calibrator) for a in elements]
        if not any(r is not None for r in refs):
            quantizers[name] = q
            continue
        calibrators[name] = refs
        plain = tuple(_named_calibrator(a, replaced) for a in elements)
        quantizers[name] = dataclasses.replace(q, attributes=plain if q.is_sequential else plain[0])
    return dataclasses.replace(plan, quantizers=quantizers), calibrators


def _named_calibrator(
    attrs: QuantizerAttributeConfig, cache: dict[int, QuantizerAttributeConfig]
) -> QuantizerAttributeConfig:
    if isinstance(attrs.calibrator, str):
        return attrs
    if id(attrs) not in cache:
        cache[id(attrs)] = attrs.model_copy(update={"calibrator": "max"})
    return cache[id(attrs)]


def _calibrator_ref(name: str, value: Any) -> dict[str, Any] | None:
    """How a file names a constructor calibrator (None for a named one)."""
    if isinstance(value, str):
        return None
    parts = value if isinstance(value, tuple) else (value,)
    target = parts[0] if parts else None
    if not 1 <= len(parts) <= 3 or not isinstance(target, type):
        raise ValueError(
            f"{name}: calibrator {value!r} cannot be saved: a state file restores a calibrator "
            "class, alone or as (class, args, kwargs)"
        )
    ref = f"{target.__module__}:{target.__qualname__}"
    if _lookup_class(ref) is not target:
        raise ValueError(
            f"{name}: calibrator class {ref} cannot be saved: it cannot be found again by that "
            "name (define it at the top level of a module)"
        )
    try:
        args = [_encode(p) for p in parts[1:]]
    except TypeError as exc:
        raise ValueError(f"{name}: calibrator {value!r} cannot be saved: {exc}") from None
    return {"class": ref, "form": len(parts) if isinstance(value, tuple) else 0, "args": args}


def _encode(value: Any) -> Any:
    """JSON with tuples, lists and dicts tagged, so that they come back as they were."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise TypeError(f"{value!r} is not a finite number")
        return value
    if isinstance(value, tuple):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return {"list": [_encode(v) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[_encode(k), _encode(v)] for k, v in value.items()]}
    raise TypeError(f"an argument of type {type(value).__name__} cannot be written to a file")


def _lookup_class(ref: str) -> Any:
    """The object ``module:qualname`` names, from modules already imported (a state file never
    makes Python import anything: importing runs code), or None."""
    module_name, _, qualname = ref.partition(":")
    obj: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        if obj is None or not part.isidentifier():
            return None
        obj = getattr(obj, part, None)
    return obj


# ------------------------------------------------------------------------------------ read
def read_plan(path: str | Path) -> Plan:
    """The plan stored in a ``save_state`` file (calibrator constructors rebuilt)."""
    file = str(path)
    with _StateFile(file) as handle:
        return _stored_plan(_state_metadata(handle, file), file)


class _StateFile:
    """``safe_open`` of a regular file; what safetensors cannot parse is a DocumentError."""

    def __init__(self, file: str) -> None:
        check_regular_file(file)
        self.file = file
        try:
            self.handle = safe_open(file, framework="pt")
        except SafetensorError as exc:
            raise DocumentError(f"not a safetensors file ({exc})", file=file) from None

    def __enter__(self) -> Any:
        return self.handle.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.handle.__exit__(*exc)


def _state_metadata(handle: Any, file: str) -> dict[str, str]:
    """The metadata of a state file: ``format`` and ``plan`` are required."""
    metadata = handle.metadata() or {}
    found = metadata.get("format")
    if found != STATE_FORMAT:
        what = "no 'format' in its metadata" if found is None else f"format {found!r}"
        raise DocumentError(
            f"not a {STATE_FORMAT} file ({what}; write one with qruntime.save_state)",
            file=file,
            path=("__metadata__", "format"),
        )
    if "plan" not in metadata:
        raise DocumentError(
            "missing: a state file stores its plan here", file=file, path=("__metadata__", "plan")
        )
    return metadata


def _stored_plan(metadata: dict[str, str], file: str) -> Plan:
    """The plan of the metadata, with its constructor calibrators put back."""
    try:
        plan = Plan.from_json(metadata["plan"], file=file)
    except DocumentError as exc:
        raise DocumentError(
            exc.message, file=file, path=("__metadata__", "plan", *exc.path)
        ) from None
    if "calibrators" in metadata:
        plan = _restore_calibrators(plan, metadata["calibrators"], file)
    return plan


def _restore_calibrators(plan: Plan, text: str, file: str) -> Plan:
    where: tuple[int | str, ...] = ("__metadata__", "calibrators")
    refs = _metadata_json(text, file, where)
    if not isinstance(refs, dict):
        raise DocumentError(
            "must be a JSON object (quantizer → constructors)", file=file, path=where
        )
    quantizers = dict(plan.quantizers)
    built: dict[tuple[int, str], QuantizerAttributeConfig] = {}
    for name, row in refs.items():
        q = quantizers.get(name)
        elements = () if q is None else q.attributes if q.is_sequential else (q.attributes,)
        if not isinstance(row, list) or len(row) != len(elements):
            raise DocumentError(
                f"must list one constructor (or null) per element of quantizer {name!r} of the "
                f"plan, which has {len(elements)}",
                file=file,
                path=(*where, name),
            )
        new = []
        for index, (attrs, ref) in enumerate(zip(elements, row, strict=True)):
            if ref is None:
                new.append(attrs)
                continue
            key = (id(attrs), json.dumps(ref, sort_keys=True))
            if key not in built:
                value = _calibrator_from_ref(ref, file, (*where, name, index))
                built[key] = attrs.model_copy(update={"calibrator": value})
            new.append(built[key])
        assert q is not None
        quantizers[name] = dataclasses.replace(
            q, attributes=tuple(new) if q.is_sequential else new[0]
        )
    return dataclasses.replace(plan, quantizers=quantizers)


def _metadata_json(text: str, file: str, where: tuple[int | str, ...]) -> Any:
    try:
        return parse_json(text)
    except DocumentError as exc:
        raise DocumentError(f"not valid JSON: {exc}", file=file, path=where) from None


def _calibrator_from_ref(ref: Any, file: str, where: tuple[int | str, ...]) -> Any:
    """The constructor ``ref`` describes; its class must already be imported and be a
    calibrator (``collect``, ``compute_amax``, ``reset``): a file never names code to run."""
    if not (
        isinstance(ref, dict)
        and set(ref) == {"class", "form", "args"}
        and isinstance(ref["class"], str)
        and ref["form"] in (0, 1, 2, 3)
        and isinstance(ref["args"], list)
        and len(ref["args"]) == max(ref["form"] - 1, 0)
    ):
        raise DocumentError(
            'expected {"class": "module:Class", "form": 0-3, "args": [...]}', file=file, path=where
        )
    cls = _lookup_class(ref["class"])
    if cls is None:
        raise DocumentError(
            f"calibrator class {ref['class']} is not loaded: import its module before "
            "restore_state (a state file never imports code)",
            file=file,
            path=(*where, "class"),
        )
    if not isinstance(cls, type) or not all(
        callable(getattr(cls, m, None)) for m in _CALIBRATOR_METHODS
    ):
        raise DocumentError(
            f"{ref['class']} is not a calibrator class (collect, compute_amax, reset)",
            file=file,
            path=(*where, "class"),
        )
    try:
        args = [_decode(a) for a in ref["args"]]
    except (TypeError, ValueError) as exc:
        raise DocumentError(
            f"bad constructor arguments: {exc}", file=file, path=(*where, "args")
        ) from None
    if args and not isinstance(args[0], (tuple, list)):
        raise DocumentError("the args must be a tuple or list", file=file, path=(*where, "args", 0))
    if len(args) > 1 and not (
        isinstance(args[1], dict) and all(isinstance(k, str) for k in args[1])
    ):
        raise DocumentError(
            "the kwargs must be a dict with string keys", file=file, path=(*where, "args", 1)
        )
    try:  # what every quantizer built from it will do: fail here, with the place named
        cls(*(args[0] if args else ()), **(args[1] if len(args) > 1 else {}))
    except Exception as exc:
        raise DocumentError(
            f"{ref['class']} cannot be constructed with these arguments "
            f"({type(exc).__name__}: {exc})",
            file=file,
            path=where,
        ) from None
    return (cls, *args) if ref["form"] else cls


def _decode(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((tag, items),) = value.items()
        if tag in ("tuple", "list", "dict") and isinstance(items, list):
            if tag == "tuple":
                return tuple(_decode(v) for v in items)
            if tag == "list":
                return [_decode(v) for v in items]
            if all(isinstance(p, list) and len(p) == 2 for p in items):
                return {_hashable(_decode(k)): _decode(v) for k, v in items}
    raise ValueError(f"{str(value)[:60]} is not an encoded value")


def _hashable(key: Any) -> Any:
    hash(key)  # TypeError for a list or dict key
    return key


# ------------------------------------------------------------------------------------ check
@dataclass(frozen=True)
class _Owner:
    """One ``TensorQuantizer`` of the plan (an element of a sequential one is its own owner)."""

    name: str
    attrs: QuantizerAttributeConfig
    spec: QuantizerSpec
    weight: tuple[int, ...] | None  # the shape of the weight it quantizes, if it is one
    hard_disabled: bool


def _owners(model: nn.Module, plan: Plan) -> dict[str, _Owner]:
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
            out[owner] = _Owner(owner, attrs, spec, shape, site.hard_disabled)
    return out


def _calibrated_shapes(owner: _Owner, cache: dict) -> dict[str, tuple[int, ...] | None]:
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
    file: str, key: str, shape: tuple[int, ...], dtype: str, owners: dict[str, _Owner], cache: dict
) -> None:
    """One tensor of the file, from its header only (nothing is loaded yet)."""
    owner_name, _, buffer = key.rpartition(".")
    owner = owners.get(owner_name)
    if owner is None:
        raise _fail(file, key, f"belongs to no quantizer of the plan ({owner_name!r} is not one)")
    if buffer not in BUFFER_NAMES:
        raise _fail(
            file, key, f"unknown buffer {buffer!r}: a quantizer holds {', '.join(BUFFER_NAMES)}"
        )
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


def _check_role(file: str, key: str, owner: _Owner, buffer: str) -> None:
    """Buffers that the quantizer's format never reads are not stored by anything."""
    if buffer == "_global_amax" and owner.spec.family != "nvfp4":
        raise _fail(file, key, f"{owner.name} is not an NVFP4 quantizer: it has no global amax")
    bias = owner.spec.bias
    if buffer == "_bias_value" and (bias is None or bias.get("type", "static") != "static"):
        raise _fail(file, key, f"{owner.name} has no static bias attribute: it has no bias value")


def _expected_shape(owner: _Owner, buffer: str, cache: dict) -> tuple[int, ...] | None:
    if buffer in ("_amax", "_bias_value"):
        return _calibrated_shapes(owner, cache).get(buffer)
    if buffer == "_global_amax":
        return ()
    return None  # _pre_quant_scale: checked against the weight by broadcasting


def _check_pre_quant_scale(file: str, key: str, shape: tuple[int, ...], owner: _Owner) -> None:
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


def _check_listing(file: str, metadata: dict[str, str], keys: list[str]) -> None:
    """``tensors`` (written by save_state) and the file's tensors must agree: a tensor dropped
    or added afterwards would silently change what is restored."""
    if "tensors" not in metadata:  # a file from before the listing: nothing to compare
        return
    where: tuple[int | str, ...] = ("__metadata__", "tensors")
    listed = _metadata_json(metadata["tensors"], file, where)
    if not isinstance(listed, list) or not all(isinstance(k, str) for k in listed):
        raise DocumentError("must be a JSON list of tensor names", file=file, path=where)
    present = set(keys)
    for key in sorted(set(listed) - present):
        raise _fail(file, key, "is listed in the file's metadata but missing: truncated or edited?")
    for key in sorted(present - set(listed)):
        raise _fail(file, key, "is not listed in the file's metadata 'tensors': added by hand?")


def _check_header(handle: Any, file: str, owners: dict[str, _Owner]) -> list[str]:
    """Every tensor of the file, from the header (shapes and dtypes; nothing is loaded)."""
    cache: dict = {}
    keys = sorted(handle.keys())
    for key in keys:
        part = handle.get_slice(key)
        shape, dtype = tuple(part.get_shape()), part.get_dtype()
        _check_entry(file, key, shape, dtype, owners, cache)
        if key.endswith("._pre_quant_scale"):
            _check_pre_quant_scale(file, key, shape, owners[key.rpartition(".")[0]])
    return keys


def _load_tensors(handle: Any, file: str, keys: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
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


# ------------------------------------------------------------------------------------ restore
def restore_state(model: nn.Module, path: str | Path) -> nn.Module:
    """Quantize a fresh ``model`` exactly as the saved one was; returns ``model``.

    Everything in the file is checked first (module docstring): a file that cannot be read is
    an :class:`~qconfig.fileio.InputFileError`, one that is not a valid state file a
    :class:`~qconfig.errors.DocumentError` naming the tensor or metadata key, a plan that does
    not fit the model a ``PlanMismatchError``. In every such case the model is not changed; on
    success it holds exactly the saved quantizers and buffers.
    """
    file = str(path)
    with _StateFile(file) as handle:
        metadata = _state_metadata(handle, file)
        plan = _stored_plan(metadata, file)
        check_plan(model, plan)
        owners = _owners(model, plan)
        keys = _check_header(handle, file, owners)
        _check_listing(file, metadata, keys)
        tensors = dict(_load_tensors(handle, file, keys))
    snapshot = ModelSnapshot(model)
    try:
        patch_model(model, plan)
        _load_buffers(model, owners, tensors)
        model.__dict__[PLAN_ATTRIBUTE] = plan
    except BaseException:
        snapshot.restore()
        raise
    return model


def _load_buffers(
    model: nn.Module, owners: dict[str, _Owner], tensors: dict[str, torch.Tensor]
) -> None:
    """Every quantizer of the plan gets the file's buffers and no others (a quantizer that was
    calibrated before keeps nothing the file does not have)."""
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    for owner in owners:
        quantizer = model.get_submodule(owner)
        assert isinstance(quantizer, TensorQuantizer)
        for buffer in BUFFER_NAMES:
            quantizer._buffers.pop(buffer, None)
            value = tensors.get(f"{owner}.{buffer}")
            if value is not None:
                quantizer.register_buffer(buffer, value.to(device))
