"""Sparse MoE blocks: kept for imports of ``qruntime.moe.moe_blocks``.

Detection lives in :mod:`qruntime.sites.moe` and the expert amax sync after calibration in
:mod:`qruntime.calibrate.moe`.
"""

from __future__ import annotations

from qruntime.sites.moe import moe_blocks

__all__ = ["moe_blocks"]
