"""The timeline of a replayed run as a Perfetto trace (`vdsofuzz trace --perfetto`).

Written with the `perfetto` package's `TraceProtoBuilder`, for ui.perfetto.dev: a track per
vCPU and one for the host; on a vCPU's track a slice per read attempt with a slice per
guest instruction nested in it; on the host's track a slice per host step; a flow from each
host store to every load that read its bytes (reads-from); a counter track per shared-page
field the run stored or loaded, stepping at each store.

Perfetto wants nanoseconds; the run has logical time and, between two visible operations,
several instructions. So every trace step (instruction, host step) gets its own
microsecond, in execution order: `ts = STEP * (position in the trace)`.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import (
    CounterDescriptor,
    TracePacket,
    TrackEvent,
)
from perfetto.trace_builder.proto_builder import TraceProtoBuilder

from emu.engine.executor import Executor
from emu.errors import UsageError
from emu.report.timeline import Timeline, timeline
from emu.report.trace import Step, Trace

#: Nanoseconds per trace step.
STEP = 1000
#: Track uuids: the host, then the vCPUs, then the counters (small and fixed, so the same
#: run gives the same bytes).
HOST_TRACK, VCPU_TRACK, COUNTER_TRACK = 1, 100, 10_000
SEQUENCE = 1
#: Order of events at one timestamp: inner slices end before outer ones, outer slices begin
#: before inner ones.
_END_INNER, _END_OUTER, _BEGIN_OUTER, _BEGIN_INNER, _OTHER = range(5)
_I64 = 2**63 - 1


@dataclass(order=True)
class _Event:
    ts: int
    rank: int
    seq: int
    fill: Callable[[TrackEvent], None] = field(compare=False)


class _Builder:
    def __init__(self, tr: Trace, tl: Timeline) -> None:
        self.tr, self.tl = tr, tl
        self.events: list[_Event] = []
        #: Logical time of a visible instruction -> its trace position; host step -> same.
        self.at_t: dict[int, int] = {}
        self.at_host: list[int] = []
        for k, s in enumerate(tr.steps):
            if s.kind == "insn" and s.visible:
                self.at_t[s.t] = k
            elif s.kind == "host":
                self.at_host.append(k)
        self.times = sorted(self.at_t)

    def pos(self, t: int) -> int:
        """The trace position of the visible instruction at logical time `t` (or, for a
        time the trace shows no instruction at, the next one's)."""
        if t in self.at_t:
            return self.at_t[t]
        i = bisect.bisect_left(self.times, t)
        return self.at_t[self.times[min(i, len(self.times) - 1)]] if self.times else 0

    def add(self, ts: int, rank: int, fill: Callable[[TrackEvent], None]) -> None:
        self.events.append(_Event(ts, rank, len(self.events), fill))

    def slice(self, track: int, start: int, end: int, name: str, inner: bool, **extra: Any) -> None:
        """A slice over trace positions start..end (end excluded)."""
        flows_out: list[int] = extra.pop("flows", [])
        flows_in: list[int] = extra.pop("terminating", [])

        def begin(ev: TrackEvent) -> None:
            ev.type = TrackEvent.TYPE_SLICE_BEGIN
            ev.track_uuid = track
            ev.name = name
            ev.flow_ids.extend(flows_out)
            ev.terminating_flow_ids.extend(flows_in)
            for key, value in extra.items():
                a = ev.debug_annotations.add()
                a.name = key
                if isinstance(value, int) and -_I64 <= value <= _I64:
                    a.int_value = value
                else:
                    a.string_value = str(value)

        def end_(ev: TrackEvent) -> None:
            ev.type = TrackEvent.TYPE_SLICE_END
            ev.track_uuid = track

        self.add(start * STEP, _BEGIN_INNER if inner else _BEGIN_OUTER, begin)
        self.add(end * STEP, _END_INNER if inner else _END_OUTER, end_)

    def counter(self, track: int, pos: int, value: int) -> None:
        def fill(ev: TrackEvent) -> None:
            ev.type = TrackEvent.TYPE_COUNTER
            ev.track_uuid = track
            if value <= _I64:
                ev.counter_value = value
            else:
                ev.double_counter_value = float(value)

        self.add(pos * STEP, _OTHER, fill)


def _instructions(b: _Builder, flows_in: dict[int, list[int]]) -> None:
    for k, s in enumerate(b.tr.steps):
        if s.kind != "insn":
            continue
        vcpu = int(s.who.split("/v", 1)[1])
        extra: dict[str, Any] = {"t": s.t, "task": s.who.split("/", 1)[0], "where": s.where}
        if s.mem:
            extra["reads"] = " ".join(f"{n}={v:#x}" for n, v in s.mem)
        if s.regs:
            extra["writes"] = " ".join(f"{r}={new:#x}" for r, (_, new) in s.regs.items())
        if s.source:
            extra["source"] = s.source
        term = flows_in.get(s.t, []) if s.visible else []
        b.slice(VCPU_TRACK + vcpu, k, k + 1, s.text, True, terminating=term, **extra)


def _attempts(b: _Builder) -> None:
    bad = b.tl.violation
    for a in b.tl.attempts:
        name = f"{a.read} {a.outcome}" + (f" {a.value}" if a.value is not None else "")
        extra: dict[str, Any] = {"read": a.read, "attempt": a.index, "outcome": a.outcome}
        if a.value is not None:
            extra["value"] = a.value
        if bad is not None and a.read in bad.reads and a.outcome != "retry":
            extra["violation"] = f"{bad.oracle}: {bad.message}"
        start, end = b.pos(a.start), b.pos(a.end) + 1
        b.slice(VCPU_TRACK + a.vcpu, start, end, name, False, **extra)


def _host(b: _Builder, flows_out: dict[int, list[int]]) -> None:
    for h, t, label in b.tl.host:
        k = b.at_host[h]
        b.slice(HOST_TRACK, k, k + 1, label, True, t=t, flows=flows_out.get(h, []))


def _counters(b: _Builder, steps: list[Step]) -> list[str]:
    """A counter per field stored or loaded: its first value at 0, then each store."""
    first: dict[str, int] = {}
    for s in b.tl.stores:
        first.setdefault(s.field, s.old)
    for step in steps:
        for name, value in step.mem:
            first.setdefault(name, value)
    names = sorted(first)
    for i, name in enumerate(names):
        b.counter(COUNTER_TRACK + i, 0, first[name])
    track = {n: COUNTER_TRACK + i for i, n in enumerate(names)}
    for s in b.tl.stores:
        b.counter(track[s.field], b.at_host[s.step], s.new)
    return names


def _descriptors(builder: TraceProtoBuilder, tl: Timeline, counters: list[str]) -> None:
    tracks = [(HOST_TRACK, "host")] + [
        (VCPU_TRACK + v, f"vCPU {v} ({' '.join(tl.tasks.get(v, [])) or 'idle'})")
        for v in range(tl.vcpus)
    ]
    for uuid, name in tracks:
        p = builder.add_packet()
        p.track_descriptor.uuid = uuid
        p.track_descriptor.name = name
    for i, name in enumerate(counters):
        p = builder.add_packet()
        p.track_descriptor.uuid = COUNTER_TRACK + i
        p.track_descriptor.name = name
        p.track_descriptor.counter.unit = CounterDescriptor.UNIT_COUNT


def build(tr: Trace, tl: Timeline) -> bytes:
    """The serialized Perfetto trace of a traced run and its timeline."""
    b = _Builder(tr, tl)
    flows_out: dict[int, list[int]] = {}
    flows_in: dict[int, list[int]] = {}
    for flow, arrow in enumerate(tl.arrows, start=1):
        flows_out.setdefault(tl.stores[arrow.store].step, []).append(flow)
        flows_in.setdefault(arrow.load, []).append(flow)
    _instructions(b, flows_in)
    _attempts(b)
    _host(b, flows_out)
    counters = _counters(b, tr.steps)
    builder = TraceProtoBuilder()
    _descriptors(builder, tl, counters)
    for ev in sorted(b.events):
        p: TracePacket = builder.add_packet()
        p.timestamp = ev.ts
        p.trusted_packet_sequence_id = SEQUENCE
        ev.fill(p.track_event)
    return builder.serialize()


def perfetto(tr: Trace, executor: Executor) -> bytes:
    """The Perfetto trace of a traced run (`emu.report.trace.trace`)."""
    return build(tr, timeline(tr, executor))


def write(tr: Trace, executor: Executor, path: Path) -> None:
    """Write the Perfetto trace of `tr` to `path`; an unwritable path is bad input."""
    data = perfetto(tr, executor)
    try:
        path.write_bytes(data)
    except OSError as e:
        raise UsageError(f"--perfetto {path}: cannot write ({e.strerror})") from None
