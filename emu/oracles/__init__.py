"""Oracles: judge every timestamp of a run. Each violation names its oracle and its reads.

One module per oracle (`check(evidence)` and its `NAME`); `ORACLES` lists them in verdict
order, the order `judge` reports them in:

- writer: a compiled host writer (`--writer`) returns, within its slot, without a fault;
- no-fault: the guest never faults; terminates: a read finishes once the host is quiet;
- consistent: the value is the formula applied to one published record current at some
  instant t of the read, with the TSC the reading vCPU had at that same instant;
- contract: a value is returned only when the record it came from allowed it;
- monotonic: a read that starts after another finished never returns less (all tasks);
- accurate: within the scenario's bound of the model's true time during the read.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from emu.engine.run import Run
from emu.engine.scenario import Scenario
from emu.oracles import (
    accurate,
    consistent,
    contract,
    monotonic,
    no_fault,
    terminates,
    writer,
)
from emu.oracles.base import Evidence, Violation, match

#: Every oracle in verdict order: when a run breaks several, the first listed is the verdict
#: (a broken host writer, a fault or a hang explains everything after it; a torn read
#: explains a monotonic or accuracy failure it causes).
ORACLES: tuple[ModuleType, ...] = (
    writer,
    no_fault,
    terminates,
    consistent,
    contract,
    monotonic,
    accurate,
)
CHECKS: dict[str, Callable[[Evidence], list[Violation]]] = {m.NAME: m.check for m in ORACLES}

__all__ = ["CHECKS", "ORACLES", "Evidence", "Violation", "judge", "match"]


def judge(run: Run, scenario: Scenario) -> list[Violation]:
    """All violations of the scenario's oracles, in verdict order (first is the verdict)."""
    on = set(scenario.oracles)
    ev = Evidence(run, scenario)
    out: list[Violation] = []
    for name, check in CHECKS.items():
        if name in on:
            out += check(ev)
    return out
