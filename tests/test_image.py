"""Loading images: bundled names, real files, and every kind of bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import DEBIAN, needs_running_vdso, needs_samples

from emu.errors import ImageError
from emu.image.alternatives import CPU_CHOICES
from emu.image.loader import load, manifest
from host_model.abi import BLOB_PAGES


def test_bundled_alias_resolves_to_the_gcc_O2_x86_64_build():
    img = load("modern")
    assert img.name == "modern-x86_64-gcc-O2"
    assert img.arch == "x86_64"
    assert img.pages == BLOB_PAGES  # every page symbol where the ABI puts it
    assert img.entry_name == "vdsofuzz_read"


def test_every_manifest_image_loads_with_its_recorded_hash():
    entries = manifest()["images"]
    assert len(entries) > 20
    for e in entries:
        img = load(e["name"])
        assert img.sha256 == e["sha256"], e["name"]
        assert img.arch == e["arch"]


def test_text_file_is_refused(tmp_path: Path):
    p = tmp_path / "notes.txt"
    p.write_text("hello\n")
    with pytest.raises(ImageError, match="not an ELF"):
        load(p)


def test_truncated_elf_is_refused(tmp_path: Path):
    src = load("modern").path
    p = tmp_path / "cut.so"
    p.write_bytes(src.read_bytes()[:300])
    with pytest.raises(ImageError, match="truncated"):
        load(p)


@pytest.mark.parametrize(("machine", "name"), [(40, "ARM"), (183, "AARCH64")])
def test_arm_elf_is_refused(tmp_path: Path, machine: int, name: str):
    raw = bytearray(load("modern").path.read_bytes())
    raw[18:20] = machine.to_bytes(2, "little")  # e_machine
    p = tmp_path / "arm.so"
    p.write_bytes(bytes(raw))
    with pytest.raises(ImageError, match=f"ELF for {name};"):
        load(p)


def test_elf_without_the_entry_symbol_is_refused(tmp_path: Path):
    true = shutil.which("true")
    assert true
    with pytest.raises(ImageError, match="vdsofuzz_read"):
        load(Path(true))


def test_unknown_name_says_how_to_list_images():
    with pytest.raises(ImageError, match="vdsofuzz images"):
        load("no-such-reader")


def _count_elf_parses(monkeypatch) -> list[int]:
    """Count pyelftools ELFFile constructions (every module constructs it through the class)."""
    from elftools.elf.elffile import ELFFile

    calls = [0]
    init = ELFFile.__init__

    def counting(self, *args, **kwargs):
        calls[0] += 1
        init(self, *args, **kwargs)

    monkeypatch.setattr(ELFFile, "__init__", counting)
    return calls


def test_a_bundled_image_is_parsed_once_and_carries_its_manifest_entry(monkeypatch):
    calls = _count_elf_parses(monkeypatch)
    img = load("hyperv-i386")
    assert calls[0] == 1
    assert img.manifest is not None and img.manifest["name"] == "hyperv-i386-gcc-O2"
    assert img.call_abi == "blob"
    assert img.layout is None and img.vdso_data is None and img.clock_seed is None
    assert load(img.path).manifest is None  # by path: no manifest entry


@needs_samples
@pytest.mark.parametrize("path", DEBIAN, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_real_vdso_is_parsed_once_with_typed_layout_fields(monkeypatch, path: Path):
    calls = _count_elf_parses(monkeypatch)
    img = load(path, cpu=CPU_CHOICES[-1])
    assert calls[0] == 1
    assert img.call_abi == "clock_gettime"
    assert img.layout is not None and img.vdso_data is not None
    assert img.vdso_data.page in img.layout.pages
    assert img.cpu == CPU_CHOICES[-1]
    assert img.alternatives and all(p.new != p.old for p in img.alternatives)


@needs_running_vdso
def test_a_dump_directory_is_parsed_once(monkeypatch, tmp_path: Path):
    from emu.image.dump import dump_running_vdso

    dest = dump_running_vdso(tmp_path / "dump")
    calls = _count_elf_parses(monkeypatch)
    img = load(dest)
    assert calls[0] == 1
    assert img.call_abi == "clock_gettime" and img.layout is not None
    assert img.layout.source == "dump"
