"""Reader images: load an x86 ELF reader (project blob or real vDSO) and find what it needs.

An image is position independent and expects the clock pages at fixed negative offsets
from its load base, given by absolute symbols (`pvclock_page`, `hvclock_page`, ...), as
real vDSOs do. Loading resolves a name through `vdso_blobs/manifest.json` or takes a path.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from emu.errors import ImageError

BLOBS_DIR = Path(__file__).resolve().parent.parent / "vdso_blobs"
MANIFEST = BLOBS_DIR / "manifest.json"
#: The entry point of project-built readers: `uint64_t vdsofuzz_read(void)`.
BLOB_ENTRY = "vdsofuzz_read"
PAGE = 0x1000
#: Page symbols a reader may reference, in the order the kernel lays them out.
PAGE_SYMBOLS = ("vvar_page", "pvclock_page", "hvclock_page", "timens_page")
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
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def bits(self) -> int:
        return 64 if self.arch == "x86_64" else 32

    @property
    def span(self) -> tuple[int, int]:
        """Lowest and highest (exclusive) image-relative address of the loaded segments."""
        lo = min(s.vaddr for s in self.segments)
        hi = max(s.vaddr + s.memsz for s in self.segments)
        return lo, hi

    def symbolize(self, addr: int) -> str:
        """`func+0x12` for an image-relative address."""
        best = None
        for name, value in self.symbols.items():
            if value <= addr and (best is None or value > best[1]) and value >= 0:
                best = (name, value)
        if best is None:
            return f"{addr:#x}"
        off = addr - best[1]
        return best[0] if off == 0 else f"{best[0]}+{off:#x}"

    def read(self, addr: int, size: int) -> bytes:
        for s in self.segments:
            if s.vaddr <= addr and addr + size <= s.vaddr + len(s.data):
                return s.data[addr - s.vaddr : addr - s.vaddr + size]
        raise ImageError(f"{self.name}: address {addr:#x} is not in the image")


def manifest() -> dict[str, Any]:
    """The bundled images' manifest (empty when the blobs are not built)."""
    if not MANIFEST.exists():
        return {"images": [], "aliases": {}}
    return json.loads(MANIFEST.read_text())


def bundled_names() -> list[str]:
    return [e["name"] for e in manifest().get("images", [])]


def resolve(spec: str) -> tuple[Path, str, dict[str, Any]]:
    """A bundled name, an alias or a path -> (path, display name, manifest entry)."""
    man = manifest()
    name = man.get("aliases", {}).get(spec, spec)
    for entry in man.get("images", []):
        if entry["name"] == name:
            return BLOBS_DIR.parent / entry["path"], name, entry
    path = Path(spec)
    if path.exists():
        return path, path.name, {}
    known = ", ".join(sorted(man.get("aliases", {}))) or "none built"
    raise ImageError(
        f"no image {spec!r}: give a path to an ELF reader or a bundled name "
        f"(`vdsofuzz images` lists them; short names: {known})"
    )


def load(spec: str | Path, cpu: str | None = None) -> Image:
    """Load an image by bundled name, alias or path (an ELF reader, a real vDSO, or a
    `vdsofuzz dump-vdso` directory); `cpu` picks the alternatives of a real vDSO.
    Raises ImageError with a one-line reason."""
    if isinstance(spec, Path):
        path, name, entry = spec, spec.name, {}
    else:
        path, name, entry = resolve(spec)
    if path.is_dir():
        if (path / "dump.json").exists():
            from emu.realvdso import load_dump_dir

            return load_dump_dir(path, name=name, cpu=cpu)
        raise ImageError(f"{path}: is a directory, not an ELF image or a dump-vdso directory")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror})") from None
    image = parse(data, name=name, path=path, cpu=cpu)
    if entry:
        image.info.update(entry)
    return image


def parse(
    data: bytes,
    *,
    name: str = "image",
    path: Path | None = None,
    cpu: str | None = None,
    _real: bool = True,
) -> Image:
    """Parse ELF bytes into an Image; every failure is an ImageError naming the cause.
    A real vDSO (no `vdsofuzz_read`, exports `__vdso_clock_gettime`) goes through
    `emu.realvdso` (layout analysis, alternatives for `cpu`)."""
    if data[:4] != b"\x7fELF":
        raise ImageError(f"{name}: not an ELF file (it starts with {data[:4]!r})")
    try:
        elf = ELFFile(io.BytesIO(data))
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
    pages = {}
    for sym in PAGE_SYMBOLS:
        if sym in symbols:
            pages[sym.removesuffix("_page")] = _signed(symbols[sym], arch)
    if BLOB_ENTRY in symbols:
        entry_name = BLOB_ENTRY
    elif not _real:
        entry_name = ""
    elif _is_vdso(symbols):
        from emu.realvdso import load_real

        return load_real(data, name=name, path=path, cpu=cpu)
    else:
        raise ImageError(
            f"{name}: no `{BLOB_ENTRY}` symbol; a project reader exports "
            f"`uint64_t {BLOB_ENTRY}(void)` (real vDSOs need the unstripped vdso64.so)"
        )
    if _real and "pvclock" not in pages and "hvclock" not in pages:
        raise ImageError(
            f"{name}: no `pvclock_page` or `hvclock_page` symbol; link with vdso_blobs/vdso.lds"
        )
    return Image(
        name=name,
        arch=arch,
        sha256=hashlib.sha256(data).hexdigest(),
        segments=segments,
        entry=symbols.get(entry_name, 0),
        entry_name=entry_name,
        pages=pages,
        symbols={k: _signed(v, arch) for k, v in symbols.items()},
        text=text,
        path=path,
    )


def _is_vdso(symbols: dict[str, int]) -> bool:
    from emu.realvdso import is_vdso

    return is_vdso(symbols)


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
