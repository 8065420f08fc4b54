"""qruntime.packing against hand-derived words, compressed-tensors' and Model Optimizer's packers.

Independent truths: the byte examples worked out by hand from the formats' bit order, the
reference packers of compressed-tensors 0.20.1 (``pack_to_int32``/``unpack_from_int32``,
``pack_fp4_to_uint8``/``unpack_fp4_from_uint8``) and Model Optimizer's export ``pack_int4_in_uint8``
run on the same codes in the same test; round trips are hypothesis properties.
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from compressed_tensors.compressors.nvfp4.helpers import pack_fp4_to_uint8, unpack_fp4_from_uint8
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32
from hypothesis import HealthCheck, given, settings
from modelopt.torch.export.quant_utils import pack_int4_in_uint8
from qruntime import packing

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _codes(seed: int, shape: tuple[int, int], bits: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)
    return torch.randint(lo, hi, shape, generator=g, dtype=torch.int64).to(torch.int8)


shapes = st.tuples(st.integers(1, 9), st.integers(1, 70))


# ------------------------------------------------------------------------------- int32 columns
def test_int4_row_packs_into_the_hand_derived_words() -> None:
    q = torch.arange(-8, 8, dtype=torch.int8).reshape(1, 16)
    words = packing.pack_int32(q, 4)
    assert [w & 0xFFFFFFFF for w in words[0].tolist()] == [0x76543210, 0xFEDCBA98]


def test_int8_offset_is_128_and_first_element_lowest() -> None:
    q = torch.tensor([[-128, 0, 1, 127]], dtype=torch.int8)
    # unsigned 0, 128, 129, 255 from the low byte up
    assert packing.pack_int32(q, 8)[0].item() & 0xFFFFFFFF == 0xFF818000


def test_3_bit_values_straddle_words() -> None:
    # 11 values of 3 bits: the 11th (bits 30..32) spills its top bit into word 1.
    q = torch.full((1, 11), 3, dtype=torch.int8)  # unsigned 7 = 0b111
    words = [w & 0xFFFFFFFF for w in packing.pack_int32(q, 3)[0].tolist()]
    assert words == [0xFFFFFFFF, 0x1]


@SETTINGS
@given(shape=shapes, bits=st.integers(1, 8), dim=st.sampled_from([0, 1]), seed=st.integers(0, 99))
def test_int32_packing_round_trips(shape, bits, dim, seed) -> None:
    q = _codes(seed, shape, bits)
    words = packing.pack_int32(q, bits, dim)
    assert words.dtype == torch.int32
    assert words.shape[dim] == -(-shape[dim] * bits // 32)
    assert torch.equal(packing.unpack_int32(words, bits, shape, dim), q)


@SETTINGS
@given(shape=shapes, bits=st.integers(1, 8), dim=st.sampled_from([0, 1]), seed=st.integers(0, 99))
def test_int32_packing_equals_compressed_tensors(shape, bits, dim, seed) -> None:
    q = _codes(seed, shape, bits)
    ours = packing.pack_int32(q, bits, dim)
    assert torch.equal(ours, pack_to_int32(q, bits, packed_dim=dim))
    theirs = unpack_from_int32(ours, bits, torch.Size(shape), packed_dim=dim)
    assert torch.equal(packing.unpack_int32(ours, bits, shape, dim), theirs)


def test_int32_packing_refuses_out_of_range_and_wrong_types() -> None:
    with pytest.raises(ValueError, match="signed 4-bit range"):
        packing.pack_int32(torch.tensor([[8]], dtype=torch.int8), 4)
    with pytest.raises(TypeError, match="int8"):
        packing.pack_int32(torch.zeros(2, 2, dtype=torch.int32), 4)
    with pytest.raises(ValueError, match="1 to 8 bits"):
        packing.pack_int32(torch.zeros(2, 2, dtype=torch.int8), 9)
    with pytest.raises(ValueError, match="do not hold"):
        packing.unpack_int32(torch.zeros(2, 1, dtype=torch.int32), 4, (2, 9))


# ----------------------------------------------------------------------------- INT4 row pairs
def test_row_pair_nibbles_are_twos_complement_low_row_first() -> None:
    q = torch.tensor([[-1], [2]], dtype=torch.int8)
    assert packing.pack_int4_row_pairs(q).tolist() == [[0x2F]]


@SETTINGS
@given(rows=st.integers(1, 6), cols=st.integers(1, 40), seed=st.integers(0, 99))
def test_row_pairs_round_trip_and_equal_model_optimizer(rows, cols, seed) -> None:
    q = _codes(seed, (2 * rows, cols), 4)
    ours = packing.pack_int4_row_pairs(q)
    assert ours.shape == (rows, cols)
    assert torch.equal(packing.unpack_int4_row_pairs(ours), q)
    theirs = pack_int4_in_uint8(q.to(torch.float32), torch.ones(2 * rows, cols), 1)
    assert torch.equal(ours, theirs)


def test_row_pairs_need_even_rows() -> None:
    with pytest.raises(ValueError, match="even number of rows"):
        packing.pack_int4_row_pairs(torch.zeros(3, 2, dtype=torch.int8))


# ---------------------------------------------------------------------------------------- FP4
def test_fp4_even_column_in_low_nibble() -> None:
    codes = packing.fp4_codes(torch.tensor([[0.5, -3.0]]))
    assert codes.tolist() == [[1, 13]]
    assert packing.pack_fp4(codes).tolist() == [[0xD1]]


def test_fp4_negative_zero_keeps_its_sign_bit() -> None:
    codes = packing.fp4_codes(torch.tensor([0.0, -0.0]))
    assert codes.tolist() == [0, 8]
    assert torch.signbit(packing.fp4_values(codes)).tolist() == [False, True]


grid = st.sampled_from([s * v for v in packing.E2M1_VALUES for s in (1.0, -1.0)])


@SETTINGS
@given(rows=st.integers(1, 5), half=st.integers(1, 20), data=st.data())
def test_fp4_round_trips_and_equals_compressed_tensors(rows, half, data) -> None:
    flat = data.draw(st.lists(grid, min_size=rows * 2 * half, max_size=rows * 2 * half))
    x = torch.tensor(flat, dtype=torch.float32).reshape(rows, 2 * half)
    codes = packing.fp4_codes(x)
    packed = packing.pack_fp4(codes)
    assert torch.equal(packing.unpack_fp4(packed), codes)
    decoded = packing.fp4_values(packing.unpack_fp4(packed))
    assert torch.equal(decoded, x) and torch.equal(torch.signbit(decoded), torch.signbit(x))
    assert torch.equal(packed, pack_fp4_to_uint8(x))
    theirs = unpack_fp4_from_uint8(packed, rows, 2 * half, dtype=torch.float32)
    assert torch.equal(decoded, theirs)


def test_fp4_refuses_off_grid_values_and_odd_columns() -> None:
    with pytest.raises(ValueError, match="E2M1 grid"):
        packing.fp4_codes(torch.tensor([0.75]))
    with pytest.raises(ValueError, match="even last dimension"):
        packing.pack_fp4(torch.zeros(1, 3, dtype=torch.uint8))


# --------------------------------------------------------------------------------- FP8 / E8M0
@SETTINGS
@given(data=st.lists(st.integers(0, 255), min_size=1, max_size=64))
def test_fp8_bytes_round_trip(data) -> None:
    b = torch.tensor(data, dtype=torch.uint8)
    f = packing.bytes_to_fp8(b)
    assert f.dtype == torch.float8_e4m3fn
    assert torch.equal(packing.fp8_to_bytes(f), b)


def test_fp8_bytes_are_the_e4m3_encoding() -> None:
    x = torch.tensor([1.0, -2.0, 448.0], dtype=torch.float8_e4m3fn)
    assert packing.fp8_to_bytes(x).tolist() == [0x38, 0xC0, 0x7E]


@SETTINGS
@given(e=st.lists(st.integers(-127, 127), min_size=1, max_size=32))
def test_e8m0_round_trips(e) -> None:
    s = torch.exp2(torch.tensor(e, dtype=torch.float32))
    b = packing.e8m0_encode(s)
    assert b.tolist() == [v + 127 for v in e]
    assert torch.equal(packing.e8m0_decode(b), s)


def test_e8m0_refuses_non_powers_of_two_and_decodes_255_as_nan() -> None:
    with pytest.raises(ValueError, match="powers of two"):
        packing.e8m0_encode(torch.tensor([3.0]))
    assert torch.isnan(packing.e8m0_decode(torch.tensor([255], dtype=torch.uint8))).all()
