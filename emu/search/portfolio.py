"""`portfolio`, the default strategy: several strategies in turn, so the first violation
comes about as fast as from the best single one, whichever that is for the scenario.

Phases, each stopping at the first violation:
1. replay: when Hypothesis' example database holds examples (failures an earlier run
   saved), Hypothesis runs first, one run more than the database has files (at most
   `REPLAY_RUNS` + 1): it replays them before anything else;
2. one random walk (many catalog bugs show in the first walk);
3. rounds of a bounded `exhaustive` search (preemption bound 2, resumed round after
   round until it has covered its bound) and random walks (the walks `random` makes with
   the same seed, continued): `ROUNDS` gives the first rounds' runs of each, then every
   round is `LATER`; and from round `PCT_FROM` on, one PCT run (depth 3) every
   `PCT_EVERY` rounds.
   The split is about even in time in the first rounds (where a bounded search finds
   most of what it finds at all), and about a quarter for the bounded search after them.
   Its first run has every point in Python (about two walks) and its second takes the
   snapshot the later ones start from; from its third on, a run starts at the decision it
   changes and costs about half a walk, so the fourth round gives it two. A walk runs
   natively between its preemptions. The portfolio so reaches a bug in about twice the
   time of the faster of the two, less the first run (the engine's warm-up, which any
   strategy pays), less again where the two are fast on different seeds. Which one is
   faster depends on the bug, and any other split makes one kind of bug slower by what
   it gives the other: in the benchmark, `bug-no-odd-check` (found in the bounded
   search's fifth run) against `hyperv-no-invalidate` (the median seed's fourth walk).
   When the bounded search has covered its bound, its share goes to the walks.

`exhaustive` rather than `dpor` at bound 2: `exhaustive` finds most catalog bugs in
fewer runs than `dpor` (most of whose runs end with a task stuck at a retry), and each run
is cheaper (no happens-before or race analysis).

Same seed, same runs: every phase is deterministic (the split is counted in runs, never
in wall-clock time).
"""

from __future__ import annotations

from pathlib import Path

from emu.engine.scheduler import Scheduler
from emu.search.exhaustive import ExhaustiveStrategy
from emu.search.pct import PctStrategy
from emu.search.random import RandomStrategy, RandomWalk
from emu.search.strategy import Result, RunOne, Settings, Strategy

#: Most examples the replay phase replays (it takes one run more: the default schedule).
REPLAY_RUNS = 32
#: The systematic part's preemption bound (every catalog bug is within it).
BOUND = 2
#: (runs of the bounded search, random walks) in each of the first rounds: about equal
#: time (its third run is the first that starts from a snapshot; two runs in the third
#: round instead moved `hyperv-no-invalidate` to 1.9-2.05x, see the README).
ROUNDS = ((1, 1), (1, 1), (1, 1), (2, 1))
#: The same in every round after them.
LATER = (1, 2)
#: One PCT run every PCT_EVERY rounds from round PCT_FROM on.
PCT_FROM = 32
PCT_EVERY = 4


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
            stored = self._examples()
            if stored:
                from emu.search.hypothesis import HypothesisStrategy

                # Its first run (the default schedule), then the stored examples (the
                # database is shared by every scenario: most may not fail here).
                replay = HypothesisStrategy(self.seed, self.database)
                self._phase("replay", replay, run_one, min(1 + stored, budget))
            self._rounds(run_one, budget)
        finally:
            self._report()

    def _rounds(self, run_one: RunOne, budget: int) -> None:
        """One walk, then rounds: a run of the bounded search, walks, now and then PCT."""
        self._phase("random", _Walks(self.seed, 0), run_one, min(1, budget))
        systematic = ExhaustiveStrategy(BOUND)
        r, walk = 0, 1
        while not self.hit and self.runs < budget:
            runs, walks = ROUNDS[r] if r < len(ROUNDS) else LATER
            if not systematic.complete:
                self._systematic(systematic, run_one, min(runs, budget - self.runs))
            # When the bounded search is done, the walks take its share.
            n = walks + int(systematic.complete)
            if not self.hit:
                n = min(n, budget - self.runs)
                self._phase("random", _Walks(self.seed, walk), run_one, n)
                walk += n
            if not self.hit and r >= PCT_FROM and r % PCT_EVERY == 0:
                pct = PctStrategy(self.seed * 1_000_003 + r, self.depth, self.agents)
                self._phase("pct", pct, run_one, min(1, budget - self.runs))
            r += 1

    def _systematic(self, search: ExhaustiveStrategy, run_one: RunOne, n: int) -> None:
        """`n` more runs of the one bounded search."""
        if n > 0:
            # Its budget counts its runs in all: `n` more than it has made.
            self._phase("exhaustive", search, run_one, search.interleavings + n)
            search.notes.clear()  # each call reports; only the runs matter here

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

    def _examples(self) -> int:
        """Files in Hypothesis' example database (an upper bound on the examples it replays;
        counted up to REPLAY_RUNS)."""
        db = self.database
        if db is None or not db.is_dir():
            return 0
        n = 0
        for p in db.rglob("*"):
            if p.is_file():
                n += 1
                if n >= REPLAY_RUNS:
                    break
        return n

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
