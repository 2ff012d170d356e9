"""Parse a vDSO's `.altinstructions` and patch the image for a chosen CPU, as the kernel does.

The kernel patches every vDSO at boot (`apply_alternatives`): `rdtsc_ordered()` is
`ALTERNATIVE_2("rdtsc", "lfence; rdtsc", X86_FEATURE_LFENCE_RDTSC, "rdtscp", X86_FEATURE_RDTSCP)`,
`getcpu` may become `rdpid`, and the i386 `__kernel_vsyscall` gets sysenter/syscall. Each
`struct alt_instr` record names a site (`instr_offset`, relative to the field), a replacement
(`repl_offset`, relative to its field), a feature bit and two lengths. Three record formats:

* 13 bytes, kernels <= 5.12: s32 instr, s32 repl, u16 cpuid, u8 instrlen, u8 replacementlen,
  u8 padlen;
* 12 bytes, 5.13-6.2: padlen dropped; bit 15 of cpuid = ALT_NOT (patch if the feature is absent);
* 14 bytes, 6.3+: `u32 ft_flags` (feature in the low 16 bits, ALT_FLAG_NOT = bit 16,
  ALT_FLAG_DIRECT_CALL = bit 17) then instrlen, replacementlen.

`instrlen` always includes the build-time NOP padding. Records are applied in order, each
over the current bytes, so for ALTERNATIVE_2 the later record wins when its feature is
present. Like the kernel's `optimize_nops`, a run of single-byte NOPs in a site (patched or
not) is rewritten as the kernel's P6 multi-byte NOPs (`66 90`, `0f 1f 00`, ...).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from emu.errors import ImageError

#: `--cpu` choices -> the feature names such a CPU has. RDTSCP CPUs also have
#: LFENCE_RDTSC; the order of ALTERNATIVE_2 makes rdtscp win, as on real hardware.
CPU_FEATURES: dict[str, frozenset[str]] = {
    "plain": frozenset(),
    "lfence": frozenset({"X86_FEATURE_LFENCE_RDTSC"}),
    "rdtscp": frozenset({"X86_FEATURE_LFENCE_RDTSC", "X86_FEATURE_RDTSCP"}),
}
CPU_CHOICES = tuple(CPU_FEATURES)

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
#: Sites whose bytes decide how the TSC is read: never silently left as found.
TSC_FEATURES = frozenset(
    {"X86_FEATURE_RDTSCP", "X86_FEATURE_LFENCE_RDTSC", "X86_FEATURE_MFENCE_RDTSC"}
)

#: The kernel's x86_nops[] (P6 NOPs; every 64-bit kernel since 5.13, and the common choice
#: before), indexed by length.
P6_NOPS: tuple[bytes, ...] = (
    b"",
    b"\x90",
    b"\x66\x90",
    b"\x0f\x1f\x00",
    b"\x0f\x1f\x40\x00",
    b"\x0f\x1f\x44\x00\x00",
    b"\x66\x0f\x1f\x44\x00\x00",
    b"\x0f\x1f\x80\x00\x00\x00\x00",
    b"\x0f\x1f\x84\x00\x00\x00\x00\x00",
)
ALT_FLAG_NOT = 1
ALT_FLAG_DIRECT_CALL = 2


class AltError(ImageError):
    """`.altinstructions` cannot be parsed or applied; the message says what to do."""


@dataclass(frozen=True)
class AltFormat:
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


@dataclass(frozen=True)
class Patch:
    """One site's change: image-relative address, bytes before and after, winning feature."""

    address: int
    old: bytes
    new: bytes
    feature: str
    records: tuple[int, ...] = ()


@dataclass
class AltTable:
    format: AltFormat
    records: list[AltRecord]
    kernel_version: tuple[int, int, int] | None


@dataclass
class AltResult:
    """The patched image bytes, the per-site patches, and notes worth showing the user."""

    data: bytes
    patches: list[Patch]
    cpu: str
    features: frozenset[str]
    format: AltFormat | None
    warnings: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[object]:  # `data, patches = apply_alternatives(...)`
        yield self.data
        yield self.patches


# --------------------------------------------------------------------------- parsing


