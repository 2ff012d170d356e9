"""ELF reading: an x86 ELF's arch, loadable segments, symbols and code ranges; the Image record.

Both kinds of image — project blobs and real kernel vDSOs — are read here; `emu.image.loader` and
`emu.image.realvdso` decide what the pieces mean. A load parses the ELF once (`open_elf`) and
hands the parsed file to everyone who needs it (layout analysis, alternatives).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from emu.errors import ImageError
from host_model.abi import PAGE_SIZE

if TYPE_CHECKING:
    from emu.image.alternatives import Patch
    from emu.image.layout import VdsoLayout
    from host_model.clock import Seed
    from host_model.vdso_data import VdsoDataSpec

PAGE = PAGE_SIZE
#: How an image's entry is called (see `emu.image.abi`).
CallAbi = Literal["blob", "clock_gettime"]
ARCHES = {"EM_X86_64": "x86_64", "EM_386": "i386"}


@dataclass(frozen=True)
class Segment:
    vaddr: int
    memsz: int
    data: bytes
    flags: int


@dataclass(frozen=True)
class Image:
    """A loaded reader: its bytes, where things are, and how to call it."""

    name: str
    arch: str
    sha256: str
    segments: tuple[Segment, ...]
    entry: int
    entry_name: str
    #: Page name ("pvclock", "hvclock", "vvar", ...) -> offset from the load base.
    pages: dict[str, int]
    symbols: dict[str, int]
    #: Executable address ranges (section `.text`, or executable segments).
    text: tuple[tuple[int, int], ...]
    path: Path | None = None
    #: How the entry is called: "blob" (`uint64_t vdsofuzz_read(void)`) or "clock_gettime"
    #: (a real vDSO's `__vdso_clock_gettime(clockid, struct timespec *)`).
    call_abi: CallAbi = "blob"
    #: Real vDSOs: where the clock pages and `vdso_data` are (None for project readers).
    layout: VdsoLayout | None = None
    #: Real vDSOs: the clock records the host fills so the pvclock path is taken.
    vdso_data: VdsoDataSpec | None = None
    #: Real vDSOs: the CPU the alternatives were applied for, the patched sites, and what
    #: could not be applied as asked.
    cpu: str | None = None
    alternatives: tuple[Patch, ...] = ()
    alt_warnings: tuple[str, ...] = ()
    #: A dump's real vCPU 0 pvti as the model clock's start (None: the default clock).
    clock_seed: Seed | None = None
    #: Bundled images: their `vdso_blobs/manifest.json` entry (None for a path).
    manifest: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def bits(self) -> int:
        return 64 if self.arch == "x86_64" else 32

    @property
    def span(self) -> tuple[int, int]:
        """Lowest and highest (exclusive) image-relative address of the loaded segments."""
        return span(self.segments)

    def symbolize(self, addr: int) -> str:
        """`func+0x12` for an image-relative address."""
        return symbolize(self.symbols, addr)

    def read(self, addr: int, size: int) -> bytes:
        for s in self.segments:
            if s.vaddr <= addr and addr + size <= s.vaddr + len(s.data):
                return s.data[addr - s.vaddr : addr - s.vaddr + size]
        raise ImageError(f"{self.name}: address {addr:#x} is not in the image")


def span(segments: tuple[Segment, ...] | list[Segment]) -> tuple[int, int]:
    """Lowest and highest (exclusive) address the segments load to."""
    return min(s.vaddr for s in segments), max(s.vaddr + s.memsz for s in segments)


def symbolize(symbols: dict[str, int], addr: int) -> str:
    """`func+0x12`: `addr` as an offset from the nearest symbol at or below it."""
    best: tuple[str, int] | None = None
    for name, value in symbols.items():
        if 0 <= value <= addr and (best is None or value > best[1]):
            best = (name, value)
    if best is None:
        return f"{addr:#x}"
    off = addr - best[1]
    return best[0] if off == 0 else f"{best[0]}+{off:#x}"


@dataclass(frozen=True)
class ElfPieces:
    """What every image needs from its ELF, before anyone decides what kind it is."""

    arch: str
    segments: tuple[Segment, ...]
    #: Symbol values as signed image-relative addresses (pages sit below the image).
    symbols: dict[str, int]
    text: tuple[tuple[int, int], ...]


def open_elf(data: bytes, name: str) -> ELFFile:
    """Parse the ELF header of `data` (pyelftools reads the rest lazily from it)."""
    if data[:4] != b"\x7fELF":
        raise ImageError(f"{name}: not an ELF file (it starts with {data[:4]!r})")
    try:
        return ELFFile(io.BytesIO(data))
    except Exception as e:  # pyelftools raises struct/construct errors on truncation
        raise ImageError(f"{name}: truncated or corrupt ELF ({type(e).__name__}: {e})") from None


def read_elf(data: bytes, name: str, elf: ELFFile | None = None) -> ElfPieces:
    """The pieces of ELF bytes; every failure is an ImageError naming the cause.

    `elf` is `data`'s parsed header, or that of an image `data` differs from only inside its
    loadable bytes (alternatives patch code in place): segments are cut from `data`."""
    if elf is None:
        elf = open_elf(data, name)
    try:
        machine = elf.header["e_machine"]
        if machine not in ARCHES:
            raise ImageError(
                f"{name}: ELF for {machine.removeprefix('EM_')}; "
                "vdsofuzz runs x86-64 and i386 readers"
            )
        arch = ARCHES[machine]
        segments = tuple(_segments(elf, data, name))
        symbols = _symbols(elf)
        text = _text_ranges(elf, segments)
    except (ELFError, ValueError, KeyError, IndexError, OSError) as e:
        if isinstance(e, ImageError):
            raise
        raise ImageError(f"{name}: truncated or corrupt ELF ({e})") from None
    except Exception as e:  # pyelftools raises struct/construct errors on truncation
        raise ImageError(f"{name}: truncated or corrupt ELF ({type(e).__name__}: {e})") from None
    if not segments:
        raise ImageError(f"{name}: no loadable segments")
    return ElfPieces(arch, segments, {k: _signed(v, arch) for k, v in symbols.items()}, text)


def _signed(value: int, arch: str) -> int:
    bits = 64 if arch == "x86_64" else 32
    return value - (1 << bits) if value >> (bits - 1) else value


def _segments(elf: ELFFile, data: bytes, name: str) -> list[Segment]:
    out = []
    for seg in elf.iter_segments():
        if seg["p_type"] != "PT_LOAD":
            continue
        off, filesz = seg["p_offset"], seg["p_filesz"]
        if off + filesz > len(data):
            raise ImageError(f"{name}: truncated ELF (a segment ends past the file's end)")
        out.append(
            Segment(seg["p_vaddr"], seg["p_memsz"], data[off : off + filesz], seg["p_flags"])
        )
    return out


def _symbols(elf: ELFFile) -> dict[str, int]:
    out: dict[str, int] = {}
    for sec in elf.iter_sections():
        if isinstance(sec, SymbolTableSection):
            for sym in sec.iter_symbols():
                if sym.name and sym["st_info"]["type"] != "STT_FILE":
                    out.setdefault(sym.name, sym["st_value"])
    return out


def _text_ranges(elf: ELFFile, segments: tuple[Segment, ...]) -> tuple[tuple[int, int], ...]:
    sec = elf.get_section_by_name(".text")
    if sec is not None and sec["sh_size"]:
        return ((sec["sh_addr"], sec["sh_addr"] + sec["sh_size"]),)
    return tuple((s.vaddr, s.vaddr + len(s.data)) for s in segments if s.flags & 1)
