"""The statistics collector of ``nvfp4_act_headroom``: a log2 histogram of NVFP4 block amaxes.

Why it exists: an NVFP4 activation has two scales, an FP8-E4M3 scale per block and one
per-tensor global scale (the quantizer's ``amax``). Max calibration puts the global scale at
the largest block ever seen, so a later, larger activation saturates. This calibrator instead
places the global scale ``rho`` times above a low percentile ("anchor") of the per-block amax
distribution — never below a high percentile ("upper") — leaving headroom above the calibrated
range inside the FP8 scale's range (its normal values span 448 / 2^-6 = 28672).

It reproduces Model Optimizer 0.47.0's ``NVFP4ActHeadroomCalibrator`` value for value
(docs/algorithms/activation-ranges.md): the same 512-bin histogram of ``log2`` block amax over
[-40, 40], the same float32 percentile search and the same bin-centre representative, so a
global scale calibrated here equals one calibrated there.

It satisfies :class:`qruntime.calibrators.Calibrator` and takes Model Optimizer's constructor
arguments, so it can also be named as a ``calibrator`` constructor in a config.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["ANCHOR_FLOOR_RATIO", "FP8_NORMAL_DYNAMIC_RANGE", "NVFP4ActHeadroomCalibrator"]

#: max normal / min normal of FP8 E4M3 (448 / 2^-6): no global scale represents block scales
#: further apart than this as normal FP8 values, so ``rho`` must stay below it.
FP8_NORMAL_DYNAMIC_RANGE = 28672.0

#: Block amaxes below ``upper / ANCHOR_FLOOR_RATIO`` do not count when the anchor is located: a
#: mass of near-zero blocks (padding, dead channels) would otherwise pull the scale down.
ANCHOR_FLOOR_RATIO = 1e6


class NVFP4ActHeadroomCalibrator:
    """Per-block amax histogram → ``amax = max(rho * anchor, upper)`` (module docstring).

    ``num_bits``, ``axis`` and ``unsigned`` are accepted in Model Optimizer's order and ignored:
    the global scale is one value per tensor. ``block_size`` is the NVFP4 block width along the
    last dim; ``anchor_percentile`` and ``upper_percentile`` are in (0, 100] (``upper_percentile``
    100 means the literal running max); ``rho`` is in (0, 28672).

    ``collect`` never waits for the device: the histogram is counted with ``index_add_`` and NaN
    or inf (which survive the running max) are refused once, in :meth:`compute_amax`, as Model
    Optimizer refuses them per batch.
    """

    def __init__(
        self,
        num_bits: Any = (2, 1),
        axis: Any = None,
        unsigned: bool = False,
        *,
        block_size: int = 16,
        anchor_percentile: float = 1.0,
        upper_percentile: float = 99.99,
        rho: float = 16384.0,
        num_bins: int = 512,
        log2_min: float = -40.0,
        log2_max: float = 40.0,
    ) -> None:
        if not 0.0 < rho < FP8_NORMAL_DYNAMIC_RANGE:
            raise ValueError(
                f"rho must be in (0, {FP8_NORMAL_DYNAMIC_RANGE:g}); got {rho} (it trades room "
                "below the calibrated range for headroom above it)"
            )
        for label, value in (("anchor", anchor_percentile), ("upper", upper_percentile)):
            if not 0.0 < value <= 100.0:
                raise ValueError(f"{label}_percentile must be in (0, 100]; got {value}")
        self.num_bits = num_bits
        self.axis = axis
        self.unsigned = unsigned
        self.block_size = int(block_size)
        self.anchor_percentile = float(anchor_percentile)
        self.upper_percentile = float(upper_percentile)
        self.rho = float(rho)
        self.num_bins = int(num_bins)
        self.log2_min = float(log2_min)
        self.log2_max = float(log2_max)
        self._hist: torch.Tensor | None = None  # int64 counts per log2 bin
        self._running_max: torch.Tensor | None = None  # float32, the literal max block amax

    def __repr__(self) -> str:
        return (
            f"NVFP4ActHeadroomCalibrator(block_size={self.block_size}, anchor_percentile="
            f"{self.anchor_percentile}, upper_percentile={self.upper_percentile}, rho={self.rho})"
        )

    # ------------------------------------------------------------------ collection
    def bin_index(self, log2_values: torch.Tensor) -> torch.Tensor:
        """The histogram bin of each ``log2`` value (float32 arithmetic; out of range → the end
        bins)."""
        position = (log2_values - self.log2_min) / (self.log2_max - self.log2_min)
        return (position * self.num_bins).floor().long().clamp_(0, self.num_bins - 1)

    def block_amax(self, x: torch.Tensor) -> torch.Tensor:
        """``max |x|`` of every ``block_size`` run along the last dim, flat, in float32; a last
        dim that is not a block multiple is zero-padded (zeros change no block's amax)."""
        x = x.detach()
        ragged = x.shape[-1] % self.block_size
        if ragged:
            x = F.pad(x, (0, self.block_size - ragged))
        blocks = x.reshape(*x.shape[:-1], x.shape[-1] // self.block_size, self.block_size)
        return blocks.abs().amax(dim=-1).flatten().float()

    @torch.no_grad()
    def collect(self, x: torch.Tensor) -> None:
        """Fold one batch in: running max of the block amaxes, and one count per non-zero block
        in the bin of its ``log2``."""
        amax = self.block_amax(x)
        batch_max = amax.max()
        self._running_max = (
            batch_max if self._running_max is None else torch.maximum(self._running_max, batch_max)
        )
        counted = amax > 0  # NaN is not counted; it survives in the running max
        bins = self.bin_index(torch.log2(torch.where(counted, amax, torch.ones_like(amax))))
        if self._hist is None:
            self._hist = torch.zeros(self.num_bins, dtype=torch.long, device=amax.device)
        self._hist.index_add_(0, bins.to(self._hist.device), counted.long().to(self._hist.device))

    # ------------------------------------------------------------------ result
    def percentile(self, percentile: float, floor: float | None = None) -> float | None:
        """The block amax at ``percentile`` of the counts — ``2`` to the centre of the first bin
        whose cumulative count reaches it — counting no bin below ``floor``'s; None when no
        block is counted."""
        if self._hist is None:
            return None
        counts = self._hist.float()
        if floor is not None and floor > 0:
            first = int(self.bin_index(torch.log2(torch.tensor(floor))).item())
            counts[:first] = 0
        total = counts.sum()
        if total <= 0:
            return None
        cumulative = torch.cumsum(counts, dim=0)
        found = torch.searchsorted(cumulative, percentile / 100.0 * total)
        index = int(found.clamp(0, self.num_bins - 1).item())
        width = self.log2_max - self.log2_min
        return float(2.0 ** (self.log2_min + (index + 0.5) / self.num_bins * width))

    @torch.no_grad()
    def compute_amax(self) -> torch.Tensor | None:
        """The global amax (0-d float32), or None when no non-zero block was collected (the
        quantizer then stays dynamic).

        ``upper`` is the running max (``upper_percentile`` 100) or that percentile; ``anchor``
        the ``anchor_percentile`` ignoring blocks below ``upper / 1e6``. Either missing: the
        plain running max. ``rho * anchor`` not above ``upper``: ``upper``, with a warning.
        """
        running_max = self._running_max
        if running_max is None or self._hist is None:
            return None
        if running_max.device.type != "meta" and not bool(torch.isfinite(running_max)):
            kind = "nan" if bool(torch.isnan(running_max)) else "inf"
            raise AssertionError(f"detected {kind} values in a block amax during calibration")
        if not bool((self._hist > 0).any()):
            return None
        if self.upper_percentile >= 100.0:
            upper: float | None = float(running_max)
        else:
            upper = self.percentile(self.upper_percentile)
        anchor = None
        if upper:
            anchor = self.percentile(self.anchor_percentile, floor=upper / ANCHOR_FLOOR_RATIO)
        if not upper or upper <= 0 or not anchor or anchor <= 0:
            return running_max.clone()
        amax = self.rho * anchor
        if amax <= upper:
            self._warn_no_headroom(upper / anchor)
            amax = upper
        return torch.tensor(amax, dtype=torch.float32, device=running_max.device)

    def _warn_no_headroom(self, span: float) -> None:
        if span > FP8_NORMAL_DYNAMIC_RANGE:
            advice = (
                f"The blocks span more than the FP8 scale range ({FP8_NORMAL_DYNAMIC_RANGE:g}): "
                "no rho can leave headroom and one global scale cannot represent both ends; "
                "narrow the range first (SmoothQuant, per-channel scales, higher precision)."
            )
        else:
            advice = "A lower anchor_percentile or a larger rho leaves headroom."
        warnings.warn(
            f"nvfp4_act_headroom: the calibrated block amaxes span a factor {span:.1f}, more "
            f"than rho={self.rho:g}: the global scale is the top of the calibrated range, with "
            f"no headroom above it. {advice}",
            UserWarning,
            stacklevel=3,
        )

    def reset(self) -> None:
        """Forget every batch."""
        self._hist = None
        self._running_max = None