def _elf(data: bytes) -> ELFFile:
    try:
        return ELFFile(io.BytesIO(data))
    except (ELFError, ValueError, struct.error) as e:
        raise AltError(f"not a usable ELF image ({e})") from None


def _vaddr_to_offset(elf: ELFFile) -> list[tuple[int, int, int]]:
    return [
        (s["p_vaddr"], s["p_offset"], s["p_filesz"])
        for s in elf.iter_segments()
        if s["p_type"] == "PT_LOAD"
    ]


def _file_offset(segs: list[tuple[int, int, int]], vaddr: int, size: int) -> int:
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
    elf = elf or _elf(data)
    alt = elf.get_section_by_name(".altinstructions")
    if alt is None or alt["sh_size"] == 0:
        return None
    if kernel_version is None and use_note:
        from emu.image.elffacts import elf_facts

        kernel_version = elf_facts(data, elf=elf).kernel_version
    repl = elf.get_section_by_name(".altinstr_replacement")
    text = elf.get_section_by_name(".text")
    raw = alt.data()
    base = alt["sh_addr"]
    repl_lo = repl["sh_addr"] if repl is not None else 0
    repl_hi = repl_lo + (repl["sh_size"] if repl is not None else 0)
    text_lo, text_hi = (text["sh_addr"], text["sh_addr"] + text["sh_size"]) if text else (0, 0)
    segs = _vaddr_to_offset(elf)
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
        rbytes = data[_file_offset(segs, repl, rlen) :][:rlen] if rlen else b""
        name = KNOWN_REPLACEMENTS.get(rbytes) or feature_name(feature, version)
        out.append(AltRecord(n, site, ilen, repl, rlen, feature, flags, padlen, rbytes, name))
    return out


# --------------------------------------------------------------------------- applying


