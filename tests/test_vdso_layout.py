"""emu.image.layout against real images: the running kernel's vDSO (read from this process at
test time) and, when present outside the repo, Debian kernel debug-package vDSOs."""

from __future__ import annotations

import ctypes
import platform
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
from conftest import DEBIAN, needs_samples

from emu.image.dump import probe_read, read_maps
from emu.image.layout import (
    CLOCK_IDS,
    PAGE_SIZE,
    PROFILES,
    VdsoLayoutError,
    analyze,
    decode_struct,
    elf_facts,
    explain,
    parse_release,
    select_profile,
)

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.machine() not in ("x86_64", "i686", "i386"),
    reason="needs a running x86 Linux kernel's vDSO",
)


@pytest.fixture(scope="module")
def running() -> tuple[bytes, dict[str, tuple[int, int]]]:
    maps = read_maps()
    if "[vdso]" not in maps:
        pytest.skip("this process has no [vdso] mapping")
    vdso = maps["[vdso]"]
    image = ctypes.string_at(vdso.start, vdso.size)
    rel = {m.name: (m.start - vdso.start, m.size) for m in maps.values() if m.name != "[vdso]"}
    return image, rel


def test_running_vdso_entry_and_version(running):
    image, _ = running
    layout = analyze(image)
    name, addr = layout.clock_gettime
    assert name == "__vdso_clock_gettime"
    assert 0 < addr < len(image)
    assert layout.arch == ("x86_64" if platform.machine() == "x86_64" else "i386")
    release = parse_release(platform.release())
    assert layout.kernel_version is not None and release is not None
    assert layout.kernel_version[:2] == release[:2]
    assert layout.clock_mode_pvclock == 2
    assert "profile" in explain(layout) or "dwarf" in explain(layout)


def test_running_vdso_pages_match_this_process_mappings(running):
    image, rel = running
    layout = analyze(image)
    # The profile's mappings are exactly what the kernel created for this process.
    assert layout.mappings == rel
    lo = min(off for off, _ in rel.values())
    assert layout.pages["vvar"] == lo
    assert layout.data["vdso_data"] & ~(PAGE_SIZE - 1) == lo
    inside = [(off, off + size) for off, size in rel.values()]
    for name in ("pvclock", "hvclock", "timens"):
        assert any(a <= layout.pages[name] < b for a, b in inside), name
    # x86-64: every page the code addresses RIP-relatively is one of these mappings' pages.
    for page in layout.code_data_pages:
        assert any(a <= page < b for a, b in inside)
    if layout.arch == "x86_64":
        assert layout.data["vdso_data"] & ~(PAGE_SIZE - 1) in layout.code_data_pages


def test_running_vdso_time_page_decodes_to_this_machines_clocks(running):
    """The vdso_data offset, basetime stride and CS_RAW stride are right iff basetime[]
    holds the seconds the kernel's own clocks report now."""
    image, _ = running
    layout = analyze(image)
    maps = read_maps()
    base = maps["[vdso]"].start
    page = layout.data["vdso_data"] & ~(PAGE_SIZE - 1)
    raw, why = probe_read(base + page)
    assert raw is not None, why
    rec_at = layout.clock_record(CLOCK_IDS["CLOCK_MONOTONIC"]) - page
    rec = decode_struct(layout.vdso_data, raw[rec_at:], signed=("clock_mode",))
    if rec["clock_mode"] == layout.clock_modes["VDSO_CLOCKMODE_TIMENS"]:
        pytest.skip("running inside a time namespace: the page holds offsets")
    assert rec["clock_mode"] in layout.clock_modes.values()
    assert 0 < rec["shift"] < 64 and rec["mult"] > 0
    checks = {
        "CLOCK_REALTIME": time.CLOCK_REALTIME,
        "CLOCK_MONOTONIC": time.CLOCK_MONOTONIC,
        "CLOCK_MONOTONIC_RAW": time.CLOCK_MONOTONIC_RAW,
        "CLOCK_BOOTTIME": time.CLOCK_BOOTTIME,
    }
    for name, cid in checks.items():
        at = layout.basetime(CLOCK_IDS[name]) - page
        sec = int.from_bytes(raw[at : at + 8], "little")
        now = time.clock_gettime(cid)
        # basetime is refreshed every tick; the snapshot is at most a little older than now.
        assert now - 5 <= sec <= now + 1, (name, sec, now)


