"""Loading compiled host writers: an x86-64 ELF exporting `vdsofuzz_host_write`.

A writer is host code that stores a planned pvti into one vCPU's slot (see
`emu.engine.writer_agent`, which runs it). This module only finds and checks the file: by
bundled name (the manifest's `writers`, e.g. `writer-seed-memcpy`) or by path, and refuses
what cannot be a writer with one line naming the file and what to fix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import vdso_blobs
from emu.errors import ImageError
from emu.image.elf import Segment, open_elf, read_elf, span, symbolize

#: The symbol a writer exports (its C prototype is in vdso_blobs/src/writer.h).
WRITER_ENTRY = "vdsofuzz_host_write"
PROTOTYPE = (
    f"void {WRITER_ENTRY}(volatile struct pvclock_vcpu_time_info *slot, "
    "const struct pvclock_vcpu_time_info *next)"
)


@dataclass(frozen=True)
class WriterImage:
    """A loaded writer: its segments (image-relative), symbols and entry."""

    name: str
    sha256: str
    segments: tuple[Segment, ...]
    entry: int
    symbols: dict[str, int]
    path: Path | None = None

    @property
    def span(self) -> tuple[int, int]:
        return span(self.segments)

    def symbolize(self, addr: int) -> str:
        """`vdsofuzz_host_write+0x12` for an image-relative address."""
        return symbolize(self.symbols, addr)


def bundled() -> list[dict[str, Any]]:
    """The manifest entries of the bundled writers."""
    entries: list[dict[str, Any]] = vdso_blobs.manifest().get("writers", [])
    return entries


def resolve(spec: str) -> tuple[Path, str]:
    """A bundled writer name, its short alias, or a path -> (path, display name)."""
    aliases = vdso_blobs.manifest().get("writer_aliases", {})
    name = aliases.get(spec, spec)
    for entry in bundled():
        if entry["name"] == name:
            return vdso_blobs.path(entry["path"]), name
    path = Path(spec)
    if path.exists():
        return path, path.name
    known = ", ".join(sorted(aliases)) or "none built"
    raise ImageError(
        f"no writer {spec!r}: give a path to an x86-64 ELF exporting `{WRITER_ENTRY}` "
        f"or a bundled writer ({known})"
    )


def load_writer(spec: str) -> WriterImage:
    """Load a writer by bundled name, alias or path; ImageError (one line) if it is not one.
    The file is read each time (a replay checks it is still the same code); parsing is
    cached by content."""
    path, name = resolve(spec)
    if path.is_dir():
        raise ImageError(f"{path}: is a directory; --writer takes an x86-64 ELF writer")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror})") from None
    return _parsed(data, name, path)


@lru_cache(maxsize=32)
def _parsed(data: bytes, name: str, path: Path) -> WriterImage:
    return parse_writer(data, name=name, path=path)


def parse_writer(data: bytes, *, name: str, path: Path | None = None) -> WriterImage:
    """Check and parse writer ELF bytes."""
    where = str(path) if path is not None else name
    if data[:4] != b"\x7fELF":
        raise ImageError(
            f"{where}: not an ELF file; --writer takes an x86-64 shared object "
            f"exporting `{WRITER_ENTRY}`"
        )
    parsed = open_elf(data, where)
    elf = read_elf(data, where, parsed)
    if elf.arch != "x86_64":
        raise ImageError(
            f"{where}: an {elf.arch} ELF; writers run as x86-64 host code, "
            "build it with -m64 for x86-64"
        )
    if WRITER_ENTRY not in elf.symbols:
        raise ImageError(f"{where}: no `{WRITER_ENTRY}` symbol; a writer exports `{PROTOTYPE};`")
    return WriterImage(
        name=name,
        sha256=hashlib.sha256(data).hexdigest(),
        segments=elf.segments,
        entry=elf.symbols[WRITER_ENTRY],
        symbols=elf.symbols,
        path=path,
    )
