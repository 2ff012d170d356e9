"""Parse a vDSO's `.altinstructions`: the `struct alt_instr` records the kernel patches by.

Each record names a site (`instr_offset`, relative to the field), a replacement
(`repl_offset`, relative to its field), a feature bit and two lengths. Three record formats:

* 13 bytes, kernels <= 5.12: s32 instr, s32 repl, u16 cpuid, u8 instrlen, u8 replacementlen,
  u8 padlen;
* 12 bytes, 5.13-6.2: padlen dropped; bit 15 of cpuid = ALT_NOT (patch if the feature is absent);
* 14 bytes, 6.3+: `u32 ft_flags` (feature in the low 16 bits, ALT_FLAG_NOT = bit 16,
  ALT_FLAG_DIRECT_CALL = bit 17) then instrlen, replacementlen.

`instrlen` always includes the build-time NOP padding.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from emu.errors import ImageError
from emu.image.elffacts import elf_facts

#: X86_FEATURE_* bit numbers (word*32 + bit) from arch/x86/include/asm/cpufeatures.h.
#: (name, bit, first kernel (major, minor) with that number, last or None).
FEATURE_BITS: tuple[tuple[str, int, tuple[int, int], tuple[int, int] | None], ...] = (
    ("X86_FEATURE_RDTSCP", 1 * 32 + 27, (2, 6), None),
    ("X86_FEATURE_SYSCALL32", 3 * 32 + 14, (2, 6), None),
    ("X86_FEATURE_SYSENTER32", 3 * 32 + 15, (2, 6), None),
    ("X86_FEATURE_MFENCE_RDTSC", 3 * 32 + 17, (2, 6), (5, 3)),
    ("X86_FEATURE_LFENCE_RDTSC", 3 * 32 + 18, (2, 6), (6, 2)),
    ("X86_FEATURE_ALWAYS", 3 * 32 + 21, (3, 10), None),
    ("X86_FEATURE_RDPID", 16 * 32 + 22, (4, 14), None),
    # 6.3 "x86/cpu, kvm: Move X86_FEATURE_LFENCE_RDTSC to its native leaf" (AMD 0x80000021).
    ("X86_FEATURE_LFENCE_RDTSC", 20 * 32 + 2, (6, 3), None),
)

#: Replacement bytes that identify their feature whatever the numbering.
KNOWN_REPLACEMENTS: dict[bytes, str] = {
    b"\x0f\x01\xf9": "X86_FEATURE_RDTSCP",  # rdtscp
    b"\x0f\xae\xe8\x0f\x31": "X86_FEATURE_LFENCE_RDTSC",  # lfence; rdtsc
    b"\x0f\xae\xe8": "X86_FEATURE_LFENCE_RDTSC",  # lfence (4.x barrier_nospec form)
    b"\x0f\xae\xf0": "X86_FEATURE_MFENCE_RDTSC",  # mfence
    b"\xf3\x0f\xc7\xf8": "X86_FEATURE_RDPID",  # rdpid %eax
}
ALT_FLAG_NOT = 1
ALT_FLAG_DIRECT_CALL = 2


class AltError(ImageError):
    """`.altinstructions` cannot be parsed or applied; the message says what to do."""


@dataclass(frozen=True)
class AltFormat:
    """One `struct alt_instr` record format: its name, size and the kernels that use it."""

    name: str
    size: int
    kernels: str


FORMATS: tuple[AltFormat, ...] = (
    AltFormat("ft_flags", 14, "6.3+"),
    AltFormat("cpuid16", 12, "5.13-6.2"),
    AltFormat("padlen", 13, "<= 5.12"),
)


@dataclass(frozen=True)
class AltRecord:
    """One `struct alt_instr`, with offsets resolved to image-relative addresses."""

    index: int
    site: int
    site_len: int
    repl: int
    repl_len: int
    feature: int
    flags: int
    padlen: int | None
    replacement: bytes
    feature_name: str

    @property
    def negated(self) -> bool:
        return bool(self.flags & ALT_FLAG_NOT)


@dataclass
class AltTable:
    """An image's records, the format they were read in and the kernel version used."""

    format: AltFormat
    records: list[AltRecord]
    kernel_version: tuple[int, int, int] | None


def parse_elf(data: bytes) -> ELFFile:
    """The image parsed, or AltError when it is not a usable ELF."""
    try:
        return ELFFile(io.BytesIO(data))
    except (ELFError, ValueError, struct.error) as e:
        raise AltError(f"not a usable ELF image ({e})") from None


def load_segments(elf: ELFFile) -> list[tuple[int, int, int]]:
    """(vaddr, file offset, file size) of each PT_LOAD segment."""
    return [
        (s["p_vaddr"], s["p_offset"], s["p_filesz"])
        for s in elf.iter_segments()
        if s["p_type"] == "PT_LOAD"
    ]


def file_offset(segs: list[tuple[int, int, int]], vaddr: int, size: int) -> int:
    """The file offset of `size` loaded bytes at `vaddr`, or AltError when not loaded."""
    for va, off, sz in segs:
        if va <= vaddr and vaddr + size <= va + sz:
            return off + vaddr - va
    raise AltError(f"address {vaddr:#x}+{size} is outside the image's loaded bytes")


