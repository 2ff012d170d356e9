"""What the layout search needs from a vDSO ELF, read once: architecture, entry and absolute
symbols, the kernel version note, DWARF structures and the pages the code addresses.

Everything here is a pure function of the bytes it is given (no clock, no host state).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from emu.errors import ImageError
from emu.image.structs import StructLayout, dwarf_types
from host_model.abi import PAGE_SIZE

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

#: The end of every "cannot find the layout" message: what to supply instead.
NEXT_STEP = (
    "pass the unstripped vdso64.so/vdso32.so from the kernel build tree "
    "(arch/x86/entry/vdso/, or usr/lib/debug/lib/modules/<release>/vdso/ of the distribution's "
    "kernel debug package) or a dump directory from `vdsofuzz dump-vdso`"
)


class VdsoLayoutError(ImageError):
    """The layout of a vDSO image cannot be determined; the message says what to supply."""


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


def open_image(image: bytes | str | Path) -> tuple[bytes, str]:
    """The image's bytes and the name messages give it (its path, or "image" for bytes)."""
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
        raise VdsoLayoutError(f"{name}: not an ELF file; {NEXT_STEP}")
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
        structs, enums = dwarf_types(elf) if has_dwarf else ({}, {})
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
