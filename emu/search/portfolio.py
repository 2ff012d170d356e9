"""`portfolio`, the default strategy: several strategies in turn, so the first violation
comes about as fast as from the best single one, whichever that is for the scenario.

Phases, each stopping at the first violation:
1. replay: when Hypothesis' example database holds examples (failures an earlier run
   saved), Hypothesis runs first for a few schedules: it replays them before anything else;
2. rounds of growing length (4, 8, 16, ... runs, up to a cap), each round giving the same
   number of runs to random walks (the walks `random` makes with the same seed, continued
   round after round), to `dpor` with preemption bound 2 (one search, resumed round after
   round until it has covered its bound) and to PCT (depth 3). Whichever strategy is
   fastest on the scenario finds the bug within about three times its own number of runs.

Same seed, same runs: every phase is deterministic.
"""

from __future__ import annotations

from pathlib import Path

from emu.engine.scheduler import Scheduler
from emu.search.dpor import DporStrategy
from emu.search.pct import PctStrategy
from emu.search.random import RandomStrategy, RandomWalk
from emu.search.strategy import Result, RunOne, Settings, Strategy

#: Schedules the replay phase may take (the database's examples come first).
REPLAY_RUNS = 32
#: The dpor part's preemption bound (every catalog bug is within it).
DPOR_BOUND = 2
#: The first round's runs per strategy; each round doubles it (up to the cap).
ROUND = 4
ROUND_CAP = 1024


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

                replay = HypothesisStrategy(self.seed, self.database)
                self._phase("replay", replay, run_one, min(REPLAY_RUNS, budget))
            dpor = DporStrategy(DPOR_BOUND)
            size, k, walk = ROUND, 0, 0
            while not self.hit and self.runs < budget:
                # The same walks `random` makes with this seed, continued round after round.
                n = min(size, budget - self.runs)
                self._phase("random", _Walks(self.seed, walk), run_one, n)
                walk += n
                if not self.hit and not dpor.complete:
                    self._dpor(dpor, run_one, min(size, budget - self.runs))
                pct = PctStrategy(self.seed * 1_000_003 + k, self.depth, self.agents)
                k += 1
                if not self.hit:
                    self._phase("pct", pct, run_one, min(size, budget - self.runs))
                size = min(size * 2, ROUND_CAP)
        finally:
            self._report()

    def _dpor(self, dpor: DporStrategy, run_one: RunOne, n: int) -> None:
        """`n` more runs of the one dpor search."""

        def counted(s: Scheduler) -> Result:
            res = run_one(s)
            self.runs += 1
            self.phases["dpor"] = self.phases.get("dpor", 0) + 1
            self.hit = self.hit or res.hit
            return res

        for _ in range(n):
            if not dpor.step(counted):
                return

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


class _Walks(RandomStrategy):
    """`random`'s walks from number `start` on (walk i is seeded as `random` seeds it)."""

    def __init__(self, seed: int, start: int) -> None:
        super().__init__(seed)
        self.start = start

    def explore(self, run_one: RunOne, budget: int) -> None:
        for i in range(self.start, self.start + budget):
            if run_one(RandomWalk(self.seed * 1_000_003 + i, self.preempt)).hit:
                return
