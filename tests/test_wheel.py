"""Packaging: the wheel carries what an installed tool reads at run time, and the Unicorn pin
matches the range the engine checks for."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import vdso_blobs
from emu.engine import binding
from emu.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(built_wheel: Path) -> zipfile.ZipFile:
    return zipfile.ZipFile(built_wheel)


def test_wheel_carries_the_images_manifest_catalog_lane_and_type_markers(wheel):
    names = set(wheel.namelist())
    images = {
        n.removeprefix("vdso_blobs/images/") for n in names if n.startswith("vdso_blobs/images/")
    }
    man = vdso_blobs.manifest()
    assert images == {e["path"].rsplit("/", 1)[1] for e in man["images"] + man["writers"]}
    for needed in (
        "vdso_blobs/__init__.py",
        "vdso_blobs/manifest.json",
        "vdso_blobs/catalog.json",
        "vdso_blobs/vdso.lds",
        "emu/engine/lane.c",
        "emu/py.typed",
        "host_model/py.typed",
        "host_model/abi.py",
    ):
        assert needed in names, needed
    assert (
        wheel.read("vdso_blobs/manifest.json") == (ROOT / "vdso_blobs/manifest.json").read_bytes()
    )
    assert not [n for n in names if n.startswith(("tests/", "tools/"))]


def test_the_package_reads_its_data_through_importlib_resources():
    assert vdso_blobs.path("catalog.json").read_bytes()
    entry = vdso_blobs.manifest()["images"][0]
    assert vdso_blobs.path(entry["path"]).read_bytes()[:4] == b"\x7fELF"


def test_unicorn_pin_is_the_range_the_engine_checks():
    text = (ROOT / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M)
    assert deps, "pyproject.toml has a dependencies list"
    pins = re.findall(r'"(unicorn[^"]*)"', deps.group(1))
    assert pins == [f"unicorn{binding.SUPPORTED_TEXT}"]
    binding.check()  # the installed one is in range


@pytest.mark.parametrize("version", ["2.0.1.post1", "2.1.0", "2.2.0", "3.0.0"])
def test_an_unsupported_unicorn_is_refused_with_the_range(monkeypatch, version):
    monkeypatch.setattr(binding.metadata, "version", lambda _name: version)
    with pytest.raises(UsageError, match=rf"unicorn {version} is not supported: .*>=2\.1\.1,<2\.2"):
        binding.check()


def test_the_cli_refuses_an_unsupported_unicorn_in_one_line(tmp_path):
    # A fresh interpreter that believes unicorn 2.0.1 is installed, then runs `fuzz`.
    code = (
        "import importlib.metadata as m, sys\n"
        "real = m.version\n"
        "m.version = lambda n: '2.0.1' if n == 'unicorn' else real(n)\n"
        "from emu.cli import main\n"
        "sys.exit(main(['fuzz', '--out', sys.argv[1]]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "vdsofuzz: unicorn 2.0.1 is not supported: vdsofuzz needs unicorn >=2.1.1,<2.2 "
        "(pip install 'unicorn>=2.1.1,<2.2')"
    ]
