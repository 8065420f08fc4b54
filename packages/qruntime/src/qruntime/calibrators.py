"""Per-quantizer statistics collectors: the :class:`Calibrator` protocol, the running max and the
affine bias, and :func:`build_calibrator`, which turns a config's ``calibrator`` into one.

A ``TensorQuantizer`` owns one calibrator, rebuilt on every full attribute replacement (a fresh
object each time, as in Model Optimizer 0.47.0). While the quantizer is in calibration mode it
hands every tensor — in its working layout, after ``pre_quant_scale``, rotation and the static
block reshape (docs/numerics.md) — to ``collect``; a calibration algorithm then reads
``compute_amax``.

This module sits below the quantizer: it imports only numerics helpers, never
:mod:`qruntime.quantizer` or :mod:`qruntime.calibrate`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch

from qruntime.numerics.affine import bias_axes
from qruntime.numerics.amax import axis_to_reduce_dims

__all__ = ["BiasCalibrator", "Calibrator", "MaxCalibrator", "build_calibrator"]

_FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


@runtime_checkable
class Calibrator(Protocol):
    """What a quantizer and the calibration phases need from a statistics collector.

    ``collect(x)`` folds one tensor in, ``compute_amax()`` returns the amax to store (None when
    nothing was collected: the quantizer then stays dynamic) and ``reset()`` forgets everything.
    The owning quantizer also sets an ``axis`` attribute on it when its axis changes at run time
    (``block_sizes`` → ``axis``, the static block view); a calibrator that keeps one amax per
    channel reads it, others may ignore it. Model Optimizer's own calibrator classes satisfy this
    protocol too.
    """

    def collect(self, x: torch.Tensor) -> None: ...

    def compute_amax(self) -> torch.Tensor | None: ...

    def reset(self) -> None: ...


class MaxCalibrator:
    """Running element-wise max of ``amax_reduce`` over the calibration batches.

    The constructor takes Model Optimizer's arguments in Model Optimizer's order — ``num_bits``,
    ``axis``, ``unsigned``, ``track_amax`` — so that a ``(subclass, args, kwargs)`` calibrator
    written for Model Optimizer means the same here. ``num_bits`` and ``unsigned`` are kept but
    not used (max ignores them there too). ``axis`` lists the dims that keep their own amax (per
    channel); the owning quantizer updates it when the static block reshape or the
    ``block_sizes`` → ``axis`` rewrite changes its axis. With ``track_amax`` every batch's amax
    is kept in :attr:`amaxs` (numpy arrays, as Model Optimizer keeps them).

    It keeps the running max and the running min of the data and forms ``max(|max|, |min|)``
    once, in :meth:`compute_amax`: max, min and abs never round, so this equals the running max
    of the per-batch ``amax_reduce`` bit for bit, with three cheap operations per batch.
    """

    __slots__ = (
        "_amaxs",
        "_hi",
        "_lo",
        "_num_bits",
        "_pending",
        "_track_amax",
        "_unsigned",
        "axis",
    )

    #: Batches whose (min, max) are kept before they are folded into the running values.
    FOLD_EVERY = 16

    def __init__(
        self,
        num_bits: Any = 8,
        axis: int | tuple[int, ...] | None = None,
        unsigned: bool = False,
        track_amax: bool = False,
    ) -> None:
        self._num_bits = num_bits
        self.axis = axis
        self._unsigned = unsigned
        self._track_amax = track_amax
        self._amaxs: list[Any] = []
        self._hi: torch.Tensor | None = None
        self._lo: torch.Tensor | None = None
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def amaxs(self) -> list[Any]:
        """Every collected batch's amax (only with ``track_amax``)."""
        return self._amaxs

    def collect(self, x: torch.Tensor) -> None:
        """Fold one batch in (NaN and inf propagate; they are refused in compute_amax).

        One reduction per batch; the element-wise running max/min are updated every
        ``FOLD_EVERY`` batches (and at the end), which gives the same values.
        """
        x = x.detach()
        if x.dtype in _FP8_DTYPES:
            x = x.to(torch.get_default_dtype())
        dims = axis_to_reduce_dims(x.dim(), self.axis)
        if dims is None:
            lo, hi = torch.aminmax(x)
        else:
            hi = torch.amax(x, dim=dims, keepdim=True)
            lo = torch.amin(x, dim=dims, keepdim=True)
        if self._track_amax:
            self._amaxs.append(torch.maximum(hi.abs(), lo.abs()).cpu().numpy())
        pending = self._pending
        reference = pending[0][1] if pending else self._hi
        if reference is not None and hi.shape != reference.shape:
            raise RuntimeError("amax shape changed!")
        if pending and (hi.dtype != reference.dtype or len(pending) >= self.FOLD_EVERY):
            self._fold()
        pending.append((lo, hi))

    def _fold(self) -> None:
        pending = self._pending
        if not pending:
            return
        if len(pending) == 1:
            lo, hi = pending[0]
        else:
            lo = torch.stack([p[0] for p in pending]).amin(0)
            hi = torch.stack([p[1] for p in pending]).amax(0)
        pending.clear()
        if self._hi is None or self._lo is None or hi.device.type == "meta":
            self._hi, self._lo = hi, lo
        else:
            self._hi = torch.maximum(self._hi, hi)
            self._lo = torch.minimum(self._lo, lo)

    def compute_amax(self) -> torch.Tensor | None:
        """The running max of ``amax_reduce``, or None if no tensor was collected (the quantizer
        then stays dynamic).

        NaN or inf in any collected batch is refused here, like Model Optimizer's per-batch
        assertions: both survive the running max/min, so checking once at the end gives the same
        verdict without a device sync per batch.
        """
        self._fold()
        if self._hi is None or self._lo is None:
            return None
        amax = torch.maximum(self._hi.abs(), self._lo.abs())
        if amax.numel() == 1:
            amax = amax.squeeze()
        if amax.device.type != "meta" and not bool(torch.isfinite(amax).all()):
            kind = "nan" if bool(torch.isnan(amax).any()) else "inf"
            raise AssertionError(f"detected {kind} values in amax during max calibration")
        return amax

    def reset(self) -> None:
        self._hi = self._lo = None
        self._pending.clear()


