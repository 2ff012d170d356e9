"""Oracles: judge every timestamp of a run. Each violation names its oracle and its reads.

- monotonic: a read that starts after another finished never returns less (all tasks);
- consistent: the value is the formula applied to one published record current at some
  instant t of the read, with the TSC the reading vCPU had at that same instant;
- accurate: within the scenario's bound of the model's true time during the read;
- contract: a value is returned only when the record it came from allowed it;
- terminates: a read finishes once the host is quiescent; no-fault: the guest never faults.
"""

from __future__ import annotations

from dataclasses import dataclass

from emu.engine.run import FAULT, HANG, VALUE, Read, Run
from emu.engine.scenario import Scenario


@dataclass(frozen=True)
class Violation:
    oracle: str
    message: str
    reads: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"oracle": self.oracle, "message": self.message, "reads": list(self.reads)}


def _match_at(run: Run, read: Read, t: int, keys: list[str]) -> object | None:
    tsc = run.clock.tsc(read.vcpu_at(t), t)
    for key in keys:
        snap = run.current(key, t)
        if snap is not None and snap.ns_at(tsc) == read.value:
            return snap
    return None


def _match(run: Run, read: Read) -> tuple[int, object] | None:
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


def _clock_keys(run: Run, read: Read) -> str:
    return ", ".join(sorted(k for k in read.keys if k in run.history)) or "any clock page"


def judge(run: Run, scenario: Scenario) -> list[Violation]:
    """All violations of the scenario's oracles, in a fixed order (first is the verdict)."""
    on = set(scenario.oracles)
    out: list[Violation] = []
    for r in run.reads:
        if r.outcome == FAULT and "no-fault" in on:
            out.append(Violation("no-fault", f"{r.label} faulted: {r.detail}", (r.label,)))
        if r.outcome == HANG and "terminates" in on:
            out.append(Violation("terminates", f"{r.label} did not finish: {r.detail}", (r.label,)))
    for r in run.reads:
        if r.outcome != VALUE:
            continue
        m = _match(run, r)
        if m is None:
            if "consistent" in on:
                out.append(
                    Violation(
                        "consistent",
                        f"{r.label} returned {r.value} (t={r.start}..{r.end}), which no published "
                        f"record of {_clock_keys(run, r)} gives with the "
                        f"vCPU's TSC at any instant of the read (a torn or mis-timed read)",
                        (r.label,),
                    )
                )
        elif not m[1].stable and "contract" in on:
            out.append(
                Violation(
                    "contract",
                    f"{r.label} returned {r.value} from a record without the stable bit "
                    f"(t={m[0]}); it should have returned U64_MAX or fallen back",
                    (r.label,),
                )
            )
    if "accurate" in on:
        bound = scenario.accuracy_ns
        for r in run.reads:
            if not r.returned():
                continue
            lo = run.clock.ns(r.start) - bound
            hi = run.clock.ns(r.end) + bound
            if not lo <= r.value <= hi:
                err = r.value - run.clock.ns(r.end if r.value > hi else r.start)
                out.append(
                    Violation(
                        "accurate",
                        f"{r.label} returned {r.value}, {err:+d} ns from the true time "
                        f"(bound ±{bound} ns)",
                        (r.label,),
                    )
                )
    if "monotonic" in on:
        done = [r for r in run.reads if r.returned()]
        for a in done:
            for b in done:
                if a.end < b.start and b.value < a.value:
                    out.append(
                        Violation(
                            "monotonic",
                            f"{b.label} returned {b.value} (t={b.start}..{b.end}), "
                            f"{a.value - b.value} ns less than {a.label}'s {a.value}, which "
                            f"finished earlier (t={a.end})",
                            (a.label, b.label),
                        )
                    )
    order = {
        o: i
        for i, o in enumerate(
            ("no-fault", "terminates", "consistent", "contract", "monotonic", "accurate")
        )
    }
    out.sort(key=lambda v: order[v.oracle])
    return out
