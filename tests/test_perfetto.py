"""`vdsofuzz trace --perfetto`: the written file is read back through the perfetto package's
protobuf definitions (no trace processor) and checked against the run: tracks, slices for
read attempts and instructions, flows for reads-from, a counter per field."""

from __future__ import annotations

from collections import defaultdict

import pytest
from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace, TrackEvent

from emu.cli import main
from emu.engine.decode import LOAD
from emu.engine.readsfrom import BOOT, reads_from
from emu.report import perfetto_trace
from emu.report.trace import trace


@pytest.fixture(scope="module")
def written(legacy_copy_finding, tmp_path_factory):
    f, executor = legacy_copy_finding
    path = f.save(tmp_path_factory.mktemp("pf") / "finding.json")
    out = path.parent / "run.pftrace"
    assert main(["trace", str(path), "--perfetto", str(out)]) == 1
    tr = trace(f.schedule, executor)
    return tr, executor, Trace.FromString(out.read_bytes()), out.read_bytes()


def _slices(t: Trace) -> dict[int, list[tuple[int, str, TrackEvent]]]:
    """Track uuid -> [(ts, name, begin event)] of every slice, with its end checked."""
    open_: dict[int, list[tuple[int, str, TrackEvent]]] = defaultdict(list)
    done: dict[int, list[tuple[int, str, TrackEvent]]] = defaultdict(list)
    for p in t.packet:
        ev = p.track_event
        if not p.HasField("track_event"):
            continue
        if ev.type == TrackEvent.TYPE_SLICE_BEGIN:
            open_[ev.track_uuid].append((p.timestamp, ev.name, ev))
        elif ev.type == TrackEvent.TYPE_SLICE_END:
            ts, name, begin = open_[ev.track_uuid].pop()  # properly nested
            assert p.timestamp > ts
            done[ev.track_uuid].append((ts, name, begin))
    assert not any(open_.values())
    return done


def _tracks(t: Trace) -> dict[int, str]:
    return {
        p.track_descriptor.uuid: p.track_descriptor.name
        for p in t.packet
        if p.HasField("track_descriptor")
    }


def test_a_track_per_vcpu_and_one_for_the_host(written):
    tr, executor, t, _ = written
    names = _tracks(t)
    assert names[perfetto_trace.HOST_TRACK] == "host"
    for v in range(executor.scenario.vcpus):
        assert names[perfetto_trace.VCPU_TRACK + v] == f"vCPU {v} (t{v})"


def test_slices_for_instructions_read_attempts_and_host_steps(written):
    tr, executor, t, _ = written
    slices = _slices(t)
    insns = [s for s in tr.steps if s.kind == "insn"]
    got = sum(
        1
        for v in range(executor.scenario.vcpus)
        for _, _, ev in slices[perfetto_trace.VCPU_TRACK + v]
        if any(a.name == "where" for a in ev.debug_annotations)
    )
    assert got == len(insns)
    reads = {r.label: r for r in tr.run.reads}
    attempts = [
        (name, ev)
        for v in range(executor.scenario.vcpus)
        for _, name, ev in slices[perfetto_trace.VCPU_TRACK + v]
        if any(a.name == "read" for a in ev.debug_annotations)
    ]
    final = {name.split()[0]: name for name, _ in attempts if "retry" not in name}
    assert final == {label: f"{label} value {r.value}" for label, r in reads.items()}
    bad = [
        (name.split()[0], a.string_value)
        for name, ev in attempts
        for a in ev.debug_annotations
        if a.name == "violation"
    ]
    v = tr.violations[0]
    assert bad == [(v.reads[0], f"{v.oracle}: {v.message}")]
    host = [name for _, name, _ in sorted(slices[perfetto_trace.HOST_TRACK], key=lambda s: s[0])]
    assert host == [e.step.label for e in tr.run.host]


def test_flows_go_from_each_store_to_the_loads_that_read_it(written):
    tr, executor, t, _ = written
    slices = _slices(t)
    out = {f: name for _, name, ev in slices[perfetto_trace.HOST_TRACK] for f in ev.flow_ids}
    into: dict[int, int] = {}
    for v in range(executor.scenario.vcpus):
        for _, _, ev in slices[perfetto_trace.VCPU_TRACK + v]:
            t_ = next((a.int_value for a in ev.debug_annotations if a.name == "t"), None)
            for f in ev.terminating_flow_ids:
                into[f] = t_
    assert set(out) == set(into)
    host = tr.run.host
    got = sorted((out[f], into[f]) for f in out)
    sources = reads_from(
        tr.run, executor.machine.layout, executor.sites.widths, executor.image.vdso_data
    )
    expected = sorted((host[h].step.label, s.t) for s in sources for h in set(s.stores) - {BOOT})
    assert got == expected and got
    # Only loads end flows.
    loads = {op.t for r in tr.run.reads for op in r.ops if op.kind == LOAD}
    assert set(into.values()) <= loads


def test_a_counter_per_field_stepping_at_each_store(written):
    tr, _, t, _ = written
    names = _tracks(t)
    counters = {
        p.track_descriptor.uuid
        for p in t.packet
        if p.HasField("track_descriptor") and p.track_descriptor.HasField("counter")
    }
    fields = {names[u] for u in counters}
    assert {"vcpu0.version", "vcpu0.tsc_timestamp", "vcpu0.system_time", "vcpu0.flags"} <= fields
    values = defaultdict(list)
    for p in t.packet:
        if p.HasField("track_event") and p.track_event.type == TrackEvent.TYPE_COUNTER:
            values[names[p.track_event.track_uuid]].append(p.track_event.counter_value)
    for ev in tr.run.host:
        for w in ev.step.writes:
            assert values[w.label][0] == w.old or w.old in values[w.label]
            assert w.new in values[w.label]
    assert values["vcpu0.version"] == [2, 4]


def test_the_same_finding_writes_the_same_bytes(written):
    tr, executor, _, data = written
    assert perfetto_trace.perfetto(tr, executor) == data


def test_a_migrating_task_keeps_the_slices_of_each_vcpu_nested(make_executor):
    from emu.search.schedule import Schedule, parse_choice

    executor = make_executor("percpu", host="unsynced-tsc", task_migration=True)
    choices = tuple((p, parse_choice(c)) for p, c in ((2, "t0>v1"), (8, "t0>v0")))
    tr = trace(Schedule(executor.scenario, executor.image.sha256, choices), executor)
    t = Trace.FromString(perfetto_trace.perfetto(tr, executor))
    slices = _slices(t)  # checks every end closes the innermost open slice of its track
    on = {v: {n.split()[0] for _, n, _ in slices[perfetto_trace.VCPU_TRACK + v]} for v in (0, 1)}
    assert "t0.r0" in on[0] and "t0.r0" in on[1]
