"""Patch a vDSO image for a chosen CPU, as the kernel does at boot.

The kernel patches every vDSO at boot (`apply_alternatives`): `rdtsc_ordered()` is
`ALTERNATIVE_2("rdtsc", "lfence; rdtsc", X86_FEATURE_LFENCE_RDTSC, "rdtscp", X86_FEATURE_RDTSCP)`,
`getcpu` may become `rdpid`, and the i386 `__kernel_vsyscall` gets sysenter/syscall. The
records come from `emu.image.altinstr`, the CPU's features from `emu.image.cpu`. Records are
applied in order, each over the current bytes, so for ALTERNATIVE_2 the later record wins when
its feature is present. Like the kernel's `optimize_nops`, a run of single-byte NOPs in a site
(patched or not) is rewritten as the kernel's P6 multi-byte NOPs (`66 90`, `0f 1f 00`, ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile

# Parsing, NOPs and CPU choice live in sibling modules; their names stay importable from here.
from emu.image.altinstr import ALT_FLAG_DIRECT_CALL as ALT_FLAG_DIRECT_CALL
from emu.image.altinstr import ALT_FLAG_NOT as ALT_FLAG_NOT
from emu.image.altinstr import FEATURE_BITS as FEATURE_BITS
from emu.image.altinstr import FORMATS as FORMATS
from emu.image.altinstr import KNOWN_REPLACEMENTS as KNOWN_REPLACEMENTS
from emu.image.altinstr import AltError as AltError
from emu.image.altinstr import AltFormat as AltFormat
from emu.image.altinstr import AltRecord as AltRecord
from emu.image.altinstr import AltTable as AltTable
from emu.image.altinstr import feature_name as feature_name
from emu.image.altinstr import file_offset, load_segments, parse_elf
from emu.image.altinstr import parse_altinstructions as parse_altinstructions
from emu.image.cpu import CPU_CHOICES as CPU_CHOICES
from emu.image.cpu import CPU_FEATURES as CPU_FEATURES
from emu.image.cpu import cpu_for
from emu.image.cpu import default_cpu as default_cpu
from emu.image.cpu import features_for as features_for
from emu.image.nops import P6_NOPS as P6_NOPS
from emu.image.nops import is_nop_run
from emu.image.nops import nops as nops
from emu.image.nops import optimize_nops as _optimize_nops

#: Sites whose bytes decide how the TSC is read: never silently left as found.
TSC_FEATURES = frozenset(
    {"X86_FEATURE_RDTSCP", "X86_FEATURE_LFENCE_RDTSC", "X86_FEATURE_MFENCE_RDTSC"}
)


@dataclass(frozen=True)
class Patch:
    """One site's change: image-relative address, bytes before and after, winning feature."""

    address: int
    old: bytes
    new: bytes
    feature: str
    records: tuple[int, ...] = ()


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
    elf = elf or parse_elf(data)
    table = parse_altinstructions(data, kernel_version, elf=elf)
    if table is None:
        return AltResult(data, [], cpu, feats, None, ["image has no .altinstructions"])
    segs = load_segments(elf)
    bits = 64 if elf.elfclass == 64 else 32
    buf = bytearray(data)
    patches: list[Patch] = []
    warnings: list[str] = []
    for site, recs in _by_site(table.records).items():
        length = max(r.site_len for r in recs)
        off = file_offset(segs, site, length)
        old = bytes(buf[off : off + length])
        patch = _patch_site(site, old, recs, feats, bits, optimize_nops, warnings)
        if patch is not None:
            buf[off : off + length] = patch.new
            patches.append(patch)
    return AltResult(bytes(buf), patches, cpu, feats, table.format, warnings)


def _by_site(records: list[AltRecord]) -> dict[int, list[AltRecord]]:
    """The records grouped by site, sites and records in table order."""
    sites: dict[int, list[AltRecord]] = {}
    for rec in records:
        sites.setdefault(rec.site, []).append(rec)
    return sites


def _patch_site(
    site: int,
    old: bytes,
    recs: list[AltRecord],
    feats: frozenset[str],
    bits: int,
    optimize: bool,
    warnings: list[str],
) -> Patch | None:
    """One site's patch for a CPU with `feats` (None when its bytes stay as they are).

    A site no record applies to but that already holds a replacement was patched by the
    running kernel: its bytes are kept (with a warning), unless they decide how the TSC is
    read, where the lost original makes the requested CPU impossible to model."""
    cur, applied, winner = _apply_records(old, recs, feats)
    if not applied:
        holder = _patched_by(old, recs, bits)
        if holder is not None:
            if holder.feature_name in TSC_FEATURES:
                raise AltError(
                    f"site {site:#x} was already patched by the running kernel to "
                    f"{holder.feature_name} and the original instruction is lost; use "
                    f"--cpu {cpu_for(holder.feature_name)} with this dump, or an "
                    "unstripped vdso64.so to choose freely"
                )
            warnings.append(f"site {site:#x}: kept the kernel's {holder.feature_name} bytes")
            return None
    if optimize:
        cur = _optimize_nops(cur, site, bits)
    if cur == old:
        return None
    return Patch(site, old, cur, winner or "optimize_nops", tuple(applied))


def _apply_records(
    old: bytes, recs: list[AltRecord], feats: frozenset[str]
) -> tuple[bytes, list[int], str]:
    """A site's bytes after its records whose condition holds, applied in order over the
    current bytes (so ALTERNATIVE_2's later record wins); the applied record indices; and
    the winning feature ("!" in front when the record patches on its absence)."""
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
    return bytes(cur), applied, winner


def _patched_by(site_bytes: bytes, recs: list[AltRecord], bits: int) -> AltRecord | None:
    """The record whose replacement the site already holds (last match wins), if any."""
    found = None
    for r in recs:
        if not r.repl_len or site_bytes[: r.repl_len] != r.replacement:
            continue
        tail = site_bytes[r.repl_len : r.site_len]
        if all(b == 0x90 for b in tail) or is_nop_run(tail, bits):
            found = r
    return found


def site_states(image: bytes | str | Path) -> list[tuple[int, str]]:
    """For each site: which record's replacement it holds now, or "original"."""
    data = Path(image).read_bytes() if isinstance(image, (str, Path)) else bytes(image)
    table = parse_altinstructions(data)
    if table is None:
        return []
    elf = parse_elf(data)
    segs = load_segments(elf)
    bits = 64 if elf.elfclass == 64 else 32
    out = []
    for site, recs in _by_site(table.records).items():
        length = max(r.site_len for r in recs)
        off = file_offset(segs, site, length)
        holder = _patched_by(data[off : off + length], recs, bits)
        out.append((site, holder.feature_name if holder else "original"))
    return out
