"""`vdsofuzz trace --svg`: the picture is read back (xml.etree) and checked against the run
it draws: lanes, read attempts, loads, stores, reads-from arrows, parked shading, the
violating read; and the same finding gives the same bytes."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from emu.cli import main
from emu.engine.decode import LOAD
from emu.engine.executor import Executor
from emu.engine.readsfrom import BOOT, reads_from
from emu.engine.run import Op, Read
from emu.report import svg
from emu.report.timeline import attempts_of
from emu.report.trace import trace

TEXT = "{http://www.w3.org/2000/svg}text"


@pytest.fixture(scope="module")
def drawn(legacy_copy_finding):
    f, executor = legacy_copy_finding
    tr = trace(f.schedule, executor)
    return tr, executor, ET.fromstring(svg.svg(tr, executor))


def _all(root: ET.Element, cls: str) -> list[ET.Element]:
    return [e for e in root.iter() if cls in e.get("class", "").split()]


def test_a_lane_per_vcpu_with_its_tasks_and_one_for_the_host(drawn):
    tr, executor, root = drawn
    lanes = {e.get("data-lane"): e.get("data-tasks") for e in _all(root, "lane")}
    tasks = {f"vcpu{v}": set() for v in range(executor.scenario.vcpus)}
    for r in tr.run.reads:
        for op in r.ops:
            tasks[f"vcpu{op.vcpu}"].add(f"t{op.task}")
    assert lanes.pop("host") == ""
    assert {k: set(v.split()) for k, v in lanes.items()} == tasks


def test_every_load_is_a_mark_named_by_field_and_every_store_too(drawn):
    tr, executor, root = drawn
    run = tr.run
    loads = sorted((op.t, r.label, op.vcpu) for r in run.reads for op in r.ops if op.kind == LOAD)
    marks = sorted(
        (int(e.get("data-t")), e.get("data-read"), int(e.get("data-vcpu")))
        for e in _all(root, "load")
    )
    assert marks == loads
    names = {int(e.get("data-t")): e.get("data-field") for e in _all(root, "load")}
    assert names[loads[0][0]] == "vcpu0.version"
    stores = [(ev.t, w.label, w.new) for ev in run.host for w in ev.step.writes]
    drawn_stores = [
        (int(e.get("data-t")), e.get("data-field"), int(e.get("data-new")))
        for e in _all(root, "store")
    ]
    assert drawn_stores == stores
    # Each store mark's label says the field and the value stored.
    texts = {t.text for e in _all(root, "store") for t in e.iter(TEXT)}
    assert {f"{name}={new:#x}" for _, name, new in stores} == texts


def test_an_arrow_from_each_store_to_each_load_that_read_it(drawn):
    tr, executor, root = drawn
    sources = reads_from(
        tr.run, executor.machine.layout, executor.sites.widths, executor.image.vdso_data
    )
    expected = {(h, s.t) for s in sources for h in s.stores if h != BOOT}
    arrows = {(int(e.get("data-step")), int(e.get("data-load"))) for e in _all(root, "reads-from")}
    assert arrows == expected
    # The torn read of this finding: one load read the host's tsc_timestamp store, another
    # the boot system_time, and an arrow goes into the violating read.
    bad = {s.t for s in sources if s.read == tr.violations[0].reads[0]}
    assert any(load in bad for _, load in arrows)
    assert {int(e.get("data-load")) for e in _all(root, "bad") if e.tag.endswith("path")} <= bad


def test_read_attempts_are_bars_with_their_values_and_cover_every_operation(drawn):
    tr, _, root = drawn
    bars = _all(root, "attempt")
    for r in tr.run.reads:
        mine = [b for b in bars if b.get("data-read") == r.label]
        spans = [(int(b.get("data-start")), int(b.get("data-end"))) for b in mine]
        for op in r.ops:
            assert sum(lo <= op.t <= hi for lo, hi in spans) == 1, (r.label, op.t)
        last = max(mine, key=lambda b: int(b.get("data-start")))
        assert last.get("data-value") == str(r.value)
        assert all(b.get("data-outcome") == "retry" for b in mine if b is not last)
    # This finding has a read that retried: vCPU 0's first read overlaps the host's update.
    assert any(b.get("data-outcome") == "retry" for b in bars)


def test_parked_intervals_are_shaded_and_the_violating_read_highlighted(drawn):
    tr, _, root = drawn
    parked = [
        (int(e.get("data-from")), int(e.get("data-to")), int(e.get("data-vcpu")))
        for e in _all(root, "parked")
        if e.tag.endswith("rect")
    ]
    assert parked == [(a, b, v) for a, b, vs in tr.run.parked for v in sorted(vs)]
    assert parked
    v = tr.violations[0]
    bad = [b for b in _all(root, "attempt") if b.get("data-violation")]
    assert [(b.get("data-read"), b.get("data-violation")) for b in bad] == [(v.reads[0], v.oracle)]
    message = " ".join(e.text or "" for e in _all(root, "violation"))
    assert " ".join(f"VIOLATION of {v.oracle}: {v.message}".split()) == " ".join(message.split())


def test_the_same_finding_draws_the_same_bytes(legacy_copy_finding):
    f, executor = legacy_copy_finding
    first = svg.svg(trace(f.schedule, executor), executor)
    fresh = Executor(f.schedule.scenario)
    assert svg.svg(trace(f.schedule, fresh), fresh) == first


def test_trace_svg_writes_the_file_and_refuses_an_unwritable_path(
    legacy_copy_finding, tmp_path, capsys
):
    f, executor = legacy_copy_finding
    path = f.save(tmp_path / "finding.json")
    out = tmp_path / "t.svg"
    assert main(["trace", str(path), "--svg", str(out)]) == 1
    assert out.read_text() == svg.svg(trace(f.schedule, executor), executor)
    capsys.readouterr()
    assert main(["trace", str(path), "--svg", str(tmp_path / "no" / "t.svg")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vdsofuzz: --svg ") and err.count("\n") == 1


def test_attempts_split_at_each_retry_and_where_the_task_migrated():
    ops = [
        Op(0, 0, 0, LOAD, 0x10, 0),
        Op(1, 0, 0, LOAD, 0x20, 0),
        Op(2, 0, 0, LOAD, 0x10, 0),  # back at the first load: a retry
        Op(3, 0, 1, LOAD, 0x20, 0),  # same pass, now on vCPU 1
        Op(4, 0, 1, LOAD, 0x30, 0),
    ]
    read = Read(task=0, index=0, vcpu=0, start=0, end=4, outcome="value", value=7, ops=ops)
    got = [(a.index, a.vcpu, a.start, a.end, a.outcome, a.value) for a in attempts_of(read)]
    assert got == [(0, 0, 0, 1, "retry", None), (1, 0, 2, 2, "value", 7), (1, 1, 3, 4, "value", 7)]


def test_a_task_that_migrates_mid_read_is_drawn_on_both_vcpus(make_executor):
    from emu.search.schedule import Schedule, parse_choice

    executor = make_executor("percpu", host="unsynced-tsc", task_migration=True)
    choices = tuple((p, parse_choice(c)) for p, c in ((2, "t0>v1"), (8, "t0>v0")))
    tr = trace(Schedule(executor.scenario, executor.image.sha256, choices), executor)
    root = ET.fromstring(svg.svg(tr, executor))
    moves = [
        (r.label, b.vcpu)
        for r in tr.run.reads
        for a, b in zip(r.ops, r.ops[1:], strict=False)
        if a.vcpu != b.vcpu
    ]
    lines = [(e.get("data-read"), int(e.get("data-to"))) for e in _all(root, "migration")]
    assert lines == moves and moves
    bars = {(b.get("data-read"), int(b.get("data-vcpu"))) for b in _all(root, "attempt")}
    assert {(label, v) for label, v in moves} <= bars
