"""The shared-page ABI in one place: the pvclock and Hyper-V record layouts, and the pages.

Every other module (host models, the image loader and layout analysis, the blob build, the
tests, and the check of `vdso_blobs/vdso.lds`) takes these facts from here:

- `struct pvclock_vcpu_time_info` (arch/x86/include/asm/pvclock-abi.h): field offsets,
  sizes, signedness, the `struct` format, the 64-byte per-vCPU slot, the flag bits;
- the Hyper-V reference TSC page (TLFS "partition reference TSC page", Linux
  `struct ms_hyperv_tsc_page`);
- the project readers' image ABI: the entry symbol and where each clock page sits relative
  to the load base (the values `vdso_blobs/vdso.lds` assigns to the page symbols).

Pure data: no imports from the rest of the project.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PAGE_SIZE = 0x1000


@dataclass(frozen=True)
class Field:
    """One member of a fixed-layout record: name, byte offset, size (of all elements)."""

    name: str
    offset: int
    size: int
    signed: bool = False
    #: Arrays: element count (the element size is `size // count`).
    count: int = 1

    @property
    def end(self) -> int:
        return self.offset + self.size


# ----------------------------------------------------------------------------- pvclock

#: sizeof(struct pvclock_vcpu_time_info).
PVTI_SIZE = 32
#: Linux's `struct pvclock_vsyscall_time_info` pads each vCPU's pvti to a 64-byte slot:
#: vCPU v's record starts at byte 64*v of the pvclock page.
PVTI_SLOT = 64
#: `struct` format of a whole pvti (little-endian, the pads included).
PVTI_FORMAT = "<IIQQIbB2x"

#: Field layout, in memory order; the offsets are the ABI.
PVTI_FIELDS: tuple[Field, ...] = (
    Field("version", 0, 4),
    Field("pad0", 4, 4),
    Field("tsc_timestamp", 8, 8),
    Field("system_time", 16, 8),
    Field("tsc_to_system_mul", 24, 4),
    Field("tsc_shift", 28, 1, signed=True),
    Field("flags", 29, 1),
    Field("pad", 30, 2, count=2),
)
PVTI_FIELD_BY_NAME = {f.name: f for f in PVTI_FIELDS}

#: `flags` bits (pvclock-abi.h).
PVCLOCK_TSC_STABLE_BIT = 1 << 0
PVCLOCK_GUEST_STOPPED = 1 << 1

assert struct.calcsize(PVTI_FORMAT) == PVTI_SIZE == PVTI_FIELDS[-1].end


def pvti_field_at(offset: int) -> Field | None:
    """The pvti field that covers byte `offset` of a record, or None outside 0..31."""
    for f in PVTI_FIELDS:
        if f.offset <= offset < f.end:
            return f
    return None


# ---------------------------------------------------------------------- Hyper-V TSC page

#: Fields of the reference TSC page, in memory order.
HV_FIELDS: tuple[Field, ...] = (
    Field("tsc_sequence", 0, 4),
    Field("reserved0", 4, 4),
    Field("tsc_scale", 8, 8),
    Field("tsc_offset", 16, 8, signed=True),
)
#: `struct` format of the page's header (sequence, reserved, scale, offset).
HV_FORMAT = "<IIQq"
assert struct.calcsize(HV_FORMAT) == HV_FIELDS[-1].end

# ------------------------------------------------------------- project reader images

#: The entry point every project-built reader exports: `uint64_t vdsofuzz_read(void)`.
BLOB_ENTRY = "vdsofuzz_read"
#: Clock page -> offset from the image's load base, in the order the kernel lays them out
#: (5.6-6.12 x86 vDSOs). The image reaches page P through the absolute symbol `P_page`.
BLOB_PAGES: dict[str, int] = {
    "vvar": -4 * PAGE_SIZE,
    "pvclock": -3 * PAGE_SIZE,
    "hvclock": -2 * PAGE_SIZE,
    "timens": -1 * PAGE_SIZE,
}
#: The linker script that places the page symbols (relative to the `vdso_blobs` package).
LINKER_SCRIPT = "vdso.lds"


def page_symbol(page: str) -> str:
    """The absolute symbol that marks `page` in an image: `pvclock` -> `pvclock_page`."""
    return f"{page}_page"


#: Page symbol -> offset from the load base (what the linker script must assign).
BLOB_PAGE_SYMBOLS: dict[str, int] = {page_symbol(p): off for p, off in BLOB_PAGES.items()}
