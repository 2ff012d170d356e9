"""`dpor` and `exhaustive` runs that start from a snapshot (emu/engine/snapshot.py) record
exactly the runs that re-executing from the start records: every execution's run and
verdicts, and the search's counts, on scenarios that exercise each part of the restored
state (parked vCPUs, TSC retunes, a Hyper-V host, three vCPUs, several reads, stack
arguments, guest task migrations, the guest kernel's timekeeping); and a snapshot resumes
to the same run at any decision point, even after fairness or task switches changed the
saved contexts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import emu.engine.snapshot
from emu.engine.choice import Choice, RunHost, RunTask
from emu.engine.executor import Executor
from emu.engine.run import Run
from emu.engine.scenario import Scenario
from emu.engine.scheduler import PointInfo
from emu.engine.snapshot import Snapshot
from emu.image.dump import dump_running_vdso
from emu.oracles import judge
from emu.search.dpor import DporStrategy
from emu.search.dpor_sched import DporRun
from emu.search.exhaustive import ExhaustiveStrategy, Guided
from emu.search.fuzz import Fuzzer
from emu.search.strategy import Result


def _record(run: Run, sc: Scenario) -> tuple[Any, ...]:
    """Everything a run recorded, its clock records, TSCs and parked intervals, and its
    verdicts."""
    history = {k: [(t, repr(s)) for t, s in v] for k, v in sorted(run.history.items())}
    verdicts = [(v.oracle, v.message, v.reads) for v in judge(run, sc)]
    keys = [sorted(r.keys) for r in run.reads]
    return run.outcome(), history, run.clock.segments, run.parked, keys, verdicts


def _search(
    sc: Scenario, bound: int | None, resume: bool, monkeypatch, strategy: str = "dpor"
) -> tuple[Any, ...]:
    """Every execution's record, in order, and the counts; `resume=False`: every run from
    the start (the scheduler offers no snapshot), as before snapshots."""
    with monkeypatch.context() as m:
        if not resume:
            m.setattr(DporRun, "start_from", lambda self: None)
            m.setattr(Guided, "start_from", lambda self: None)
        restored = []
        real = emu.engine.snapshot.restore
        m.setattr(
            emu.engine.snapshot,
            "restore",
            lambda *a: restored.append(a[1].point) or real(*a),
        )
        c = Fuzzer(sc)
        runs: list[tuple[Any, ...]] = []

        def run_one(s: DporRun) -> Result:
            run = c.executor.run(s)
            runs.append(_record(run, sc))
            return Result(False, run.points)

        if strategy == "exhaustive":
            e = ExhaustiveStrategy(bound or 1)
            e.explore(run_one, 10**9)
            assert e.complete
            counts: tuple[Any, ...] = (e.interleavings, e.pruned, e.commuted)
        else:
            d = DporStrategy(bound, assume_retries=sc.independent_attempts)
            d.explore(run_one, 10**9)
            assert d.complete
            counts = (d.executions, len(d.classes), d.blocked, d.redundant)
    assert bool(restored) == resume
    if resume:
        assert len(restored) >= counts[0] // 2, "most runs start from a snapshot"
    return (runs, *counts)


SCENARIOS = [
    ("modern", "kvm", {"updates": 1}, 2, 1, 2, {}),
    # No parking: a reader spins on the odd version until fairness moves on.
    ("modern", "kvm", {"updates": 1, "park": 0}, 2, 1, 1, {}),
    ("bug-no-retry", "kvm", {"updates": 1, "park": 0}, 2, 1, None, {}),
    ("modern", "kvm", {"updates": 1, "tsc_jump": 1000, "tsc_hz": 2_000_000_000}, 2, 1, 1, {}),
    ("modern", "kvm-masterclock", {"updates": 1}, 2, 1, 2, {}),
    ("modern", "kvm-migration", {}, 2, 1, 1, {}),
    ("hyperv", "hyperv", {"updates": 1}, 2, 1, 1, {}),
    ("modern", "kvm", {"updates": 1}, 3, 1, 1, {}),
    ("modern-i386", "kvm", {"updates": 1}, 2, 2, 1, {}),
    # Guest task migrations: snapshots at migration points only.
    ("percpu", "unsynced-tsc", {}, 2, 1, 1, {"task_migration": True}),
    ("modern", "kvm", {"updates": 1}, 2, 1, 1, {"task_migration": True}),
    ("modern", "kvm", {"updates": 1}, 2, 1, 1, {"speculative_tsc": True}),
]


@pytest.mark.parametrize("strategy", ["dpor", "exhaustive"])
@pytest.mark.parametrize(("image", "host", "params", "vcpus", "reads", "bound", "kw"), SCENARIOS)
def test_runs_from_snapshots_equal_runs_from_the_start(
    image, host, params, vcpus, reads, bound, kw, strategy, monkeypatch
):
    sc = Scenario(image=image, host=host, host_params=params, vcpus=vcpus, reads=reads, **kw)
    fresh = _search(sc, bound, False, monkeypatch, strategy)
    # Speculative TSCs: no snapshots (the runs are the same, from the start).
    resumed = _search(sc, bound, not sc.speculative_tsc, monkeypatch, strategy)
    assert resumed[1:] == fresh[1:]
    assert resumed[0] == fresh[0]


def test_guest_timekeeping_is_restored_too(tmp_path: Path, monkeypatch):
    sc = Scenario(image=str(dump_running_vdso(tmp_path)), host="kvm", timekeeping=1, reads=1)
    assert _search(sc, 1, True, monkeypatch) == _search(sc, 1, False, monkeypatch)


#: Choices that make a reader spin: the host opens an update, then a reader spins on the
#: odd version until fairness moves on (SPIN events).
SPINS = {4: RunHost(), 5: RunTask(0)}
#: Choices that switch between the two tasks in the middle of their reads, twice each.
SWITCHES = {1: RunTask(1), 3: RunTask(0), 5: RunTask(1), 7: RunTask(0), 9: RunTask(1)}


class _Take(DporRun):
    """Takes the choices in `want` (else the default), and a snapshot at point `at`."""

    def __init__(self, at: int, want: dict[int, Choice], start: object | None = None) -> None:
        super().__init__([], None)
        self.at, self.want, self.start = at, want, start
        self.snap: object | None = None

    def choose(self, point: int, options, info: PointInfo | None) -> int:
        assert info is not None
        if point == self.at and info.snapshot is not None:
            self.snap = info.snapshot()
        want = self.want.get(point)
        return options.index(want) if want in options else 0

    def start_from(self) -> object | None:
        return self.start


@pytest.mark.parametrize("want", [SPINS, SWITCHES], ids=["spins", "switches"])
def test_a_snapshot_resumes_to_the_same_run_and_only_on_its_executor(want):
    sc = Scenario(image="modern", host="kvm", host_params={"updates": 2, "park": 0}, reads=2)
    ex, other = Executor(sc), Executor(sc)
    whole = ex.run(_Take(-1, want))
    assert len(whole.choices) == len(want)
    for at in range(0, whole.points, 2):
        take = _Take(at, want)
        assert ex.run(take).outcome() == whole.outcome()
        assert isinstance(take.snap, Snapshot) and take.snap.point == at
        assert ex.run(_Take(-1, want, take.snap)).outcome() == whole.outcome()
        # Another executor cannot use it: it runs from the start, to the same run.
        assert other.run(_Take(-1, want, take.snap)).outcome() == whole.outcome()


def test_no_snapshots_with_speculation_and_with_migrations_only_at_migration_points():
    ex = Executor(Scenario(image="modern", host="kvm", reads=1, speculative_tsc=True))
    take = _Take(0, {})
    ex.run(take)
    assert take.snap is None
    ex = Executor(Scenario(image="modern", host="kvm", reads=1, task_migration=True))
    took = []
    for at in range(4):
        take = _Take(at, {})
        ex.run(take)
        took.append(take.snap is not None)
    # Each choice of the next agent is a migration point, then an agent point.
    assert took == [True, False, True, False]
