"""`portfolio`, the default strategy: several strategies in turn, so the first violation
comes about as fast as from the best single one, whichever that is for the scenario.

Phases, each stopping at the first violation:
1. replay: when Hypothesis' example database holds examples (failures an earlier run
   saved), Hypothesis runs first for a few schedules: it replays them before anything else;
2. dpor, bound 1: a short pass over the interleavings with at most one preemption, one per
   equivalence class (most catalog bugs are among its first few runs);
3. PCT (depth 3) and random walks in alternating rounds of growing length, each round with
   its own seed derived from the campaign's, until the budget is spent.

Same seed, same runs: every phase is deterministic.
"""

from __future__ import annotations

from pathlib import Path

from emu.engine.scheduler import Scheduler
from emu.search.dpor import DporStrategy
from emu.search.pct import PctStrategy
from emu.search.random import RandomStrategy
from emu.search.strategy import Result, RunOne, Settings, Strategy

#: Schedules the replay phase may take (the database's examples come first).
REPLAY_RUNS = 32
#: Schedules of the bounded dpor pass.
DPOR_RUNS = 64
#: The first PCT / random round's length; each round doubles it (up to the cap).
ROUND = 32
ROUND_CAP = 4096


class PortfolioStrategy(Strategy):
    name = "portfolio"

    def __init__(
        self, seed: int = 0, database: Path | None = None, depth: int = 3, agents: int = 3
    ) -> None:
        super().__init__()
        self.seed = seed
        self.database = database
        self.depth = depth
        self.agents = agents
        self.runs = 0
        self.hit = False
        #: Phase name -> runs it made.
        self.phases: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> PortfolioStrategy:
        return cls(settings.seed, settings.database, settings.depth, settings.agents)

    def explore(self, run_one: RunOne, budget: int) -> None:
        try:
            if self._has_examples():
                from emu.search.hypothesis import HypothesisStrategy

                self._phase(
                    "replay",
                    HypothesisStrategy(self.seed, self.database),
                    run_one,
                    min(REPLAY_RUNS, budget),
                )
            if not self.hit:
                self._phase("dpor", DporStrategy(1), run_one, min(DPOR_RUNS, budget - self.runs))
            size, k = ROUND, 0
            while not self.hit and self.runs < budget:
                seed = self.seed * 1_000_003 + k
                strat: Strategy = (
                    PctStrategy(seed, self.depth, self.agents)
                    if k % 2 == 0
                    else RandomStrategy(seed)
                )
                self._phase(strat.name, strat, run_one, min(size, budget - self.runs))
                k += 1
                if k % 2 == 0:
                    size = min(size * 2, ROUND_CAP)
        finally:
            self._report()

    def _phase(self, name: str, strat: Strategy, run_one: RunOne, budget: int) -> None:
        if budget <= 0:
            return

        def counted(s: Scheduler) -> Result:
            res = run_one(s)
            self.runs += 1
            self.phases[name] = self.phases.get(name, 0) + 1
            self.hit = self.hit or res.hit
            return res

        strat.explore(counted, budget)

    def _has_examples(self) -> bool:
        db = self.database
        return db is not None and db.is_dir() and any(p.is_file() for p in db.rglob("*"))

    def _report(self) -> None:
        self.stats.update({"runs": self.runs, "phases": dict(self.phases)})
        done = ", ".join(f"{name} {n}" for name, n in self.phases.items()) or "none"
        self.notes.append(f"portfolio: runs per phase: {done}")
