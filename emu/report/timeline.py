"""What the timeline pictures draw, computed once from a replayed run.

Both pictures (`svg.py`, `perfetto_trace.py`) show the same facts: the read attempts of
each task on the vCPU it ran on, every shared-page load with the host store(s) it read
(`emu.engine.readsfrom`), every host step with the fields it stored, the parked intervals
and the violating read. This module turns a `Trace` into those facts; the pictures only
place them.
"""

from __future__ import annotations

from dataclasses import dataclass

from emu.engine.decode import LOAD
from emu.engine.executor import Executor
from emu.engine.fields import field_name
from emu.engine.readsfrom import BOOT, LoadSource, reads_from
from emu.engine.run import Op, Read, Run
from emu.oracles import Violation
from emu.report.trace import Trace

#: The outcome shown on an attempt that the reader's check sent back for another try.
RETRY = "retry"


@dataclass(frozen=True)
class Attempt:
    """One pass of a read through its retry loop, on one vCPU (a task that migrates in the
    middle of an attempt gives one Attempt per vCPU it ran on, with the same `index`)."""

    read: str
    index: int
    task: int
    vcpu: int
    #: Logical times of its first and last visible operation (both included).
    start: int
    end: int
    #: RETRY for an attempt the reader retried, else how the read ended (`value`, ...).
    outcome: str
    value: int | None


@dataclass(frozen=True)
class Store:
    """One host store into a shared page: part of host step `step` (index into run.host)."""

    step: int
    t: int
    addr: int
    size: int
    field: str
    old: int
    new: int


@dataclass(frozen=True)
class Other:
    """A visible operation that is not a shared-page load (a TSC or cpu-number read)."""

    t: int
    task: int
    vcpu: int
    kind: str
    read: str
    value: int


@dataclass(frozen=True)
class Arrow:
    """Reads-from: the load at logical time `load` read bytes of store `store` (an index
    into `Timeline.stores`)."""

    store: int
    load: int


@dataclass
class Timeline:
    title: list[str]
    vcpus: int
    #: vCPU -> the tasks that ran a visible operation on it, in order of task number.
    tasks: dict[int, list[str]]
    attempts: list[Attempt]
    loads: list[LoadSource]
    others: list[Other]
    #: (index into run.host, t, label) of every host step.
    host: list[tuple[int, int, str]]
    stores: list[Store]
    arrows: list[Arrow]
    parked: list[tuple[int, int, frozenset[int]]]
    violation: Violation | None
    #: One past the last logical time anything happened at.
    end: int


def attempts_of(read: Read) -> list[Attempt]:
    """Split a read's operations into retry-loop passes: a pass starts each time the reader
    is back at its first visible operation's instruction; a pass also splits where the task
    changed vCPU."""
    ops = read.ops
    if not ops:
        return []
    groups: list[list[Op]] = []
    index: list[int] = []
    n = -1
    for i, op in enumerate(ops):
        again = i > 0 and op.pc == ops[0].pc and op.kind == ops[0].kind
        if i == 0 or again:
            n += 1
        if i == 0 or again or op.vcpu != groups[-1][-1].vcpu:
            groups.append([])
            index.append(n)
        groups[-1].append(op)
    out = []
    for g, k in zip(groups, index, strict=True):
        final = k == n
        outcome = read.outcome if final else RETRY
        value = read.value if final else None
        out.append(Attempt(read.label, k, read.task, g[0].vcpu, g[0].t, g[-1].t, outcome, value))
    return out


def _stores(run: Run, executor: Executor) -> list[Store]:
    layout = executor.machine.layout
    spec = executor.image.vdso_data
    out = []
    for h, ev in enumerate(run.host):
        for w in ev.step.writes:
            addr = layout.pages[w.page] + w.offset
            name = field_name(layout, spec, addr)
            out.append(Store(h, ev.t, addr, len(w.data), name, w.old, w.new))
    return out


def _arrows(loads: list[LoadSource], stores: list[Store]) -> list[Arrow]:
    """One arrow per (store, load) whose bytes the load read from that store."""
    by_step: dict[int, list[int]] = {}
    for i, s in enumerate(stores):
        by_step.setdefault(s.step, []).append(i)
    out = []
    for ld in loads:
        for h in sorted(set(ld.stores) - {BOOT}):
            for i in by_step.get(h, ()):
                s = stores[i]
                if s.addr < ld.addr + ld.width and ld.addr < s.addr + s.size:
                    out.append(Arrow(i, ld.t))
    return out


def timeline(tr: Trace, executor: Executor) -> Timeline:
    """The facts of `tr` (a replayed run) that the pictures draw."""
    run = tr.run
    layout, spec = executor.machine.layout, executor.image.vdso_data
    loads = reads_from(run, layout, executor.sites.widths, spec)
    stores = _stores(run, executor)
    tasks: dict[int, set[int]] = {v: set() for v in range(executor.scenario.vcpus)}
    others = []
    for r in run.reads:
        for op in r.ops:
            tasks.setdefault(op.vcpu, set()).add(op.task)
            if op.kind != LOAD:
                others.append(Other(op.t, op.task, op.vcpu, op.kind, r.label, op.arg))
    attempts = sorted(
        (a for r in run.reads for a in attempts_of(r)), key=lambda a: (a.start, a.task)
    )
    times = [a.end for a in attempts] + [e.t for e in run.host] + [p[1] - 1 for p in run.parked]
    return Timeline(
        title=list(tr.header),
        vcpus=max(tasks) + 1 if tasks else 0,
        tasks={v: [f"t{k}" for k in sorted(ts)] for v, ts in sorted(tasks.items())},
        attempts=attempts,
        loads=loads,
        others=sorted(others, key=lambda o: o.t),
        host=[(h, e.t, e.step.label) for h, e in enumerate(run.host)],
        stores=stores,
        arrows=_arrows(loads, stores),
        parked=list(run.parked),
        violation=tr.violations[0] if tr.violations else None,
        end=max(times, default=-1) + 1,
    )
