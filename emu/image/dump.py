"""Dump the running kernel's vDSO and clock pages to a directory, and load such a dump.

`dump_running_vdso(dest)` (the CLI's `vdsofuzz dump-vdso DIR`) saves, from this process:

* `vdso.so` -- the `[vdso]` mapping's bytes, read from our own memory with ctypes. They are
  the image *as the kernel patched it* for this CPU (alternatives already applied);
* `pages/<mapping>+0x<off>.bin` -- each readable page of `[vvar]` and `[vvar_vclock]`. Some
  pages fault by design (the time-namespace page outside a time namespace, the hvclock page
  without Hyper-V, the pvclock page when kvm-clock was never a vDSO clock), so every page is
  read in a forked child: a SIGBUS kills the child, never the tool;
* `dump.json` -- kernel release, CPU flags, clocksource, the mappings' offsets from the vDSO
  base, the layout found, the decoded clock records and, when the pvclock page is readable,
  the real pvti of each vCPU slot.

`load_dump(dir)` returns `(image_bytes, VdsoLayout)` with pages from the dump's mappings and
the structure shapes from the profile the kernel version selects. Nothing here reads a clock.
"""

from __future__ import annotations

import ctypes
import faulthandler
import hashlib
import json
import os
import platform
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elftools.elf.elffile import ELFFile

from emu.image.alternatives import site_states
from emu.image.cpu import default_cpu
from emu.image.elffacts import elf_facts
from emu.image.layout import VdsoLayout, VdsoLayoutError, analyze
from emu.image.structs import decode_struct
from host_model.abi import PAGE_SIZE, PVTI_SLOT

DUMP_FORMAT = "vdsofuzz-dump/1"
SPECIAL = ("[vdso]", "[vvar]", "[vvar_vclock]")
CLOCKSOURCE_DIR = Path("/sys/devices/system/clocksource/clocksource0")


@dataclass(frozen=True)
class Mapping:
    name: str
    start: int
    end: int
    perms: str

    @property
    def size(self) -> int:
        return self.end - self.start


def read_maps(text: str | None = None) -> dict[str, Mapping]:
    """The vDSO-related special mappings of this process (or of a maps text)."""
    if text is None:
        text = Path("/proc/self/maps").read_text()
    out: dict[str, Mapping] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[-1] in SPECIAL:
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out[parts[-1]] = Mapping(parts[-1], lo, hi, parts[1])
    return out


