"""Checkpoints of a layer-by-layer calibration, so that a killed run resumes where it stopped.

Why: layerwise calibration of a large model runs for hours, one decoder layer after another; a
crash near the end should not cost the layers already done. The store keeps, in one directory
(``layerwise.checkpoint_dir``), what a later run needs to continue as if it had never stopped:
the calibrated state of every finished layer and the inputs of the next layer. Resuming gives a
model bit-identical to an uninterrupted run because a run refuses a checkpoint written for a
different model, algorithm config or calibration data (:func:`fingerprint`).

Use (single process only; a torch.distributed group of several processes is refused)::

    store = LayerCheckpoint(directory, num_layers=N, save_every=k, fingerprint=fp)
    start = store.start_layer()          # 0, or where the previous run stopped
    if start:
        inputs, metas = store.next_inputs(), store.output_metas()   # layers [0, start) skipped
    for i in range(start, N):
        <calibrate layer i on inputs; capture layer i+1's inputs as next_inputs>
        store.save(i, layers[i], next_inputs if i + 1 < N else None, output_meta=...)
        inputs = next_inputs
    store.restore_completed(layers)      # layers [0, start) get their saved state

On disk (all tensors in safetensors files, everything else JSON):

* ``layer_NNNNN.safetensors`` — one per calibrated layer, written right after the layer is
  calibrated: its quantizers' buffers and attributes and, unless the store was made with
  ``store_weights=False`` (calibrations that leave weights alone), its other parameters and
  buffers (:mod:`qruntime.calibrate.layer_state`); plus the metadata ``output_meta``, the
  caller's description of the layer's output (a resumed run's stand-in for a finished layer
  returns placeholders of that shape).
* ``inputs_NNNNN.safetensors`` — the inputs of layer NNNNN: its cached calls (a list, usually
  of ``(args, kwargs)`` pairs), tensors stored once each, the structure as JSON in the metadata
  ``structure`` (:mod:`qruntime.calibrate.checkpoint_values`).
* ``manifest.json`` — ``{format_version, num_layers, save_every, store_weights,
  last_completed_layer, fingerprint, files}``; ``files`` lists the layer files of layers
  ``0..last_completed_layer`` and the inputs file of the next layer, each with its size and
  sha256.

Crash safety: every file is written under ``<name>.tmp``, fsync'd, then renamed over its final
name (``os.replace``) and the directory fsync'd. Layer files are written after each layer, the
next layer's inputs and the manifest only at the end of a window (every ``save_every`` layers,
and after the last layer); the manifest goes last. A kill at any instant therefore leaves the
previous manifest, whose files are all complete; stray ``.tmp`` files are removed at the next
start, and a file the manifest lists that is missing, of another size or another hash refuses
the resume. A checkpoint of a run that completed all its layers is not resumed: the next run
calibrates afresh (as Model Optimizer does) and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from qconfig.algorithms import QuantizeAlgorithmConfig
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from qruntime.calibrate.checkpoint_values import (
    cpu_copies,
    decode_tree,
    encode_tree,
    plain_json,
    safetensors_metadata,
)
from qruntime.calibrate.layer_state import LAYER_FORMAT, StoredLayer, layer_state, quantizer_plan

__all__ = [
    "FORMAT_VERSION",
    "LAYER_FORMAT",
    "CheckpointMismatchError",
    "LayerCheckpoint",
    "fingerprint",
]

FORMAT_VERSION = 1
INPUTS_FORMAT = "qruntime.layer_checkpoint.inputs/v1"
MANIFEST = "manifest.json"
_TMP = ".tmp"
_CHUNK = 1 << 24
#: What each fingerprint digest covers, as a mismatch message names it.
_FINGERPRINT_PARTS = {
    "model": "model (parameters, buffers, modules or quantizer settings)",
    "config": "algorithm config",
    "data": "calibration data (the first layer's inputs)",
}


class CheckpointMismatchError(ValueError):
    """The checkpoint directory holds a run this run cannot continue: written for another
    model, algorithm config, calibration data, layer count or ``save_every``, or with files
    that do not match its manifest. Nothing was restored; use a fresh directory (or delete
    this one) to calibrate from the start."""


# ------------------------------------------------------------------------- fingerprint
def _hash_tensor(h: Any, name: str, t: torch.Tensor) -> None:
    if t.device.type == "meta":
        raise ValueError(
            f"layer checkpoint: {name} is on the meta device; its values cannot be "
            "fingerprinted (load the model's weights before calibrating)"
        )
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    h.update(memoryview(data.numpy()))


def fingerprint(
    model_before: nn.Module, config: QuantizeAlgorithmConfig, first_inputs: Sequence[Any]
) -> dict[str, str]:
    """sha256 digests of what a resumed run must share with the run that wrote the checkpoint.

    ``model``: every parameter and buffer (name, dtype, shape, bytes), every module's class and
    every quantizer's configured attributes, taken before calibration. ``config``: the
    algorithm config as sorted JSON, without ``layerwise.checkpoint_dir`` (the same run may be
    resumed from a moved directory) and ``layerwise.save_every`` (compared on its own).
    ``data``: the first layer's captured inputs (structure, dtypes, shapes, bytes). Hashing
    reads every weight once (about a second per GB).
    """
    h = hashlib.sha256()
    for name, module in model_before.named_modules(remove_duplicate=False):
        h.update(f"module|{name}|{type(module).__module__}.{type(module).__qualname__}\n".encode())
    for name, t in model_before.named_parameters(remove_duplicate=False):
        _hash_tensor(h, f"parameter {name}", t)
    for name, t in model_before.named_buffers(remove_duplicate=False):
        _hash_tensor(h, f"buffer {name}", t)
    h.update(quantizer_plan(model_before).to_json().encode())
    model_digest = h.hexdigest()

    dumped = config.model_dump(mode="json")
    layerwise = dict(dumped.get("layerwise") or {})
    layerwise.pop("checkpoint_dir", None)
    layerwise.pop("save_every", None)
    dumped["layerwise"] = layerwise
    config_digest = hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()

    tensors: dict[str, torch.Tensor] = {}
    structure = encode_tree(list(first_inputs), tensors, {}, "inputs")
    h = hashlib.sha256(json.dumps(structure, sort_keys=True).encode())
    for key, t in tensors.items():
        _hash_tensor(h, key, t)
    return {"model": model_digest, "config": config_digest, "data": h.hexdigest()}


# ------------------------------------------------------------------------- files
def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _write_atomically(directory: Path, name: str, write: Callable[[Path], None]) -> dict[str, Any]:
    """``write(tmp)``, fsync, rename over ``name``; the manifest entry of the file."""
    tmp = directory / (name + _TMP)
    write(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    entry = {"name": name, "bytes": tmp.stat().st_size, "sha256": _digest(tmp)}
    os.replace(tmp, directory / name)
    _fsync_directory(directory)
    return entry


def _world_size() -> int:
    distributed = torch.distributed
    if not distributed.is_available() or not distributed.is_initialized():
        return 1
    return distributed.get_world_size()


# ------------------------------------------------------------------------- the store
class LayerCheckpoint:
    """The checkpoint directory of one layerwise calibration (module docstring)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        num_layers: int,
        save_every: int,
        fingerprint: dict[str, str],
        store_weights: bool = True,
    ) -> None:
        world = _world_size()
        if world > 1:
            raise RuntimeError(
                f"layerwise checkpoint_dir: checkpointing runs in a single process only, and "
                f"this is a torch.distributed group of {world} processes; remove "
                "layerwise.checkpoint_dir or calibrate in one process"
            )
        for label, value in (("num_layers", num_layers), ("save_every", save_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"layer checkpoint: {label} must be an int >= 1, got {value!r}")
        if not isinstance(fingerprint, dict) or set(fingerprint) != {"model", "config", "data"}:
            raise ValueError("layer checkpoint: fingerprint must be what fingerprint() returns")
        self.directory = Path(directory)
        self.num_layers = num_layers
        self.save_every = save_every
        self.fingerprint = dict(fingerprint)
        self.store_weights = store_weights
        self._start: int | None = None
        self._next = 0
        self._layer_files: list[dict[str, Any]] = []
        self._inputs_file: dict[str, Any] | None = None

    # -- resume
    def start_layer(self) -> int:
        """The first layer this run calibrates: 0 for a new directory or one whose run
        completed, else the layer after the last one the manifest commits.

        ``CheckpointMismatchError`` when the checkpoint was written for another model, config,
        data, layer count or ``save_every``, or its files do not match the manifest.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        for pattern in (MANIFEST, "layer_*.safetensors", "inputs_*.safetensors"):
            for stale in self.directory.glob(pattern + _TMP):  # a write a kill cut short
                stale.unlink()
        manifest = self._read_manifest()
        start = 0
        if manifest is not None:
            total, last = manifest["num_layers"], manifest["last_completed_layer"]
            if last + 1 >= total:
                _say(
                    f"layerwise checkpoint in {self.directory} holds a completed run of {total} "
                    "layers; calibrating afresh"
                )
            else:
                self._check_same_run(manifest)
                start = last + 1
                self._layer_files = list(manifest["files"]["layers"])
                self._inputs_file = manifest["files"]["inputs"]
                self._check_files([*self._layer_files, self._inputs_file])
                _say(
                    f"resuming layerwise calibration at layer {start} of {self.num_layers} "
                    f"from {self.directory}"
                )
        self._start = self._next = start
        return start

    def _read_manifest(self) -> dict[str, Any] | None:
        path = self.directory / MANIFEST
        if not path.exists():
            return None
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            version = manifest["format_version"]
            if version != FORMAT_VERSION:
                raise CheckpointMismatchError(
                    f"layer checkpoint {path}: format_version {version!r}, this qruntime "
                    f"reads {FORMAT_VERSION}; use a fresh directory"
                )
            for key in ("num_layers", "last_completed_layer", "save_every"):
                if not isinstance(manifest[key], int):
                    raise TypeError(key)
            last, files = manifest["last_completed_layer"], manifest["files"]
            if len(files["layers"]) != last + 1:
                raise ValueError("files.layers does not list every completed layer")
            inputs = files["inputs"]
            if (inputs is None) != (last + 1 >= manifest["num_layers"]):
                raise ValueError("files.inputs is not listed exactly when a layer is left")
            for entry in [*files["layers"], *([inputs] if inputs else [])]:
                name, size, digest = entry["name"], entry["bytes"], entry["sha256"]
                if not (isinstance(name, str) and "/" not in name and isinstance(size, int)):
                    raise ValueError(f"a bad files entry {entry!r}")
                if not isinstance(digest, str):
                    raise ValueError(f"a bad files entry {entry!r}")
        except CheckpointMismatchError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointMismatchError(
                f"layer checkpoint {path}: not a layer checkpoint manifest ({exc!r}); delete "
                "the directory to calibrate from the start"
            ) from None
        return manifest

    def _check_same_run(self, manifest: dict[str, Any]) -> None:
        stored = manifest.get("fingerprint") or {}
        differ = [
            f"the {label} differs"
            for key, label in _FINGERPRINT_PARTS.items()
            if stored.get(key) != self.fingerprint[key]
        ]
        for key in ("num_layers", "save_every", "store_weights"):
            if manifest.get(key) != getattr(self, key):
                differ.append(f"{key} was {manifest.get(key)!r}, now {getattr(self, key)!r}")
        if differ:
            raise CheckpointMismatchError(
                f"layer checkpoint in {self.directory} was written by a different run: "
                + "; ".join(differ)
                + ". Use a fresh checkpoint_dir (or delete this one) to calibrate from the start"
            )

    def _check_files(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            path = self.directory / entry["name"]
            if not path.is_file():
                raise CheckpointMismatchError(
                    f"layer checkpoint in {self.directory}: {entry['name']}, listed in the "
                    "manifest, is missing; delete the directory to calibrate from the start"
                )
            if path.stat().st_size != entry["bytes"]:
                raise CheckpointMismatchError(
                    f"layer checkpoint in {self.directory}: {entry['name']} has "
                    f"{path.stat().st_size} bytes, the manifest says {entry['bytes']}; delete "
                    "the directory to calibrate from the start"
                )

    def _verified(self, entry: dict[str, Any]) -> Path:
        path = self.directory / entry["name"]
        self._check_files([entry])
        if _digest(path) != entry["sha256"]:
            raise CheckpointMismatchError(
                f"layer checkpoint in {self.directory}: {entry['name']} does not have the "
                "sha256 the manifest lists (changed after it was written); delete the "
                "directory to calibrate from the start"
            )
        return path

    def _started(self) -> int:
        if self._start is None:
            raise RuntimeError("layer checkpoint: call start_layer() first")
        return self._start

    def next_inputs(self, device: torch.device | str | None = None) -> list[Any]:
        """The cached inputs of layer ``start_layer()`` as saved (each tensor on ``device``,
        or on the device it was captured on)."""
        if self._started() == 0 or self._inputs_file is None:
            raise RuntimeError("layer checkpoint: a run from layer 0 captures its own inputs")
        path = self._verified(self._inputs_file)
        meta = safetensors_metadata(path)
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        where = torch.device(device) if device is not None else None
        return decode_tree(json.loads(meta["structure"]), tensors, where)

    def output_metas(self) -> list[Any]:
        """The ``output_meta`` saved with each layer ``0 .. start_layer()-1``."""
        out = []
        for entry in self._layer_files[: self._started()]:
            self._check_files([entry])
            meta = safetensors_metadata(self.directory / entry["name"])
            out.append(decode_tree(json.loads(meta["output_meta"]), {}, None))
        return out

    def restore_completed(self, layers: Sequence[nn.Module]) -> None:
        """Give layers ``0 .. start_layer()-1`` their saved calibrated state. Every file is
        verified and checked against its layer before any layer is changed."""
        start = self._started()
        if len(layers) != self.num_layers:
            raise ValueError(
                f"layer checkpoint: got {len(layers)} layers, the store has {self.num_layers}"
            )
        stored = []
        for i in range(start):
            path = self._verified(self._layer_files[i])
            try:
                stored.append(StoredLayer(path, layers[i]))
            except ValueError as exc:
                raise CheckpointMismatchError(
                    f"layer checkpoint {path}: layer {i} does not fit this model: {exc}"
                ) from None
        for i, layer_file in enumerate(stored):
            layer_file.restore(layers[i])

    # -- save
    def save(
        self,
        index: int,
        layer: nn.Module,
        next_inputs: list[Any] | None,
        *,
        output_meta: Any = None,
    ) -> None:
        """Record layer ``index``, just calibrated; at a window end (every ``save_every`` layers
        and the last layer) also the inputs of layer ``index + 1`` (None after the last layer)
        and then the manifest, which commits the window.

        ``output_meta``: a small tree without tensors (tuples, lists, dicts, numbers, strings,
        dtypes, None) describing the layer's output, which a resumed run needs to stand in for
        the finished layer (:meth:`output_metas`).
        """
        self._started()
        if index != self._next:
            raise ValueError(f"layer checkpoint: expected layer {self._next}, got {index}")
        last = index + 1 == self.num_layers
        if last != (next_inputs is None):
            raise ValueError(
                "layer checkpoint: next_inputs must be None exactly for the last layer "
                f"(layer {index} of {self.num_layers})"
            )
        tensors, metadata = layer_state(layer, self.store_weights)
        metadata["output_meta"] = plain_json(output_meta, f"output_meta of layer {index}")
        name = f"layer_{index:05d}.safetensors"
        entry = _write_atomically(
            self.directory, name, lambda p: save_file(tensors, str(p), metadata=metadata)
        )
        del self._layer_files[index:]
        self._layer_files.append(entry)
        self._next = index + 1
        if not last and (index + 1) % self.save_every != 0:
            return
        previous = self._inputs_file
        self._inputs_file = None
        if next_inputs is not None:
            self._inputs_file = self._write_inputs(index + 1, next_inputs)
        self._write_manifest(index)
        if previous is not None and previous["name"] != (self._inputs_file or {}).get("name"):
            (self.directory / previous["name"]).unlink(missing_ok=True)

    def _write_inputs(self, index: int, inputs: list[Any]) -> dict[str, Any]:
        tensors: dict[str, torch.Tensor] = {}
        structure = encode_tree(list(inputs), tensors, {}, f"inputs of layer {index}")
        data = cpu_copies(tensors)
        metadata = {"format": INPUTS_FORMAT, "structure": json.dumps(structure)}
        name = f"inputs_{index:05d}.safetensors"
        return _write_atomically(
            self.directory, name, lambda p: save_file(data, str(p), metadata=metadata)
        )

    def _write_manifest(self, last_completed: int) -> None:
        manifest = {
            "format_version": FORMAT_VERSION,
            "num_layers": self.num_layers,
            "save_every": self.save_every,
            "store_weights": self.store_weights,
            "last_completed_layer": last_completed,
            "fingerprint": self.fingerprint,
            "files": {"layers": self._layer_files, "inputs": self._inputs_file},
        }
        text = json.dumps(manifest, indent=1, sort_keys=True)
        _write_atomically(self.directory, MANIFEST, lambda p: p.write_text(text, encoding="utf-8"))


def _say(line: str) -> None:
    """Progress lines of the store go to stderr, as the project's other run-time notes."""
    print(line, file=sys.stderr, flush=True)
