"""The reader catalog: committed images match the manifest, obey the image ABI, and rebuild
byte for byte with the installed compilers (tools/build_blobs.py)."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from elftools.elf.constants import P_FLAGS
from elftools.elf.elffile import ELFFile

from emu.engine.scenario import Scenario
from emu.errors import ImageError
from emu.image.window import WindowError, analyse_window
from emu.search.fuzz import Fuzzer
from host_model import abi

ROOT = Path(__file__).resolve().parent.parent
MACHINE = {"x86_64": ("EM_X86_64", 64), "i386": ("EM_386", 32)}
PAGES = abi.BLOB_PAGE_SYMBOLS


def load_build_blobs() -> ModuleType:
    """Import tools/build_blobs.py (tools/ is not a package)."""
    path = ROOT / "tools" / "build_blobs.py"
    spec = importlib.util.spec_from_file_location("build_blobs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


build_blobs = load_build_blobs()
MANIFEST = build_blobs.load_manifest()
ENTRIES = {e["name"]: e for e in MANIFEST["images"]}


def entry_ids() -> list[str]:
    return sorted(ENTRIES)


def image_path(entry: dict) -> Path:
    return ROOT / entry["path"]


def test_manifest_lists_the_planned_catalog() -> None:
    assert sorted(ENTRIES) == [s.name for s in build_blobs.plan()]
    assert MANIFEST["aliases"]["modern"] == "modern-x86_64-gcc-O2"
    assert MANIFEST["aliases"]["bug-no-retry-i386"] == "bug-no-retry-i386-gcc-O2"
    assert all(target in ENTRIES for target in MANIFEST["aliases"].values())


def test_no_stray_images() -> None:
    on_disk = {p.name for p in (ROOT / "vdso_blobs" / "images").glob("*.so")}
    writers = {f"{w['name']}.so" for w in MANIFEST["writers"]}  # tests/test_writers_build.py
    assert on_disk == {f"{name}.so" for name in ENTRIES} | writers


@pytest.mark.parametrize("name", entry_ids())
def test_image_file_matches_manifest_sha256(name: str) -> None:
    entry = ENTRIES[name]
    data = image_path(entry).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert len(data) == entry["size"]


@pytest.mark.parametrize("name", entry_ids())
def test_image_abi(name: str) -> None:
    entry = ENTRIES[name]
    machine, bits = MACHINE[entry["arch"]]
    with image_path(entry).open("rb") as fh:
        elf = ELFFile(fh)
        assert elf["e_type"] == "ET_DYN"
        assert elf["e_machine"] == machine and elf.elfclass == bits

        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        assert len(loads) == 1
        assert loads[0]["p_flags"] == P_FLAGS.PF_R | P_FLAGS.PF_X
        assert loads[0]["p_vaddr"] == 0

        for section in elf.iter_sections():
            assert section["sh_type"] not in ("SHT_REL", "SHT_RELA"), section.name
            assert not (section.name.startswith((".data", ".bss")) and section["sh_size"])
        tags = {t.entry.d_tag for t in elf.get_section_by_name(".dynamic").iter_tags()}
        assert not tags & {"DT_REL", "DT_RELA", "DT_JMPREL", "DT_TEXTREL", "DT_NEEDED"}

        dynsym = elf.get_section_by_name(".dynsym")
        (entry_sym,) = dynsym.get_symbol_by_name("vdsofuzz_read")
        assert entry_sym["st_info"]["type"] == "STT_FUNC"
        assert entry_sym["st_info"]["bind"] == "STB_GLOBAL"
        assert entry_sym["st_shndx"] != "SHN_UNDEF"
        assert not [
            s.name for s in dynsym.iter_symbols() if s.name and s["st_shndx"] == "SHN_UNDEF"
        ]

        symtab = elf.get_section_by_name(".symtab")
        mask = (1 << bits) - 1
        for symbol, offset in PAGES.items():
            (sym,) = symtab.get_symbol_by_name(symbol)
            assert sym["st_value"] == offset & mask, symbol


def lds_assignments(text: str) -> dict[str, int]:
    """The `name = expression;` symbol assignments before SIZEOF_HEADERS, evaluated (the
    location counter `.` is 0 there, as the script sets it)."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    values: dict[str, int] = {".": 0}
    for name, expr in re.findall(r"^\s*([A-Za-z_.][A-Za-z_0-9]*)\s*=\s*([^;]+);", text, re.M):
        if "SIZEOF_HEADERS" in expr:
            break
        tree = ast.parse(expr.replace(".", "_dot_"), mode="eval")
        names = {k.replace(".", "_dot_"): v for k, v in values.items()}
        allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Load)
        allowed += (ast.Add, ast.Sub, ast.Mult, ast.USub)
        assert all(isinstance(n, allowed) for n in ast.walk(tree)), expr
        values[name] = eval(compile(tree, "vdso.lds", "eval"), {"__builtins__": {}}, names)
    return values


