"""Images in transit: a campaign ships each image to its workers as bytes with a sha256, and
a worker writes it to its own cache directory when it is not there yet, so remote workers
need no shared filesystem. A `vdsofuzz dump-vdso` directory travels as its files."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from emu.image.elf import Image

#: The worker-local cache (one per user; overridable for tests and clusters).
CACHE = Path(
    os.environ.get("VDSOFUZZ_IMAGE_CACHE", Path(tempfile.gettempdir()) / "vdsofuzz-images")
)


@dataclass(frozen=True)
class ImageRef:
    #: The image as the spec names it (bundled name or path): what findings record.
    name: str
    sha256: str
    #: (relative path, bytes); one entry for an ELF file, several for a dump directory.
    files: tuple[tuple[str, bytes], ...]
    is_dir: bool = False


def pack(spec: str) -> ImageRef:
    """The image `spec` names, as bytes to send."""
    from emu.image.loader import resolve

    path, _, _ = resolve(spec)
    if path.is_dir():
        files = tuple(
            (str(p.relative_to(path)), p.read_bytes())
            for p in sorted(path.rglob("*"))
            if p.is_file()
        )
    else:
        files = ((path.name, path.read_bytes()),)
    return ImageRef(spec, digest(files), files, path.is_dir())


def digest(files: tuple[tuple[str, bytes], ...]) -> str:
    """One sha256 over the files' names and contents."""
    h = hashlib.sha256()
    for name, data in files:
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def _present(root: Path, ref: ImageRef) -> bool:
    """Does the cache hold every file of `ref`, with its content (checked, not assumed: a
    worker may have died half-way through writing them)?"""
    try:
        found = tuple((name, (root / name).read_bytes()) for name, _ in ref.files)
    except OSError:
        return False
    return digest(found) == ref.sha256


def materialize(ref: ImageRef, cache: Path | None = None) -> Path:
    """The image's path in the worker's cache, written (temp + rename) when absent."""
    if digest(ref.files) != ref.sha256:
        raise ValueError(f"image {ref.name}: the bytes received do not match their sha256")
    root = (cache or CACHE) / ref.sha256
    target = root / ref.files[0][0] if not ref.is_dir else root
    if _present(root, ref):
        return target
    for name, data in ref.files:
        dest = root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
    return target


def load_ref(ref: ImageRef, cpu: str | None) -> Image:
    """Load the shipped image under the name the spec gave it."""
    from dataclasses import replace

    from emu.image.loader import load

    image = load(materialize(ref), cpu=cpu)
    return replace(image, name=Path(ref.name).name if os.sep in ref.name else ref.name)
