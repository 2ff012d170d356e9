"""emu.image.dump / tools/dump_vdso.py on this machine: dump the running vDSO, its clock
pages and (on a kvm-clock guest) the real pvti, then load the dump back as an image."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import pytest
from conftest import needs_running_vdso

from emu.image.dump import (
    DUMP_FORMAT,
    dump_meta,
    dump_pages,
    dump_running_vdso,
    load_dump,
    probe_read,
    read_maps,
)
from emu.image.layout import PVTI_SLOT, VdsoLayoutError, decode_struct

pytestmark = needs_running_vdso


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> Path:
    return dump_running_vdso(tmp_path_factory.mktemp("dump"))


def test_dump_files_and_metadata(dump):
    meta = json.loads((dump / "dump.json").read_text())
    assert meta["format"] == DUMP_FORMAT
    assert meta["kernel_release"] == platform.release()
    image = (dump / "vdso.so").read_bytes()
    assert image[:4] == b"\x7fELF"
    assert hashlib.sha256(image).hexdigest() == meta["vdso"]["sha256"]
    maps = read_maps()
    base = maps["[vdso]"].start
    for name, m in maps.items():
        if name != "[vdso]":
            assert meta["mappings"][name]["offset"] == m.start - base
            assert meta["mappings"][name]["size"] == m.size
    assert "layout" in meta, meta.get("layout_error")
    # The time data page is always readable; every page is accounted for.
    n_pages = sum(m["size"] for m in meta["mappings"].values()) // 4096
    assert len(meta["pages"]) == n_pages
    time_page = meta["layout"]["data"]["vdso_data"] & ~0xFFF
    assert any(p["offset"] == time_page and p["readable"] for p in meta["pages"])
    for p in meta["pages"]:
        assert p["readable"] == (dump / p["file"]).exists() if p["readable"] else "fault" in p


def test_load_dump_round_trip(dump):
    image, layout = load_dump(dump)
    assert image == (dump / "vdso.so").read_bytes()
    assert layout.source == "dump"
    meta = dump_meta(dump)
    assert layout.mappings == {k: (v["offset"], v["size"]) for k, v in meta["mappings"].items()}
    assert layout.clock_gettime[0] == "__vdso_clock_gettime"
    pages = dump_pages(dump)
    assert set(pages) == {p["offset"] for p in meta["pages"] if p["readable"]}
    assert all(len(b) == 4096 for b in pages.values())


def test_clock_records_are_decoded(dump):
    meta = dump_meta(dump)
    recs = meta["clock_records"]
    assert [r["cs"] for r in recs] == [0, 1]
    _, layout = load_dump(dump)
    assert recs[0]["clock_mode"] in layout.clock_modes.values()
    assert recs[0]["clock_mode_name"].startswith("VDSO_CLOCKMODE_")


def test_pvti_when_this_is_a_kvm_clock_guest(dump):
    meta = dump_meta(dump)
    if meta["pvti"] is None:
        pytest.skip("no readable pvclock page: not a kvm-clock guest, or never a vDSO clock")
    assert {"kvm-clock", "xen"} & set(meta["available_clocksources"])
    pvti = meta["pvti"]
    assert pvti["vcpu"] == 0 and pvti["tsc_to_system_mul"] > 0
    assert -32 < pvti["tsc_shift"] < 32
    # system_time is kvmclock nanoseconds at the last update: not after now (since boot).
    assert 0 < pvti["system_time"] <= time.clock_gettime_ns(time.CLOCK_BOOTTIME) + 10**9
    # The decoded slot equals the page bytes under the ABI layout.
    _, layout = load_dump(dump)
    raw = dump_pages(dump)[layout.pages["pvclock"]]
    fields = decode_struct(layout.pvti, raw[:PVTI_SLOT], signed=("tsc_shift",))
    assert fields["tsc_to_system_mul"] == pvti["tsc_to_system_mul"]
    assert fields["tsc_shift"] == pvti["tsc_shift"]


def test_a_faulting_read_never_kills_the_tool():
    data, why = probe_read(0x1000)  # page 1 is never mapped (vm.mmap_min_addr)
    assert data is None and why == "SIGSEGV"


def test_missing_or_foreign_dump_directory(tmp_path):
    with pytest.raises(VdsoLayoutError, match="dump-vdso"):
        load_dump(tmp_path)
    (tmp_path / "dump.json").write_text(json.dumps({"format": "other/9"}))
    with pytest.raises(VdsoLayoutError, match="dump again"):
        load_dump(tmp_path)


def test_tool_script(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    try:
        import dump_vdso
    finally:
        sys.path.pop(0)
    assert dump_vdso.main([str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "[vvar]" in out and (tmp_path / "d" / "dump.json").exists()
