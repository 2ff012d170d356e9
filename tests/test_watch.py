"""`trace --watch FIELD`: every store and load of one field, with the values it held."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from emu.engine.choice import RunHost, RunTask
from emu.engine.decode import LOAD
from emu.errors import UsageError
from emu.report import watch
from emu.search.replay import Replay
from emu.search.schedule import Finding, Schedule
from tests.conftest import executor_for

LEGACY = ((2, RunHost()), (5, RunTask(1)))


def test_history_lists_every_load_and_store_of_the_field() -> None:
    ex = executor_for("modern", host="kvm-legacy-copy")
    run = ex.run(Replay(LEGACY))
    span = watch.resolve(ex, ["vcpu0.system_time"])["vcpu0.system_time"]
    hist = watch.history(ex, run, span)
    loads = [op for r in run.reads for op in r.ops if op.kind == LOAD and op.arg == span[0]]
    assert [a.t for a in hist if a.who.startswith("t")] == sorted(op.t for op in loads)
    stores = [a for a in hist if a.who == "host"]
    assert [a.what for a in stores] == [
        ev.step.label
        for ev in run.host
        if any(w.label == "vcpu0.system_time" for w in ev.step.writes)
    ]
    # A load after the store sees the stored value, one before sees the boot value.
    boot, new = hist[0].value, stores[0].value
    for a in hist:
        if a.who.startswith("t"):
            assert a.value == (new if a.t > stores[0].t else boot)


def test_byte_suffix_names_the_same_field_and_unknown_names_are_bad_input() -> None:
    ex = executor_for("modern", host="kvm-legacy-copy")
    assert watch.resolve(ex, ["vcpu0.tsc_timestamp+4"]) == watch.resolve(
        ex, ["vcpu0.tsc_timestamp"]
    )
    with pytest.raises(UsageError, match="close: vcpu0.system_time"):
        watch.resolve(ex, ["vcpu0.sytem_time"])


def test_cli_watch_and_unknown_field(tmp_path) -> None:
    ex = executor_for("modern", host="kvm-legacy-copy")
    f = Finding(Schedule(ex.scenario, ex.image.sha256, LEGACY), "consistent", "m", ("t1.r0",))
    path = f.save(tmp_path / "f.json")
    cmd = [sys.executable, "-m", "emu", "trace", str(path)]
    ok = subprocess.run([*cmd, "--watch", "vcpu0.version"], capture_output=True, text=True)
    assert ok.returncode == 1 and "vcpu0.version 0x2 -> 0x4" in ok.stdout
    bad = subprocess.run([*cmd, "--watch", "vcpu0.nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1 and not bad.stdout
    assert json.loads(path.read_text())["violation"]["oracle"] == "consistent"
