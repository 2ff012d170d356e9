"""The plugin from an installed wheel: a fresh virtual environment gets the wheel, and
`pytest --vdso-image` there (outside the checkout) passes a real distribution vdso64.so and
fails a bundled seeded-bug image with its explanation.

The venv sees the already installed dependencies (`--system-site-packages`: the tests never
download anything) but vdsofuzz itself only from the wheel, which the test checks first.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEBIAN, ROOT, needs_samples

#: The distribution vDSO the installed plugin runs against (the newest sample).
VDSO64 = [p for p in DEBIAN if p.name == "vdso64.so"][-1:]


@pytest.fixture(scope="module")
def venv(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("plugin-venv")
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(home / "venv")], check=True
    )
    python = home / "venv" / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", "--force-reinstall", str(built_wheel)], check=True)
    return python


def pytest_in(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv), "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
    )


def test_the_venv_runs_vdsofuzz_and_its_plugin_from_the_wheel(venv, tmp_path):
    code = (
        "import emu, importlib.metadata as m\n"
        "print(emu.__file__)\n"
        "(ep,) = [e for e in m.entry_points(group='pytest11') if e.name == 'vdsofuzz']\n"
        "print(ep.load().__file__)\n"
    )
    done = subprocess.run([str(venv), "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    site = venv.parent.parent
    for line in done.stdout.splitlines():
        assert Path(line).is_relative_to(site) and not Path(line).is_relative_to(ROOT)


@needs_samples
def test_a_distribution_vdso64_passes_its_host_scenarios(venv, tmp_path):
    (image,) = VDSO64
    done = pytest_in(
        venv,
        tmp_path,
        "--vdso-image",
        str(image),
        "-k",
        "kvm-legacy-copy and not 1vcpu or xen-parked",
        "--vdso-schedules",
        "1000",
        f"--junitxml={tmp_path / 'junit.xml'}",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    assert 'name="kvm-legacy-copy"' in (tmp_path / "junit.xml").read_text()


def test_a_bundled_seeded_bug_fails_with_its_explanation(venv, tmp_path):
    done = pytest_in(
        venv,
        tmp_path,
        "--vdso-image",
        "bug-no-retry",
        "-k",
        "kvm and not legacy and not every and not masterclock and not migration",
        "--vdso-schedules",
        "1000",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "1 failed" in out and "expected pass, got violation (consistent)" in out
    assert "shared-page loads, each with the store it read:" in out
    finding = tmp_path / "vdsofuzz-out" / "pytest" / "bug-no-retry" / "image_kvm.json"
    assert (
        f"replay:  vdsofuzz replay {Path('vdsofuzz-out/pytest/bug-no-retry/image_kvm.json')}" in out
    )
    # The command the failure prints reproduces it with the installed tool.
    vdsofuzz = venv.parent / "vdsofuzz"
    again = subprocess.run(
        [str(vdsofuzz), "replay", str(finding)], cwd=tmp_path, capture_output=True, text=True
    )
    assert again.returncode == 1 and "VIOLATION of consistent" in again.stdout
