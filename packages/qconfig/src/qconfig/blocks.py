"""The format keys of ``block_sizes`` and the two facts read from them everywhere.

Why a module of its own: both the attribute validators (:mod:`qconfig.attributes`) and the
resolved spec (:mod:`qconfig.spec`) need them, and ``qconfig lint`` validates attributes without
ever resolving a spec; keeping them here spares every lint run the import of the spec's
dataclasses (docs/performance.md, "Start-up").
"""

from collections.abc import Mapping
from typing import Any

__all__ = ["BLOCK_SPECIAL_KEYS", "MAX_BLOCK_SIZE", "MX_SCALE_BITS", "block_axes", "is_mx_format"]

#: Keys of ``block_sizes`` that describe the format rather than a block axis.
BLOCK_SPECIAL_KEYS = ("type", "scale_bits", "scale_block_sizes", "four_over_six")

#: The largest block size: static blocks pad each dim to a multiple of the block, so a block of
#: 10**9 on a 32-wide layer allocates a billion elements per row (and 10**30 overflows torch's
#: padding); real block sizes are 16 to a few thousand.
MAX_BLOCK_SIZE = 1 << 20

#: ``scale_bits`` of the MX formats: E8M0 shared exponents.
MX_SCALE_BITS = (8, 0)


def block_axes(block_sizes: Mapping[Any, Any] | None) -> dict | None:
    """The axis → size part of ``block_sizes``, without the format keys."""
    if block_sizes is None:
        return None
    return {k: v for k, v in block_sizes.items() if k not in BLOCK_SPECIAL_KEYS}


def is_mx_format(block_sizes: Mapping[Any, Any] | None) -> bool:
    """MX formats are dynamic blocks with E8M0 scales; they never read an amax and always use
    the straight-through gradient."""
    if block_sizes is None or block_sizes.get("type") != "dynamic":
        return False
    scale_bits = block_sizes.get("scale_bits")
    return (tuple(scale_bits) if isinstance(scale_bits, list) else scale_bits) == MX_SCALE_BITS
