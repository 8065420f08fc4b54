"""Per-quantizer statistics collectors: the running max (``calibrator: "max"``) and the affine bias.

A ``TensorQuantizer`` owns one calibrator, rebuilt on every full attribute replacement
(config-semantics §2.4, §9.4: "a new calibrator object is created each time"). While the
quantizer is in calibration mode it hands every tensor (in its working layout, after
``pre_quant_scale``, rotation and the static block reshape; numerics.md §2 step 7) to
``collect``; a calibration algorithm then reads ``compute_amax``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from qruntime.numerics.affine import bias_axes
from qruntime.numerics.amax import amax_reduce, axis_to_reduce_dims

__all__ = ["BiasCalibrator", "MaxCalibrator"]


class MaxCalibrator:
    """Running element-wise max of ``amax_reduce`` over the calibration batches (calibration.md §1.2).

    ``axis`` lists the dims that keep their own amax (per channel); the owning quantizer updates
    it when the static block reshape or the ``block_sizes`` → ``axis`` rewrite changes its axis
    (numerics.md §2 steps 5-6), exactly as Model Optimizer re-points its calibrator.
    """

    __slots__ = ("_calib_amax", "axis")

    def __init__(self, axis: int | tuple[int, ...] | None = None) -> None:
        self.axis = axis
        self._calib_amax: torch.Tensor | None = None

    @torch.no_grad()
    def collect(self, x: torch.Tensor) -> None:
        """Fold one batch in (the running max propagates NaN and inf, see compute_amax)."""
        amax = amax_reduce(x, axis_to_reduce_dims(x.dim(), self.axis)).detach()
        if self._calib_amax is None or x.device.type == "meta":
            self._calib_amax = amax
            return
        if amax.shape != self._calib_amax.shape:
            raise RuntimeError("amax shape changed!")
        self._calib_amax = torch.maximum(self._calib_amax, amax)

    def compute_amax(self) -> torch.Tensor | None:
        """The running max, or None if no tensor was collected (the quantizer stays dynamic).

        NaN or inf in any collected batch is refused here, like Model Optimizer's per-batch
        assertions: ``torch.maximum`` carries both into the running max, so checking once at
        the end gives the same verdict without a device sync per batch.
        """
        amax = self._calib_amax
        if amax is not None and amax.device.type != "meta" and not bool(torch.isfinite(amax).all()):
            kind = "nan" if bool(torch.isnan(amax).any()) else "inf"
            raise AssertionError(f"detected {kind} values in amax during max calibration")
        return amax

    def reset(self) -> None:
        self._calib_amax = None


class BiasCalibrator:
    """Static affine bias (calibration.md §3): running mean, or ``(running max + running min) / 2``.

    The listed integer axes of the ``bias`` attribute are *reduced* (numerics.md §10.1). The
    running mean gives every batch equal weight; each update is computed in float32 and stored in
    the input dtype, as Model Optimizer's ``BiasCalibrator`` does.
    """

    __slots__ = ("_bias", "_count", "_max", "_min", "method", "reduce")

    def __init__(self, bias: Mapping[Any, Any]) -> None:
        self.reduce = bias_axes(bias)
        self.method = bias.get("method", "mean")
        if self.method not in ("mean", "max_min"):
            raise ValueError(f"Unknown bias method: {self.method}")
        self.reset()

    def reset(self) -> None:
        self._count = 0
        self._bias: torch.Tensor | None = None
        self._max: torch.Tensor | None = None
        self._min: torch.Tensor | None = None

    def _dims(self, x: torch.Tensor) -> tuple[int, ...]:
        return tuple(i for i in range(x.dim()) if i in self.reduce or (i - x.dim()) in self.reduce)

    @torch.no_grad()
    def collect(self, x: torch.Tensor) -> None:
        dims = self._dims(x)
        if self.method == "mean":
            batch = torch.mean(x, dim=dims, keepdim=True)
            if self._bias is None:
                self._bias = batch
            else:
                # Each update is computed in float32 and stored back in the input dtype.
                mean = (self._bias.float() * self._count + batch.float()) / (self._count + 1)
                self._bias = mean.to(batch.dtype)
            self._count += 1
            return
        hi = torch.amax(x, dim=dims, keepdim=True)
        lo = torch.amin(x, dim=dims, keepdim=True)
        self._max = hi if self._max is None else torch.maximum(self._max, hi)
        self._min = lo if self._min is None else torch.minimum(self._min, lo)
        self._bias = (self._max + self._min) / 2

    def compute_bias(self) -> torch.Tensor | None:
        """The bias collected so far (None before the first batch)."""
        return self._bias
