"""``TensorQuantizer`` and ``SequentialQuantizer``: the nn.Modules a patched model calls.

A quantizer holds the attribute set it was configured with (``config``), the runtime state Model
Optimizer keeps beside it (``_disabled``, ``_axis``, ``_block_sizes``, ``_if_quant``,
``_if_calib``, ``_rotate``) and its calibration buffers (``_amax``, ``_pre_quant_scale``,
``_bias_value``, ``_global_amax``) under Model Optimizer's names, so ``state_dict`` keys read
``<module>.weight_quantizer._amax`` (config-semantics §12.2). Its forward runs the order of
numerics.md §2 and hands the quantization itself to :func:`qruntime.numerics.fake_quant`.

Two runtime rewrites of Model Optimizer are reproduced because they are visible in its state
(and hence in conformance comparisons and saved checkpoints): on the first enabled forward
``block_sizes`` whose integer keys all map to None become ``axis`` (numerics.md §2 step 5), and a
static block layout sets ``axis`` to the kept dims of the block view (§3.2, e.g. ``(0,)``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import torch
from qconfig.attributes import QuantizerAttributeConfig, RotateConfig
from qconfig.spec import NO_ROTATION, QuantizerSpec, resolve_rotation, resolve_spec
from torch import nn

from qruntime.calibrators import BiasCalibrator, build_calibrator
from qruntime.numerics import fake_quant
from qruntime.numerics.blocks import StaticBlockPlan, static_block_plan
from qruntime.numerics.rotation import rotate as hadamard_rotate

__all__ = [
    "ATTRIBUTE_FIELDS",
    "HardDisabledTensorQuantizer",
    "SequentialQuantizer",
    "TensorQuantizer",
    "is_quantizer",
]

#: The 19 ``QuantizerAttributeConfig`` fields in declaration order (config-semantics §2.1).
ATTRIBUTE_FIELDS: tuple[str, ...] = tuple(QuantizerAttributeConfig.model_fields)

_DEFAULT_CONFIG = QuantizerAttributeConfig()
_DEFAULT_SPEC = resolve_spec(_DEFAULT_CONFIG)


def _rotation_off(rotate: Any) -> Any:
    """A ``rotate`` value switched off, keeping its type (a bool, a ``RotateConfig``, a dict)."""
    if isinstance(rotate, RotateConfig):
        return rotate.model_copy(update={"enable": False})
    if isinstance(rotate, Mapping):
        return dict(rotate, enable=False)
    return False


def _repoints_calibrator(values: Mapping[str, Any]) -> bool:
    """Whether a partial update moves the existing calibrator to the new axis.

    Model Optimizer writes a dict's keys in order, and its axis and block-size setters re-point
    the calibrator that exists at that moment; a calibrator built from a ``calibrator`` value
    keeps the arguments it was constructed with (a ``"max"`` one is built on the current axis).
    So a layout key re-points unless a ``calibrator`` key comes after it.
    """
    keys = list(values)
    layout = [keys.index(k) for k in ("axis", "block_sizes") if k in values]
    if not layout:
        return False
    return "calibrator" not in values or keys.index("calibrator") < max(layout)


class TensorQuantizer(nn.Module):
    """Fake-quantizes one tensor per the attributes of ``QuantizerAttributeConfig``.

    Calibration state (``_if_calib``/``_if_quant``) is driven by the calibration algorithms in
    :mod:`qruntime.calibrate`; outside calibration a configured quantizer quantizes with its
    stored ``_amax`` if it has one, else with an amax recomputed from each input (dynamic).
    """

    #: ``fake_quant``'s backend: "auto" runs the Triton kernels (bit-exact with the torch
    #: reference, docs/kernels.md) for CUDA tensors when Triton is installed; "torch" never does.
    backend: str = "auto"

    def __init__(self, config: QuantizerAttributeConfig | None = None) -> None:
        super().__init__()
        # Plain attributes go straight into __dict__: nn.Module.__setattr__ only adds checks
        # for parameters/buffers/submodules, and quantizers are created by the thousand.
        self.__dict__.update(
            _config=_DEFAULT_CONFIG,
            _spec=_DEFAULT_SPEC,
            _disabled=False,
            _if_quant=True,
            _if_calib=False,
            _enable_pre_quant_scale=True,
            _calibrator=None,
            _bias_calibrator=None,
            _block_plan=None,
            _work=None,
        )
        self.set_from_attribute_config(config if config is not None else _DEFAULT_CONFIG)

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
        if isinstance(config, QuantizerAttributeConfig):
            values: dict[str, Any] = config.__dict__
            merged = values
            full = True
            new_config = config
        else:
            unknown = set(config) - set(ATTRIBUTE_FIELDS)
            if unknown:
                raise AssertionError(f"{sorted(unknown)} is not a valid TensorQuantizer attribute")
            values = dict(config)
            full = False
            spec = None
            merged = {**d["_config"].__dict__, **values}
            if merged.get("block_sizes") is not None and "block_sizes" in values:
                merged["axis"] = None
            new_config = QuantizerAttributeConfig.model_construct(
                _fields_set=set(d["_config"].model_fields_set) | set(values), **merged
            )
        if spec is None:
            spec = resolve_spec(new_config)
        if not full:
            old = d["_spec"]
            kept: dict[str, Any] = {}
            if "axis" not in values:
                kept["axis"] = old.axis
            if "block_sizes" not in values:
                kept["block_sizes"] = old.block_sizes
            elif spec.block_sizes is not None:
                kept["axis"] = None
            if "rotate" not in values:
                kept["rotate"] = old.rotate
            if kept:
                spec = spec.replace(**kept)
        if full or "block_sizes" in values:
            d["_block_plan"] = None
        if "enable" in values:
            d["_disabled"] = values["enable"] is False
        if spec.is_mx and not spec.pass_through_bwd:
            new_config = new_config.model_copy(update={"pass_through_bwd": True})
            spec = spec.replace(pass_through_bwd=True)
        d["_config"] = new_config
        d["_spec"] = spec
        if full or "calibrator" in values:
            d["_calibrator"] = build_calibrator(merged["calibrator"], spec.axis)
        if full or "bias" in values:
            bias = merged["bias"]
            d["_bias_calibrator"] = BiasCalibrator(bias) if bias is not None else None
        if not full and d["_calibrator"] is not None and _repoints_calibrator(values):
            d["_calibrator"].axis = spec.axis
        if not full and values == {"enable": False}:
            self.disable_rotate()
        if merged["constant_amax"] is not None and "constant_amax" in values:
            self._set_buffer("_amax", torch.tensor(float(merged["constant_amax"])))
        d["_work"] = None

    @property
    def spec(self) -> QuantizerSpec:
        """The resolved attributes this quantizer computes with, runtime rewrites included."""
        return self._spec

    def _reported_rotate(self) -> Any:
        rotate = self._config.rotate
        if self._spec.rotate.enable or not resolve_rotation(rotate).enable:
            return rotate
        return _rotation_off(rotate)

    @property
    def config(self) -> QuantizerAttributeConfig:
        """The attribute set as configured, with the current enable state and rotation (what a
        plan must hold to rebuild this quantizer; the runtime axis rewrites are not included)."""
        enable = not self._disabled
        rotate = self._reported_rotate()
        if self._config.enable == enable and self._config.rotate is rotate:
            return self._config
        return self._config.model_copy(update={"enable": enable, "rotate": rotate})

    def attributes(self) -> dict[str, Any]:
        """Every attribute field with its *runtime* value (Model Optimizer's quantizer state).

        ``axis``/``block_sizes`` reflect the runtime rewrites of numerics.md §2 steps 5-6 and
        ``rotate`` a rotation switched off by ``{"enable": False}``.
        """
        out = dict(self._config.__dict__)
        out["enable"] = not self._disabled
        out["axis"] = self._spec.axis
        out["block_sizes"] = self._spec.block_sizes
        out["rotate"] = self._reported_rotate()
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
        """Collect statistics in forward; dynamic quantizers never calibrate (numerics.md §2.2)."""
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
        self.__dict__["_work"] = None

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
        d["_work"] = None

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

    # ------------------------------------------------------------------ calibration state
    # What calibration algorithms read and drive (qruntime.calibrate never touches the private
    # fields above).
    @property
    def calibrator(self) -> Any:
        """The statistics collector (None: this quantizer's config names no calibrator)."""
        return self._calibrator

    @property
    def bias_calibrator(self) -> BiasCalibrator | None:
        """The affine-bias collector (None without a ``bias`` attribute)."""
        return self._bias_calibrator

    @property
    def has_static_bias(self) -> bool:
        """A ``bias`` attribute whose value is calibrated (``type`` static, the default)."""
        return (
            self._bias_calibrator is not None
            and (self._spec.bias or {}).get("type", "static") == "static"
        )

    @property
    def is_calibrating(self) -> bool:
        """Statistics collection is on (``enable_calib``)."""
        return self._if_calib

    @property
    def is_quantizing(self) -> bool:
        """Quantization is on (``enable_quant``)."""
        return self._if_quant

    def store_amax(self, value: torch.Tensor) -> None:
        """Replace ``_amax`` by ``value`` as given (dtype included), unlike the ``amax`` setter
        which keeps the stored dtype as Model Optimizer's in-place copy does. The tensor is
        stored, not copied: pass a new one (rollback restores the old tensor object)."""
        if "_amax" in self._buffers:
            self._buffers["_amax"] = value.detach()  # keeps its place in state_dict order
        else:
            self.register_buffer("_amax", value.detach())

    # ------------------------------------------------------------------ buffers
    def _set_buffer(self, name: str, value: torch.Tensor) -> None:
        """(Re)register a buffer with a *new* tensor; never copied in place, so that a
        transaction snapshot of ``_buffers`` restores the old tensor object (apply.py)."""
        value = value.detach().clone()
        old = self._buffers.get(name)
        if old is not None and old.shape != value.shape:
            raise RuntimeError("Changing shape when setting amax is not allowed.")
        if old is not None:  # Model Optimizer copies into the existing buffer: keep its dtype
            value = value.to(device=old.device, dtype=old.dtype)
        self._buffers.pop(name, None)
        self.register_buffer(name, value)

    @property
    def amax(self) -> torch.Tensor | None:
        """The stored amax (None: dynamic, or an MX format, which never reads it)."""
        if self.is_mx_format:
            return None
        return self._buffers.get("_amax")

    @amax.setter
    def amax(self, value: Any) -> None:
        if value is None:
            raise AssertionError("amax cannot be set to None.")
        self._set_buffer("_amax", torch.as_tensor(value))

    def reset_amax(self) -> None:
        self._buffers.pop("_amax", None)
        if self._calibrator is not None:
            self._calibrator.reset()

    @property
    def pre_quant_scale(self) -> torch.Tensor | None:
        if not self._enable_pre_quant_scale:
            return None
        return self._buffers.get("_pre_quant_scale")

    @pre_quant_scale.setter
    def pre_quant_scale(self, value: torch.Tensor) -> None:
        self._buffers.pop("_pre_quant_scale", None)
        self.register_buffer("_pre_quant_scale", torch.as_tensor(value).detach().clone())

    @property
    def global_amax(self) -> torch.Tensor | None:
        return self._buffers.get("_global_amax")

    @global_amax.setter
    def global_amax(self, value: torch.Tensor) -> None:
        self._buffers.pop("_global_amax", None)
        self.register_buffer("_global_amax", torch.as_tensor(value).detach().clone())

    @property
    def bias_value(self) -> torch.Tensor | None:
        return self._buffers.get("_bias_value")

    def load_calib_amax(self) -> None:
        """Store the calibrator's running max as ``_amax`` (calibration.md §0.3)."""
        if self._calibrator is None:
            raise RuntimeError("Calibrator not created.")
        amax = self._calibrator.compute_amax()
        if amax is None:
            raise RuntimeError("Calibrator returned None: it has not seen any tensor.")
        self.amax = amax

    def load_calib_bias(self) -> None:
        if self._bias_calibrator is None:
            raise RuntimeError("Bias calibrator not created.")
        bias = self._bias_calibrator.compute_bias()
        if bias is None:
            raise RuntimeError("Bias calibrator returned None: it has not seen any tensor.")
        self._buffers.pop("_bias_value", None)
        self.register_buffer("_bias_value", bias.detach().clone())

    # ------------------------------------------------------------------ forward
    def _work_attributes(self) -> QuantizerSpec:
        """The attribute record handed to ``fake_quant``: runtime axis/block sizes, enabled,
        rotation already applied by this module (cached until the state changes)."""
        work = self._work
        if work is None:
            work = self.__dict__["_work"] = self._spec.replace(enable=True, rotate=NO_ROTATION)
        return work

    def _block_sizes_to_axis(self, x: torch.Tensor) -> None:
        """numerics.md §2 step 5: ``{-1: None}`` means "reduce these dims" → ``axis`` = the rest."""
        spec = self._spec
        if spec.strategy != "token":
            return
        listed = {k if k >= 0 else k + x.dim() for k in spec.block_axes}
        self._set_layout(
            axis=tuple(i for i in range(x.dim()) if i not in listed) or None, block_sizes=None
        )

    def _static_plan(self, x: torch.Tensor) -> StaticBlockPlan:
        """numerics.md §3.2: the pad-and-reshape plan, fixed by the first input's shape."""
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
        """numerics.md §2 step 7: a static bias is collected first and subtracted (§10.1)."""
        if self.has_static_bias:
            self._bias_calibrator.collect(x)
            x = x - self._bias_calibrator.compute_bias()
        assert self._calibrator is not None
        self._calibrator.collect(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """numerics.md §2: pre_quant_scale, rotation, disabled pass-through, block_sizes → axis,
        static block reshape, calibration, fake quant, un-reshape, rotate back."""
        d = self.__dict__
        spec = d["_spec"]
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
        y = fake_quant(
            x,
            self._work_attributes(),
            amax,
            global_amax=buffers.get("_global_amax"),
            bias_value=buffers.get("_bias_value"),
            backend=self.backend,
        )
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
    """A quantizer slot that can never be enabled: the Embedding's ``input_quantizer`` (§7.2).

    Configs are absorbed and the quantizer forced back off; explicit enabling raises.
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


class SequentialQuantizer(nn.Sequential):
    """``Q_n(...Q_1(x))`` with one amax per element (numerics.md §10.2, config-semantics §7.3).

    Children are named ``<name>.0``, ``<name>.1``; reads like ``is_enabled`` answer for the
    container (true when any element is on), calls broadcast to every element.
    """

    def __init__(self, *quantizers: TensorQuantizer) -> None:
        super().__init__(*quantizers)

    def __iter__(self) -> Iterator[TensorQuantizer]:  # type: ignore[override]
        return iter(self._modules.values())  # type: ignore[arg-type]

    def set_from_attribute_config(
        self,
        config: QuantizerAttributeConfig
        | Mapping[str, Any]
        | list[QuantizerAttributeConfig]
        | tuple[QuantizerAttributeConfig, ...],
        spec: QuantizerSpec | tuple[QuantizerSpec, ...] | None = None,
    ) -> None:
        """A list is zipped with the elements (shorter wins); a single set is broadcast.
        ``spec``: the same resolved (a plan carries it)."""
        if isinstance(config, (list, tuple)):
            specs = spec if isinstance(spec, tuple) else (None,) * len(config)
            for quantizer, attrs, one in zip(self, config, specs, strict=False):
                quantizer.set_from_attribute_config(attrs, one)
        else:
            for quantizer in self:
                quantizer.set_from_attribute_config(config, spec)

    @property
    def is_enabled(self) -> bool:
        return any(q.is_enabled for q in self)

    def enable(self) -> None:
        for q in self:
            q.enable()

    def disable(self) -> None:
        for q in self:
            q.disable()

    @property
    def config(self) -> tuple[QuantizerAttributeConfig, ...]:
        return tuple(q.config for q in self)

    def attributes(self) -> list[dict[str, Any]]:
        return [q.attributes() for q in self]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for quantizer in self:
            x = quantizer(x)
        return x


def is_quantizer(module: nn.Module) -> bool:
    """A ``TensorQuantizer`` or ``SequentialQuantizer`` (what config patterns can select, §9.2)."""
    return isinstance(module, (TensorQuantizer, SequentialQuantizer))
