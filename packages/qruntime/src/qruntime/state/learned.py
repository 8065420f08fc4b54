"""Learned-amax (``lsq``) quantizers in a state file: the ``learned`` metadata and its checks.

Why a module: ``lsq`` turns a calibrated weight quantizer into a
:class:`~qruntime.quantizer.learned.LearnedAmaxQuantizer`, whose ``_amax`` is replaced by
``_amax_post`` and (untied) ``_amax_pre``, each an ``nn.Parameter`` or a buffer. The plan cannot
say any of that (it records configuration, not conversions), so the file says, per converted
quantizer, how to convert it again; its tensors are stored under their ``state_dict`` names
next to the other buffers. The metadata ``learned`` is a JSON object, one entry per quantizer
(``state_dict`` prefix)::

    {"learnable": ["post"], "tied": false, "parameters": ["post"],
     "dtype": {"post": "float32", "pre": "float32"},
     "quantize_scales": false, "quantize_pre_scale": true}

``learnable`` is the ``learnable_amax`` the quantizer was converted with, ``parameters`` the
sides that are ``nn.Parameter`` now (``set_amax_tensor`` may have changed one), ``dtype`` each
stored side's dtype (``pre`` absent when tied). ``restore_state`` reads and checks it before the
model is touched: each entry names a quantizer of the plan, is well formed, and a trial
conversion of a quantizer configured as the plan says succeeds (so the real one cannot fail).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from qconfig.errors import DocumentError
from torch import nn

from qruntime.quantizer import TensorQuantizer
from qruntime.quantizer.learned import LearnedAmaxQuantizer
from qruntime.state.file import metadata_json

if TYPE_CHECKING:
    from qruntime.state.checks import Owner

__all__ = [
    "LEARNED_KEY",
    "LEARNED_TENSORS",
    "LearnedAmax",
    "check_learned_tensors",
    "learned_state",
    "read_learned",
    "rebuild_learned",
    "revert_learned",
]

#: The metadata key.
LEARNED_KEY = "learned"
#: The tensors a learned-amax quantizer holds in place of ``_amax``.
LEARNED_TENSORS = ("_amax_post", "_amax_pre")
#: dtypes a learned amax may have (torch names, as the metadata writes them).
_DTYPES = ("float16", "bfloat16", "float32", "float64")
_SIDES = ("pre", "post")
_FIELDS = ("dtype", "learnable", "parameters", "quantize_pre_scale", "quantize_scales", "tied")


@dataclass(frozen=True)
class LearnedAmax:
    """How one quantizer was converted (module docstring); sides are sorted tuples."""

    learnable: tuple[str, ...]
    tied: bool
    parameters: tuple[str, ...]
    dtype: Mapping[str, str]
    quantize_scales: bool
    quantize_pre_scale: bool

    @property
    def sides(self) -> tuple[str, ...]:
        """The sides stored: ``post``, and ``pre`` unless tied."""
        return ("post",) if self.tied else ("post", "pre")

    def to_json(self) -> dict[str, Any]:
        return {
            "learnable": list(self.learnable),
            "tied": self.tied,
            "parameters": list(self.parameters),
            "dtype": dict(self.dtype),
            "quantize_scales": self.quantize_scales,
            "quantize_pre_scale": self.quantize_pre_scale,
        }


# ------------------------------------------------------------------------------------ save
def _entry(q: LearnedAmaxQuantizer) -> LearnedAmax:
    sides = ("post",) if q.tied_amax else ("post", "pre")
    tensors = {side: q.amax_post if side == "post" else q.amax_pre for side in sides}
    return LearnedAmax(
        learnable=tuple(sorted(q.learnable_amax)),
        tied=q.tied_amax,
        parameters=tuple(s for s in sides if isinstance(tensors[s], nn.Parameter)),
        dtype={s: str(t.dtype).removeprefix("torch.") for s, t in tensors.items()},
        quantize_scales=q.quantize_scales,
        quantize_pre_scale=q.quantize_pre_scale,
    )


def learned_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], str | None]:
    """The learned amaxes of ``model`` by ``state_dict`` key, and the ``learned`` metadata
    (None when no quantizer learns its amax)."""
    tensors: dict[str, torch.Tensor] = {}
    entries: dict[str, Any] = {}
    for name, module in model.named_modules():
        if isinstance(module, LearnedAmaxQuantizer):
            entry = _entry(module)
            entries[name] = entry.to_json()
            for side in entry.sides:
                value = module.amax_post if side == "post" else module.amax_pre
                tensors[f"{name}._amax_{side}"] = value.detach().cpu().contiguous().clone()
    if not entries:
        return tensors, None
    return tensors, json.dumps(entries, separators=(",", ":"), sort_keys=True)


# ------------------------------------------------------------------------------------ read
def _sides(value: Any, where: tuple, file: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not all(isinstance(v, str) and v in allowed for v in value)
        or len(set(value)) != len(value)
    ):
        raise DocumentError(
            f"must be a list of distinct sides out of {list(allowed)}", file=file, path=where
        )
    return tuple(sorted(value))


def _flag(value: Any, where: tuple, file: str) -> bool:
    if not isinstance(value, bool):
        raise DocumentError("must be true or false", file=file, path=where)
    return value


def _parse_entry(raw: Any, where: tuple, file: str) -> LearnedAmax:
    if not isinstance(raw, dict):
        raise DocumentError("must be a JSON object", file=file, path=where)
    if sorted(raw) != sorted(_FIELDS):
        missing, extra = sorted(set(_FIELDS) - set(raw)), sorted(set(raw) - set(_FIELDS))
        raise DocumentError(
            f"must have exactly the keys {list(_FIELDS)} (missing {missing}, unknown {extra})",
            file=file,
            path=where,
        )
    tied = _flag(raw["tied"], (*where, "tied"), file)
    learnable = _sides(raw["learnable"], (*where, "learnable"), file, _SIDES)
    if tied and learnable not in ((), tuple(sorted(_SIDES))):
        raise DocumentError(
            "a tied amax is learnable on both sides or on none", file=file, path=(*where, "tied")
        )
    sides = ("post",) if tied else ("post", "pre")
    parameters = _sides(raw["parameters"], (*where, "parameters"), file, sides)
    dtype = raw["dtype"]
    if (
        not isinstance(dtype, dict)
        or sorted(dtype) != sorted(sides)
        or not all(v in _DTYPES for v in dtype.values())
    ):
        raise DocumentError(
            f"must map each stored side {list(sides)} to one of {list(_DTYPES)}",
            file=file,
            path=(*where, "dtype"),
        )
    return LearnedAmax(
        learnable=learnable,
        tied=tied,
        parameters=parameters,
        dtype=dict(dtype),
        quantize_scales=_flag(raw["quantize_scales"], (*where, "quantize_scales"), file),
        quantize_pre_scale=_flag(raw["quantize_pre_scale"], (*where, "quantize_pre_scale"), file),
    )


def read_learned(
    metadata: Mapping[str, str], file: str, owners: Mapping[str, Owner]
) -> dict[str, LearnedAmax]:
    """The ``learned`` metadata, each entry well formed and naming a quantizer of the plan
    (empty when the file has none)."""
    if LEARNED_KEY not in metadata:
        return {}
    where: tuple[int | str, ...] = ("__metadata__", LEARNED_KEY)
    raw = metadata_json(metadata[LEARNED_KEY], file, where)
    if not isinstance(raw, dict) or not raw:
        raise DocumentError(
            "must be a non-empty JSON object of quantizer name to entry", file=file, path=where
        )
    out = {}
    for name, entry in raw.items():
        if name not in owners:
            raise DocumentError("names no quantizer of the plan", file=file, path=(*where, name))
        out[name] = _parse_entry(entry, (*where, name), file)
    return out


def check_learned_tensors(
    file: str,
    learned: Mapping[str, LearnedAmax],
    owners: Mapping[str, Owner],
    shapes: Mapping[str, tuple[int, ...]],
    dtypes: Mapping[str, str],
) -> None:
    """Each learned quantizer's stored sides are all there, in the recorded dtypes, of one
    shape, and a trial conversion of the quantizer the plan configures succeeds with them
    (``shapes``/``dtypes``: the header's, torch dtype names)."""
    for name, entry in learned.items():
        where = ("__metadata__", LEARNED_KEY, name)
        for side in entry.sides:
            key = f"{name}._amax_{side}"
            if key not in shapes:
                raise DocumentError(
                    f"is missing: {name} learns its amax ({'tied' if entry.tied else 'untied'})",
                    file=file,
                    path=(key,),
                )
            if dtypes[key] != entry.dtype[side]:
                raise DocumentError(
                    f"has dtype {dtypes[key]}; the metadata 'learned' says {entry.dtype[side]}",
                    file=file,
                    path=(key,),
                )
        post = shapes[f"{name}._amax_post"]
        if not entry.tied and shapes[f"{name}._amax_pre"] != post:
            raise DocumentError(
                f"has shape {list(shapes[f'{name}._amax_pre'])}; _amax_post has {list(post)}",
                file=file,
                path=(f"{name}._amax_pre",),
            )
        _trial_conversion(file, where, name, entry, owners[name], post, shapes)


def _trial_conversion(
    file: str,
    where: tuple,
    name: str,
    entry: LearnedAmax,
    owner: Owner,
    shape: tuple[int, ...],
    shapes: Mapping[str, tuple[int, ...]],
) -> None:
    """Convert a throwaway quantizer with the plan's configuration, on the meta device: what
    it refuses (not static blocks along the last dim, no global amax for FP8 steps, an element
    format LSQ lacks) the restore would refuse after touching the model."""
    q = TensorQuantizer(owner.attrs, owner.spec)
    q.__dict__["_qruntime_name"] = name
    q.register_buffer("_amax", torch.empty(shape, device="meta"))
    if f"{name}._global_amax" in shapes:
        q.register_buffer("_global_amax", torch.empty((), device="meta"))
    try:
        _convert(q, entry, owner.weight)
    except ValueError as exc:  # LearnedAmaxError, or an element format LSQ lacks
        raise DocumentError(
            f"cannot be restored as a learned-amax quantizer: {exc}", file=file, path=where
        ) from None


def _convert(
    q: TensorQuantizer, entry: LearnedAmax, weight: tuple[int, ...] | None
) -> LearnedAmaxQuantizer:
    return LearnedAmaxQuantizer.convert(
        q,
        learnable_amax=entry.learnable,
        tied_amax=entry.tied,
        quantize_pre_scale=entry.quantize_pre_scale,
        quantize_scales=entry.quantize_scales,
        dtype=getattr(torch, entry.dtype["post"]),
        ndim=len(weight) if weight is not None else None,
    )


# ------------------------------------------------------------------------------------ restore
def revert_learned(model: nn.Module) -> None:
    """Every learned-amax quantizer of ``model`` back to a plain one (a model converted before
    gets the file's state, not a mix)."""
    for module in model.modules():
        if isinstance(module, LearnedAmaxQuantizer):
            module.revert()


def rebuild_learned(
    model: nn.Module,
    learned: Mapping[str, LearnedAmax],
    owners: Mapping[str, Owner],
    tensors: Mapping[str, torch.Tensor],
    device: torch.device,
) -> None:
    """Convert each listed quantizer (its other buffers already loaded) and give it the file's
    amaxes, as ``nn.Parameter`` or buffer as they were saved."""
    for name, entry in learned.items():
        q = model.get_submodule(name)
        assert isinstance(q, TensorQuantizer)
        post = tensors[f"{name}._amax_post"].to(device)
        q.register_buffer("_amax", post)
        converted = _convert(q, entry, owners[name].weight)
        for side in entry.sides:
            value = post if side == "post" else tensors[f"{name}._amax_pre"].to(device)
            converted.set_amax_tensor(side, value, learnable=side in entry.parameters)
