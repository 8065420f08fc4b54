"""Bit packing of quantized weights, in the layouts that checkpoint formats and engines read.

Pure torch, no dependency on the libraries that define the formats: compressed ``compress`` layers
and the exporters both store their codes through these functions, and tests compare them with the
reference implementations. Every ``pack_*`` has an ``unpack_*`` that inverts it exactly.

Layouts:

- :func:`pack_int32` — compressed-tensors ``pack-quantized``: signed ``b``-bit integers made
  unsigned by adding ``2^(b-1)`` (+8 for INT4, +128 for INT8), then laid densely into a row's bit
  stream, element ``i`` at bits ``[i*b, i*b + b)``, least significant bit first; word ``w`` holds
  bits ``[32w, 32w + 32)`` as a two's-complement int32. Widths that do not divide 32 straddle words.
- :func:`pack_int4_row_pairs` — Model Optimizer's INT4: two *rows* (output channels) per byte, row
  ``2k`` in the low nibble, plain two's-complement nibbles (no offset).
- :func:`pack_fp4` — FP4 E2M1 codes (NVFP4 and MXFP4 alike): two *columns* per byte, the even
  column in the low nibble; a code is ``sign << 3 | magnitude index``.
- :func:`fp8_to_bytes` / :func:`e8m0_encode` — the byte views of E4M3 elements/scales and of
  power-of-two (E8M0) MX scales.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "E2M1_VALUES",
    "bytes_to_fp8",
    "e8m0_decode",
    "e8m0_encode",
    "fp4_codes",
    "fp4_values",
    "fp8_to_bytes",
    "pack_fp4",
    "pack_int4_row_pairs",
    "pack_int32",
    "unpack_fp4",
    "unpack_int4_row_pairs",
    "unpack_int32",
]

#: Magnitudes of the eight positive E2M1 codes; codes 8..15 are their negatives (8 is -0).
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def _check_bits(num_bits: int) -> None:
    if not isinstance(num_bits, int) or not 1 <= num_bits <= 8:
        raise ValueError(f"integer packing takes 1 to 8 bits per element, got {num_bits!r}")


def _as_2d(x: torch.Tensor, what: str) -> None:
    if x.dim() != 2:
        raise ValueError(f"{what} packs 2-D [rows, columns] tensors, got shape {list(x.shape)}")


def pack_int32(q: torch.Tensor, num_bits: int, packed_dim: int = 1) -> torch.Tensor:
    """Pack signed ``num_bits`` integers (an int8 tensor) into int32 words along ``packed_dim``.

    The result has ``ceil(n * num_bits / 32)`` words along ``packed_dim`` (``n`` its length), the
    other dimension unchanged; unused tail bits are zero. Values outside the signed range raise,
    since they would silently corrupt their neighbours.
    """
    _check_bits(num_bits)
    _as_2d(q, "pack_int32")
    if q.dtype != torch.int8:
        raise TypeError(f"pack_int32 takes int8 codes, got {q.dtype}")
    if packed_dim not in (0, 1):
        raise ValueError(f"packed_dim must be 0 or 1, got {packed_dim!r}")
    lo, hi = -(1 << (num_bits - 1)), (1 << (num_bits - 1)) - 1
    if q.numel() and (int(q.min()) < lo or int(q.max()) > hi):
        raise ValueError(f"codes outside the signed {num_bits}-bit range [{lo}, {hi}]")
    rows = q.t() if packed_dim == 0 else q
    u = rows.to(torch.int64) + (1 << (num_bits - 1))
    n_rows, n = u.shape
    n_words = math.ceil(n * num_bits / 32)
    if 32 % num_bits == 0:
        per_word = 32 // num_bits
        u = torch.nn.functional.pad(u, (0, n_words * per_word - n))
        shifts = torch.arange(per_word, device=u.device, dtype=torch.int64) * num_bits
        words = (u.reshape(n_rows, n_words, per_word) << shifts).sum(dim=-1)
    else:
        bit_idx = torch.arange(num_bits, device=u.device, dtype=torch.int64)
        bits = ((u.unsqueeze(-1) >> bit_idx) & 1).reshape(n_rows, n * num_bits)
        bits = torch.nn.functional.pad(bits, (0, n_words * 32 - n * num_bits))
        shifts = torch.arange(32, device=u.device, dtype=torch.int64)
        words = (bits.reshape(n_rows, n_words, 32) << shifts).sum(dim=-1)
    words = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)
    return (words.t() if packed_dim == 0 else words).contiguous()


def unpack_int32(
    packed: torch.Tensor, num_bits: int, shape: tuple[int, int] | torch.Size, packed_dim: int = 1
) -> torch.Tensor:
    """Inverse of :func:`pack_int32`: the int8 codes of a tensor of ``shape``."""
    _check_bits(num_bits)
    _as_2d(packed, "unpack_int32")
    if packed.dtype != torch.int32:
        raise TypeError(f"unpack_int32 takes int32 words, got {packed.dtype}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or packed_dim not in (0, 1):
        raise ValueError(f"unpack_int32 needs a 2-D shape and packed_dim 0 or 1, got {shape}")
    n = shape[packed_dim]
    words = packed.t() if packed_dim == 0 else packed
    n_rows, n_words = words.shape
    if n_words != math.ceil(n * num_bits / 32) or n_rows != shape[1 - packed_dim]:
        raise ValueError(
            f"{list(packed.shape)} int32 words do not hold a {list(shape)} tensor of "
            f"{num_bits}-bit values packed along dim {packed_dim}"
        )
    q = torch.empty(n_rows, n, dtype=torch.int8, device=words.device)
    # rows in steps of about 64K values: the int64 temporaries stay small for large weights
    step = max(1, (1 << 16) // max(1, n))
    for i in range(0, n_rows, step):
        q[i : i + step] = _unpack_rows(
            words[i : i + step].to(torch.int64) & 0xFFFFFFFF, num_bits, n
        )
    return (q.t() if packed_dim == 0 else q).contiguous()


def _unpack_rows(words: torch.Tensor, num_bits: int, n: int) -> torch.Tensor:
    """Signed codes of unsigned int64 ``words`` (a block of rows)."""
    rows, n_words = words.shape
    if 32 % num_bits == 0:  # whole values per word: one shift per slot
        per_word = 32 // num_bits
        shifts = torch.arange(per_word, device=words.device, dtype=torch.int64) * num_bits
        u = ((words.unsqueeze(-1) >> shifts) & ((1 << num_bits) - 1)).reshape(rows, -1)[:, :n]
    else:
        shifts = torch.arange(32, device=words.device, dtype=torch.int64)
        bits = ((words.unsqueeze(-1) >> shifts) & 1).reshape(rows, n_words * 32)
        bits = bits[:, : n * num_bits].reshape(rows, n, num_bits)
        weights = torch.arange(num_bits, device=words.device, dtype=torch.int64)
        u = (bits << weights).sum(dim=-1)
    return (u - (1 << (num_bits - 1))).to(torch.int8)


def pack_int4_row_pairs(q: torch.Tensor) -> torch.Tensor:
    """Model Optimizer's INT4 bytes: ``out[k, j] = q[2k, j] & 0xF | (q[2k+1, j] & 0xF) << 4``."""
    _as_2d(q, "pack_int4_row_pairs")
    if q.dtype != torch.int8:
        raise TypeError(f"pack_int4_row_pairs takes int8 codes, got {q.dtype}")
    if q.shape[0] % 2:
        raise ValueError(f"row-pair INT4 packing needs an even number of rows, got {q.shape[0]}")
    if q.numel() and (int(q.min()) < -8 or int(q.max()) > 7):
        raise ValueError("codes outside the signed 4-bit range [-8, 7]")
    nib = q.to(torch.int16) & 0xF
    return (nib[0::2] | (nib[1::2] << 4)).to(torch.uint8)


