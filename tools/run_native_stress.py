#!/usr/bin/env python3
"""Build and run tools/native_stress: a reader's C source on real CPUs against a writer thread.

The reader source (vdso_blobs/src/<reader>.c, unmodified) is compiled with the flags the
manifest records for the image, minus the vDSO link (`-shared`, the linker script), and
linked with tools/native_stress/harness.c, which defines the clock pages as page-aligned
arrays and runs a writer thread (the host protocol) and reader threads (the oracles).

    python tools/run_native_stress.py --image bug-no-retry --writer seqlock --rate 0
    python tools/run_native_stress.py --image modern --writer legacy --rate 1000 --timeout 60

Prints one JSON object: the violation (consistent / monotonic / null), seconds to it (or
the timeout), reads and writer updates made. Exit 1 on a violation, 0 without, 2 on a
build or usage error. x86-64 readers only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from build_blobs import CFLAGS  # noqa: E402  (one home for the readers' compiler flags)

SRC_DIR = ROOT / "vdso_blobs" / "src"
HARNESS = ROOT / "tools" / "native_stress" / "harness.c"
BUILD = ROOT / "build" / "native_stress"
#: Flags the manifest records that belong to the vDSO link or would fail a host build.
DROP = ("-shared", "-nostdlib", "-Werror", "-m32")
#: Flags used when the manifest has no entry for the image: the blob build's own.
DEFAULT_FLAGS = ["-m64", "-O2", *(f for f in CFLAGS if f not in DROP)]
#: Host models the native writer can reproduce -> writer protocol.
WRITERS = {"kvm": "seqlock", "xen": "seqlock", "kvm-legacy-copy": "legacy"}


class NativeError(Exception):
    """The native build or run failed; the message says why."""


def _entry(image: str) -> dict:
    man_path = ROOT / "vdso_blobs" / "manifest.json"
    if not man_path.exists():
        return {}
    man = json.loads(man_path.read_text())
    name = man.get("aliases", {}).get(image, image)
    for e in man.get("images", []):
        if e["name"] == name:
            return e
    return {}


def source_and_flags(image: str) -> tuple[Path, list[str]]:
    """The reader source of `image` (a bundled name or alias) and its compiler flags."""
    e = _entry(image)
    if e:
        if e.get("arch") != "x86_64":
            raise NativeError(f"{image}: native stress runs x86-64 readers only ({e['arch']})")
        src = ROOT / e["source"]
        flags = [f for f in e.get("flags", []) if not f.startswith("-Wl,") and f not in DROP]
    else:
        src = SRC_DIR / f"{image}.c"
        flags = list(DEFAULT_FLAGS)
    if not src.exists():
        raise NativeError(f"{image}: no reader source {src}")
    return src, flags


def build(image: str, cc: str = "gcc") -> Path:
    """Compile `image`'s reader with the harness; cached by the inputs' hash."""
    if shutil.which(cc) is None:
        raise NativeError(f"no C compiler {cc!r} on PATH")
    src, flags = source_and_flags(image)
    h = hashlib.sha256()
    for p in (src, src.parent / "common.h", src.parent / "pvti.h", HARNESS):
        h.update(p.read_bytes() if p.exists() else b"")
    h.update(" ".join(flags).encode())
    out = BUILD / f"{image}-{h.hexdigest()[:12]}"
    if out.exists():
        return out
    BUILD.mkdir(parents=True, exist_ok=True)
    obj = out.with_suffix(".reader.o")
    cmds = [
        [cc, *flags, "-c", str(src), "-o", str(obj)],
        [cc, "-O2", "-std=gnu11", "-Wall", "-pthread", str(HARNESS), str(obj), "-o", str(out)],
    ]
    for cmd in cmds:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise NativeError(f"build failed: {' '.join(cmd)}\n{r.stderr.strip()}")
    obj.unlink(missing_ok=True)
    return out


def run(
    image: str,
    *,
    writer: str = "seqlock",
    rate: int = 0,
    timeout: float = 60.0,
    readers: int = 2,
    slots: int = 1,
    updates: int = 0,
) -> dict:
    """Run the native stress once; the harness' JSON result plus the image name.
    `updates` > 0: a fixed amount of work, not a time: stop once the writer has made that
    many updates and the readers that many reads while it wrote (the timeout still bounds
    it)."""
    if writer not in ("seqlock", "legacy"):
        raise NativeError(f"writer must be seqlock or legacy, not {writer!r}")
    binary = build(image)
    cmd = [str(binary), writer, str(rate), str(timeout), str(readers), str(slots), str(updates)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        raise NativeError(f"{binary.name} did not stop within {timeout + 30} s") from None
    if r.returncode not in (0, 1):
        raise NativeError(f"{binary.name} exited {r.returncode}: {r.stderr.strip()}")
    try:
        res = json.loads(r.stdout)
    except json.JSONDecodeError:
        raise NativeError(f"{binary.name} printed no JSON: {r.stdout[:200]!r}") from None
    res["image"] = image
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", default="bug-no-retry", help="bundled reader name (x86-64)")
    p.add_argument("--writer", default="seqlock", choices=("seqlock", "legacy"))
    p.add_argument("--rate", type=int, default=0, help="writer updates per second (0: tight)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before giving up")
    p.add_argument("--readers", type=int, default=2, help="reader threads")
    p.add_argument("--slots", type=int, default=1, help="pvti slots the writer updates")
    p.add_argument(
        "--updates", type=int, default=0, help="stop after this many updates and reads (0: never)"
    )
    a = p.parse_args(argv)
    try:
        res = run(
            a.image,
            writer=a.writer,
            rate=a.rate,
            timeout=a.timeout,
            readers=a.readers,
            slots=a.slots,
            updates=a.updates,
        )
    except NativeError as e:
        print(f"run_native_stress: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res, sort_keys=True))
    return 1 if res.get("violation") else 0


if __name__ == "__main__":
    sys.exit(main())
