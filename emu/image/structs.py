"""C structures of a vDSO as compiled: member offsets, the generic `struct vdso_data` shape,
the pvclock record, and how to read them from an image's DWARF.

A `StructLayout` is what the image was compiled with: from DWARF when the image has it
(`dwarf_types`), otherwise the generic shape a built-in profile names (`vdso_data_struct`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from elftools.elf.elffile import ELFFile

from host_model.abi import PVTI_FIELDS, PVTI_SIZE

#: uapi clock ids; `basetime[]` is indexed by them (VDSO_BASES = CLOCK_TAI + 1).
CLOCK_IDS = {
    "CLOCK_REALTIME": 0,
    "CLOCK_MONOTONIC": 1,
    "CLOCK_PROCESS_CPUTIME_ID": 2,
    "CLOCK_THREAD_CPUTIME_ID": 3,
    "CLOCK_MONOTONIC_RAW": 4,
    "CLOCK_REALTIME_COARSE": 5,
    "CLOCK_MONOTONIC_COARSE": 6,
    "CLOCK_BOOTTIME": 7,
    "CLOCK_REALTIME_ALARM": 8,
    "CLOCK_BOOTTIME_ALARM": 9,
    "CLOCK_SGI_CYCLE": 10,
    "CLOCK_TAI": 11,
}
#: Index of the clock record (CS_HRES_COARSE = 0, CS_RAW = 1) that holds each vDSO clock.
CS_HRES_COARSE, CS_RAW = 0, 1

#: `enum vdso_clock_mode` of 5.x+ kernels (include/vdso/clocksource.h +
#: arch/x86/include/asm/vdso/clocksource.h); DWARF overrides it when present.
DEFAULT_CLOCK_MODES = {
    "VDSO_CLOCKMODE_NONE": 0,
    "VDSO_CLOCKMODE_TSC": 1,
    "VDSO_CLOCKMODE_PVCLOCK": 2,
    "VDSO_CLOCKMODE_HVCLOCK": 3,
    "VDSO_CLOCKMODE_TIMENS": 0x7FFFFFFF,
}


@dataclass(frozen=True)
class FieldInfo:
    """One structure member: byte offset, total size, and for arrays the count and stride."""

    offset: int
    size: int
    count: int = 1
    stride: int = 0


@dataclass(frozen=True)
class StructLayout:
    """A C structure as the image was compiled: name, sizeof, members (flattened unions)."""

    name: str
    size: int
    fields: dict[str, FieldInfo]

    def offset(self, member: str) -> int:
        return self.fields[member].offset


def vdso_data_struct(name: str, *, max_cycles: bool, size: int) -> StructLayout:
    """The generic `struct vdso_data` / `vdso_clock` prefix: seq .. basetime[VDSO_BASES]."""
    f: dict[str, FieldInfo] = {"seq": FieldInfo(0, 4), "clock_mode": FieldInfo(4, 4)}
    f["cycle_last"] = FieldInfo(8, 8)
    off = 16
    if max_cycles:
        f["max_cycles"] = FieldInfo(16, 8)
        off = 24
    f["mask"] = FieldInfo(off, 8)
    f["mult"] = FieldInfo(off + 8, 4)
    f["shift"] = FieldInfo(off + 12, 4)
    base = off + 16
    f["basetime"] = FieldInfo(base, 16 * 12, 12, 16)
    f["offset"] = FieldInfo(base, 16 * 12, 12, 16)
    tail = base + 16 * 12
    if size > tail:  # 5.x-6.14: the timezone / resolution fields live in the same struct
        f["tz_minuteswest"] = FieldInfo(tail, 4)
        f["tz_dsttime"] = FieldInfo(tail + 4, 4)
        f["hrtimer_res"] = FieldInfo(tail + 8, 4)
        f["__unused"] = FieldInfo(tail + 12, 4)
    return StructLayout(name, size, f)


#: The pvclock ABI (arch/x86/include/asm/pvclock-abi.h); identical in every kernel.
PVTI_STRUCT = StructLayout(
    "pvclock_vcpu_time_info",
    PVTI_SIZE,
    {
        f.name: FieldInfo(f.offset, f.size, f.count, f.size // f.count if f.count > 1 else 0)
        for f in PVTI_FIELDS
    },
)


# --------------------------------------------------------------------------- DWARF

_WANTED_STRUCTS = (
    "vdso_data",
    "vdso_time_data",
    "vdso_clock",
    "vdso_timestamp",
    "pvclock_vcpu_time_info",
    "pvclock_vsyscall_time_info",
    "ms_hyperv_tsc_page",
    "vdso_rng_data",
)


def dwarf_types(elf: ELFFile) -> tuple[dict[str, StructLayout], dict[str, dict[str, int]]]:
    """The wanted structures and `enum vdso_clock_mode` as the image's DWARF describes them."""
    dwarf = elf.get_dwarf_info()
    structs: dict[str, StructLayout] = {}
    enums: dict[str, dict[str, int]] = {}
    for cu in dwarf.iter_CUs():
        for die in cu.iter_DIEs():
            if "DW_AT_name" not in die.attributes or "DW_AT_declaration" in die.attributes:
                continue
            name = die.attributes["DW_AT_name"].value.decode()
            if die.tag == "DW_TAG_structure_type" and name in _WANTED_STRUCTS:
                if name not in structs:
                    structs[name] = StructLayout(name, _byte_size(die), _members(die, 0))
            elif die.tag == "DW_TAG_enumeration_type" and name == "vdso_clock_mode":
                enums.setdefault(
                    name,
                    {
                        c.attributes["DW_AT_name"].value.decode(): c.attributes[
                            "DW_AT_const_value"
                        ].value
                        for c in die.iter_children()
                        if c.tag == "DW_TAG_enumerator"
                    },
                )
    return structs, enums


