"""One run as a trace for dynamic partial-order reduction: its events, happens-before,
reversible races, the initials of a reversal, and a canonical form of its class; and the
agent (task number, or HOST) each option of a decision point runs.

The executor gives every visible operation and host step its own logical time t = 0, 1,
..., so a run's events are a list indexed by t. Happens-before is the transitive closure of
program order and dependence (emu/search/dependence.py); sets of events are Python ints
used as bitsets (bit k: the event at t = k).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain

from emu.engine.choice import Options, RunHost, RunTask, is_agent_point
from emu.engine.run import HostEvent, Op, Read, Run
from emu.search.dependence import HOST, Event, dependent


def agent_of(choice: object) -> int:
    if isinstance(choice, RunTask):
        return choice.task
    assert isinstance(choice, RunHost)
    return HOST


class Offers:
    """The agents an options object offers (None: an action point), kept by its identity:
    the executor offers the same object again while nothing changes who can run."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[Options, tuple[int, ...] | None]] = {}

    def __call__(self, options: Options) -> tuple[int, ...] | None:
        hit = self._seen.get(id(options))
        if hit is not None and hit[0] is options:
            return hit[1]
        agents = tuple(agent_of(o) for o in options) if is_agent_point(options) else None
        self._seen[id(options)] = (options, agents)
        return agents


def task_event(
    op: Op, first: bool, last: bool, widths: Mapping[int, int], pages: Mapping[str, int]
) -> Event:
    """The event of a task's visible operation `op`."""
    if op.kind == "load":
        return Event(op.task, op.kind, op.vcpu, op.arg, op.arg + widths.get(op.pc, 8), first, last)
    return Event(op.task, op.kind, op.vcpu, first=first, last=last)


def host_event(ev: HostEvent, pages: Mapping[str, int]) -> Event:
    """The event of a host step."""
    step = ev.step
    writes = tuple(
        (pages[w.page] + w.offset, pages[w.page] + w.offset + len(w.data))
        for k, w in enumerate(step.writes)
        if k not in ev.unchanged
    )
    control = step.park | step.unpark | frozenset(c.vcpu for c in step.tsc)
    return Event(
        HOST,
        "host",
        writes=writes,
        control=control,
        publishes=bool(step.publish),
        parks=step.park,
        resumes=step.unpark,
        plans=ev.plans,
    )


def read_events(
    read: Read, ended: bool, since: int, widths: Mapping[int, int], pages: Mapping[str, int]
) -> Iterator[tuple[int, Event]]:
    """(t, event) of `read`'s operations at or after `since`; `ended`: its last is final."""
    ops = read.ops
    n = len(ops)
    i = n
    while i > 0 and ops[i - 1].t >= since:
        i -= 1
    for k in range(i, n):
        yield ops[k].t, task_event(ops[k], k == 0, ended and k == n - 1, widths, pages)


def run_events(
    run: Run, widths: Mapping[int, int], pages: Mapping[str, int], returned: bool = True
) -> list[Event]:
    """The events of a finished run in time order, for any run: with `returned`, only its
    reads' returned attempts (the class `dpor` counts under retry-assume, which explores
    the equivalent run without the retries)."""
    got: list[tuple[int, Event]] = []
    for r in run.reads:
        if returned:
            r = Read(r.task, r.index, r.vcpu, ops=r.last_attempt())
        got += read_events(r, True, 0, widths, pages)
    got += [(ev.t, host_event(ev, pages)) for ev in run.host]
    got.sort(key=lambda p: p[0])
    return [e for _, e in got]


