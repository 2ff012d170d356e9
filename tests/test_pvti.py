"""The pvclock math against values computed by hand."""

import struct

import pytest

from host_model.pvti import (
    FIELDS,
    PVTI_SIZE,
    Pvti,
    field_at,
    pvclock_ns,
    scale_delta,
    time_scale,
)


def test_layout_matches_the_abi():
    offsets = {f.name: (f.offset, f.size) for f in FIELDS}
    assert offsets["version"] == (0, 4)
    assert offsets["tsc_timestamp"] == (8, 8)
    assert offsets["system_time"] == (16, 8)
    assert offsets["tsc_to_system_mul"] == (24, 4)
    assert offsets["tsc_shift"] == (28, 1)
    assert offsets["flags"] == (29, 1)
    assert field_at(31).name == "pad"


def test_pack_puts_each_field_at_its_offset():
    p = Pvti(0x11223344, 0x0102030405060708, 0x1112131415161718, 0xAABBCCDD, -3, 0x03)
    raw = p.pack()
    assert len(raw) == PVTI_SIZE
    assert raw[0:4] == bytes.fromhex("44332211")
    assert struct.unpack_from("<Q", raw, 8)[0] == 0x0102030405060708
    assert struct.unpack_from("<Q", raw, 16)[0] == 0x1112131415161718
    assert struct.unpack_from("<I", raw, 24)[0] == 0xAABBCCDD
    assert raw[28] == 0xFD  # -3 as s8
    assert raw[29] == 0x03
    assert Pvti.unpack(raw) == p


def test_negative_shift_halves_before_multiplying():
    # 1000 cycles >> 1 = 500; 500 * 0.5 (mul 2^31) = 250
    assert scale_delta(1000, 0x8000_0000, -1) == 250


def test_positive_shift_doubles_and_drops_overflowing_bits():
    assert scale_delta(3, 0x8000_0000, 2) == 6  # (3 << 2) * 0.5
    # bit 63 shifted out of a 64-bit register is lost: (2^63 + 5) << 1 == 10
    assert scale_delta((1 << 63) + 5, 0x8000_0000, 1) == 5


def test_product_is_the_full_128_bit_one():
    # 2^40 * (2^32 - 1) needs 72 bits; >> 32 gives 2^40 - 2^8
    assert scale_delta(1 << 40, 0xFFFF_FFFF, 0) == (1 << 40) - 256


def test_formula_adds_system_time():
    p = Pvti(tsc_timestamp=1_000, system_time=5_000_000, tsc_to_system_mul=0x8000_0000, tsc_shift=0)
    assert pvclock_ns(p, 3_000) == 5_000_000 + 1_000


def test_tsc_older_than_the_timestamp_wraps_to_a_wild_value():
    p = Pvti(tsc_timestamp=1_000, system_time=0, tsc_to_system_mul=0x8000_0000, tsc_shift=0)
    # delta = 2^64 - 1 -> * 0.5 = 2^63 - 1 (rounded down)
    assert pvclock_ns(p, 999) == (1 << 63) - 1


@pytest.mark.parametrize(
    ("hz", "shift", "mul"),
    [
        # 2.5 GHz: halve once to 1.25 GHz, then 1e9/1.25e9 = 0.8 -> 0.8 * 2^32 rounded down
        (2_500_000_000, -1, 3_435_973_836),
        # 1 GHz: the ratio is 1, so double the divisor once: 0.5 * 2^32 with shift +1
        (1_000_000_000, 1, 2_147_483_648),
    ],
)
def test_time_scale_by_hand(hz, shift, mul):
    assert time_scale(hz) == (shift, mul)


def test_time_scale_converts_one_second_of_cycles_to_about_a_second():
    for hz in (100_000_000, 1_999_999_999, 3_000_000_000, 4_100_000_000):
        shift, mul = time_scale(hz)
        assert abs(scale_delta(hz, mul, shift) - 1_000_000_000) <= 1


def test_every_field_packs_at_the_abi_offset_and_the_layouts_agree():
    # host_model.abi is the one source: the packer, the field table and the layout code's
    # struct all follow it, field by field.
    from emu.image.layout import PVTI_STRUCT
    from host_model import abi

    p = Pvti(0x11223344, 0x0102030405060708, 0x1112131415161718, 0xAABBCCDD, -3, 0x03)
    raw = p.pack()
    for f in abi.PVTI_FIELDS:
        if f.name in Pvti._fields:
            assert raw[f.offset : f.end] == p.field_bytes(f.name), f.name
        assert PVTI_STRUCT.fields[f.name].offset == f.offset
        assert PVTI_STRUCT.fields[f.name].size == f.size
    assert PVTI_STRUCT.size == abi.PVTI_SIZE == len(raw)
    assert FIELDS is abi.PVTI_FIELDS