def test_linker_script_places_the_pages_where_the_abi_says() -> None:
    assigned = lds_assignments((ROOT / "vdso_blobs" / abi.LINKER_SCRIPT).read_text())
    assert {k: assigned.get(k) for k in abi.BLOB_PAGE_SYMBOLS} == abi.BLOB_PAGE_SYMBOLS
    recorded = MANIFEST["abi"]
    assert recorded["pages"] == {k: hex(v) for k, v in abi.BLOB_PAGE_SYMBOLS.items()}
    assert recorded["pvti_slot_size"] == abi.PVTI_SLOT


def test_manifest_fields() -> None:
    for entry in ENTRIES.values():
        assert entry["arch"] in ("x86_64", "i386")
        assert entry["generation"] in (1, 2, 3, "hyperv")
        assert entry["rdtsc"] in ("lfence", "rdtscp", "rdtsc")
        assert entry["source"].startswith("vdso_blobs/src/")
        assert (ROOT / entry["source"]).is_file()
        assert entry["compiler_version"]
        assert (entry["bug"] is None) == entry["reader"].startswith(
            ("modern", "vcpu0", "percpu", "hyperv")
        )


def test_modern_builds_keep_every_load_inside_the_window() -> None:
    modern = [e for e in ENTRIES.values() if e["reader"].startswith("modern")]
    assert {e["opt"] for e in modern} == {"O0", "O2", "Os"}
    for entry in modern:
        window = analyse_window(image_path(entry).read_bytes(), entry["name"])
        assert set(window.values()) <= {"inside", "present"}, entry["name"]


@pytest.mark.parametrize(
    "name", [n for n in entry_ids() if ENTRIES[n]["reader"] == "bug-no-barrier"]
)
def test_each_bug_no_barrier_build_moves_a_load_out_and_tears(name: str) -> None:
    """The compiled code, not the manifest: a field load leaves the version window, and a
    host update that other vCPUs watch then tears a read."""
    entry = ENTRIES[name]
    window = analyse_window(image_path(entry).read_bytes(), entry["name"])
    assert {k for k, v in window.items() if v not in ("inside", "present")}, window
    sc = Scenario(image=name, host="kvm", host_params={"park": 0})
    out = Fuzzer(sc).fuzz(strategy="random", seed=0, max_schedules=400)
    assert out.finding is not None and out.finding.oracle == "consistent"


@pytest.mark.parametrize("name", [n for n in entry_ids() if ENTRIES[n]["window"] is not None])
def test_window_analysis_of_committed_image_matches_manifest(name: str) -> None:
    entry = ENTRIES[name]
    assert analyse_window(image_path(entry).read_bytes(), name) == entry["window"]


def test_window_analysis_refuses_a_reader_without_a_pvti_seqlock() -> None:
    # The Hyper-V reader never loads a pvti version: no path enters the window.
    with pytest.raises(WindowError, match="no successful path"):
        analyse_window(image_path(ENTRIES["hyperv-x86_64-gcc-O2"]).read_bytes(), "hyperv")
    with pytest.raises(ImageError, match="not an ELF"):
        analyse_window(b"not an image")


def installed_version(compiler: str) -> str | None:
    if shutil.which(compiler) is None:
        return None
    out = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    return out.strip().splitlines()[0]


@pytest.mark.parametrize("name", ["modern-x86_64-gcc-O2", "bug-no-barrier-i386-clang-Os"])
def test_rebuild_reproduces_manifest_sha256(name: str, tmp_path: Path) -> None:
    entry = ENTRIES[name]
    spec = next(s for s in build_blobs.plan() if s.name == name)
    linker = build_blobs.TOOLCHAINS[spec.compiler].linker
    version = installed_version(entry["compiler"])
    # .ci/run installs the toolchain the manifest was built with (Debian 12's gcc, clang, lld);
    # another compiler version gives other bytes, which is a real mismatch to report.
    assert version is not None and shutil.which(linker), f"{entry['compiler']}/{linker} missing"
    assert version == entry["compiler_version"], (
        f"manifest built with {entry['compiler_version']!r}, found {version!r}: "
        "run the tests with that toolchain, or rebuild with tools/build_blobs.py"
    )
    built = build_blobs.build_one(spec, tmp_path)
    assert built.sha256 == entry["sha256"]
    assert built.window == entry["window"]
