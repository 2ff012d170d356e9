"""The pvclock record: `struct pvclock_vcpu_time_info` packing and the time formula.

The layout (offsets, sizes, slot, flag bits) is `host_model.abi`'s; it is re-exported here.

Everything here is a pure function of its arguments, so it can be checked against
hand-computed values.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

from host_model.abi import (
    PVCLOCK_GUEST_STOPPED,
    PVCLOCK_TSC_STABLE_BIT,
    PVTI_FIELD_BY_NAME,
    PVTI_FIELDS,
    PVTI_FORMAT,
    PVTI_SIZE,
    PVTI_SLOT,
    Field,
    pvti_field_at,
)

U64_MAX = (1 << 64) - 1
MASK64 = U64_MAX

_FORMAT = PVTI_FORMAT
#: Field layout, in memory order (the ABI lives in `host_model.abi`).
FIELDS = PVTI_FIELDS
FIELD_BY_NAME = PVTI_FIELD_BY_NAME
#: The fields a correct writer updates between the two version bumps, in store order.
BODY_FIELDS = ("tsc_timestamp", "system_time", "tsc_to_system_mul", "tsc_shift", "flags")

__all__ = [
    "BODY_FIELDS",
    "FIELDS",
    "FIELD_BY_NAME",
    "MASK64",
    "PVCLOCK_GUEST_STOPPED",
    "PVCLOCK_TSC_STABLE_BIT",
    "PVTI_SIZE",
    "PVTI_SLOT",
    "U64_MAX",
    "Field",
    "Pvti",
    "field_at",
    "pvclock_ns",
    "scale_delta",
    "time_scale",
]


def field_at(offset: int) -> Field:
    """The field that covers byte `offset` (0..31) of a pvti."""
    f = pvti_field_at(offset)
    if f is None:
        raise ValueError(f"offset {offset} is outside a {PVTI_SIZE}-byte pvti")
    return f


class Pvti(NamedTuple):
    """One `pvclock_vcpu_time_info` as the guest sees it.

    A named tuple: hosts make one per store they model, so it must be cheap to copy.
    """

    version: int = 0
    tsc_timestamp: int = 0
    system_time: int = 0
    tsc_to_system_mul: int = 0
    tsc_shift: int = 0
    flags: int = 0

    @property
    def stable(self) -> bool:
        return bool(self.flags & PVCLOCK_TSC_STABLE_BIT)

    def pack(self) -> bytes:
        return struct.pack(
            _FORMAT,
            self.version & 0xFFFFFFFF,
            0,
            self.tsc_timestamp & MASK64,
            self.system_time & MASK64,
            self.tsc_to_system_mul & 0xFFFFFFFF,
            self.tsc_shift,
            self.flags & 0xFF,
        )

    @classmethod
    def unpack(cls, data: bytes) -> Pvti:
        version, _pad0, ts, st, mul, shift, flags = struct.unpack(_FORMAT, bytes(data[:PVTI_SIZE]))
        return cls(version, ts, st, mul, shift, flags)

    def field_bytes(self, name: str) -> bytes:
        """The little-endian bytes of one field, as a host stores it."""
        value: int = getattr(self, name)
        return _FIELD_PACK[name](value)

    def with_(self, **changes: int) -> Pvti:
        return self._replace(**changes)

    def ns_at(self, tsc: int) -> int:
        return pvclock_ns(self, tsc)


def _packer(f: Field) -> Callable[[int], bytes]:
    fmt = {1: "b" if f.signed else "B", 2: "H", 4: "I", 8: "Q"}[f.size]
    mask = (1 << (8 * f.size)) - 1
    pack = struct.Struct("<" + fmt).pack
    if f.signed:
        return pack
    return lambda value: pack(value & mask)


_FIELD_PACK = {f.name: _packer(f) for f in FIELDS}


def scale_delta(delta: int, mul: int, shift: int) -> int:
    """`pvclock_scale_delta`: shift the 64-bit delta, then take the high part of delta*mul.

    The product is the full 128-bit one (x86-64 `mul` + `shrd $32`); bits shifted out of a
    64-bit left shift are lost, exactly as in the guest.
    """
    delta &= MASK64
    if shift < 0:
        delta >>= -shift
    else:
        delta = (delta << shift) & MASK64
    return ((delta * (mul & 0xFFFFFFFF)) >> 32) & MASK64


def pvclock_ns(p: Pvti, tsc: int) -> int:
    """The guest's nanoseconds for TSC value `tsc` under pvti `p` (mod 2^64, like the guest)."""
    delta = (tsc - p.tsc_timestamp) & MASK64
    return (p.system_time + scale_delta(delta, p.tsc_to_system_mul, p.tsc_shift)) & MASK64


@lru_cache(maxsize=256)  # hosts recompute it for every record they publish
def time_scale(tsc_hz: int, ns_hz: int = 1_000_000_000) -> tuple[int, int]:
    """(shift, mul) so that `scale_delta(cycles, mul, shift)` turns `tsc_hz` cycles into ns.

    The construction KVM uses: halve the source rate until it is at most twice the target
    and fits 32 bits, then rebalance until the target is strictly below the source, so the
    32-bit fraction target/source is in [0.5, 1).
    """
    if tsc_hz <= 0 or ns_hz <= 0:
        raise ValueError("frequencies must be positive")
    shift = 0
    base = tsc_hz
    target = ns_hz
    while base > target * 2 or base >> 32:
        base >>= 1
        shift -= 1
    while base <= target or target >> 32:
        if target >> 32 or base & 0x80000000:
            target >>= 1
        else:
            base <<= 1
        shift += 1
    return shift, (target << 32) // base
