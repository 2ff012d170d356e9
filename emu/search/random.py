"""`random`: at each decision point, preempt with a fixed probability to a uniform choice."""

from __future__ import annotations

import math
import random

from emu.engine.choice import Options
from emu.engine.scheduler import NEVER, PointInfo, Scheduler
from emu.search.strategy import RunOne, Settings, Strategy


class RandomWalk(Scheduler):
    """One run's scheduler: default with probability 1 - `preempt`, else a uniform other.

    The points where it preempts are drawn ahead, as geometric gaps, so the executor can
    run the points between without asking (`quiet_until`); the choice at a preempting
    point is drawn when the point is reached, from the options offered there.
    """

    def __init__(self, seed: int, preempt: float = 0.15) -> None:
        self.rng = random.Random(seed)
        self.preempt = preempt
        self.next = self._after(-1)

    def _after(self, index: int) -> int:
        """The next preempting point after `index`."""
        p = self.preempt
        if p <= 0:
            return NEVER
        if p >= 1:
            return index + 1
        # Failures before the first success of Bernoulli(p) trials: floor(log U / log(1-p)).
        return index + 1 + int(math.log(1.0 - self.rng.random()) / math.log1p(-p))

    def quiet_until(self, point: int, options: Options) -> int:
        return self.next

    def choose(self, point: int, options: Options, info: PointInfo | None) -> int:
        if point < self.next:
            return 0
        self.next = self._after(point)
        return self.rng.randrange(1, len(options))


class RandomStrategy(Strategy):
    """Independent random walks, run `i` seeded from (seed, i) so each run replays alone."""

    name = "random"

    def __init__(self, seed: int = 0, preempt: float = 0.15) -> None:
        super().__init__()
        self.seed = seed
        self.preempt = preempt

    @classmethod
    def from_settings(cls, settings: Settings) -> RandomStrategy:
        return cls(settings.seed)

    def explore(self, run_one: RunOne, budget: int) -> None:
        for i in range(budget):
            if run_one(RandomWalk(self.seed * 1_000_003 + i, self.preempt)).hit:
                return
