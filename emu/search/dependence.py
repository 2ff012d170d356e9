"""Dependence between visible operations: when swapping two of them can change what anyone
observes (the relation dynamic partial-order reduction, emu/search/dpor.py, reduces by).

An `Event` is one visible operation of a run, as far as dependence cares: a guest task's
load (the bytes it reads), TSC/cpu read or syscall, or one host step (the bytes it writes,
the vCPUs it parks, resumes or retunes, whether it publishes a record). Two events of the
same agent are always ordered (program order). Two events of different agents are
*dependent* when any of these holds:

1. a task's load and a host step that writes at least one of the bytes the load reads
   (guests only load: two loads never conflict, and the host is one agent, so two stores
   are ordered by program order). A store of the bytes already there counts as none
   (`HostEvent.unchanged`): the load reads the same bytes before and after it. A
   compiled writer stores every field, the unchanged ones too; the host models make no
   store at all for a field whose value stays (host_model/writer.py), so the two agree;
2. a host control step and any operation of a task on a vCPU it affects: parking or
   resuming that vCPU (which disables or enables the task) or retuning its TSC;
3. a task's TSC read (`rdtsc`, `rdtscp`) or syscall (the fallback returns the model's true
   time) and two kinds of host step: one that publishes a record, as the consistent and
   contract oracles judge a value against the record current at the instant of the TSC
   read; and one right after which the host model read the logical time to compute its
   next step (`plans`): a host plans a new record (tsc_timestamp, system_time) from the
   time just after its update's opening store, so a TSC read before that store with a
   tsc_timestamp read after it wraps to a wild delta, which the same loads with the TSC
   read after it do not (tests/test_dpor.py found this against brute force). The engine
   sees the planning where the model reads `view.t` (emu/engine/view.py), so it needs no
   knowledge of each model's protocol. Any other store changes neither the current
   record nor the time a record is planned from (the bytes it writes are rule 1's
   business): a TSC read between two field stores of one update is equivalent on either
   side. Parking, resuming or retuning another vCPU changes neither (`rdpid`'s value is
   the vCPU number, which only rule 2's steps and migrations change);
4. the last operation of a read and the first operation of a read of another task: the
   monotonic oracle compares two reads exactly when one ended before the other started
   (a read starts at its first visible operation and ends at its last).

Two clock observations of different tasks are not dependent by themselves: the only
oracle that compares values across tasks (monotonic) compares two reads only when one
ended before the other started, and then rule 4 and program order already order every
clock observation of the first before every one of the second; the order of the clock
reads of two overlapping reads is seen by no oracle (brute force agrees: the outcome
comparisons of tests/test_dpor.py are unchanged without it, and unbounded `modern` +
`kvm` 2 x 1 has 4,175 classes instead of 10,709).

Retried attempts. A run is judged by its returned attempts: an attempt that retries
returns nothing, stores nothing and (attempts being independent) leaves nothing for the
next one, so two runs are equivalent when their interleavings without the retried
attempts' operations are (Mazurkiewicz-)equivalent under the rules above. A retried
attempt's operations still race like any other (reversing them is how the run where that
attempt returns is found), but `dpor` counts no class for a run with a retry, and the
retrying task is stuck from there (retry-assume, emu/search/dpor_spin.py). Dropping a
retried attempt only moves its read's start later; the monotonic oracle then compares the
read with more reads that ended before it, never fewer, and the consistent oracle tries
fewer instants of the read, so nothing either flags in the run with the retry is lost
(the run without it may flag more; and brute force agrees: tests/test_dpor.py compares
every read's verdict and the stores its returned attempt read). The order of a retried
attempt's loads among host stores, which Mazurkiewicz equivalence keeps apart, is seen by
no oracle: on `modern` + `kvm` (one update) 2 x 1 at bound 2, brute force's 1,456
interleavings fall into 305 classes of every attempt and 8 of the returned ones.

Logical time. The model's clock counts events, so an event's logical time moves when an
independent event is swapped across it, and with it the TSC a clock read returns and the
record a host plans (100 ns per step). Within an equivalence class, everything an oracle
decides on keeps its shape: which store every load reads (1), which record is current at
each clock read (3), the real-time order of read boundaries across tasks (4), the parked
intervals (2); only the numeric distance between two clock observations changes, by at
most the events moved across them. The accurate oracle's
bound (1 ms by default) is ten thousand steps; a monotonic regression or an inconsistency
smaller than the scenario's length in steps (tens of steps: a few microseconds) could be
seen in one member of a class and not another. tests/test_dpor.py checks on small
scenarios that the set of outcomes (each read's verdict and the store each load read)
equals brute force's.
"""

from __future__ import annotations

from typing import NamedTuple

#: The agent number of the host in an `Event` (tasks are 0, 1, ...).
HOST = -1
#: Op kinds that observe the clock (emu.engine.decode names).
CLOCK_KINDS = frozenset({"rdtsc", "rdtscp", "syscall"})


class Event(NamedTuple):
    """One visible operation of a run, reduced to what dependence needs."""

    agent: int
    kind: str
    #: The task's vCPU at the operation (-1 for a host step).
    vcpu: int = -1
    #: Bytes [lo, hi) a load reads (0, 0 otherwise).
    lo: int = 0
    hi: int = 0
    #: The first / last visible operation of its read.
    first: bool = False
    last: bool = False
    #: Host step: byte ranges written, vCPUs parked/resumed/retuned, publishes a record.
    writes: tuple[tuple[int, int], ...] = ()
    control: frozenset[int] = frozenset()
    publishes: bool = False
    #: Host step: the vCPUs it parks and resumes (part of `control`). A task on a parked
    #: vCPU is disabled, so its race is with the park, not the resume (`dpor_trace.races`).
    parks: frozenset[int] = frozenset()
    resumes: frozenset[int] = frozenset()
    #: Host step: the host read the logical time right after it (planned a record).
    plans: bool = False

    @property
    def clock(self) -> bool:
        return self.kind in CLOCK_KINDS

    def to_json(self) -> list[object]:
        return [
            self.agent,
            self.kind,
            self.vcpu,
            self.lo,
            self.hi,
            self.first,
            self.last,
            [list(w) for w in self.writes],
            sorted(self.control),
            self.publishes,
            sorted(self.parks),
            sorted(self.resumes),
            self.plans,
        ]

    @classmethod
    def from_json(cls, d: list[object]) -> Event:
        a, kind, vcpu, lo, hi, first, last, writes, control, pub, parks, resumes, plans = d
        assert isinstance(writes, list) and isinstance(control, list)
        assert isinstance(parks, list) and isinstance(resumes, list)
        return cls(
            int(str(a)),
            str(kind),
            int(str(vcpu)),
            int(str(lo)),
            int(str(hi)),
            bool(first),
            bool(last),
            tuple((int(w[0]), int(w[1])) for w in writes),
            frozenset(int(v) for v in control),
            bool(pub),
            frozenset(int(v) for v in parks),
            frozenset(int(v) for v in resumes),
            bool(plans),
        )


def _task_host(task: Event, host: Event) -> bool:
    if task.vcpu in host.control:
        return True
    if task.kind == "load":
        lo, hi = task.lo, task.hi
        return any(s < hi and lo < e for s, e in host.writes)
    return task.clock and (host.publishes or host.plans)


def dependent(a: Event, b: Event) -> bool:
    """Can swapping adjacent events `a` and `b` change what anyone observes?"""
    if a.agent == b.agent:
        return True
    if a.agent == HOST:
        return _task_host(b, a)
    if b.agent == HOST:
        return _task_host(a, b)
    return (a.last and b.first) or (a.first and b.last)