def constructor_parts(value: Any) -> tuple[Callable[..., Any], tuple, dict]:
    """``cls``, ``(cls,)``, ``(cls, args)`` or ``(cls, args, kwargs)`` → ``(cls, args, kwargs)``.

    The constructor forms a ``calibrator`` attribute may take besides a name (Model Optimizer's
    constructor-like values). ``TypeError`` when the value is none of them.
    """
    parts = value if isinstance(value, tuple) else (value,)
    if not 1 <= len(parts) <= 3:
        raise TypeError(
            f"calibrator {value!r}: a constructor is (class, args, kwargs) with args and "
            "kwargs optional"
        )
    target = parts[0]
    args = parts[1] if len(parts) > 1 else ()
    kwargs = parts[2] if len(parts) > 2 else {}
    if not callable(target):
        raise TypeError(
            f"calibrator {value!r}: {target!r} is not a class or callable (a calibrator "
            "constructor names the class itself, not its import path)"
        )
    if not isinstance(args, (tuple, list)) or not isinstance(kwargs, dict):
        raise TypeError(
            f"calibrator {value!r}: the constructor's args must be a tuple or list and its "
            "kwargs a dict"
        )
    return target, tuple(args), kwargs


def build_calibrator(calibrator: Any, axis: int | tuple[int, ...] | None) -> Calibrator | None:
    """The calibrator a quantizer gets for its ``calibrator`` attribute.

    * ``"max"`` → :class:`MaxCalibrator` with the quantizer's current ``axis``;
    * a class or callable, or a ``(class, args, kwargs)`` tuple (args and kwargs optional) →
      ``class(*args, **kwargs)``, exactly as given: like Model Optimizer 0.47.0, the quantizer's
      axis is *not* passed, so a per-channel calibrator names its axis in its arguments
      (``MaxCalibrator`` takes Model Optimizer's ``num_bits, axis, unsigned``);
    * any other name (``"histogram"``, or the text of a constructor read back from a plan file)
      → None: no collector exists for it here, and the calibration algorithms refuse such a
      quantizer before the model is touched.
    """
    if isinstance(calibrator, str):
        return MaxCalibrator(axis=axis) if calibrator == "max" else None
    target, args, kwargs = constructor_parts(calibrator)
    return target(*args, **kwargs)


class BiasCalibrator:
    """Static affine bias: running mean, or ``(running max + running min) / 2``.

    The listed integer axes of the ``bias`` attribute are *reduced* (docs/numerics.md). The
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
