"""The bundled host writers: committed files match the manifest's `writers`, every planned
build is there, what the manifest says each build stores is what it stores, and a rebuild
with the installed compilers gives the same bytes (tools/build_writers.py)."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import vdso_blobs
from emu.image.writer import load_writer

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> ModuleType:
    sys.path.insert(0, str(ROOT / "tools"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build_writers = _tool("build_writers")
WRITERS = {w["name"]: w for w in vdso_blobs.manifest()["writers"]}


def test_the_manifest_lists_every_planned_writer_and_its_aliases():
    assert sorted(WRITERS) == [s.name for s in build_writers.plan()]
    aliases = vdso_blobs.manifest()["writer_aliases"]
    assert aliases["writer-seqlock"] == "writer-seqlock-x86_64-gcc-O2"
    assert all(target in WRITERS for target in aliases.values())
    assert all(w["kind"] == "writer" and w["arch"] == "x86_64" for w in WRITERS.values())


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_each_writer_matches_its_manifest_entry(name):
    entry = WRITERS[name]
    data = vdso_blobs.path(entry["path"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert load_writer(name).sha256 == entry["sha256"]
    got = build_writers.analyse(data, name)
    assert got["stores"] == entry["stores"]
    assert got["odd_during_body"] == entry["odd_during_body"]


def test_what_the_manifest_says_about_each_protocol():
    for name, w in WRITERS.items():
        if w["writer"] in ("writer-seqlock", "writer-xen"):
            assert w["odd_during_body"], name
        if w["writer"].startswith("writer-seed-"):
            assert not w["odd_during_body"], name
            assert w["stores"][0].startswith("version"), name
        if w["writer"] == "writer-seqlock":
            assert w["as_written"] is True, name
    # the compiler really moved a store of the barrier-less writer in some build, not in all
    moved = {n: w["as_written"] for n, w in WRITERS.items() if w["writer"] == "writer-no-barrier"}
    assert set(moved.values()) == {True, False}


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_a_writer_rebuilds_byte_for_byte(tmp_path):
    spec = next(s for s in build_writers.plan() if s.name == "writer-seed-memcpy-x86_64-gcc-O2")
    out = tmp_path / "w.so"
    subprocess.run(
        build_writers.command(spec, out),
        cwd=ROOT,
        check=True,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "SOURCE_DATE_EPOCH": "0"},
    )
    assert hashlib.sha256(out.read_bytes()).hexdigest() == WRITERS[spec.name]["sha256"]
