"""The calibration state of a quantizer: its buffers and its statistics collectors.

Why a base class of its own: this is what calibration algorithms read and write — ``_amax``,
``_pre_quant_scale``, ``_global_amax``, ``_bias_value`` under Model Optimizer's buffer names, the
calibrator and the bias calibrator — separate from how the quantizer is configured and how its
forward computes (:mod:`.tensor`). Buffers are always replaced by new tensors, never written in
place, so a rollback snapshot of ``_buffers`` restores the old ones (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

import torch
from qconfig.spec import QuantizerSpec
from torch import nn

from qruntime.calibrators import BiasCalibrator

__all__ = ["CalibrationBuffers"]


class CalibrationBuffers(nn.Module):
    """Buffers and collectors of a :class:`~qruntime.quantizer.tensor.TensorQuantizer`."""

    _spec: QuantizerSpec
    _calibrator: Any
    _bias_calibrator: BiasCalibrator | None
    _if_calib: bool
    _enable_pre_quant_scale: bool

    # What calibration algorithms read and drive (qruntime.calibrate never touches the private
    # fields above).
    @property
    def calibrator(self) -> Any:
        """The statistics collector (None: this quantizer's config names no calibrator)."""
        return self._calibrator

    @calibrator.setter
    def calibrator(self, value: Any) -> None:
        """Swap the collector: an algorithm that brings its own (``nvfp4_act_headroom``) puts
        it in for one run and the original back. Not rebuilt or re-pointed at the axis here."""
        self.__dict__["_calibrator"] = value

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
            # and its place in state_dict order
            self._buffers[name] = value.to(device=old.device, dtype=old.dtype)
        else:
            self.register_buffer(name, value)

    @property
    def amax(self) -> torch.Tensor | None:
        """The stored amax (None: dynamic, or an MX format, which never reads it)."""
        if self._spec.is_mx:
            return None
        return self._buffers.get("_amax")

    @amax.setter
    def amax(self, value: Any) -> None:
        if value is None:
            raise AssertionError("amax cannot be set to None.")
        self._set_buffer("_amax", torch.as_tensor(value))
        if self.__dict__.get("_amax_in_float32"):
            self.keep_amax_in_float32()

    def keep_amax_in_float32(self) -> None:
        """From now on ``_amax`` is stored in float32, whatever is assigned later (the weight dtype
        of a new calibration included): what Model Optimizer's promotion of a calibrated
        static-block weight quantizer does, for the rest of the quantizer's life (a second
        search after a first, as in ``awq_full``, stores float32 where a first stores the
        weight dtype)."""
        self.__dict__["_amax_in_float32"] = True
        amax = self._buffers.get("_amax")
        if amax is not None and amax.dtype != torch.float32:
            self.store_amax(amax.to(torch.float32))

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
    def pre_quant_scale(self, value: torch.Tensor | None) -> None:
        """Store a copy of ``value``; None removes the scale (an algorithm trying scales)."""
        self._buffers.pop("_pre_quant_scale", None)
        if value is not None:
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
        """Store the calibrator's result as ``_amax``.

        docs/model-optimizer-rules.md, 'Calibration phases of max', step 4.
        """
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