def unpack_int4_row_pairs(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4_row_pairs`: int8 codes of shape ``[2 * rows, columns]``."""
    _as_2d(packed, "unpack_int4_row_pairs")
    if packed.dtype != torch.uint8:
        raise TypeError(f"unpack_int4_row_pairs takes uint8 bytes, got {packed.dtype}")
    p = packed.to(torch.int16)
    low, high = p & 0xF, (p >> 4) & 0xF
    both = torch.stack((low, high), dim=1).reshape(-1, packed.shape[1])
    return torch.where(both >= 8, both - 16, both).to(torch.int8)


def fp4_codes(values: torch.Tensor) -> torch.Tensor:
    """E2M1 codes (uint8, 0..15) of values that lie on the E2M1 grid; anything else raises.

    The sign bit is the float's sign bit, so -0.0 becomes code 8.
    """
    table = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=values.device)
    v = values.to(torch.float32)
    mag = v.abs()
    idx = torch.searchsorted(table, mag).clamp(max=7)
    if not torch.equal(table[idx], mag):
        bad = v[table[idx] != mag].reshape(-1)[:3].tolist()
        raise ValueError(f"values not on the FP4 E2M1 grid, e.g. {bad}")
    return (torch.signbit(v).to(torch.uint8) << 3) | idx.to(torch.uint8)


def fp4_values(codes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Decode E2M1 codes; code 8 decodes to -0.0 (its sign bit is kept)."""
    table = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=codes.device)
    c = codes.to(torch.int64)
    mag = table[c & 7]
    return torch.where((c & 8).bool(), -mag, mag).to(dtype)


def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """Two E2M1 codes per byte along the last dimension, the even element in the low nibble."""
    if codes.dtype != torch.uint8:
        raise TypeError(f"pack_fp4 takes uint8 codes, got {codes.dtype}")
    if codes.dim() == 0 or codes.shape[-1] % 2:
        raise ValueError(f"FP4 packing needs an even last dimension, got {list(codes.shape)}")
    if codes.numel() and int(codes.max()) > 15:
        raise ValueError("FP4 codes must be 0..15")
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_fp4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_fp4`: uint8 codes with a last dimension twice as long."""
    if packed.dtype != torch.uint8:
        raise TypeError(f"unpack_fp4 takes uint8 bytes, got {packed.dtype}")
    both = torch.stack((packed & 0x0F, packed >> 4), dim=-1)
    return both.reshape(*packed.shape[:-1], packed.shape[-1] * 2)


def fp8_to_bytes(x: torch.Tensor) -> torch.Tensor:
    """The raw bytes (uint8) of an E4M3 tensor, e.g. for storage in formats without fp8 dtypes."""
    if x.dtype != torch.float8_e4m3fn:
        raise TypeError(f"fp8_to_bytes takes float8_e4m3fn, got {x.dtype}")
    return x.view(torch.uint8)


def bytes_to_fp8(b: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fp8_to_bytes`."""
    if b.dtype != torch.uint8:
        raise TypeError(f"bytes_to_fp8 takes uint8, got {b.dtype}")
    return b.view(torch.float8_e4m3fn)


def e8m0_encode(scale: torch.Tensor) -> torch.Tensor:
    """E8M0 bytes ``e + 127`` of power-of-two scales ``2^e`` (``e`` in [-127, 127]).

    A scale that is not an exact power of two in that range raises: the byte could not hold it.
    """
    s = scale.to(torch.float32)
    mant, exp = torch.frexp(s)  # s = mant * 2^exp with mant in [0.5, 1)
    e = exp.to(torch.int64) - 1
    ok = (mant == 0.5) & (e >= -127) & (e <= 127)
    if not bool(ok.all()):
        bad = s[~ok].reshape(-1)[:3].tolist()
        raise ValueError(f"E8M0 holds powers of two 2^-127..2^127 only, got e.g. {bad}")
    return (e + 127).to(torch.uint8)


def e8m0_decode(b: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``2^(b - 127)``; byte 255 is E8M0's NaN."""
    if b.dtype != torch.uint8:
        raise TypeError(f"e8m0_decode takes uint8, got {b.dtype}")
    e = b.to(torch.float32) - 127
    out = torch.exp2(e)
    return torch.where(b == 255, torch.full_like(out, float("nan")), out).to(dtype)
