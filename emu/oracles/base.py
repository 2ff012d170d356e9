"""What every oracle shares: the `Violation` record and the `Evidence` of one run.

An oracle is a module with `NAME` and `check(evidence) -> list[Violation]`; `Evidence`
holds the run and the scenario, and computes once what two oracles both need (which
published record, if any, explains each returned value).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emu.engine.run import VALUE, Read, Run
from emu.engine.scenario import Scenario
from host_model.base import ClockSnapshot


@dataclass(frozen=True)
class Violation:
    oracle: str
    message: str
    reads: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"oracle": self.oracle, "message": self.message, "reads": list(self.reads)}


def _match_at(run: Run, read: Read, t: int, keys: list[str]) -> ClockSnapshot | None:
    tsc = run.clock.tsc(read.vcpu_at(t), t)
    for key in keys:
        snap = run.current(key, t)
        if snap is not None and snap.ns_at(tsc) == read.value:
            return snap
    return None


def match(run: Run, read: Read) -> tuple[int, ClockSnapshot] | None:
    """(t, record) such that the read's value is that record's time at instant t with the
    reading vCPU's TSC at t, or None. The instants of the read's own TSC reads are tried
    first (a correct reader's value comes from one of them), then every instant in order."""
    keys = sorted(read.keys)
    for op in read.ops:
        if op.kind in ("rdtsc", "rdtscp"):
            snap = _match_at(run, read, op.t, keys)
            if snap is not None:
                return op.t, snap
    for t in range(read.start, read.end + 1):
        snap = _match_at(run, read, t, keys)
        if snap is not None:
            return t, snap
    return None


@dataclass
class Evidence:
    """One run under judgement, with the per-read record matches computed on first use."""

    run: Run
    scenario: Scenario
    _matches: list[tuple[Read, tuple[int, ClockSnapshot] | None]] | None = field(default=None)

    def matches(self) -> list[tuple[Read, tuple[int, ClockSnapshot] | None]]:
        """Every read that returned a value, in run order, with `match` of it."""
        if self._matches is None:
            self._matches = [(r, match(self.run, r)) for r in self.run.reads if r.outcome == VALUE]
        return self._matches
