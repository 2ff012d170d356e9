"""Catalog records: a witness, an entry (what to run, how hard, what to expect), the
outcome of one search, and the result `check` reports for one entry. Loading, expanding and
running them is emu/search/catalog.py; printing them is emu/report/check.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from emu.engine.scenario import Scenario

PASS, VIOLATION, ERROR, VACUOUS = "pass", "violation", "error", "vacuous"


def label(verdict: str, oracles: Iterable[str]) -> str:
    names = "|".join(oracles)
    return f"{verdict} ({names})" if names else verdict


@dataclass(frozen=True)
class Witness:
    """A reader the entry's scenario must catch; `oracles` empty = any violation counts."""

    image: str
    oracles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Entry:
    """One catalog row: what to run, how hard to search, what verdict to expect."""

    name: str
    scenario: Scenario
    expect: str
    #: Oracles any one of which may fire for an expected violation (empty: any oracle).
    oracles: tuple[str, ...] = ()
    #: Strategies run in turn, each with the whole budget, until one finds a violation.
    strategies: tuple[str, ...] = ("hypothesis",)
    seed: int = 0
    #: Schedules per strategy.
    max_schedules: int = 2000
    reference: bool = False
    why: str = ""
    #: Readers this (pass) scenario must catch, each with the same budget.
    witnesses: tuple[Witness, ...] = ()

    @property
    def oracle(self) -> str | None:
        """The one expected oracle, or None when several (or any) may fire."""
        return self.oracles[0] if len(self.oracles) == 1 else None

    @property
    def budget(self) -> int:
        return self.max_schedules * len(self.strategies) * (1 + len(self.witnesses))

    @property
    def expected(self) -> str:
        return label(self.expect, self.oracles)

    def options(self) -> str:
        """The host parameters and machine options, as a short string for the matrix."""
        sc = self.scenario
        out = [f"{k}={v}" for k, v in sorted(sc.host_params.items())]
        if sc.vcpus != 2:
            out.append(f"{sc.vcpus} vCPU" + ("s" if sc.vcpus > 1 else ""))
        if sc.task_migration:
            out.append("--task-migration")
        if sc.speculative_tsc:
            out.append("--speculative-tsc")
        return " ".join(out) or "-"


@dataclass
class Outcome:
    """What one search (an entry's image, or one of its witnesses) found."""

    image: str
    verdict: str = ERROR
    oracle: str | None = None
    message: str = ""
    schedule: str = ""
    schedules: int = 0
    expected_oracle: tuple[str, ...] = ()

    @property
    def caught(self) -> bool:
        """A witness is caught by a violation of one of its oracles (any, if none named)."""
        ok_oracle = not self.expected_oracle or self.oracle in self.expected_oracle
        return self.verdict == VIOLATION and ok_oracle


@dataclass
class Result:
    """What `check` measured for one entry."""

    name: str
    image: str
    host: str
    options: str
    expect: str
    expected_oracle: tuple[str, ...]
    verdict: str
    oracle: str | None = None
    message: str = ""
    schedule: str = ""
    schedules: int = 0
    #: Wall seconds (time.monotonic) and CPU seconds (time.process_time) of the worker.
    elapsed: float = 0.0
    cpu: float = 0.0
    finding: str | None = None
    why: str = ""
    witnesses: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        if self.verdict != self.expect:
            return False
        return (
            self.expect != VIOLATION
            or not self.expected_oracle
            or self.oracle in (self.expected_oracle)
        )

    @property
    def missed(self) -> list[Outcome]:
        """The witnesses the scenario did not catch."""
        return [w for w in self.witnesses if not w.caught]

    @property
    def got(self) -> str:
        if self.verdict == VACUOUS:
            return f"vacuous ({', '.join(w.image for w in self.missed)} not caught)"
        return label(self.verdict, [self.oracle] if self.oracle else [])

    @property
    def expected(self) -> str:
        return label(self.expect, self.expected_oracle)
