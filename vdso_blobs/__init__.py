"""The bundled reader catalog as package data: images, their manifest, the scenario catalog.

Everything is read through `importlib.resources`, so an installed wheel works the same as a
checkout. `path` gives a real file for the few callers that need one (pyelftools, the C
compiler's `-T` script); it stays valid for the life of the process.
"""

from __future__ import annotations

import atexit
import json
from contextlib import ExitStack
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for the type only: importlib.resources.abc is 3.11+, importlib.abc's
    # copy is deprecated from 3.12 (and neither is imported at run time)
    from importlib.abc import Traversable

#: The image description `tools/build_blobs.py` writes.
MANIFEST = "manifest.json"
#: The scenarios `vdsofuzz check` runs, with their expected verdicts.
CATALOG = "catalog.json"
#: The linker script every project reader is linked with.
LINKER_SCRIPT = "vdso.lds"
#: Manifest paths are written relative to the checkout's root; this is their prefix.
_PREFIX = "vdso_blobs/"

_held = ExitStack()  # files extracted by `as_file` (zip installs) live until exit
atexit.register(_held.close)


def resource(relative: str) -> Traversable:
    """A file of this package, `images/modern-x86_64-gcc-O2.so` or `vdso_blobs/...`."""
    node = resources.files(__name__)
    for part in relative.removeprefix(_PREFIX).split("/"):
        node = node.joinpath(part)
    return node


@cache
def path(relative: str) -> Path:
    """A real filesystem path for a file of this package (see `resource`)."""
    return _held.enter_context(resources.as_file(resource(relative)))


def manifest() -> dict[str, Any]:
    """The bundled images' manifest (empty when the blobs are not built)."""
    node = resource(MANIFEST)
    if not node.is_file():
        return {"images": [], "aliases": {}}
    data: dict[str, Any] = json.loads(node.read_text(encoding="utf-8"))
    return data
