"""Shared fixtures: bundled images and executors, built once per session."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vdso_blobs
from emu.engine.executor import Executor
from emu.engine.scenario import Scenario
from emu.image.dump import read_maps

#: Distribution debug-package vDSOs: tools/fetch_vdso_samples.sh puts them here (CI runs it
#: through tools/install_toolchain.sh); the tests never download them.
SAMPLES = Path(os.environ.get("VDSOFUZZ_VDSO_SAMPLES", "~/vdso-samples")).expanduser()
DEBIAN = sorted(SAMPLES.glob("deb-*/vdso*.so")) if SAMPLES.is_dir() else []
#: For tests of the distribution samples: they run only where the samples are.
needs_samples = pytest.mark.skipif(
    not DEBIAN,
    reason=f"no distribution vDSO samples in {SAMPLES} (run tools/fetch_vdso_samples.sh)",
)
#: For tests that dump this machine's own `[vdso]`.
needs_running_vdso = pytest.mark.skipif(
    platform.system() != "Linux" or platform.machine() != "x86_64" or "[vdso]" not in read_maps(),
    reason="needs a running x86-64 Linux kernel with a vDSO",
)

_EXECUTORS: dict[tuple, Executor] = {}

ROOT = Path(__file__).resolve().parent.parent
#: Never copied into the build tree: a stale setuptools `build/` could leak old modules.
SKIP = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "*-out"
)


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built once per session (packaging and plugin tests)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=SKIP)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), "."],
        cwd=src,
        check=True,
        capture_output=True,
    )
    (built,) = (tmp / "dist").glob("vdsofuzz-*.whl")
    return built


def executor_for(image: str, **kw) -> Executor:
    """A cached executor for a scenario (Unicorn engines are costly to create)."""
    key = (image, tuple(sorted((k, str(v)) for k, v in kw.items())))
    if key not in _EXECUTORS:
        _EXECUTORS[key] = Executor(Scenario(image=image, **kw))
    return _EXECUTORS[key]


@pytest.fixture
def make_executor():
    return executor_for


def build_reader(tmp_path: Path, name: str, source: str, *flags: str) -> Path:
    """Compile a small reader of a test's own with the project's vDSO linker script."""
    cc = shutil.which("gcc")
    assert cc, "gcc is needed to build test readers (.ci/run installs it)"
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    out = tmp_path / f"{name}.so"
    cmd = [
        cc,
        "-O2",
        *flags,
        "-fPIC",
        "-shared",
        "-nostdlib",
        "-fno-asynchronous-unwind-tables",
        "-fcf-protection=none",
        "-Wl,--build-id=none",
        "-Wl,--hash-style=both",
        f"-Wl,-T,{vdso_blobs.path(vdso_blobs.LINKER_SCRIPT)}",
        "-o",
        str(out),
        str(src),
    ]
    subprocess.run(cmd, check=True)
    return out


@pytest.fixture(scope="session")
def legacy_copy_finding():
    """`modern` torn by `kvm-legacy-copy` (hypothesis, seed 0) and its executor: the finding
    the picture tests draw."""
    from emu.search.fuzz import Fuzzer

    fuzzer = Fuzzer(Scenario(image="modern", host="kvm-legacy-copy"))
    out = fuzzer.fuzz(strategy="hypothesis", seed=0)
    assert out.finding is not None
    return out.finding, fuzzer.executor
