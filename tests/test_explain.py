"""`explain`: the cause of a finding, computed from its run (values, stores, checks)."""

from __future__ import annotations

from emu.engine.choice import RunHost, RunTask
from emu.engine.executor import Executor
from emu.engine.readsfrom import reads_from
from emu.oracles import judge
from emu.report.explain import explain
from emu.report.pagehist import PageHistory
from emu.search.replay import Replay
from emu.search.schedule import Schedule
from tests.conftest import executor_for

#: The README's first finding: the host's legacy copy lands between t1's loads.
LEGACY = ((2, RunHost()), (5, RunTask(1)))


def _legacy() -> tuple[Schedule, Executor]:
    ex = executor_for("modern", host="kvm-legacy-copy")
    return Schedule(ex.scenario, ex.image.sha256, LEGACY), ex


def test_page_history_ends_where_the_machine_ends() -> None:
    """Rebuilding the pages from the boot image and the host's stores gives the bytes the
    machine holds after the run (so every load value the explanation shows is the real one)."""
    sched, ex = _legacy()
    run = ex.run(Replay(sched.choices))
    pages = PageHistory(ex, run)
    lo, hi = ex.machine.layout.shared
    end = run.steps + 1
    assert bytes(pages.byte(a, end) for a in range(lo, hi)) == bytes(ex.uc.mem_read(lo, hi - lo))


def test_explains_the_torn_read_from_its_loads() -> None:
    sched, ex = _legacy()
    e = explain(sched, ex)
    assert e.oracle == "consistent" and e.read == "t1.r0"
    by_field = {ld.field: ld for ld in e.loads}
    # tsc_timestamp came from the host's new store, system_time from boot: the tear.
    assert by_field["vcpu0.tsc_timestamp"].stores != by_field["vcpu0.system_time"].stores
    assert by_field["vcpu0.system_time"].store == "boot"
    assert by_field["vcpu0.tsc_timestamp"].store.startswith("host t=")
    assert "match no published record" in " ".join(e.check)
    # The gap is the value minus what each record gives at the read's TSC.
    run = ex.run(Replay(sched.choices))
    read = next(r for r in run.reads if r.label == "t1.r0")
    assert e.value == read.value
    assert e.gaps and all(g.delta == read.value - g.expected for g in e.gaps)
    assert all(g.delta != 0 for g in e.gaps)
    # The check: version read even and equal, the host never made it odd.
    story = " ".join(e.check)
    assert "vcpu0.version read 4" in story and "never made it odd" in story
    text = e.text()
    assert "nearest passing schedule" in text and len(text.splitlines()) < 30


def test_nearest_passing_schedule_passes_and_is_one_edit_away() -> None:
    sched, ex = _legacy()
    e = explain(sched, ex)
    assert e.nearest is not None
    from emu.search.schedule import parse_choice

    choices = tuple(
        (int(p), parse_choice(lab)) for p, lab in (x.split(":") for x in e.nearest.schedule.split())
    )
    assert not judge(ex.run(Replay(choices)), ex.scenario)
    assert abs(len(choices) - len(LEGACY)) <= 1
    assert e.nearest.differences


def test_a_passing_schedule_explains_nothing() -> None:
    ex = executor_for("modern", host="kvm-legacy-copy")
    e = explain(Schedule(ex.scenario, ex.image.sha256, ()), ex)
    assert e.oracle is None and e.text().startswith("no violation")
    assert e.as_json()["oracle"] is None


def test_json_carries_the_same_loads() -> None:
    sched, ex = _legacy()
    e = explain(sched, ex)
    d = e.as_json()
    run = ex.run(Replay(sched.choices))
    lay = ex.machine.layout
    mine = [s for s in reads_from(run, lay, ex.sites.widths) if s.read == "t1.r0"]
    assert [ld["field"] for ld in d["loads"]] == [s.field for s in mine]
    assert d["read"] == "t1.r0" and d["oracle"] == "consistent"


def _catalog_finding(name: str, oracle: str):
    from emu.search import catalog
    from emu.search.fuzz import Fuzzer

    entry = next(e for e in catalog.load() if e.name == name)
    fz = Fuzzer(entry.scenario)
    f = fz.fuzz(strategy="random", seed=0, max_schedules=5000).finding
    assert f is not None and f.oracle == oracle
    return f, fz.executor


def test_a_flag_read_once_before_the_loop_is_named_stale() -> None:
    """vcpu0's reader checks the stable bit once before its loop: the explanation names
    the flags load made before the last attempt and the value the flags had by the end."""
    f, ex = _catalog_finding("vcpu0/kvm-migration", "contract")
    e = explain(f.schedule, ex, f.oracle)
    assert "flags read 0x1" in e.stale and "0x0 by" in e.stale


def test_a_monotonic_pair_names_the_other_read() -> None:
    f, ex = _catalog_finding("modern/unsynced-tsc", "monotonic")
    e = explain(f.schedule, ex, f.oracle)
    run = ex.run(Replay(f.schedule.choices))
    other = next(r for r in run.reads if r.label in f.reads and r.label != e.read)
    assert e.value is not None and other.value is not None
    assert e.others == [
        f"against {other.label} on vcpu{other.vcpu} (t={other.start}..{other.end}), which "
        f"returned {other.value}, {other.value - e.value} ns more"
    ]
