"""Bit-packed binary masks: exact round trip, one bit per element."""

from __future__ import annotations

import math

import pytest
import torch

from clarena.cl import pack_bits, unpack_bits


@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (9,), (1000,), (13, 11), (2, 3, 5)])
def test_round_trip_is_exact_and_uses_one_bit_per_element(shape):
    generator = torch.Generator().manual_seed(sum(shape))
    mask = torch.rand(shape, generator=generator) > 0.5
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8
    assert packed.shape == (math.ceil(mask.numel() / 8),)
    unpacked = unpack_bits(packed, mask.shape)
    assert unpacked.dtype == torch.bool
    assert unpacked.shape == mask.shape
    assert torch.equal(unpacked, mask)


def test_bit_order_is_element_i_in_bit_i_mod_8_of_byte_i_div_8():
    mask = torch.zeros(10, dtype=torch.bool)
    mask[[0, 3, 9]] = True
    assert pack_bits(mask).tolist() == [0b00001001, 0b00000010]


def test_all_ones_and_all_zeros():
    assert pack_bits(torch.ones(9, dtype=torch.bool)).tolist() == [255, 1]
    assert pack_bits(torch.zeros(9, dtype=torch.bool)).tolist() == [0, 0]


def test_nonzero_float_entries_mean_on():
    mask = torch.tensor([0.0, 1.0, 0.25, -2.0, 0.0])
    assert torch.equal(unpack_bits(pack_bits(mask), (5,)), mask != 0)


@pytest.mark.parametrize(("count", "shape"), [(1, (9,)), (3, (9,)), (2, (4, 5))])
def test_wrong_byte_count_is_a_value_error(count, shape):
    expected = math.ceil(math.prod(shape) / 8)
    with pytest.raises(ValueError, match=rf"{count} torch.uint8 bytes.*\({expected} uint8 bytes"):
        unpack_bits(torch.zeros(count, dtype=torch.uint8), shape)


def test_non_uint8_input_is_a_value_error():
    with pytest.raises(ValueError, match=r"torch.int64 bytes"):
        unpack_bits(torch.zeros(2, dtype=torch.int64), (9,))
