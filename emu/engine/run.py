"""What one run produced: the reads, the host's steps, the published clock records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from emu.engine.choice import Choice
from host_model.base import HostStep
from host_model.clock import Clock

#: How a read ended.
VALUE, DECLINED, FALLBACK, FAULT, HANG = "value", "declined", "fallback", "fault", "hang"


class Op(NamedTuple):
    """One executed visible operation: logical time, who, what, where.

    A named tuple, not a dataclass: the executor makes one per visible operation.
    """

    t: int
    task: int
    vcpu: int
    kind: str
    pc: int
    #: Effective address of a load; the TSC/cpu value of a TSC op.
    arg: int = 0


@dataclass
class Read:
    """One call of the reader by one task."""

    task: int
    index: int
    vcpu: int
    start: int = -1
    end: int = -1
    outcome: str = ""
    value: int | None = None
    ops: list[Op] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    detail: str = ""

    @property
    def label(self) -> str:
        return f"t{self.task}.r{self.index}"

    def returned(self) -> bool:
        """True when the caller got a timestamp (a value or the syscall's)."""
        return self.outcome in (VALUE, FALLBACK)

    def last_attempt(self) -> list[Op]:
        """The operations of the read without its retried iterations: an operation at a
        code address the remaining ones already executed loops back, and the iteration
        since that address's previous execution is dropped (a retry of the seqlock loop,
        or of a nested one). What is left is what the returned attempt did."""
        live: list[Op] = []
        at: dict[int, int] = {}
        for op in self.ops:
            k = at.get(op.pc)
            if k is not None:
                for dropped in live[k:]:
                    del at[dropped.pc]
                del live[k:]
            at[op.pc] = len(live)
            live.append(op)
        return live

    def first_retry(self) -> int | None:
        """The time of the read's first retry: its first operation at a code address it
        already executed (where `last_attempt` first drops an iteration), or None."""
        seen: set[int] = set()
        for op in self.ops:
            if op.pc in seen:
                return op.t
            seen.add(op.pc)
        return None

    def vcpu_at(self, t: int) -> int:
        v = self.vcpu
        for op in self.ops:
            if op.t > t:
                break
            v = op.vcpu
        return v


class HostEvent(NamedTuple):
    """A host step taken at logical time `t` (a named tuple: one per host step)."""

    t: int
    step: HostStep
    #: The host model read the logical time (`view.t`) right after this step, computing
    #: its next one: it planned a record from the time (emu/engine/host_side.py).
    plans: bool = False
    #: Indices into `step.writes` of the stores that wrote the bytes already there.
    unchanged: frozenset[int] = frozenset()


@dataclass
class Run:
    reads: list[Read]
    host: list[HostEvent]
    #: Clock key -> [(time published, snapshot)], oldest first; boot records at t = -1.
    history: dict[str, list[tuple[int, Any]]]
    clock: Clock
    #: Non-default scheduler choices: (decision point, the option taken).
    choices: list[tuple[int, Choice]]
    points: int
    steps: int
    #: Set when the run stopped early (a fault or a hang); the read says why.
    stopped: str = ""
    #: Parked intervals: (from t, to t, vCPUs), the end is exclusive.
    parked: list[tuple[int, int, frozenset[int]]] = field(default_factory=list)

    def current(self, key: str, t: int) -> Any:
        """The record of `key` that was published last before time `t`."""
        cur = None
        for tp, snap in self.history.get(key, ()):
            if tp >= t:
                break
            cur = snap
        return cur

    def outcome(self) -> tuple[Any, ...]:
        """Everything that decides a verdict, as plain values (for equivalence checks)."""
        return (
            tuple(
                (r.label, r.vcpu, r.start, r.end, r.outcome, r.value, tuple(r.ops))
                for r in self.reads
            ),
            tuple((e.t, e.step.label) for e in self.host),
            tuple(self.choices),
            self.points,
            self.steps,
            self.stopped,
        )
