"""`pct`: probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010).

Each run gives every agent (task or host, or any other option the executor offers) a
random priority above `depth`, and picks `depth - 1` change points among the run's decision
points. At each decision the highest-priority enabled agent runs; at the j-th change point
the agent about to run is first lowered to priority `depth - j`, below every initial one.
For a program of n agents and k steps, one run finds any given bug of depth d with
probability at least 1/(n·k^(d-1)). Here k counts decision points (the only steps at which
the order can change), estimated from the runs seen so far. A change point that falls on an
action point (a guest task migration, a speculative TSC) takes a random action there
instead; every other action point takes the default, so a run makes at most d - 1 of them.

Readers spin while a page's version is odd. Strict priorities would let a high-priority
spinner starve the host forever, so when the executor's fairness rotation moves the
default away from the agent PCT kept choosing (it ran 32 events in a row), PCT treats that
as a yield and drops the agent below everyone, as PCT implementations do for yields.
"""

from __future__ import annotations

import random
from fractions import Fraction

from emu.engine.choice import Choice, Options, is_agent_point
from emu.engine.scheduler import Default, PointInfo, Scheduler, next_point
from emu.errors import UsageError
from emu.search.strategy import RunOne, Settings, Strategy

#: Consecutive choices of one agent after which a rotated default is taken as a yield.
YIELD_STREAK = 8


class PctRun(Scheduler):
    """The scheduler of one PCT run."""

    def __init__(self, rng: random.Random, depth: int, k: int) -> None:
        self.rng = rng
        self.depth = depth
        points = rng.sample(range(max(k, 1)), min(depth - 1, max(k, 1)))
        #: Decision index -> the priority the agent about to run there drops to.
        self.changes = {p: depth - j for j, p in enumerate(sorted(points), 1)}
        self.prio: dict[Choice, float] = {}
        self.floor = 0.0
        self.last: Choice | None = None
        self.streak = 0
        #: The last point `choose` was asked at; points after it that it was not asked at
        #: were quiet (see `quiet_until`) and chose `last`.
        self.at = -1
        self.points = sorted(self.changes)

    def _p(self, choice: Choice) -> float:
        p = self.prio.get(choice)
        if p is None:
            p = self.prio[choice] = self.depth + self.rng.random()
        return p

    def quiet_until(self, index: int, options: Options) -> int:
        """While the agent PCT chose last is the default and outranks every other option,
        it keeps choosing it until the next change point."""
        if self.last != options[0] or not is_agent_point(options):
            return index
        top = self._p(options[0])
        if any(self._p(o) > top for o in options[1:]):
            return index
        return next_point(self.points, index)

    def choose(self, index: int, options: Options, info: PointInfo | None) -> int:
        if index > self.at + 1 and self.last is not None:
            self.streak += index - self.at - 1
        self.at = index
        if not is_agent_point(options):
            # An action point (task migration, speculative TSC): nothing happens unless a
            # change point falls here, and then a uniformly chosen action does.
            if self.changes.pop(index, None) is None:
                return 0
            return self.rng.randrange(1, len(options))
        last = self.last
        if (
            last is not None
            and options[0] != last
            and last in options
            and self.streak >= YIELD_STREAK
        ):
            self.floor -= 1
            self.prio[last] = self.floor
        best = max(range(len(options)), key=lambda i: self._p(options[i]))
        drop = self.changes.get(index)
        if drop is not None:
            self.prio[options[best]] = drop
            best = max(range(len(options)), key=lambda i: self._p(options[i]))
        chosen = options[best]
        self.streak = self.streak + 1 if chosen == last else 1
        self.last = chosen
        return best


def guarantee(n: int, k: int, depth: int) -> Fraction:
    """PCT's lower bound on the per-run probability of finding a depth-`depth` bug."""
    return Fraction(1, n * max(k, 1) ** (depth - 1))


class PctStrategy(Strategy):
    name = "pct"

    def __init__(self, seed: int = 0, depth: int = 3, agents: int = 3) -> None:
        if depth < 1:
            raise UsageError(f"--depth must be at least 1, not {depth}")
        super().__init__()
        self.rng = random.Random(seed)
        self.depth = depth
        self.agents = agents
        self.k = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> PctStrategy:
        return cls(settings.seed, settings.depth, settings.agents)

    def explore(self, run_one: RunOne, budget: int) -> None:
        runs = 0
        try:
            if budget > 0:
                # A first run under the default schedule measures k.
                res = run_one(Default())
                runs += 1
                self.k = res.points
                if res.hit:
                    return
            while runs < budget:
                res = run_one(PctRun(random.Random(self.rng.getrandbits(64)), self.depth, self.k))
                runs += 1
                # k is the longest run seen: change points are drawn from its decision points.
                self.k = max(self.k, res.points)
                if res.hit:
                    return
        finally:
            self._report(runs)

    def _report(self, runs: int) -> None:
        n, k, d = self.agents, self.k, self.depth
        p = guarantee(n, k, d)
        self.stats.update(
            {"depth": d, "agents": n, "k": k, "per_run_probability": float(p), "runs": runs}
        )
        self.notes.append(
            f"pct depth {d}: n = {n} agents, k = {k} decision points; each run finds a given "
            f"depth-{d} bug with probability >= 1/(n·k^(d-1)) = 1/{p.denominator} "
            f"({float(p):.2g})"
        )
