"""What a calibration algorithm is handed: one :class:`CalibrationContext`.

An algorithm is a function ``run(ctx)``. Everything it may need is on the context — the model,
the plan being applied, its own config, the forward loop, the parallel state and the layer
driver — so that a new need (distributed runs, layer-by-layer drivers) is a new field here, not
a new parameter on every algorithm. The helpers list what most algorithms walk: the quantizers
and the ``(weight, weight quantizer)`` pairs.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from qconfig.algorithms import QuantizeAlgorithmConfig
from qconfig.plan import Plan
from torch import nn

from qruntime.modules.base import QuantModule
from qruntime.parallel import ParallelState
from qruntime.quantizer import SequentialQuantizer, TensorQuantizer

__all__ = [
    "CalibrationContext",
    "ForwardLoop",
    "LayerDriver",
    "WeightPair",
    "as_forward_loop",
    "leaves",
]

#: ``forward_loop(model)`` runs the calibration data through ``model``; it must be re-runnable
#: (algorithms may call it more than once). Its return value is ignored.
ForwardLoop = Callable[[nn.Module], Any]


class WeightPair(NamedTuple):
    """A weight tensor and the quantizer that quantizes it, in the module that owns both."""

    name: str  # the owning module's name in the model
    module: nn.Module
    weight: torch.Tensor
    quantizer: nn.Module  # a TensorQuantizer or a SequentialQuantizer


@runtime_checkable
class LayerDriver(Protocol):
    """Runs a calibration one layer at a time: :class:`~qruntime.calibrate.layerwise.
    LayerwiseDriver` implements it for configs with ``layerwise.enable`` (and for algorithms
    that declare ``layer_by_layer``, given one as ``ctx.layer_driver``).

    ``run(model, forward_loop, calibrate_layer)`` calls ``calibrate_layer(layer, layer_loop)``
    once per layer, in order, where ``layer_loop(layer)`` feeds that layer the inputs it receives
    when ``forward_loop`` runs the whole model (the layers before it already calibrated; their
    outputs float or quantized as the driver's settings say). Why a protocol: the algorithms
    only see a layer and a loop, so a driver for offloaded or sharded models can replace this
    one without touching them.
    """

    def run(
        self,
        model: nn.Module,
        forward_loop: ForwardLoop,
        calibrate_layer: Callable[[nn.Module, ForwardLoop], None],
    ) -> None: ...


def leaves(quantizer: nn.Module) -> Iterator[TensorQuantizer]:
    """The ``TensorQuantizer``s of a quantizer slot (the elements of a sequential one)."""
    if isinstance(quantizer, SequentialQuantizer):
        for child in quantizer:
            yield from leaves(child)
    elif isinstance(quantizer, TensorQuantizer):
        yield quantizer


def as_forward_loop(forward_loop: Callable[..., Any] | None) -> ForwardLoop | None:
    """``forward_loop`` as a function of the model.

    A callable without parameters is accepted with a ``DeprecationWarning`` and called without
    the model, as Model Optimizer 0.47.0's ``calibrate`` does; anything else is called with the
    model. A callable whose signature cannot be read is assumed to take the model.
    """
    if forward_loop is None:
        return None
    try:
        takes_nothing = len(inspect.signature(forward_loop).parameters) == 0
    except (TypeError, ValueError):
        takes_nothing = False
    if not takes_nothing:
        return forward_loop
    warnings.warn(
        "forward_loop takes no argument: calibration calls it without the model. Write "
        "forward_loop(model) instead; loops without the argument will stop being accepted.",
        DeprecationWarning,
        stacklevel=3,
    )
    loop = forward_loop

    def with_model(model: nn.Module) -> Any:
        return loop()

    return with_model


@dataclass
class CalibrationContext:
    """One algorithm's view of the calibration run (built per algorithm by ``run_algorithms``).

    ``plan`` is the plan being applied (None when an algorithm is run on a model directly);
    ``forward_loop`` is already a function of the model (see :func:`as_forward_loop`);
    ``parallel`` is the :class:`~qruntime.parallel.ParallelState` the sync points reduce over
    (None: one process, or an algorithm with ``distributed_sync: false`` — nothing to sync);
    ``layer_driver`` is given to algorithms that run layer by layer.
    """

    model: nn.Module
    config: QuantizeAlgorithmConfig
    plan: Plan | None = None
    forward_loop: ForwardLoop | None = None
    parallel: ParallelState | None = None
    layer_driver: LayerDriver | None = None

    def quantizers(self) -> list[TensorQuantizer]:
        """Every ``TensorQuantizer`` of the model (elements of sequential ones included), in
        module order. Listed afresh on each call: an algorithm may add modules."""
        return [m for m in self.model.modules() if isinstance(m, TensorQuantizer)]

    def weight_pairs(self) -> list[WeightPair]:
        """Every ``(weight, weight quantizer)`` pair the quantized modules expose for
        calibration (``QuantModule.iter_weights_for_calibration``), in module order."""
        out = []
        for name, module in self.model.named_modules():
            if isinstance(module, QuantModule):
                for weight, quantizer in module.iter_weights_for_calibration():
                    out.append(WeightPair(name, module, weight, quantizer))
        return out

    def run_forward_loop(self) -> bool:
        """Run the calibration data through the model once; False when there is no loop."""
        if self.forward_loop is None:
            return False
        self.forward_loop(self.model)
        return True
