"""Per-shard progress checkpoints and the coverage files.

`DIR/checkpoints/<shard>.json` says which chunks of the shard are finished (all below
`done_below`, plus `done`), how far a cut-short chunk got (`partial`), the schedules run and
the hits per signature, with the campaign time each signature was first seen. It is written
atomically after the chunk's findings and coverage, so a crash between the two repeats the
chunk (its findings replace themselves, its coverage adds nothing new) and never counts a
hit twice. `DIR/coverage/<scenario>.bin` appends 8-byte hashes of reads-from patterns.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from emu.campaign.shards import Chunk, Shard
from emu.campaign.store import atomic_write, sync
from emu.campaign.warm import ChunkResult


@dataclass
class ShardState:
    key: str
    done_below: int = 0
    done: list[int] = field(default_factory=list)
    #: Chunk number -> run index reached, for chunks cut short.
    partial: dict[int, int] = field(default_factory=dict)
    #: Chunks ever handed out (numbers below this were started at least once).
    issued: int = 0
    schedules: int = 0
    hits: dict[str, int] = field(default_factory=dict)
    first_seen: dict[str, float] = field(default_factory=dict)
    k: int = 0
    #: dpor shards: classes of the subtree, its search is over, it stopped at a violation.
    classes: int = 0
    exhausted: bool = False
    violated: bool = False

    def finished(self, n: int) -> bool:
        return n < self.done_below or n in self.done

    def apply(self, res: ChunkResult, now: float) -> None:
        c = res.chunk
        self.k = max(self.k, res.k)
        for sid, n in res.hits.items():
            self.hits[sid] = self.hits.get(sid, 0) + n
            self.first_seen.setdefault(sid, now)
        if c.shard.strategy == "dpor":  # its executions are the search's own count
            self.issued = max(self.issued, c.number + 1)
            self.schedules, self.classes = max(self.schedules, res.reached), res.classes
            self.exhausted, self.violated = res.exhausted, res.violated
            return
        self.schedules += res.reached - c.start
        if res.reached >= c.end:
            self.partial.pop(c.number, None)
            self.done.append(c.number)
            self.done.sort()
            while self.done and self.done[0] == self.done_below:
                self.done.pop(0)
                self.done_below += 1
        else:
            self.partial[c.number] = res.reached

    def pending(self, shard: Shard, size: int) -> list[Chunk]:
        """Chunks handed out but not finished (a crash or a dead worker lost them)."""
        out = []
        for n in range(self.done_below, self.issued):
            if not self.finished(n):
                start = self.partial.get(n, n * size)
                out.append(Chunk(shard, n, start, (n + 1) * size))
        return out


class Checkpoints:
    def __init__(self, out: Path, shards: list[Shard]) -> None:
        self.dir = out / "checkpoints"
        self.shards = {s.key: s for s in shards}
        self.states: dict[str, ShardState] = {}
        self.unsynced: set[Path] = set()
        for s in shards:
            p = self.dir / f"{s.key}.json"
            if p.exists():
                d = json.loads(p.read_text())
                d["partial"] = {int(k): v for k, v in d["partial"].items()}
                self.states[s.key] = ShardState(**d)
            else:
                self.states[s.key] = ShardState(s.key)

    def add(self, s: Shard) -> None:
        """A shard known only once the campaign runs (a dpor subtree)."""
        self.shards[s.key] = s
        p = self.dir / f"{s.key}.json"
        if s.key not in self.states:
            self.states[s.key] = (
                ShardState(**json.loads(p.read_text())) if p.exists() else (ShardState(s.key))
            )

    def save(self, key: str, *, sync: bool = True) -> None:
        """Write a shard's state; with `sync=False` it survives this process's death at
        once and a power cut only after `sync()`."""
        st = self.states[key]
        path = self.dir / f"{key}.json"
        atomic_write(path, json.dumps(asdict(st), sort_keys=True) + "\n", sync=sync)
        if not sync:
            self.unsynced.add(path)

    def sync(self) -> None:
        """fsync every checkpoint `save(sync=False)` wrote since the last call."""
        for path in sorted(self.unsynced):
            sync(path)
        self.unsynced.clear()


class Coverage:
    """Distinct reads-from pattern hashes per scenario, kept in append-only files."""

    def __init__(self, out: Path, scenarios: int) -> None:
        self.dir = out / "coverage"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.seen: list[set[int]] = []
        for i in range(scenarios):
            p = self.dir / f"{i}.bin"
            data = p.read_bytes() if p.exists() else b""
            n = len(data) // 8 * 8
            self.seen.append({int.from_bytes(data[j : j + 8], "little") for j in range(0, n, 8)})

    def add(self, scenario: int, hashes: list[int]) -> None:
        new = [h for h in dict.fromkeys(hashes) if h not in self.seen[scenario]]
        if not new:
            return
        self.seen[scenario].update(new)
        with open(self.dir / f"{scenario}.bin", "ab") as f:
            f.write(b"".join(h.to_bytes(8, "little") for h in new))
            f.flush()

    def total(self) -> int:
        return sum(len(s) for s in self.seen)
