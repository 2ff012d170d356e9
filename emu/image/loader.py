"""Loading reader images by bundled name, alias or path: project blobs and real vDSOs.

An image is position independent and expects the clock pages at fixed negative offsets
from its load base, given by absolute symbols (`pvclock_page`, `hvclock_page`, ...), as
real vDSOs do. Names resolve through the `vdso_blobs` package's manifest (package data, so an
installed wheel finds them); real kernel vDSOs and `dump-vdso` directories are handed to
`emu.image.realvdso`. The ELF is parsed once per load and the parse is shared.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import vdso_blobs
from emu.errors import ImageError
from emu.image.elf import Image, open_elf, read_elf
from emu.image.realvdso import is_vdso, load_dump_dir, load_real
from host_model.abi import BLOB_ENTRY, BLOB_PAGES, page_symbol


def manifest() -> dict[str, Any]:
    """The bundled images' manifest (empty when the blobs are not built)."""
    return vdso_blobs.manifest()


def resolve(spec: str) -> tuple[Path, str, dict[str, Any]]:
    """A bundled name, an alias or a path -> (path, display name, manifest entry)."""
    man = manifest()
    name = man.get("aliases", {}).get(spec, spec)
    for entry in man.get("images", []):
        if entry["name"] == name:
            return vdso_blobs.path(entry["path"]), name, entry
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
        empty: dict[str, Any] = {}
        path, name, entry = spec, spec.name, empty
    else:
        path, name, entry = resolve(spec)
    if path.is_dir():
        if (path / "dump.json").exists():
            return load_dump_dir(path, name=name, cpu=cpu)
        raise ImageError(f"{path}: is a directory, not an ELF image or a dump-vdso directory")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror})") from None
    image = parse(data, name=name, path=path, cpu=cpu)
    return replace(image, manifest=entry) if entry else image


def parse(
    data: bytes, *, name: str = "image", path: Path | None = None, cpu: str | None = None
) -> Image:
    """Parse ELF bytes into an Image; every failure is an ImageError naming the cause.
    A real vDSO (no `vdsofuzz_read`, exports `__vdso_clock_gettime`) goes through
    `emu.image.realvdso` (layout analysis, alternatives for `cpu`)."""
    parsed = open_elf(data, name)
    elf = read_elf(data, name, parsed)
    symbols = elf.symbols
    if BLOB_ENTRY not in symbols:
        if is_vdso(symbols):
            return load_real(data, name=name, path=path, cpu=cpu, elf=parsed)
        raise ImageError(
            f"{name}: no `{BLOB_ENTRY}` symbol; a project reader exports "
            f"`uint64_t {BLOB_ENTRY}(void)` (real vDSOs need the unstripped vdso64.so)"
        )
    pages = {p: symbols[page_symbol(p)] for p in BLOB_PAGES if page_symbol(p) in symbols}
    if "pvclock" not in pages and "hvclock" not in pages:
        raise ImageError(
            f"{name}: no `pvclock_page` or `hvclock_page` symbol; link with vdso_blobs/vdso.lds"
        )
    return Image(
        name=name,
        arch=elf.arch,
        sha256=hashlib.sha256(data).hexdigest(),
        segments=elf.segments,
        entry=symbols[BLOB_ENTRY],
        entry_name=BLOB_ENTRY,
        pages=pages,
        symbols=symbols,
        text=elf.text,
        path=path,
    )