def feature_name(bit: int, version: tuple[int, ...] | None) -> str:
    """X86_FEATURE_* name of `bit` in the given kernel (any kernel when version is None)."""
    mm = (version[0], version[1]) if version else None
    for name, b, first, last in FEATURE_BITS:
        if b != bit:
            continue
        if mm is None or (first <= mm and (last is None or mm <= last)):
            return name
    return f"X86_FEATURE({bit // 32}*32+{bit % 32})"


def parse_altinstructions(
    image: bytes | str | Path,
    kernel_version: tuple[int, int, int] | None = None,
    *,
    use_note: bool = True,
    elf: ELFFile | None = None,
) -> AltTable | None:
    """The image's alternatives (None when it has no `.altinstructions`).

    The record format is the one the kernel version (given, or from the image's note unless
    `use_note` is False) implies, else the first whose size divides the section and whose
    every record is sane (site inside .text, replacement inside .altinstr_replacement,
    replacement no longer than the site, feature < 1024, known flags)."""
    data = Path(image).read_bytes() if isinstance(image, (str, Path)) else bytes(image)
    elf = elf or parse_elf(data)
    alt = elf.get_section_by_name(".altinstructions")
    if alt is None or alt["sh_size"] == 0:
        return None
    if kernel_version is None and use_note:
        kernel_version = elf_facts(data, elf=elf).kernel_version
    repl = elf.get_section_by_name(".altinstr_replacement")
    text = elf.get_section_by_name(".text")
    raw = alt.data()
    base = alt["sh_addr"]
    repl_lo = repl["sh_addr"] if repl is not None else 0
    repl_hi = repl_lo + (repl["sh_size"] if repl is not None else 0)
    text_lo, text_hi = (text["sh_addr"], text["sh_addr"] + text["sh_size"]) if text else (0, 0)
    segs = load_segments(elf)
    problems = []
    for fmt in _format_order(kernel_version):
        if len(raw) % fmt.size:
            problems.append(f"{fmt.size}-byte: section size {len(raw)} is not a multiple")
            continue
        try:
            recs = _decode(
                fmt, raw, base, kernel_version, data, segs, (text_lo, text_hi), (repl_lo, repl_hi)
            )
        except AltError as e:
            problems.append(f"{fmt.size}-byte: {e}")
            continue
        return AltTable(fmt, recs, kernel_version)
    raise AltError(
        "cannot read .altinstructions (" + "; ".join(problems) + "); this kernel's "
        "struct alt_instr is not one of the known formats: report the kernel version"
    )


def _format_order(version: tuple[int, ...] | None) -> list[AltFormat]:
    """Try the format the version note implies first."""
    if version is None:
        return list(FORMATS)
    mm = (version[0], version[1])
    first = FORMATS[0] if mm >= (6, 3) else FORMATS[1] if mm >= (5, 13) else FORMATS[2]
    return [first] + [f for f in FORMATS if f is not first]


def _decode(
    fmt: AltFormat,
    raw: bytes,
    base: int,
    version: tuple[int, ...] | None,
    data: bytes,
    segs: list[tuple[int, int, int]],
    text: tuple[int, int],
    repl_range: tuple[int, int],
) -> list[AltRecord]:
    out = []
    for i in range(0, len(raw), fmt.size):
        instr_off, repl_off = struct.unpack_from("<ii", raw, i)
        padlen = None
        if fmt.size == 14:
            ft, ilen, rlen = struct.unpack_from("<IBB", raw, i + 8)
            feature, flags = ft & 0xFFFF, ft >> 16
        else:
            cpuid, ilen, rlen = struct.unpack_from("<HBB", raw, i + 8)
            feature, flags = cpuid & 0x7FFF, ALT_FLAG_NOT if cpuid & 0x8000 else 0
            if fmt.size == 13:
                padlen = raw[i + 12]
                feature, flags = cpuid, 0
        site = base + i + instr_off
        repl = base + i + 4 + repl_off
        n = i // fmt.size
        if not (text[0] <= site and site + ilen <= text[1]) or ilen == 0:
            raise AltError(f"record {n}: site {site:#x}+{ilen} is outside .text")
        if rlen and not (repl_range[0] <= repl and repl + rlen <= repl_range[1]):
            raise AltError(
                f"record {n}: replacement {repl:#x}+{rlen} is outside .altinstr_replacement"
            )
        if rlen > ilen or feature >= 32 * 32 or flags & ~(ALT_FLAG_NOT | ALT_FLAG_DIRECT_CALL):
            raise AltError(f"record {n}: implausible lengths/feature/flags")
        if padlen is not None and padlen > ilen:
            raise AltError(f"record {n}: padlen {padlen} exceeds instrlen {ilen}")
        rbytes = data[file_offset(segs, repl, rlen) :][:rlen] if rlen else b""
        name = KNOWN_REPLACEMENTS.get(rbytes) or feature_name(feature, version)
        out.append(AltRecord(n, site, ilen, repl, rlen, feature, flags, padlen, rbytes, name))
    return out