def features_for(cpu: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The feature names a `--cpu` choice implies, plus `extra` (e.g. X86_FEATURE_RDPID)."""
    if cpu not in CPU_FEATURES:
        raise AltError(f"unknown --cpu {cpu!r}: choose one of {', '.join(CPU_CHOICES)}")
    return CPU_FEATURES[cpu] | frozenset(extra)


def apply_alternatives(
    image: bytes | str | Path,
    cpu: str = "plain",
    *,
    extra_features: Iterable[str] = (),
    optimize_nops: bool = True,
    kernel_version: tuple[int, int, int] | None = None,
    elf: ELFFile | None = None,
) -> AltResult:
    """Patch `image` for a CPU that has the features `cpu` implies (plus `extra_features`).

    A site the running kernel already patched (a `dump-vdso` image) keeps its bytes only when
    no record applies for this CPU and the site does not decide how the TSC is read;
    otherwise the original instruction is lost and AltError says which `--cpu` works.
    `elf` is `image` already parsed (the loader's), to avoid parsing it again."""
    data = Path(image).read_bytes() if isinstance(image, (str, Path)) else bytes(image)
    feats = features_for(cpu, extra_features)
    elf = elf or _elf(data)
    table = parse_altinstructions(data, kernel_version, elf=elf)
    if table is None:
        return AltResult(data, [], cpu, feats, None, ["image has no .altinstructions"])
    segs = _vaddr_to_offset(elf)
    bits = 64 if elf.elfclass == 64 else 32
    buf = bytearray(data)
    sites: dict[int, list[AltRecord]] = {}
    for rec in table.records:
        sites.setdefault(rec.site, []).append(rec)
    patches: list[Patch] = []
    warnings: list[str] = []
    for site, recs in sites.items():
        length = max(r.site_len for r in recs)
        off = _file_offset(segs, site, length)
        old = bytes(buf[off : off + length])
        cur = bytearray(old)
        applied: list[int] = []
        winner = ""
        for r in recs:
            wants = (r.feature_name in feats) != r.negated
            if not wants:
                continue
            new = bytearray(r.replacement) + b"\x90" * (r.site_len - r.repl_len)
            cur[: r.site_len] = new
            applied.append(r.index)
            winner = ("!" if r.negated else "") + r.feature_name
        if not applied:
            holder = _patched_by(old, recs, bits)
            if holder is not None:
                if holder.feature_name in TSC_FEATURES:
                    raise AltError(
                        f"site {site:#x} was already patched by the running kernel to "
                        f"{holder.feature_name} and the original instruction is lost; use "
                        f"--cpu {_cpu_for(holder.feature_name)} with this dump, or an "
                        "unstripped vdso64.so to choose freely"
                    )
                warnings.append(f"site {site:#x}: kept the kernel's {holder.feature_name} bytes")
                continue
        if optimize_nops:
            cur = bytearray(_optimize_nops(bytes(cur), site, bits))
        if bytes(cur) != old:
            buf[off : off + length] = cur
            patches.append(Patch(site, old, bytes(cur), winner or "optimize_nops", tuple(applied)))
    return AltResult(bytes(buf), patches, cpu, feats, table.format, warnings)


def _cpu_for(feature: str) -> str:
    return "rdtscp" if feature == "X86_FEATURE_RDTSCP" else "lfence"


def _patched_by(site_bytes: bytes, recs: list[AltRecord], bits: int) -> AltRecord | None:
    """The record whose replacement the site already holds (last match wins), if any."""
    found = None
    for r in recs:
        if not r.repl_len or site_bytes[: r.repl_len] != r.replacement:
            continue
        tail = site_bytes[r.repl_len : r.site_len]
        if all(b == 0x90 for b in tail) or _is_nop_run(tail, bits):
            found = r
    return found


def _is_nop_run(b: bytes, bits: int) -> bool:
    pos = 0
    while pos < len(b):
        for n in range(min(8, len(b) - pos), 0, -1):
            if b[pos : pos + n] == P6_NOPS[n]:
                pos += n
                break
        else:
            return False
    return True


def nops(length: int) -> bytes:
    """`length` bytes of the kernel's NOPs: longest-first P6 NOPs (8-byte chunks beyond 8)."""
    out = b""
    while length > 0:
        n = min(length, 8)
        out += P6_NOPS[n]
        length -= n
    return out


def _optimize_nops(code: bytes, address: int, bits: int) -> bytes:
    """Collapse runs of single-byte 0x90 instructions into multi-byte NOPs."""
    from capstone import CS_ARCH_X86, CS_MODE_32, CS_MODE_64, Cs

    md = Cs(CS_ARCH_X86, CS_MODE_64 if bits == 64 else CS_MODE_32)
    out = bytearray()
    run = 0
    pos = 0
    for insn in md.disasm(code, address):
        if bytes(insn.bytes) == b"\x90":
            run += 1
        else:
            out += nops(run)
            run = 0
            out += insn.bytes
        pos += insn.size
    out += nops(run)
    out += code[pos:]  # undecodable tail: leave as is
    return bytes(out)


def site_states(image: bytes | str | Path) -> list[tuple[int, str]]:
    """For each site: which record's replacement it holds now, or "original"."""
    data = Path(image).read_bytes() if isinstance(image, (str, Path)) else bytes(image)
    table = parse_altinstructions(data)
    if table is None:
        return []
    elf = _elf(data)
    segs = _vaddr_to_offset(elf)
    bits = 64 if elf.elfclass == 64 else 32
    out = []
    seen: dict[int, list[AltRecord]] = {}
    for r in table.records:
        seen.setdefault(r.site, []).append(r)
    for site, recs in seen.items():
        length = max(r.site_len for r in recs)
        off = _file_offset(segs, site, length)
        holder = _patched_by(data[off : off + length], recs, bits)
        out.append((site, holder.feature_name if holder else "original"))
    return out


def default_cpu(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The `--cpu` this machine's kernel would pick: rdtscp if the CPU has it; lfence when
    `lfence_rdtsc` is listed or (approximation) the CPU has SSE2, as Linux sets
    X86_FEATURE_LFENCE_RDTSC on Intel with SSE2 and on AMD with a serializing LFENCE;
    otherwise plain."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return "plain"
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if "rdtscp" in flags:
        return "rdtscp"
    if "lfence_rdtsc" in flags or "sse2" in flags:
        return "lfence"
    return "plain"
