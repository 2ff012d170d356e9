"""Bad input to the debugging commands: one line on stderr, exit 2, nothing else done."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from emu.engine.choice import RunHost, RunTask
from emu.search.schedule import Finding, Schedule
from tests.conftest import executor_for


def _vdsofuzz(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emu", *args], capture_output=True, text=True)


def _bad(p: subprocess.CompletedProcess[str], *words: str) -> None:
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not p.stdout
    for w in words:
        assert w in p.stderr


@pytest.fixture
def finding(tmp_path):
    ex = executor_for("modern", host="kvm-legacy-copy")
    sched = Schedule(ex.scenario, ex.image.sha256, ((2, RunHost()), (5, RunTask(1))))
    return Finding(sched, "consistent", "m", ("t1.r0",)).save(tmp_path / "f.json")


@pytest.mark.parametrize("command", ["explain", "trace", "replay"])
def test_a_finding_for_another_image(finding, command):
    d = json.loads(finding.read_text())
    d["image_sha256"] = "0" * 64
    finding.write_text(json.dumps(d))
    _bad(_vdsofuzz(command, str(finding)), "recorded for image sha256 0000000000000000")


def test_unknown_watch_field(finding):
    _bad(_vdsofuzz("trace", str(finding), "--watch", "vcpu0.system_tim"), "vcpu0.system_time")


def test_unwritable_output_paths(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _bad(_vdsofuzz("fuzz", "--out", str(blocker / "out")), "--out", "cannot write")
    _bad(_vdsofuzz("check", "--only", "kvm-legacy", "--junit", str(tmp_path)), "--junit")
    _bad(_vdsofuzz("check", "--only", "kvm-legacy", "--junit", str(blocker / "j.xml")), "--junit")


def test_hang_limit_must_be_positive(finding):
    _bad(_vdsofuzz("fuzz", "--max-insns", "0"), "--max-insns")
    _bad(_vdsofuzz("trace", str(finding), "--max-insns", "-5"), "--max-insns")
