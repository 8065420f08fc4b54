"""Layer-by-layer calibration (``layerwise.enable``): one decoder layer at a time.

Why: a whole-model calibration keeps every layer's activations, Hessians or search tables
alive at once; calibrating layer by layer holds one layer's inputs (plus the next layer's) and
lets each layer see the outputs of the layers before it — quantized ones, when
``get_qdq_activations_from_prev_layer`` asks for them (GPTQ's default), float ones otherwise,
which makes layerwise ``max`` identical to whole-model ``max`` inside the layers.

How (the semantics of Model Optimizer 0.47.0's layerwise mode):

* :func:`~qruntime.calibrate.layer_discovery.find_layers` names the blocks: a path or callable
  the caller gives, else a known Hugging Face location (``model.layers``,
  ``model.language_model.layers``, ``transformer.h``, ``encoder.layer``, ...), else the one
  outermost ``ModuleList`` of identical blocks that holds quantized modules.
* :class:`LayerwiseDriver` patches each block's ``forward`` with a small state machine and runs
  the user's ``forward_loop`` once per block (N calls for N blocks):

  - *capture*: record the block's ``(args, kwargs)`` and stop the model's forward there (the
    patched model forward returns None, so the rest of the model costs nothing);
  - *replay*: ignore what the parent passes, feed the next recorded input through the real
    forward (the block just calibrated, producing the next block's inputs);
  - *skip*: return zero placeholders on the ``meta`` device shaped like the block's output
    (blocks already done: their values are never used, since the replaying block ignores them);
  - *original*: the real forward (while the algorithm calibrates the block).

  Per block, the algorithm runs with ``CalibrationContext(model=block, forward_loop=replay)``.
* Quantizers outside the blocks (an ``lm_head``, embeddings) are not calibrated, as in Model
  Optimizer; :func:`uncalibrated_outside` lists them so the caller can warn.

``checkpoint_dir`` checkpoints the run (:mod:`qruntime.calibrate.layer_checkpoint`): after each
block its calibrated state, every ``save_every`` blocks the next block's inputs and a manifest.
A run that finds a checkpoint of the same model, config and data (the first block's inputs are
captured again to compare) restores the finished blocks, skips them and goes on from the next
one; ``calib_mutates_weights: false`` keeps the blocks' weights out of the checkpoint.

Limits (shared with Model Optimizer): the forward loop must feed the same batches in the same
order on every call (checked: a different count is an error), must not use the model's output
(it is None while a block captures), and the parent's code between blocks must run on ``meta``
tensors (a model that computes on the hidden state between blocks is refused at the first
capture with a message saying so).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from qconfig.algorithms import LayerwiseConfig, QuantizeAlgorithmConfig
from torch import nn

from qruntime.calibrate.context import ForwardLoop
from qruntime.calibrate.layer_checkpoint import LayerCheckpoint, fingerprint
from qruntime.calibrate.layer_discovery import (
    KNOWN_LAYER_PATHS,
    DecoderLayers,
    LayerSpec,
    LayerwiseError,
    find_layers,
    uncalibrated_outside,
)
from qruntime.quantizer import TensorQuantizer

__all__ = [
    "KNOWN_LAYER_PATHS",
    "DecoderLayers",
    "LayerSpec",
    "LayerwiseDriver",
    "LayerwiseError",
    "LayerwiseOptions",
    "find_layers",
    "uncalibrated_outside",
]


@dataclass(frozen=True)
class LayerwiseOptions:
    """How layer-by-layer calibration runs, beyond the config's ``layerwise`` settings.

    ``layers``: the blocks (:data:`LayerSpec`; None = :func:`find_layers`' search).
    ``offload_inputs``: keep the recorded block inputs in CPU memory and move them back to their
    device for each replay (for calibration sets whose activations do not fit beside the model
    on the accelerator).
    ``progress``: a progress bar per block on stderr; None = only when stderr is a terminal.
    """

    layers: LayerSpec | None = None
    offload_inputs: bool = False
    progress: bool | None = None


# --------------------------------------------------------------------------- the driver


class _StopForward(Exception):
    """Raised by a capturing block to end the model's forward there."""


@dataclass
class _Offloaded:
    """A recorded tensor kept on the CPU, with the device it goes back to for a replay."""

    tensor: torch.Tensor
    device: torch.device


def _map(obj: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn`` applied to every leaf of nested tuples, lists and dicts."""
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_map(o, fn) for o in obj)
    if isinstance(obj, list):
        return [_map(o, fn) for o in obj]
    if type(obj) is dict:
        return {k: _map(v, fn) for k, v in obj.items()}
    return fn(obj)


def _offload(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor) and obj.device.type != "cpu":
        return _Offloaded(obj.to("cpu"), obj.device)
    return obj


def _restore(obj: Any) -> Any:
    return obj.tensor.to(obj.device) if isinstance(obj, _Offloaded) else obj


def _on_cpu(obj: Any) -> Any:
    """A recorded value as a checkpoint stores it: an offloaded tensor is its CPU copy."""
    return obj.tensor if isinstance(obj, _Offloaded) else obj


def _placeholder_of(output: Any) -> Any:
    """A description of a block's output from which :func:`_placeholder` rebuilds zeros."""
    if isinstance(output, torch.Tensor):
        return ("tensor", tuple(output.shape), output.dtype)
    if isinstance(output, tuple):
        return ("tuple", tuple(_placeholder_of(o) for o in output))
    if isinstance(output, list):
        return ("list", [_placeholder_of(o) for o in output])
    return ("value", output)


def _placeholder(meta: Any) -> Any:
    kind, value = meta[0], meta[1:]
    if kind == "tensor":
        shape, dtype = value
        return torch.zeros(shape, dtype=dtype, device="meta")
    if kind == "tuple":
        return tuple(_placeholder(m) for m in value[0])
    if kind == "list":
        return [_placeholder(m) for m in value[0]]
    return value[0]


Inputs = list[tuple[tuple[Any, ...], dict[str, Any]]]


@dataclass
class _Block:
    """One block's state in the driver's state machine."""

    name: str
    module: nn.Module
    forward: Callable[..., Any]  # the real forward
    mode: str = "original"  # original | capture | replay | skip
    captured: Inputs = field(default_factory=list)
    replay: Iterator[tuple[tuple[Any, ...], dict[str, Any]]] | None = None
    replayed: int = 0
    output: Any = None  # _placeholder_of the last replayed output


def _fresh_cache(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with an emptied ``past_key_values``: a replay must not see the keys and values
    an earlier replay appended (Model Optimizer resets it the same way)."""
    cache = kwargs.get("past_key_values")
    if cache is None:
        return kwargs
    if hasattr(cache, "reset"):
        cache.reset()
        return kwargs
    return {**kwargs, "past_key_values": None}


@contextmanager
def quantizers_off(module: nn.Module) -> Iterator[None]:
    """Every enabled quantizer of ``module`` disabled for the duration (float outputs)."""
    switched = [m for m in module.modules() if isinstance(m, TensorQuantizer) and m.is_enabled]
    for quantizer in switched:
        quantizer.disable()
    try:
        yield
    finally:
        for quantizer in switched:
            quantizer.enable()


def _progress(total: int, enabled: bool | None) -> Any:
    """A tqdm bar (time left included) when tqdm is installed; None otherwise or when off."""
    if enabled is False:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the bar is a convenience: calibration runs the same without it
        return None
    return tqdm(
        total=total,
        desc="layerwise calibration",
        unit="layer",
        file=sys.stderr,
        disable=None if enabled is None else not enabled,
        dynamic_ncols=True,
    )


class LayerwiseDriver:
    """Runs a calibration one block at a time (module docstring): implements
    :class:`~qruntime.calibrate.context.LayerDriver`.

    ``settings`` is the algorithm config's ``layerwise``; ``layers`` the blocks, found by the
    caller (:func:`find_layers`) so that a missing block list is refused before the model is
    touched. ``forward_loop_calls`` counts the full-model passes of the last :meth:`run`.
    """

    def __init__(
        self,
        layers: DecoderLayers,
        settings: LayerwiseConfig,
        options: LayerwiseOptions | None = None,
        *,
        config: QuantizeAlgorithmConfig | None = None,
    ) -> None:
        if settings.checkpoint_dir is not None and config is None:
            raise ValueError(
                "layerwise.checkpoint_dir: the driver needs the algorithm config (config=...) "
                "to tell a checkpoint of this run from one of another run"
            )
        self.layers = layers
        self.settings = settings
        self.options = options or LayerwiseOptions()
        self.config = config
        self.forward_loop_calls = 0
        self._blocks: list[_Block] = []

    # ---- the patched forwards

    def _block_forward(self, block: _Block, *args: Any, **kwargs: Any) -> Any:
        if block.mode == "capture":
            if self.options.offload_inputs:
                args, kwargs = _map(args, _offload), _map(kwargs, _offload)
            block.captured.append((args, kwargs))
            raise _StopForward
        if block.mode == "replay":
            assert block.replay is not None
            recorded = next(block.replay, None)
            if recorded is None:
                raise LayerwiseError(
                    f"forward_loop reached block {block.name!r} more often than when its inputs "
                    "were recorded: layerwise calibration needs a forward_loop that feeds the "
                    "same batches in the same order on every call"
                )
            block.replayed += 1
            args, kwargs = self._unpack(recorded)
            output = block.forward(*args, **kwargs)
            block.output = _placeholder_of(output)
            return output
        if block.mode == "skip":
            return _placeholder(block.output)
        return block.forward(*args, **kwargs)

    def _unpack(
        self, recorded: tuple[tuple[Any, ...], dict[str, Any]]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """A recorded input ready for a replay: back on its device, with an empty KV cache."""
        args, kwargs = recorded
        if self.options.offload_inputs:
            args, kwargs = _map(args, _restore), _map(kwargs, _restore)
        return args, _fresh_cache(kwargs)

    def _patch(self, model: nn.Module) -> Callable[[], None]:
        """Patch the blocks' and the model's forward; returns the function that undoes it."""
        patched: list[tuple[nn.Module, bool, Any]] = []

        def patch(module: nn.Module, forward: Callable[..., Any]) -> None:
            had = "forward" in module.__dict__
            patched.append((module, had, module.__dict__.get("forward")))
            module.forward = forward  # type: ignore[method-assign]

        def undo() -> None:
            for module, had, old in reversed(patched):
                if had:
                    module.forward = old  # type: ignore[method-assign]
                else:
                    module.__dict__.pop("forward", None)

        try:
            for name, module in zip(self.layers.names, self.layers.modules, strict=True):
                block = _Block(name, module, module.forward)
                self._blocks.append(block)
                patch(module, functools.partial(self._block_forward, block))
            model_forward = model.forward

            def stopping_forward(*args: Any, **kwargs: Any) -> Any:
                try:
                    return model_forward(*args, **kwargs)
                except _StopForward:
                    return None
                except (RuntimeError, NotImplementedError) as exc:
                    if "meta" not in str(exc):
                        raise
                    raise LayerwiseError(
                        "layerwise calibration stands in for finished blocks with meta-device "
                        f"placeholders, and {type(model).__name__}'s forward computes on their "
                        "outputs between blocks; calibrate this model without layerwise"
                    ) from exc

            patch(model, stopping_forward)
        except BaseException:
            undo()
            raise
        return undo

    # ---- the passes

    def _capture(self, model: nn.Module, forward_loop: ForwardLoop, index: int) -> Inputs:
        """One full-model pass: block ``index`` records its inputs (the block before it, if any,
        replays its own recorded inputs; earlier ones are skipped)."""
        target = self._blocks[index]
        target.mode, target.captured = "capture", []
        previous = self._blocks[index - 1] if index > 0 else None
        if previous is not None:
            previous.mode, previous.replayed = "replay", 0
            previous.replay = iter(previous.captured)
        try:
            self.forward_loop_calls += 1
            forward_loop(model)
        except _StopForward:
            raise LayerwiseError(
                f"forward_loop reached block {target.name!r} without calling the model itself "
                "(a submodule or a method such as generate?): layerwise calibration stops the "
                "model's forward at the block, so the loop must call model(...)"
            ) from None
        finally:
            target.mode = "original"
            if previous is not None:
                previous.mode, previous.replay = "skip", None
        if not target.captured:
            raise LayerwiseError(
                f"forward_loop never reached block {target.name!r}: check that it calls the "
                "model and that the block is on the model's forward path"
            )
        if previous is not None and previous.replayed != len(previous.captured):
            raise LayerwiseError(
                f"forward_loop fed block {previous.name!r} {previous.replayed} batches, but "
                f"{len(previous.captured)} when its inputs were recorded: layerwise calibration "
                "needs a forward_loop that feeds the same batches in the same order on every call"
            )
        captured, target.captured = target.captured, []
        return captured

    def _replay_loop(self, inputs: Inputs) -> ForwardLoop:
        def layer_loop(module: nn.Module) -> None:
            for recorded in inputs:
                args, kwargs = self._unpack(recorded)
                module(*args, **kwargs)

        return layer_loop

    # ---- checkpoints (layer_checkpoint)

    def _checkpoint(self, model: nn.Module, first: Inputs) -> LayerCheckpoint | None:
        """The checkpoint store of ``checkpoint_dir`` (None without one), fingerprinted with
        the model as it is before any block is calibrated and the first block's inputs."""
        if self.settings.checkpoint_dir is None:
            return None
        assert self.config is not None
        return LayerCheckpoint(
            self.settings.checkpoint_dir,
            num_layers=len(self._blocks),
            save_every=self.settings.save_every,
            fingerprint=fingerprint(model, self.config, _map(first, _on_cpu)),
            store_weights=self.settings.calib_mutates_weights,
        )

    def _resume(self, store: LayerCheckpoint, start: int) -> Inputs:
        """Blocks before ``start`` get their calibrated state and skip, standing in with the
        saved output shapes; returns the inputs of block ``start``."""
        store.restore_completed(self.layers.modules)
        for block, meta in zip(self._blocks[:start], store.output_metas(), strict=True):
            block.mode, block.output = "skip", meta
        if not self.options.offload_inputs:
            return store.next_inputs()  # each tensor back on the device it was recorded on
        # stored from CPU copies: kept there, and moved to the block's device for each replay
        target = self._blocks[start].module
        device = next((p.device for p in target.parameters()), torch.device("cpu"))
        if device.type == "cpu":
            return store.next_inputs()
        return _map(
            store.next_inputs(), lambda t: _Offloaded(t, device) if torch.is_tensor(t) else t
        )

    def run(
        self,
        model: nn.Module,
        forward_loop: ForwardLoop,
        calibrate_layer: Callable[[nn.Module, ForwardLoop], None],
    ) -> None:
        """Call ``calibrate_layer(block, block_loop)`` for each block in order (module
        docstring); the model's forwards are restored whatever happens."""
        qdq_from_prev = self.settings.get_qdq_activations_from_prev_layer
        self.forward_loop_calls = 0
        self._blocks = []
        undo = self._patch(model)
        bar = _progress(len(self._blocks), self.options.progress)
        try:
            inputs: Inputs | None = self._capture(model, forward_loop, 0)
            store = self._checkpoint(model, inputs)
            start = 0 if store is None else store.start_layer()
            if start:
                assert store is not None
                inputs = self._resume(store, start)
                if bar is not None:
                    bar.update(start)
            for index in range(start, len(self._blocks)):
                block = self._blocks[index]
                assert inputs is not None
                if bar is not None:
                    bar.set_postfix_str(block.name, refresh=False)
                last = index + 1 == len(self._blocks)
                block.captured = inputs  # what the block replays when the next one captures
                following: Inputs | None = None
                if not last and not qdq_from_prev:
                    with quantizers_off(block.module):
                        following = self._capture(model, forward_loop, index + 1)
                    block.mode = "original"
                calibrate_layer(block.module, self._replay_loop(inputs))
                if not last and qdq_from_prev:
                    following = self._capture(model, forward_loop, index + 1)
                block.mode = "skip" if not last else "original"
                block.captured, inputs = [], following
                if store is not None:
                    plain = None if following is None else _map(following, _on_cpu)
                    store.save(index, block.module, plain, output_meta=block.output)
                if bar is not None:
                    bar.update(1)
        finally:
            undo()
            for block in self._blocks:
                block.captured, block.replay, block.output = [], None, None
            self._blocks = []
            if bar is not None:
                bar.close()