def _strip(die: Any) -> Any:
    while die.tag in ("DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type"):
        if "DW_AT_type" not in die.attributes:
            return die
        die = die.get_DIE_from_attribute("DW_AT_type")
    return die


def _byte_size(die: Any) -> int:
    die = _strip(die)
    if "DW_AT_byte_size" in die.attributes:
        return die.attributes["DW_AT_byte_size"].value
    if die.tag == "DW_TAG_array_type":
        count = 1
        for d in _array_dims(die):
            count *= d
        return count * _byte_size(die.get_DIE_from_attribute("DW_AT_type"))
    if die.tag == "DW_TAG_pointer_type":
        return die.cu["address_size"]
    return 0


def _array_dims(die: Any) -> list[int]:
    dims = []
    for sub in die.iter_children():
        if sub.tag != "DW_TAG_subrange_type":
            continue
        if "DW_AT_count" in sub.attributes:
            dims.append(sub.attributes["DW_AT_count"].value)
        elif "DW_AT_upper_bound" in sub.attributes:
            dims.append(sub.attributes["DW_AT_upper_bound"].value + 1)
        else:
            dims.append(0)
    return dims


def _member_offset(die: Any) -> int:
    attr = die.attributes.get("DW_AT_data_member_location")
    if attr is None:
        return 0
    if isinstance(attr.value, int):
        return attr.value
    # Old DWARF: a location expression, DW_OP_plus_uconst (0x23) + ULEB128.
    ops = list(attr.value)
    if ops and ops[0] == 0x23:
        val = shift = 0
        for b in ops[1:]:
            val |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        return val
    return 0


def _members(die: Any, base: int) -> dict[str, FieldInfo]:
    out: dict[str, FieldInfo] = {}
    for m in die.iter_children():
        if m.tag != "DW_TAG_member":
            continue
        off = base + _member_offset(m)
        mtype = _strip(m.get_DIE_from_attribute("DW_AT_type"))
        if "DW_AT_name" not in m.attributes:  # anonymous union/struct: flatten
            if mtype.tag in ("DW_TAG_union_type", "DW_TAG_structure_type"):
                for k, v in _members(mtype, off).items():
                    out.setdefault(k, v)
            continue
        name = m.attributes["DW_AT_name"].value.decode()
        size = _byte_size(mtype)
        if mtype.tag == "DW_TAG_array_type":
            dims = _array_dims(mtype)
            count = dims[0] if dims else 0
            stride = size // count if count else 0
            out[name] = FieldInfo(off, size, count, stride)
        else:
            out[name] = FieldInfo(off, size)
    return out


def decode_struct(s: StructLayout, raw: bytes, signed: tuple[str, ...] = ()) -> dict[str, int]:
    """Scalar members of `s` read little-endian from `raw` (arrays are skipped)."""
    out = {}
    for k, f in s.fields.items():
        if f.count != 1 or f.size not in (1, 2, 4, 8) or f.offset + f.size > len(raw):
            continue
        out[k] = int.from_bytes(raw[f.offset : f.offset + f.size], "little", signed=k in signed)
    return out
