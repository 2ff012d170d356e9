"""`random`: at each decision point, preempt with a fixed probability to a uniform choice."""

from __future__ import annotations

import random
from typing import Any

from emu.search.strategy import RunOne


class RandomWalk:
    """One run's scheduler: default with probability 1 - `preempt`, else a uniform other."""

    def __init__(self, seed: int, preempt: float = 0.15) -> None:
        self.rng = random.Random(seed)
        self.preempt = preempt

    def choose(self, index: int, options: tuple[str, ...]) -> int:
        if self.rng.random() >= self.preempt:
            return 0
        return self.rng.randrange(1, len(options))


class RandomStrategy:
    """Independent random walks, run `i` seeded from (seed, i) so each run replays alone."""

    name = "random"
    wants_score = False

    def __init__(self, seed: int = 0, preempt: float = 0.15) -> None:
        self.seed = seed
        self.preempt = preempt
        self.notes: list[str] = []
        self.stats: dict[str, Any] = {}

    def explore(self, run_one: RunOne, budget: int) -> None:
        for i in range(budget):
            if run_one(RandomWalk(self.seed * 1_000_003 + i, self.preempt)).hit:
                return
