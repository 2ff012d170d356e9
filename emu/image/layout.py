"""Find the clock-page layout of a real x86 vDSO image (kernel build tree, debug package, dump).

Given a `vdso64.so`/`vdso32.so` (path or bytes), say where the clock pages are relative to
the image base and how the structures in them are laid out, from the best source there is:

1. the image's own absolute symbols (`vvar_page`, `vvar__vdso_data`, `pvclock_page`,
   `hvclock_page`, `timens_page`, 6.15+ `vdso_u_data`/`vdso_u_time_data`/...) and its DWARF
   (`struct vdso_data`, its 6.15+ successors `vdso_time_data`/`vdso_clock`,
   `struct pvclock_vcpu_time_info`, `enum vdso_clock_mode`) -- source "dwarf";
2. the mappings recorded by `vdsofuzz dump-vdso` -- source "dump" (see `emu.image.dump`);
3. a built-in `LayoutProfile` for the kernel family, chosen from the kernel version the
   image carries in its `.note` (`Linux` note type 0 = LINUX_VERSION_CODE) -- source "profile".

Everything here is a pure function of the bytes it is given (no clock, no host state).
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from emu.errors import ImageError
from host_model.abi import PAGE_SIZE, PVTI_FIELDS, PVTI_SIZE
from host_model.abi import PVTI_SLOT as PVTI_SLOT  # re-exported: dump and tests read it here

ARCHES = {("EM_X86_64", 64): "x86_64", ("EM_386", 32): "i386"}

#: Entry symbols worth knowing, in preference order for a clock_gettime-style call.
ENTRY_NAMES = (
    "__vdso_clock_gettime",
    "clock_gettime",
    "__vdso_clock_gettime64",
    "__vdso_gettimeofday",
    "__vdso_time",
    "__vdso_clock_getres",
    "__vdso_getcpu",
    "__kernel_vsyscall",
    "vread_pvclock",
    "vread_hvclock",
)

#: Absolute page symbols the x86 linker script emits -> our page names.
PAGE_SYMBOLS = {
    "vvar_page": "vvar",
    "vdso_u_data": "vvar",
    "hpet_page": "hpet",
    "pvclock_page": "pvclock",
    "hvclock_page": "hvclock",
    "timens_page": "timens",
    "vclock_pages": "vclock",
}
#: Absolute data symbols -> our data names (first match wins, in this order).
DATA_SYMBOLS = {
    "vdso_data": ("vvar__vdso_data", "vdso_u_time_data", "_vdso_data"),
    "rng_data": ("vvar__vdso_rng_data", "vdso_rng_data", "vdso_u_rng_data"),
    "timens_data": ("timens__vdso_data",),
    "arch_data": ("vdso_u_arch_data",),
}

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

_NEXT_STEP = (
    "pass the unstripped vdso64.so/vdso32.so from the kernel build tree "
    "(arch/x86/entry/vdso/, or usr/lib/debug/lib/modules/<release>/vdso/ of the distribution's "
    "kernel debug package) or a dump directory from `vdsofuzz dump-vdso`"
)


class VdsoLayoutError(ImageError):
    """The layout of a vDSO image cannot be determined; the message says what to supply."""


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


def _vdso_data_struct(name: str, *, max_cycles: bool, size: int) -> StructLayout:
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


@dataclass(frozen=True)
class LayoutProfile:
    """The page layout and `vdso_data` shape of one kernel family (x86_64 and i386 alike)."""

    name: str
    #: (major, minor) inclusive bounds; `last=None` means "and later, until known otherwise".
    first: tuple[int, int]
    last: tuple[int, int] | None
    #: Page name -> offset from the image base.
    pages: dict[str, int]
    #: Special mappings, name -> (offset from the image base, size).
    mappings: dict[str, tuple[int, int]]
    #: Where clock record CS_HRES_COARSE starts, relative to the image base.
    vdso_data_offset: int
    #: The clock record; the CS_RAW record follows at `vdso_data_offset + clock_stride`.
    clock: StructLayout
    clock_stride: int
    rng_data_offset: int | None
    #: Which real images this profile was checked against ("" = from kernel sources only).
    checked_on: str = ""

    def covers(self, version: tuple[int, int]) -> bool:
        return self.first <= version and (self.last is None or version <= self.last)


def _four_page() -> dict[str, int]:
    """5.6-6.12: vvar, pvclock, hvclock, timens below the image, one `[vvar]` mapping."""
    return {
        "vvar": -4 * PAGE_SIZE,
        "pvclock": -3 * PAGE_SIZE,
        "hvclock": -2 * PAGE_SIZE,
        "timens": -PAGE_SIZE,
    }


PROFILES: tuple[LayoutProfile, ...] = (
    # 5.6 added the time-namespace page: vvar, pvclock, hvclock, timens (vdso-layout.lds.S);
    # `_vdso_data[CS_BASES]` sits at vvar+128 (asm/vvar.h DECLARE_VVAR(128, ...)).
    LayoutProfile(
        name="linux-5.6-6.9",
        first=(5, 6),
        last=(6, 9),
        pages=_four_page(),
        mappings={"[vvar]": (-4 * PAGE_SIZE, 4 * PAGE_SIZE)},
        vdso_data_offset=-4 * PAGE_SIZE + 0x80,
        clock=_vdso_data_struct("vdso_data", max_cycles=False, size=240),
        clock_stride=240,
        rng_data_offset=None,
        checked_on="Debian linux-image-6.1.0-56-cloud-amd64-dbg (6.1.192) vdso64.so, vdso32.so",
    ),
    # 6.10: GENERIC_VDSO_OVERFLOW_PROTECT adds max_cycles after cycle_last; 6.11 adds
    # vdso_rng_data at vvar+640 (getrandom vDSO).
    LayoutProfile(
        name="linux-6.10-6.12",
        first=(6, 10),
        last=(6, 12),
        pages=_four_page(),
        mappings={"[vvar]": (-4 * PAGE_SIZE, 4 * PAGE_SIZE)},
        vdso_data_offset=-4 * PAGE_SIZE + 0x80,
        clock=_vdso_data_struct("vdso_data", max_cycles=True, size=248),
        clock_stride=248,
        rng_data_offset=-4 * PAGE_SIZE + 640,
        checked_on="Debian linux-image-6.12.117+deb12-cloud-amd64-dbg vdso64.so, vdso32.so",
    ),
    # 6.13: pvclock/hvclock move to their own `[vvar_vclock]` mapping; vdso_data moves to the
    # start of the vvar page ("x86/vdso: Access vdso data without vvar.h").
    LayoutProfile(
        name="linux-6.13-6.14",
        first=(6, 13),
        last=(6, 14),
        pages={
            "vvar": -4 * PAGE_SIZE,
            "timens": -3 * PAGE_SIZE,
            "pvclock": -2 * PAGE_SIZE,
            "hvclock": -PAGE_SIZE,
        },
        mappings={
            "[vvar]": (-4 * PAGE_SIZE, 2 * PAGE_SIZE),
            "[vvar_vclock]": (-2 * PAGE_SIZE, 2 * PAGE_SIZE),
        },
        vdso_data_offset=-4 * PAGE_SIZE,
        clock=_vdso_data_struct("vdso_data", max_cycles=True, size=248),
        clock_stride=248,
        rng_data_offset=-4 * PAGE_SIZE + 640,
    ),
    # 6.15: generic vDSO data store (__VDSO_PAGES = 6: time, timens, rng, arch, then the two
    # vclock pages) and `struct vdso_clock` split out of `vdso_time_data` (232 bytes each).
    LayoutProfile(
        name="linux-6.15+",
        first=(6, 15),
        last=None,
        pages={
            "vvar": -6 * PAGE_SIZE,
            "timens": -5 * PAGE_SIZE,
            "rng": -4 * PAGE_SIZE,
            "arch": -3 * PAGE_SIZE,
            "pvclock": -2 * PAGE_SIZE,
            "hvclock": -PAGE_SIZE,
        },
        mappings={
            "[vvar]": (-6 * PAGE_SIZE, 4 * PAGE_SIZE),
            "[vvar_vclock]": (-2 * PAGE_SIZE, 2 * PAGE_SIZE),
        },
        vdso_data_offset=-6 * PAGE_SIZE,
        clock=_vdso_data_struct("vdso_clock", max_cycles=True, size=232),
        clock_stride=232,
        rng_data_offset=-4 * PAGE_SIZE,
        checked_on="running 6.18.44 kernel's [vdso] (code refs and live [vvar] contents)",
    ),
)
PROFILE_BY_NAME = {p.name: p for p in PROFILES}


@dataclass
class VdsoLayout:
    """Where a vDSO image expects its clock pages, and what the structures in them look like."""

    arch: str
    #: Page name ("vvar", "pvclock", "hvclock", "timens", "rng", ...) -> offset from image base.
    pages: dict[str, int]
    #: Data name ("vdso_data", "rng_data", "timens_data") -> offset from image base.
    data: dict[str, int]
    #: Entry/function symbol -> image-relative address.
    entry: dict[str, int]
    #: Clock record (`vdso_data` <= 6.14, `vdso_clock` 6.15+) member layout.
    vdso_data: StructLayout
    #: Distance between clock record CS_HRES_COARSE and CS_RAW.
    clock_stride: int
    pvti: StructLayout
    clock_modes: dict[str, int]
    #: Special mappings the kernel would create, name -> (offset from image base, size).
    mappings: dict[str, tuple[int, int]]
    source: str  # "dwarf" | "profile" | "dump"
    profile: str | None
    reason: str
    kernel_version: tuple[int, int, int] | None = None
    #: The absolute symbols found (name -> offset from image base); empty when stripped.
    symbols: dict[str, int] = field(default_factory=dict)
    #: Other DWARF structures of interest (hvclock page, vdso_time_data, rng data).
    structs: dict[str, StructLayout] = field(default_factory=dict)
    #: x86-64 only: pages below the image that the code addresses RIP-relatively.
    code_data_pages: tuple[int, ...] = ()

    @property
    def clock_mode_pvclock(self) -> int:
        return self.clock_modes["VDSO_CLOCKMODE_PVCLOCK"]

    @property
    def clock_gettime(self) -> tuple[str, int]:
        """The preferred clock_gettime entry: (symbol, image-relative address)."""
        for name in ("__vdso_clock_gettime", "clock_gettime", "__vdso_clock_gettime64"):
            if name in self.entry:
                return name, self.entry[name]
        raise VdsoLayoutError("the image exports no __vdso_clock_gettime; is it a vDSO?")

    def clock_record(self, clock_id: int) -> int:
        """Image-relative address of the clock record (seq, clock_mode, ...) for `clock_id`."""
        cs = CS_RAW if clock_id == CLOCK_IDS["CLOCK_MONOTONIC_RAW"] else CS_HRES_COARSE
        return self.data["vdso_data"] + cs * self.clock_stride

    def basetime(self, clock_id: int) -> int:
        """Image-relative address of `basetime[clock_id]` ({u64 sec; u64 nsec})."""
        bt = self.vdso_data.fields["basetime"]
        if not 0 <= clock_id < bt.count:
            raise ValueError(f"clock id {clock_id} has no basetime entry (0..{bt.count - 1})")
        return self.clock_record(clock_id) + bt.offset + clock_id * bt.stride

    def to_json(self) -> dict[str, Any]:
        def st(s: StructLayout) -> dict[str, Any]:
            return {
                "name": s.name,
                "size": s.size,
                "fields": {k: vars(v) for k, v in s.fields.items()},
            }

        return {
            "arch": self.arch,
            "pages": self.pages,
            "data": self.data,
            "entry": self.entry,
            "vdso_data": st(self.vdso_data),
            "clock_stride": self.clock_stride,
            "pvti": st(self.pvti),
            "clock_modes": self.clock_modes,
            "mappings": {k: list(v) for k, v in self.mappings.items()},
            "source": self.source,
            "profile": self.profile,
            "reason": self.reason,
            "kernel_version": list(self.kernel_version) if self.kernel_version else None,
            "symbols": self.symbols,
            "code_data_pages": list(self.code_data_pages),
        }


# --------------------------------------------------------------------------- ELF facts


@dataclass
class ElfFacts:
    """What `analyze` needs from the ELF, gathered once."""

    arch: str
    entry: dict[str, int]
    abs_symbols: dict[str, int]
    kernel_version: tuple[int, int, int] | None
    build_salt: str | None
    structs: dict[str, StructLayout]
    enums: dict[str, dict[str, int]]
    has_dwarf: bool
    code_data_pages: tuple[int, ...]


def _open(image: bytes | str | Path) -> tuple[bytes, str]:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image), "image"
    path = Path(image)
    try:
        return path.read_bytes(), str(path)
    except OSError as e:
        raise VdsoLayoutError(f"{path}: cannot read ({e.strerror})") from None


def elf_facts(data: bytes, name: str = "image", *, elf: ELFFile | None = None) -> ElfFacts:
    """Parse arch, symbols, version note, DWARF structures and code references (`elf`:
    `data` already parsed by the caller)."""
    if data[:4] != b"\x7fELF":
        raise VdsoLayoutError(f"{name}: not an ELF file; {_NEXT_STEP}")
    try:
        elf = elf or ELFFile(io.BytesIO(data))
        key = (elf.header["e_machine"], elf.elfclass)
        if key not in ARCHES:
            raise VdsoLayoutError(
                f"{name}: {key[0]} ELF{key[1]} is not an x86-64 or i386 vDSO (x32 is unsupported)"
            )
        arch = ARCHES[key]
        bits = elf.elfclass
        entry, abs_syms = _symbols(elf, bits)
        version, salt = _version_note(elf)
        has_dwarf = elf.get_section_by_name(".debug_info") is not None
        structs, enums = _dwarf_types(elf) if has_dwarf else ({}, {})
        refs = _rip_data_pages(elf) if arch == "x86_64" else ()
    except VdsoLayoutError:
        raise
    except (ELFError, ValueError, KeyError, IndexError, struct.error) as e:
        raise VdsoLayoutError(f"{name}: truncated or corrupt ELF ({e})") from None
    return ElfFacts(arch, entry, abs_syms, version, salt, structs, enums, has_dwarf, refs)


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) else value


def _symbols(elf: ELFFile, bits: int) -> tuple[dict[str, int], dict[str, int]]:
    funcs: dict[str, int] = {}
    absolute: dict[str, int] = {}
    for sec in elf.iter_sections():
        if not isinstance(sec, SymbolTableSection):
            continue
        for sym in sec.iter_symbols():
            name = sym.name.split("@", 1)[0]
            if not name:
                continue
            kind = sym["st_info"]["type"]
            value = _signed(sym["st_value"], bits)
            if kind == "STT_FUNC":
                funcs.setdefault(name, value)
            elif kind in ("STT_NOTYPE", "STT_OBJECT") and value < 0:
                absolute.setdefault(name, value)
    return funcs, absolute


def _version_note(elf: ELFFile) -> tuple[tuple[int, int, int] | None, str | None]:
    """LINUX_VERSION_CODE from the `Linux` note type 0, and the build-salt string if any."""
    version = salt = None
    for sec in elf.iter_sections():
        if sec["sh_type"] != "SHT_NOTE":
            continue
        raw = sec.data()
        pos = 0
        while pos + 12 <= len(raw):
            namesz, descsz, ntype = struct.unpack_from("<III", raw, pos)
            pos += 12
            nm = raw[pos : pos + namesz].rstrip(b"\0")
            pos += (namesz + 3) & ~3
            desc = raw[pos : pos + descsz]
            pos += (descsz + 3) & ~3
            if nm != b"Linux":
                continue
            if ntype == 0 and descsz == 4:
                code = struct.unpack("<I", desc)[0]
                version = (code >> 16, (code >> 8) & 0xFF, code & 0xFF)
            elif descsz and desc[:1].isdigit():
                salt = desc.rstrip(b"\0").decode("ascii", "replace")
    return version, salt


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


def _dwarf_types(elf: ELFFile) -> tuple[dict[str, StructLayout], dict[str, dict[str, int]]]:
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


# --------------------------------------------------------------------------- code refs


def _rip_data_pages(elf: ELFFile) -> tuple[int, ...]:
    """Pages below the image base that x86-64 code addresses RIP-relatively."""
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    from capstone.x86 import X86_OP_MEM, X86_REG_RIP

    text = elf.get_section_by_name(".text")
    if text is None:
        return ()
    md = Cs(CS_ARCH_X86, CS_MODE_64)
    md.detail = True
    md.skipdata = True
    pages: set[int] = set()
    for insn in md.disasm(text.data(), text["sh_addr"]):
        if insn.id == 0:
            continue
        try:
            ops = insn.operands
        except Exception:  # capstone raises on "data" pseudo-instructions
            continue
        for op in ops:
            if op.type == X86_OP_MEM and op.mem.base == X86_REG_RIP:
                target = insn.address + insn.size + op.mem.disp
                if target < 0:
                    pages.add(target & ~(PAGE_SIZE - 1))
    return tuple(sorted(pages))


# --------------------------------------------------------------------------- choosing


def select_profile(version: tuple[int, ...] | None) -> tuple[LayoutProfile | None, str]:
    """The built-in profile for a kernel version, and why (or why none)."""
    if version is None:
        return None, "the image carries no Linux version note"
    mm = (version[0], version[1])
    for p in PROFILES:
        if p.covers(mm):
            checked = f"; checked on {p.checked_on}" if p.checked_on else "; from kernel sources"
            return p, f"kernel {'.'.join(map(str, version))} is in profile {p.name}{checked}"
    return None, (
        f"kernel {'.'.join(map(str, version))} predates the oldest built-in profile "
        f"({PROFILES[0].name})"
    )


def parse_release(release: str) -> tuple[int, int, int] | None:
    """'6.18.44-fc-v657' -> (6, 18, 44); None when it does not start with a version."""
    nums: list[int] = []
    for part in release.split("-", 1)[0].split(".")[:3]:
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        nums.append(int(digits.group()))
        if digits.end() != len(part):  # "117+deb12": the rest is a suffix
            break
    if len(nums) < 2:
        return None
    while len(nums) < 3:
        nums.append(0)
    return (nums[0], nums[1], nums[2])


def analyze(
    image: bytes | str | Path,
    *,
    kernel_release: str | None = None,
    mappings: dict[str, tuple[int, int]] | None = None,
    elf: ELFFile | None = None,
) -> VdsoLayout:
    """The layout of a real vDSO image, from its symbols and DWARF, a dump's mappings, or a
    built-in profile. `kernel_release` (e.g. from a dump) stands in for a missing version note;
    `mappings` ({"[vvar]": (offset, size), ...} relative to the image base) come from a dump.
    `elf` is the image already parsed by the caller.
    Raises VdsoLayoutError saying what to supply when nothing fits."""
    data, name = _open(image)
    facts = elf_facts(data, name, elf=elf)
    version = facts.kernel_version
    if version is None and kernel_release:
        version = parse_release(kernel_release)
    profile, why = select_profile(version)
    syms = facts.abs_symbols
    pages = {PAGE_SYMBOLS[s]: v for s, v in syms.items() if s in PAGE_SYMBOLS}
    data_offs: dict[str, int] = {}
    for key, names in DATA_SYMBOLS.items():
        for n in names:
            if n in syms:
                data_offs[key] = syms[n]
                break
    clock, stride, extra = _clock_from_dwarf(facts.structs)
    if "vdso_u_time_data" in syms and data_offs.get("vdso_data") == syms["vdso_u_time_data"]:
        data_offs["vdso_data"] += extra.get("clock_data_offset", 0)
    pvti = facts.structs.get("pvclock_vcpu_time_info", PVTI_STRUCT)
    modes = dict(facts.enums.get("vdso_clock_mode", DEFAULT_CLOCK_MODES))

    if "vvar" in pages and ("pvclock" in pages or "hvclock" in pages):
        # The image says where its pages are.
        if "vdso_data" not in data_offs:
            data_offs["vdso_data"] = pages["vvar"] + extra.get("clock_data_offset", 0)
        if clock is None:
            if profile is None:
                raise VdsoLayoutError(
                    f"{name}: has page symbols but no DWARF for struct vdso_data and {why}; "
                    f"{_NEXT_STEP}"
                )
            clock, stride = profile.clock, profile.clock_stride
            src_reason = f"pages from the image's symbols; vdso_data shape from {why}"
            source = "profile"
        else:
            src_reason = "pages from the image's symbols, structures from its DWARF"
            source = "dwarf"
        if profile is not None and all(profile.pages.get(k, v) == v for k, v in pages.items()):
            # 6.15+ linker scripts name no timens page: take the agreeing profile's.
            for k, v in profile.pages.items():
                pages.setdefault(k, v)
        maps = mappings or _mappings_from_pages(pages, syms, profile)
        return VdsoLayout(
            arch=facts.arch,
            pages=pages,
            data=data_offs,
            entry=facts.entry,
            vdso_data=clock,
            clock_stride=stride,
            pvti=pvti,
            clock_modes=modes,
            mappings=maps,
            source=source,
            profile=profile.name if profile else None,
            reason=src_reason + f" ({why})",
            kernel_version=version,
            symbols=syms,
            structs=facts.structs,
            code_data_pages=facts.code_data_pages,
        )

    if profile is None:
        raise VdsoLayoutError(f"{name}: stripped vDSO with no page symbols and {why}: {_NEXT_STEP}")
    layout = layout_from_profile(profile, facts, version, why)
    if clock is not None:  # DWARF without symbols: trust the compiled shape
        layout.vdso_data, layout.clock_stride = clock, stride
        layout.reason += "; vdso_data shape from DWARF"
    if mappings:
        _check_mappings(layout, mappings, name)
        layout.mappings = dict(mappings)
        layout.source = "dump"
        layout.reason = "pages from the dump's mappings, checked against " + layout.reason
    return layout


def _clock_from_dwarf(
    structs: dict[str, StructLayout],
) -> tuple[StructLayout | None, int, dict[str, int]]:
    """(clock record layout, CS stride, extras) from DWARF, if the image has them."""
    if "vdso_clock" in structs:
        clock = structs["vdso_clock"]
        extra = {}
        td = structs.get("vdso_time_data")
        if td is not None and "clock_data" in td.fields:
            extra["clock_data_offset"] = td.fields["clock_data"].offset
            return clock, td.fields["clock_data"].stride or clock.size, extra
        return clock, clock.size, extra
    for name in ("vdso_time_data", "vdso_data"):
        s = structs.get(name)
        if s is not None and "seq" in s.fields:
            return s, s.size, {}
    return None, 0, {}


def _mappings_from_pages(
    pages: dict[str, int], syms: dict[str, int], profile: LayoutProfile | None
) -> dict[str, tuple[int, int]]:
    if profile is not None:
        return dict(profile.mappings)
    lo = min(pages.values())
    if "vclock" in pages or "vdso_u_data" in syms:
        vc = pages.get("vclock", min(pages.get("pvclock", 0), pages.get("hvclock", 0)))
        return {"[vvar]": (lo, vc - lo), "[vvar_vclock]": (vc, -vc)}
    return {"[vvar]": (lo, -lo)}


def layout_from_profile(
    profile: LayoutProfile, facts: ElfFacts, version: tuple[int, int, int] | None, why: str
) -> VdsoLayout:
    """A layout from a built-in profile, cross-checked against the code's data references."""
    data = {"vdso_data": profile.vdso_data_offset}
    if profile.rng_data_offset is not None:
        data["rng_data"] = profile.rng_data_offset
    reason = why
    if facts.code_data_pages:
        vd_page = profile.vdso_data_offset & ~(PAGE_SIZE - 1)
        if vd_page not in facts.code_data_pages:
            raise VdsoLayoutError(
                f"profile {profile.name} puts vdso_data at {profile.vdso_data_offset:#x} but "
                f"the code addresses pages {[hex(p) for p in facts.code_data_pages]}: the "
                f"version note is misleading or the profile is wrong; {_NEXT_STEP}"
            )
        reason += "; the code's RIP-relative data references agree"
    return VdsoLayout(
        arch=facts.arch,
        pages=dict(profile.pages),
        data=data,
        entry=facts.entry,
        vdso_data=profile.clock,
        clock_stride=profile.clock_stride,
        pvti=PVTI_STRUCT,
        clock_modes=dict(DEFAULT_CLOCK_MODES),
        mappings=dict(profile.mappings),
        source="profile",
        profile=profile.name,
        reason=reason,
        kernel_version=version,
        symbols={},
        structs=facts.structs,
        code_data_pages=facts.code_data_pages,
    )


def _check_mappings(layout: VdsoLayout, mappings: dict[str, tuple[int, int]], name: str) -> None:
    for mname, (off, size) in layout.mappings.items():
        got = mappings.get(mname)
        if got is None or got[0] != off or got[1] != size:
            raise VdsoLayoutError(
                f"{name}: the dump's {mname} mapping {got} does not match profile "
                f"{layout.profile} ({off:#x}, {size:#x}); pass the unstripped vdso64.so of "
                "this kernel so the layout comes from its symbols"
            )


def explain(layout: VdsoLayout) -> str:
    """One paragraph saying which source and profile were used and why."""
    prof = f", profile {layout.profile}" if layout.profile else ""
    return f"{layout.arch} vDSO layout from {layout.source}{prof}: {layout.reason}"


def decode_struct(s: StructLayout, raw: bytes, signed: tuple[str, ...] = ()) -> dict[str, int]:
    """Scalar members of `s` read little-endian from `raw` (arrays are skipped)."""
    out = {}
    for k, f in s.fields.items():
        if f.count != 1 or f.size not in (1, 2, 4, 8) or f.offset + f.size > len(raw):
            continue
        out[k] = int.from_bytes(raw[f.offset : f.offset + f.size], "little", signed=k in signed)
    return out
