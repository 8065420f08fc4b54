"""``TensorQuantizer``: the nn.Module a patched model calls to fake-quantize one tensor.

A quantizer holds the attribute set it was configured with (``config``), the spec it runs with
(``spec``: the same attributes resolved, plus the runtime rewrites below), Model Optimizer's
runtime flags (``_disabled``, ``_if_quant``, ``_if_calib``) and its calibration buffers
(``_amax``, ``_pre_quant_scale``, ``_bias_value``, ``_global_amax``) under Model Optimizer's
names, so ``state_dict`` keys read ``<module>.weight_quantizer._amax``
(docs/model-optimizer-rules.md, "Save and restore"). Its forward runs the order of operations of
docs/numerics.md and hands the quantization itself to :func:`qruntime.numerics.fake_quant`.

Two runtime rewrites of Model Optimizer are reproduced because they are visible in its state
(and hence in conformance comparisons and saved checkpoints): on the first enabled forward
``block_sizes`` whose integer keys all map to None become ``axis``, and a static block layout
sets ``axis`` to the kept dims of the block view (e.g. ``(0,)``; docs/numerics.md, "Block
layouts"). The calibrator is handed in by :func:`qruntime.calibrators.build_calibrator`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from qconfig.attributes import QuantizerAttributeConfig
from qconfig.spec import NO_ROTATION, QuantizerSpec

from qruntime.calibrators import BiasCalibrator, build_calibrator
from qruntime.numerics import fake_quant
from qruntime.numerics.blocks import StaticBlockPlan, static_block_plan
from qruntime.numerics.checks import check_input, check_rotation
from qruntime.numerics.rotation import rotate as hadamard_rotate
from qruntime.quantizer.attributes import (
    DEFAULT_CONFIG,
    DEFAULT_SPEC,
    apply_attribute_set,
    repoints_calibrator,
    reported_rotate,
)
from qruntime.quantizer.buffers import CalibrationBuffers

__all__ = ["HardDisabledTensorQuantizer", "QuantizerInputError", "TensorQuantizer"]


class QuantizerInputError(ValueError):
    """An input the quantizer's layout does not fit (an ``axis`` or block axis the tensor does
    not have), found at the forward that first sees it; the message names the quantizer."""


class TensorQuantizer(CalibrationBuffers):
    """Fake-quantizes one tensor per the attributes of ``QuantizerAttributeConfig``.

    Calibration state (``_if_calib``/``_if_quant``) is driven by the calibration algorithms in
    :mod:`qruntime.calibrate`; outside calibration a configured quantizer quantizes with its
    stored ``_amax`` if it has one, else with an amax recomputed from each input (dynamic).
    """

    #: ``fake_quant``'s backend: "auto" runs the Triton kernels (bit-exact with the torch
    #: reference, docs/kernels.md) for CUDA tensors when Triton is installed; "torch" never does.
    backend: str = "auto"

    def __init__(
        self, config: QuantizerAttributeConfig | None = None, spec: QuantizerSpec | None = None
    ) -> None:
        super().__init__()
        # Plain attributes go straight into __dict__: nn.Module.__setattr__ only adds checks
        # for parameters/buffers/submodules, and quantizers are created by the thousand.
        self.__dict__.update(
            _config=DEFAULT_CONFIG,
            _spec=DEFAULT_SPEC,
            _disabled=False,
            _if_quant=True,
            _if_calib=False,
            _enable_pre_quant_scale=True,
            _calibrator=None,
            _bias_calibrator=None,
            _block_plan=None,
            _work=None,
            _layout_checked=None,
            _qruntime_name="",
        )
        if config is None:
            config, spec = DEFAULT_CONFIG, DEFAULT_SPEC
        self.set_from_attribute_config(config, spec)

    # ------------------------------------------------------------------ configuration
    def set_from_attribute_config(
        self,
        config: QuantizerAttributeConfig | Mapping[str, Any],
        spec: QuantizerSpec | None = None,
    ) -> None:
        """Apply an attribute set: a full replacement for a config, a partial update for a dict.

        Model Optimizer's rules (docs/differences.md lists where we differ): a full replacement
        writes every field and builds a fresh calibrator; a dict writes only its keys; a dict
        equal to ``{"enable": False}`` also switches rotation off; MX formats force the
        straight-through gradient. Calibration buffers are never reset; ``constant_amax``
        (re)writes ``_amax``. ``spec`` is ``config`` already resolved (a plan carries it).

        The runtime spec keeps the rewrites earlier forwards made (``block_sizes`` → ``axis``,
        the static block axis) for every field a partial update does not name.
        """
        d = self.__dict__
        update = apply_attribute_set(d["_config"], d["_spec"], config, spec)
        config, spec, values = update.config, update.spec, update.values
        if update.writes("block_sizes"):
            d["_block_plan"] = None
        if "enable" in values:
            d["_disabled"] = values["enable"] is False
        d["_config"] = config
        d["_spec"] = spec
        if update.writes("calibrator"):
            d["_calibrator"] = build_calibrator(config.calibrator, spec.axis)
        if update.writes("bias"):
            d["_bias_calibrator"] = BiasCalibrator(config.bias) if config.bias is not None else None
        if not update.full and d["_calibrator"] is not None and repoints_calibrator(values):
            d["_calibrator"].axis = spec.axis
        if not update.full and values == {"enable": False}:
            self.disable_rotate()
        if config.constant_amax is not None and "constant_amax" in values:
            self._set_buffer("_amax", torch.tensor(float(config.constant_amax)))
        self._renew_work()

    @property
    def spec(self) -> QuantizerSpec:
        """The resolved attributes this quantizer computes with, runtime rewrites included."""
        return self._spec

    @property
    def config(self) -> QuantizerAttributeConfig:
        """The attribute set as configured, with the current enable state and rotation (what a
        plan must hold to rebuild this quantizer; the runtime axis rewrites are not included)."""
        enable = not self._disabled
        rotate = reported_rotate(self._config, self._spec)
        if self._config.enable == enable and self._config.rotate is rotate:
            return self._config
        return self._config.model_copy(update={"enable": enable, "rotate": rotate})

    def attributes(self) -> dict[str, Any]:
        """Every attribute field with its *runtime* value (Model Optimizer's quantizer state).

        ``axis``/``block_sizes`` reflect the runtime rewrites of steps 5-6 of docs/numerics.md,
        'Order of operations in a quantizer', and ``rotate`` a rotation switched off by
        ``{"enable": False}``.
        """
        out = dict(self._config.__dict__)
        out["enable"] = not self._disabled
        out["axis"] = self._spec.axis
        out["block_sizes"] = self._spec.block_sizes
        out["rotate"] = reported_rotate(self._config, self._spec)
        return out

    # ------------------------------------------------------------------ Model Optimizer API
    @property
    def is_enabled(self) -> bool:
        return not self._disabled

    def enable(self) -> None:
        self.__dict__["_disabled"] = False

    def disable(self) -> None:
        self.__dict__["_disabled"] = True

    def enable_quant(self) -> None:
        self.__dict__["_if_quant"] = True

    def disable_quant(self) -> None:
        self.__dict__["_if_quant"] = False

    def enable_calib(self) -> None:
        """Collect statistics in forward; dynamic quantizers never calibrate.

        docs/model-optimizer-rules.md, 'Calibration phases of max', step 1.
        """
        if self._calibrator is None:
            raise ValueError("Calibrator was not created, cannot enable calibration.")
        if self._spec.is_dynamic:
            return
        self.__dict__["_if_calib"] = True

    def disable_calib(self) -> None:
        self.__dict__["_if_calib"] = False

    def disable_rotate(self) -> None:
        """Switch rotation off (the reported ``rotate`` keeps its type)."""
        spec = self._spec
        self.__dict__["_spec"] = spec.replace(rotate=replace(spec.rotate, enable=False))
        self._renew_work()

    @property
    def num_bits(self) -> Any:
        return self._config.num_bits

    @property
    def axis(self) -> Any:
        return self._spec.axis

    @axis.setter
    def axis(self, value: Any) -> None:
        self._set_layout(axis=value)

    def _set_layout(self, **changes: Any) -> None:
        """Runtime rewrites of axis / block sizes; the calibrator follows the axis."""
        d = self.__dict__
        spec = d["_spec"] = d["_spec"].replace(**changes)
        if d["_calibrator"] is not None:
            d["_calibrator"].axis = spec.axis
        self._renew_work()

    @property
    def block_sizes(self) -> Mapping[Any, Any] | None:
        return self._spec.block_sizes

    @property
    def fake_quant(self) -> bool:
        return self._spec.fake_quant

    @property
    def is_dynamic(self) -> bool:
        return self._spec.is_dynamic

    @property
    def is_mx_format(self) -> bool:
        return self._spec.is_mx

    @property
    def is_static_block_quant(self) -> bool:
        return self._spec.is_static_block and self._spec.fake_quant

    @property
    def is_nvfp4_static(self) -> bool:
        return self.is_static_block_quant and self._spec.family == "nvfp4"

    @property
    def uses_constant_amax(self) -> bool:
        return self._config.use_constant_amax or self._config.constant_amax is not None

    # ------------------------------------------------------------------ forward
    def _renew_work(self) -> None:
        """Rebuild the record of :meth:`_work_attributes` after ``_spec`` changed.

        Built when the spec changes, not lazily in the forward: a forward that fills a cache is a
        side effect ``torch.compile`` guards on, so the first compiled call (cache empty) and
        every later one (cache full) would be two different graphs.
        """
        self.__dict__["_work"] = self._spec.replace(enable=True, rotate=NO_ROTATION)

    def _work_attributes(self) -> QuantizerSpec:
        """The attribute record handed to ``fake_quant``: runtime axis/block sizes, enabled,
        rotation already applied by this module (rebuilt whenever the spec changes)."""
        work = self._work
        if work is None:  # a quantizer pickled before the record was kept up to date
            self._renew_work()
            work = self._work
        return work

    def _check_input_layout(self, x: torch.Tensor) -> None:
        """What only the input decides (an activation's rank is known now): the axes of the
        layout exist on it — Model Optimizer silently quantizes per tensor instead — the
        format's block size along its last dim, and a last dim a rotation can block. Checked
        again only when the spec, the input rank (the shape, for real quantization, whose
        packing depends on it; the last dim, for a rotation) or the disabled flag changes."""
        d = self.__dict__
        spec = d["_spec"]
        rotating = spec.rotate.enable
        if spec.fake_quant:
            key: Any = (x.dim(), x.shape[-1] if rotating and x.dim() else None, d["_disabled"])
        else:
            key = (tuple(x.shape), d["_disabled"])
        checked = d.get("_layout_checked")  # absent on quantizers pickled by older versions
        if checked is not None and checked[0] is spec and checked[1] == key:
            return
        shape = tuple(x.shape)
        try:
            check_rotation(spec.rotate, shape)  # rotation runs even when disabled
            if not d["_disabled"]:
                check_input(spec, shape, formats=spec.is_dynamic_block)
        except ValueError as exc:
            name = d.get("_qruntime_name") or "quantizer"
            raise QuantizerInputError(f"{name}: {exc} (its input has shape {shape})") from None
        d["_layout_checked"] = (spec, key)

    def _block_sizes_to_axis(self, x: torch.Tensor) -> None:
        """``{-1: None}`` means "reduce these dims" → ``axis`` = the rest.

        docs/numerics.md, 'Order of operations in a quantizer', step 5.
        """
        spec = self._spec
        if spec.strategy != "token":
            return
        listed = {k if k >= 0 else k + x.dim() for k in spec.block_axes}
        self._set_layout(
            axis=tuple(i for i in range(x.dim()) if i not in listed) or None, block_sizes=None
        )

    def _static_plan(self, x: torch.Tensor) -> StaticBlockPlan:
        """The pad-and-reshape plan, fixed by the first input's shape.

        docs/numerics.md, 'Static blocks'.
        """
        plan = self._block_plan
        if plan is None:
            plan = static_block_plan(x.shape, self._spec.block_sizes or {})
            self._block_plan = plan
            self.axis = plan.axis
        elif tuple(x.shape) != plan.shape:
            raise ValueError(
                f"Input shape has changed from {tuple(plan.shape)} to {tuple(x.shape)}. "
                "Block-quantization requires a fixed input shape."
            )
        return plan

    def _collect(self, x: torch.Tensor) -> None:
        """A static bias is collected first and subtracted, then the calibrator collects.

        docs/numerics.md, 'Order of operations in a quantizer', step 7, and 'Affine bias'.
        """
        if self.has_static_bias:
            self._bias_calibrator.collect(x)
            x = x - self._bias_calibrator.compute_bias()
        assert self._calibrator is not None
        self._calibrator.collect(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pre_quant_scale, rotation, disabled pass-through, block_sizes → axis, static block
        reshape, calibration, fake quant, un-reshape, rotate back (docs/numerics.md, 'Order of
        operations in a quantizer')."""
        d = self.__dict__
        spec = d["_spec"]
        if spec.rotate.enable or (
            not d["_disabled"]
            and (spec.axis is not None or spec.block_sizes is not None or not spec.fake_quant)
        ):
            self._check_input_layout(x)  # also while calibration only passes inputs through
        pqs = d["_buffers"].get("_pre_quant_scale")
        rotation = spec.rotate
        if (
            pqs is None
            and not rotation.enable
            and (
                d["_disabled"]
                or not (d["_if_quant"] or d["_if_calib"] or spec.block_sizes is not None)
            )
        ):
            return x  # nothing to do: disabled, or neither quantizing nor collecting
        if x.numel() == 0:
            return x
        if pqs is not None and d["_enable_pre_quant_scale"]:
            x = x * pqs
        if rotation.enable:
            x = hadamard_rotate(x, rotation)
        if d["_disabled"]:
            return hadamard_rotate(x, rotation) if rotation.rotate_back else x
        if spec.block_sizes is not None and spec.fake_quant:
            self._block_sizes_to_axis(x)
        plan = self._static_plan(x) if self.is_static_block_quant else None
        if d["_if_calib"] and not spec.is_dynamic:
            self._collect(plan.to_blocks(x) if plan is not None else x)
        if not d["_if_quant"]:
            return hadamard_rotate(x, rotation) if rotation.rotate_back else x
        if not x.is_contiguous():
            x = x.contiguous()
        buffers = d["_buffers"]
        amax = None if self.is_mx_format else buffers.get("_amax")
        try:
            y = fake_quant(
                x,
                self._work_attributes(),
                amax,
                global_amax=buffers.get("_global_amax"),
                bias_value=buffers.get("_bias_value"),
                backend=self.backend,
            )
        except TypeError as exc:  # negative input to an unsigned quantizer: data, not a bug
            if not spec.unsigned:
                raise
            name = d.get("_qruntime_name") or "quantizer"
            raise QuantizerInputError(
                f"{name}: {exc} An unsigned quantizer needs inputs >= 0 (input shape "
                f"{tuple(x.shape)}, minimum {float(x.min()):.4g})"
            ) from None
        return hadamard_rotate(y, rotation) if rotation.rotate_back else y

    def extra_repr(self) -> str:
        if self._disabled:
            return "disabled"
        from qconfig.plan import describe_format

        text = describe_format(self.config)
        amax = self.amax
        if amax is not None:
            text += f" amax={amax.item():.4g}" if amax.numel() == 1 else f" amax=({amax.numel()},)"
        elif not self.uses_constant_amax:
            text += " amax=dynamic"
        if not self._if_quant:
            text += " (quant off)"
        if self._if_calib:
            text += " (calibrating)"
        return text


class HardDisabledTensorQuantizer(TensorQuantizer):
    """A quantizer slot that can never be enabled: the Embedding's ``input_quantizer``.

    Configs are absorbed and the quantizer forced back off; explicit enabling raises
    (docs/model-optimizer-rules.md, 'Quantizers each module gets').
    """

    _ERROR = (
        "This TensorQuantizer is hard-disabled by its parent module (the input_quantizer of an "
        "nn.Embedding, whose input is integer indices) and cannot be enabled."
    )

    def set_from_attribute_config(
        self,
        config: QuantizerAttributeConfig | Mapping[str, Any],
        spec: QuantizerSpec | None = None,
    ) -> None:
        super().set_from_attribute_config(config, spec)
        self._disabled = True

    def enable(self) -> None:
        raise RuntimeError(self._ERROR)

    def enable_quant(self) -> None:
        raise RuntimeError(self._ERROR)

    def enable_calib(self) -> None:
        raise RuntimeError(self._ERROR)
