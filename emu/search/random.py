"""`random`: at each decision point, preempt with a fixed probability to a uniform choice."""

from __future__ import annotations

import random


class RandomWalk:
    def __init__(self, seed: int, preempt: float = 0.15) -> None:
        self.rng = random.Random(seed)
        self.preempt = preempt

    def choose(self, index: int, options: tuple[str, ...]) -> int:
        if self.rng.random() >= self.preempt:
            return 0
        return self.rng.randrange(1, len(options))