class Trace:
    """The events of the current run with happens-before, kept across runs: the next run
    shares the prefix before its first new event, so only the new events are added.

    For each event: `hb[k]`, the bitset of events that happen before it, and `direct[k]`,
    its direct predecessors (program order and dependence, earlier events only). A new
    event's dependent predecessors are looked up in indexes of the earlier events by what
    `dependent` compares (bytes, vCPUs, clock reads, publications and plans), not tested
    one by one against every earlier event (hundreds of them in every run).
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.hb: list[int] = []
        self.direct: list[list[int]] = []
        #: Positions of task events that can depend on another task's (the first or last
        #: of a read, `_special`): the only task events another task's can depend on.
        self._special: list[int] = []
        #: Agent -> position of its latest event (program order).
        self._last: dict[int, int] = {}
        #: Positions of task events by what a host step can depend on: loads by the bytes
        #: they read, clock reads, and every task event by its vCPU (`_host_preds`).
        self._loads: dict[tuple[int, int], list[int]] = {}
        self._clocks: list[int] = []
        self._vcpus: dict[int, list[int]] = {}
        #: Positions of host events by what a task event can depend on: the bytes they
        #: write, whether they publish or plan, the vCPUs they control (`_task_preds`).
        self._writes: dict[tuple[int, int], list[int]] = {}
        self._timed: list[int] = []
        self._controls: dict[int, list[int]] = {}

    def truncate(self, n: int) -> None:
        if n >= len(self.events):
            return
        del self.events[n:], self.hb[n:], self.direct[n:]
        by_key = (self._loads, self._vcpus, self._writes, self._controls)
        lists = (self._special, self._clocks, self._timed)
        for at in chain(lists, *(d.values() for d in by_key)):
            del at[bisect_left(at, n) :]
        self._last = {}
        for k, e in enumerate(self.events):
            self._last[e.agent] = k

    def append(self, e: Event) -> None:
        events = self.events
        j = len(events)
        preds = self._host_preds(e) if e.agent == HOST else self._task_preds(e)
        po = self._last.get(e.agent, -1)
        if po >= 0:
            preds.append(po)
        mask = 0
        hb = self.hb
        for k in preds:
            mask |= hb[k] | (1 << k)
        events.append(e)
        hb.append(mask)
        self.direct.append(preds)
        self._last[e.agent] = j
        if e.agent == HOST:
            for w in e.writes:
                self._writes.setdefault(w, []).append(j)
            if e.publishes or e.plans:
                self._timed.append(j)
            for v in e.control:
                self._controls.setdefault(v, []).append(j)
            return
        if _special(e):
            self._special.append(j)
        if e.kind == "load":
            self._loads.setdefault((e.lo, e.hi), []).append(j)
        elif e.clock:
            self._clocks.append(j)
        self._vcpus.setdefault(e.vcpu, []).append(j)

    def _host_preds(self, e: Event) -> list[int]:
        """The task events host step `e` depends on (`dependent`, by the indexes), in order."""
        found: set[int] = set()
        for (lo, hi), at in self._loads.items():
            if any(s < hi and lo < t for s, t in e.writes):
                found.update(at)
        if e.publishes or e.plans:
            found.update(self._clocks)
        for v in e.control:
            found.update(self._vcpus.get(v, ()))
        return sorted(found)

    def _task_preds(self, e: Event) -> list[int]:
        """The events task event `e` depends on (`dependent`, by the indexes), in order:
        host steps, and other tasks' read boundaries when `e` is one (`_special`)."""
        found = set(self._controls.get(e.vcpu, ()))
        if e.kind == "load":
            lo, hi = e.lo, e.hi
            for (s, t), at in self._writes.items():
                if s < hi and lo < t:
                    found.update(at)
        elif e.clock:
            found.update(self._timed)
        if _special(e):
            events = self.events
            found.update(
                k for k in self._special if events[k].agent != e.agent and dependent(events[k], e)
            )
        return sorted(found)


def _special(e: Event) -> bool:
    """Can this task event depend on another task's event?"""
    return e.first or e.last


def happens_before(events: list[Event]) -> tuple[list[int], list[list[int]]]:
    """`hb` and `direct` (see `Trace`) of a whole list of events."""
    tr = Trace()
    for e in events:
        tr.append(e)
    return tr.hb, tr.direct