def test_stripped_image_without_version_note_says_what_to_supply(running):
    image, _ = running
    facts = elf_facts(image)
    assert facts.kernel_version is not None
    blob = bytearray(image)
    note = struct.pack("<III", 6, 4, 0) + b"Linux\0\0\0"  # LINUX_VERSION_CODE note header
    idx = blob.find(note)
    assert idx > 0
    blob[idx + 12 : idx + 17] = b"Xinux"
    if facts.abs_symbols:
        pytest.skip("this kernel's runtime vDSO keeps its symbols")
    with pytest.raises(VdsoLayoutError, match="unstripped vdso64.so.*dump-vdso"):
        analyze(bytes(blob))
    # A dump's kernel release is enough to choose the profile again.
    assert analyze(bytes(blob), kernel_release=platform.release()).profile is not None


def test_not_an_elf():
    with pytest.raises(VdsoLayoutError, match="not an ELF"):
        analyze(b"MZ\x90\x00" + bytes(60))


def test_parse_release_and_profile_ranges():
    assert parse_release("6.18.44-fc-v657") == (6, 18, 44)
    assert parse_release("6.12.117+deb12-cloud-amd64") == (6, 12, 117)
    assert parse_release("6.1.0-56-cloud-amd64") == (6, 1, 0)
    assert parse_release("garbage") is None
    for a, b in zip(PROFILES, PROFILES[1:], strict=False):  # contiguous, ordered, non-overlapping
        assert a.last is not None
        nxt = (a.last[0], a.last[1] + 1)
        assert b.first in (nxt, (a.last[0] + 1, 0))
    assert select_profile((5, 4, 0))[0] is None
    assert select_profile((99, 0, 0))[0] is PROFILES[-1]


@needs_samples
@pytest.mark.parametrize("path", DEBIAN, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_debian_debug_vdso_dwarf_agrees_with_profile(path: Path):
    layout = analyze(path)
    assert layout.source == "dwarf"
    prof = {p.name: p for p in PROFILES}[layout.profile]
    for name, off in prof.pages.items():
        if name in layout.pages:
            assert layout.pages[name] == off, name
    assert layout.data["vdso_data"] == prof.vdso_data_offset
    assert layout.clock_stride == prof.clock_stride
    for k, f in prof.clock.fields.items():
        assert layout.vdso_data.fields[k].offset == f.offset, k
    assert layout.pvti.fields["tsc_shift"].offset == 28
    assert layout.clock_mode_pvclock == 2
    assert "__vdso_clock_gettime" in layout.entry
    if layout.arch == "i386":
        assert "__vdso_clock_gettime64" in layout.entry


@pytest.mark.skipif(not DEBIAN or not shutil.which("objcopy"), reason="needs samples + objcopy")
@pytest.mark.parametrize("path", DEBIAN, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_stripped_debian_vdso_falls_back_to_the_same_layout(path: Path, tmp_path: Path):
    stripped = tmp_path / path.name
    subprocess.run(["objcopy", "--strip-all", str(path), str(stripped)], check=True)
    full, bare = analyze(path), analyze(stripped)
    assert bare.source == "profile" and bare.symbols == {}
    assert bare.profile == full.profile
    assert bare.data["vdso_data"] == full.data["vdso_data"]
    assert bare.clock_stride == full.clock_stride
    for name in ("vvar", "pvclock", "hvclock", "timens"):
        assert bare.pages[name] == full.pages[name]
    assert bare.entry["__vdso_clock_gettime"] == full.entry["__vdso_clock_gettime"]
