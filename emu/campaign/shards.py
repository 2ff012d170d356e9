"""Shards and chunks: how a campaign is cut into work units.

A *shard* is one (scenario, strategy, seed) of the campaign's product. Its work is an
endless sequence of *chunks*; chunk j covers run indices [j*C, (j+1)*C) for a chunk size C
fixed when the campaign is created, so a chunk can be re-run (after a crash) exactly.
Run i of a random shard is the random walk `fuzz --strategy random --seed S` makes as its
run i; run i of a PCT shard draws its priorities from (seed, i); chunk j of a Hypothesis
shard is a Hypothesis search seeded from (seed, j) over the shared example database. A
chunk may be cut short by the campaign's deadline; it then resumes from the index reached.
"""

from __future__ import annotations

from dataclasses import dataclass

from emu.engine.scenario import Scenario


@dataclass(frozen=True)
class Shard:
    #: Index of the scenario in the spec's product.
    scenario: int
    strategy: str
    seed: int

    @property
    def key(self) -> str:
        """The shard's name in checkpoint files: `s3-pct-0`."""
        return f"s{self.scenario}-{self.strategy}-{self.seed}"


@dataclass(frozen=True)
class Chunk:
    """Runs [start, end) of chunk `number` of `shard`."""

    shard: Shard
    number: int
    start: int
    end: int

    @property
    def key(self) -> str:
        return f"{self.shard.key}/{self.number}@{self.start}"


def shards(
    scenarios: tuple[Scenario, ...], strategies: tuple[str, ...], seeds: tuple[int, ...]
) -> list[Shard]:
    """Every shard of the product, scenario-major (so a short campaign touches every
    scenario early)."""
    return [
        Shard(i, strategy, seed)
        for seed in seeds
        for strategy in strategies
        for i in range(len(scenarios))
    ]


def mix(seed: int, index: int) -> int:
    """One 64-bit seed from (seed, index): PCT's run seeds and Hypothesis' chunk seeds."""
    x = (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 1) & (2**64 - 1)
    x ^= x >> 31
    return (x * 0x94D049BB133111EB) & (2**64 - 1)