def races(
    events: list[Event], hb: list[int], direct: list[list[int]], since: int
) -> Iterator[tuple[int, int]]:
    """Reversible races (i, j), j >= `since`: dependent events of different agents where
    i happens before j only through their direct dependence.

    A task event j whose vCPU a host step u resumed is disabled from the park p that
    u ends until u: j cannot go anywhere in p..u, so (u, j) is not reversible (u enables
    j), and j's race is with p instead, reversible when nothing outside the parked
    stretch of host steps p..u orders p before j (reversing it runs j before the park;
    the race of j with a park before p shows in that run)."""
    for j in range(since, len(events)):
        preds = direct[j]
        aj = events[j].agent
        u, p = _parked(events, preds, j)
        # No event happens before itself, so i is ordered before j through another direct
        # predecessor exactly when it happens before any of them.
        through = 0
        for k in preds:
            through |= hb[k]
        for i in preds:
            if events[i].agent == aj or i == u:
                continue
            if not (through >> i) & 1:
                yield i, j
        if p >= 0:
            stretch = [k for k in preds if p <= k <= u and events[k].agent == HOST]
            if not (_others(hb, preds, stretch) >> p) & 1:
                yield p, j


def _others(hb: list[int], preds: list[int], skip: Sequence[int]) -> int:
    """What happens before the direct predecessors other than `skip`."""
    out = 0
    for k in preds:
        if k not in skip:
            out |= hb[k] | (1 << k)
    return out


def _parked(events: list[Event], preds: list[int], j: int) -> tuple[int, int]:
    """(u, p): the host step u among `preds` that last resumed task event j's vCPU, and
    the park p that u ended; (-1, -1) when j was not disabled (p is -1 when the vCPU was
    parked from the start)."""
    e = events[j]
    if e.agent == HOST:
        return -1, -1
    v = e.vcpu
    u = max((k for k in preds if v in events[k].resumes), default=-1)
    if u < 0:
        return -1, -1
    for k in range(u - 1, -1, -1):
        h = events[k]
        if v in h.parks:
            return u, k
        if v in h.resumes:
            return -1, -1  # resumed twice: u resumed a running vCPU, an ordinary race
    return u, -1


def initials(events: list[Event], hb: list[int], i: int, j: int) -> list[int]:
    """The agents that can start v = notdep(e_i).e_j at the point before e_i: the first
    event of each agent in v that nothing else in v happens before. e_j's agent first."""
    v = [k for k in range(i + 1, j) if not (hb[k] >> i) & 1] + [j]
    mask = 0
    for k in v:
        mask |= 1 << k
    seen: set[int] = set()
    out: list[int] = []
    for k in v:
        a = events[k].agent
        if a in seen:
            continue
        seen.add(a)
        if not hb[k] & mask:
            out.append(a)
    aj = events[j].agent
    return sorted(out, key=lambda a: a != aj)


def canonical(events: list[Event], hb: list[int]) -> tuple[Event, ...]:
    """The class of the trace, as its lexicographically least linearisation (by agent, the
    host first): two runs are equivalent exactly when these are equal."""
    by_agent: dict[int, list[int]] = {}
    for k, e in enumerate(events):
        by_agent.setdefault(e.agent, []).append(k)
    heads = {a: 0 for a in by_agent}
    order = sorted(by_agent)
    done = 0
    out: list[Event] = []
    for _ in events:
        for a in order:
            at = heads[a]
            if at < len(by_agent[a]):
                k = by_agent[a][at]
                if not hb[k] & ~done:
                    out.append(events[k])
                    done |= 1 << k
                    heads[a] = at + 1
                    break
    return tuple(out)


def class_key(events: list[Event], hb: list[int]) -> int:
    """A 64-bit digest of the class's `canonical` form."""
    form = repr(canonical(events, hb)).encode()
    return int.from_bytes(hashlib.blake2b(form, digest_size=8).digest(), "big")