def probe_read(addr: int, size: int = PAGE_SIZE) -> tuple[bytes | None, str | None]:
    """Read our own memory in a forked child: (bytes, None) or (None, why it faulted)."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: read, write, exit without running any Python cleanup
        code = 1
        try:
            # Die quietly on the fault: no faulthandler traceback, no Python handler.
            faulthandler.disable()
            for sig in (signal.SIGBUS, signal.SIGSEGV):
                signal.signal(sig, signal.SIG_DFL)
            os.close(rfd)
            data = ctypes.string_at(addr, size)
            view = memoryview(data)
            while view:
                view = view[os.write(wfd, view) :]
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    chunks = []
    while True:
        chunk = os.read(rfd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(rfd)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return None, signal.Signals(os.WTERMSIG(status)).name
    data = b"".join(chunks)
    if os.WEXITSTATUS(status) != 0 or len(data) != size:
        return None, f"child exited {os.WEXITSTATUS(status)} after {len(data)} bytes"
    return data, None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cpu_flags() -> list[str]:
    text = _read_text(Path("/proc/cpuinfo")) or ""
    for line in text.splitlines():
        if line.startswith("flags"):
            return line.split(":", 1)[1].split()
    return []


def _page_file(mapping: str, offset: int) -> str:
    return f"{mapping.strip('[]')}+{offset:#06x}.bin"


def dump_running_vdso(dest: Path) -> Path:
    """Write a dump of this process's vDSO and clock pages into directory `dest`; return it."""
    dest = Path(dest)
    maps = read_maps()
    if "[vdso]" not in maps:
        raise VdsoLayoutError(
            "this process has no [vdso] mapping (booted with vdso=0?); dump on a machine "
            "whose kernel maps a vDSO, or pass a vdso64.so from the kernel build tree"
        )
    vdso = maps["[vdso]"]
    (dest / "pages").mkdir(parents=True, exist_ok=True)
    image = ctypes.string_at(vdso.start, vdso.size)
    (dest / "vdso.so").write_bytes(image)

    rel_maps = {m.name: (m.start - vdso.start, m.size) for m in maps.values() if m.name != "[vdso]"}
    pages, page_bytes = _save_pages(dest, maps, vdso.start)
    uname = platform.uname()
    meta: dict[str, Any] = {
        "format": DUMP_FORMAT,
        **_machine_meta(uname),
        "vdso": _vdso_meta(image),
        "mappings": {
            k: {"offset": v[0], "size": v[1], "perms": maps[k].perms} for k, v in rel_maps.items()
        },
        "pages": pages,
    }
    meta.update(_layout_meta(image, uname.release, rel_maps, page_bytes))
    (dest / "dump.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return dest


def _save_pages(
    dest: Path, maps: dict[str, Mapping], base: int
) -> tuple[list[dict[str, Any]], dict[int, bytes]]:
    """Save every readable page of the clock mappings under `dest/pages`: the dump's page
    list (a fault's reason for the others) and the bytes by offset from the vDSO `base`."""
    pages: list[dict[str, Any]] = []
    page_bytes: dict[int, bytes] = {}
    for m in maps.values():
        if m.name == "[vdso]":
            continue
        for addr in range(m.start, m.end, PAGE_SIZE):
            data, why = probe_read(addr)
            rel = addr - base
            entry: dict[str, Any] = {
                "mapping": m.name,
                "offset": rel,
                "offset_in_mapping": addr - m.start,
                "readable": data is not None,
            }
            if data is not None:
                entry["file"] = f"pages/{_page_file(m.name, addr - m.start)}"
                (dest / entry["file"]).write_bytes(data)
                page_bytes[rel] = data
            else:
                entry["fault"] = why
            pages.append(entry)
    return pages, page_bytes


def _machine_meta(uname: platform.uname_result) -> dict[str, Any]:
    """The kernel, clocksource and CPU the dump was taken on."""
    return {
        "kernel_release": uname.release,
        "kernel_build": uname.version,
        "machine": uname.machine,
        "clocksource": _read_text(CLOCKSOURCE_DIR / "current_clocksource"),
        "available_clocksources": (
            _read_text(CLOCKSOURCE_DIR / "available_clocksource") or ""
        ).split(),
        "cpu_flags": _cpu_flags(),
        "default_cpu": default_cpu(),
    }


def _vdso_meta(image: bytes) -> dict[str, Any]:
    """The image's file, hash, version note, build salt and what each alternative site holds."""
    vdso: dict[str, Any] = {
        "file": "vdso.so",
        "size": len(image),
        "sha256": hashlib.sha256(image).hexdigest(),
    }
    facts = elf_facts(image, "[vdso]")
    vdso["version_note"] = (
        ".".join(map(str, facts.kernel_version)) if facts.kernel_version else None
    )
    vdso["build_salt"] = facts.build_salt
    try:
        vdso["alternatives"] = [{"site": s, "holds": h} for s, h in site_states(image)]
    except ValueError as e:
        vdso["alternatives_error"] = str(e)
    return vdso


def _layout_meta(
    image: bytes, release: str, rel_maps: dict[str, tuple[int, int]], page_bytes: dict[int, bytes]
) -> dict[str, Any]:
    """The layout found for the image with the decoded clock pages, or why none was found
    (a dump is still worth keeping: it is what a new profile is written from)."""
    try:
        layout = analyze(image, kernel_release=release, mappings=rel_maps)
    except VdsoLayoutError as e:
        return {"layout_error": str(e)}
    return {
        "layout": {
            "profile": layout.profile,
            "source": layout.source,
            "reason": layout.reason,
            "pages": layout.pages,
            "data": layout.data,
        },
        **decode_pages(layout, page_bytes),
    }


def decode_pages(layout: VdsoLayout, pages: dict[int, bytes]) -> dict[str, Any]:
    """Decode the clock records and the pvclock page's per-vCPU pvti slots from page bytes
    (keys: image-relative page offsets)."""
    out: dict[str, Any] = {"clock_records": [], "pvti": None, "pvti_slots": []}
    modes = {v: k for k, v in layout.clock_modes.items()}
    for cs in (0, 1):
        at = layout.data["vdso_data"] + cs * layout.clock_stride
        page = at & ~(PAGE_SIZE - 1)
        raw = pages.get(page)
        if raw is None:
            continue
        rec: dict[str, Any] = dict(
            decode_struct(layout.vdso_data, raw[at - page :], signed=("clock_mode",))
        )
        rec["cs"] = cs
        rec["clock_mode_name"] = modes.get(rec.get("clock_mode", -1), "unknown")
        out["clock_records"].append(rec)
    pv = layout.pages.get("pvclock")
    raw = pages.get(pv) if pv is not None else None
    if raw is not None:
        for slot in range(PAGE_SIZE // PVTI_SLOT):
            chunk = raw[slot * PVTI_SLOT : slot * PVTI_SLOT + layout.pvti.size]
            if not any(chunk):
                continue
            p = decode_struct(layout.pvti, chunk, signed=("tsc_shift",))
            p = {
                k: p[k]
                for k in (
                    "version",
                    "tsc_timestamp",
                    "system_time",
                    "tsc_to_system_mul",
                    "tsc_shift",
                    "flags",
                )
                if k in p
            }
            p["vcpu"] = slot
            p["stable"] = bool(p.get("flags", 0) & 1)
            out["pvti_slots"].append(p)
        if out["pvti_slots"] and out["pvti_slots"][0]["vcpu"] == 0:
            out["pvti"] = out["pvti_slots"][0]
    return out


def _load_meta(directory: Path) -> dict[str, Any]:
    meta_path = Path(directory) / "dump.json"
    try:
        meta = json.loads(meta_path.read_text())
    except OSError:
        raise VdsoLayoutError(
            f"{directory}: no dump.json; create a dump with `vdsofuzz dump-vdso {directory}`"
        ) from None
    except json.JSONDecodeError as e:
        raise VdsoLayoutError(f"{meta_path}: not valid JSON ({e}); dump again") from None
    if meta.get("format") != DUMP_FORMAT:
        raise VdsoLayoutError(
            f"{meta_path}: format {meta.get('format')!r}, expected {DUMP_FORMAT!r}; dump again "
            "with this version of vdsofuzz"
        )
    return meta


def load_dump(directory: str | Path) -> tuple[bytes, VdsoLayout]:
    """(image bytes, layout) of a `dump-vdso` directory; the layout's source is "dump"."""
    image = dump_image(directory)
    return image, dump_layout(directory, image)


def dump_image(directory: str | Path) -> bytes:
    """The vDSO bytes of a dump, checked against the sha256 recorded in dump.json."""
    directory = Path(directory)
    meta = _load_meta(directory)
    image_path = directory / meta["vdso"]["file"]
    try:
        image = image_path.read_bytes()
    except OSError as e:
        raise VdsoLayoutError(f"{image_path}: cannot read ({e.strerror}); dump again") from None
    if hashlib.sha256(image).hexdigest() != meta["vdso"]["sha256"]:
        raise VdsoLayoutError(f"{image_path}: sha256 differs from dump.json; dump again")
    return image


def dump_layout(directory: str | Path, image: bytes, elf: ELFFile | None = None) -> VdsoLayout:
    """The layout of a dump's `image` (`elf`: the image already parsed), pages from the dump's
    mappings."""
    meta = _load_meta(Path(directory))
    maps = {k: (v["offset"], v["size"]) for k, v in meta["mappings"].items()}
    return analyze(image, kernel_release=meta.get("kernel_release"), mappings=maps, elf=elf)


def dump_pages(directory: str | Path) -> dict[int, bytes]:
    """The readable clock pages of a dump, keyed by offset from the image base."""
    directory = Path(directory)
    meta = _load_meta(directory)
    return {
        p["offset"]: (directory / p["file"]).read_bytes()
        for p in meta["pages"]
        if p.get("readable")
    }


def dump_meta(directory: str | Path) -> dict[str, Any]:
    """dump.json of a dump directory, validated."""
    return _load_meta(Path(directory))
