"""The campaign loop: hand chunks to the pool, fold their results into the findings,
checkpoints and coverage, show the status, stop at the time budget.

At most one chunk per worker runs (on Dask a second one waits behind it: pool.py), so a
crash of the campaign process loses at most one chunk per worker: one checkpoint interval
of wall time. Every result is saved in the order findings, coverage, checkpoint (see
emu/campaign/checkpoint.py). The checkpoint is renamed into place before the worker gets
its next chunk (so a kill of this process never finds a finished chunk unsaved behind a
new one) and fsynced after: the worker does not wait for the disk (an fsync here takes
1-20 ms, against chunks of 70-300 ms).
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path

from emu.campaign import dpor
from emu.campaign.checkpoint import Checkpoints, Coverage
from emu.campaign.images import ImageRef, pack
from emu.campaign.pool import Pool
from emu.campaign.record import Record
from emu.campaign.shards import Chunk, Shard, shards
from emu.campaign.spec import Spec
from emu.campaign.status import Row, Snapshot, label, residual
from emu.campaign.store import FindingStore
from emu.campaign.warm import ChunkResult, Task, warm
from emu.campaign.worker import run_chunk
from emu.engine.scenario import Scenario


@dataclass
class Options:
    out: Path
    time_s: float
    workers: int | None = None
    scheduler: str | None = None
    #: Seconds between two status lines.
    interval: float = 1.0


class Campaign:
    def __init__(self, spec: Spec, opts: Options) -> None:
        self.spec, self.opts = spec, opts
        self.record = Record(opts.out, spec)
        self.chunk_size = int(self.record.data["chunk"])
        plain = tuple(x for x in spec.strategies if x != "dpor")
        self.shards = shards(spec.scenarios, plain, spec.seeds)
        #: dpor shard keys with a chunk in flight or queued (one at a time: the checkpoint
        #: file is the subtree's single search state).
        self.busy: set[str] = set()
        self.ckpt = Checkpoints(opts.out, self.shards)
        self.store = FindingStore(opts.out)
        self.coverage = Coverage(opts.out, len(spec.scenarios))
        #: The Hypothesis example database all Hypothesis shards share (remote workers
        #: without this filesystem get their own, at the same path on their machine).
        self.database = opts.out / "hypothesis"
        self.database.mkdir(exist_ok=True)
        self.images: dict[str, ImageRef] = {}
        for sc in spec.scenarios:
            if sc.image not in self.images:
                self.images[sc.image] = pack(sc.image)
        self.requeued = 0
        #: dpor: each scenario's subtree prefixes (JSON pairs), once split.
        self.prefixes: dict[int, list[list[list[int]]]] = {}
        self.in_flight: dict[Future[ChunkResult], Chunk] = {}
        self.queue: deque[Chunk] = deque()
        self.session_runs: dict[int, int] = {}
        self.started = time.monotonic()
        self.startup = 0.0
        #: The largest peak RSS a worker reported (MB).
        self.peak_rss = 0.0
        #: CPU seconds the workers spent on the chunks this session applied.
        self.worker_cpu = 0.0

    # --- work ------------------------------------------------------------------------------

    def _new_chunks(self) -> Iterator[Chunk | None]:
        """New chunks round-robin over the shards, forever; None when no shard has one now
        (every shard is a dpor subtree that is finished or busy)."""
        while True:
            gave = False
            for s in self.shards:
                st = self.ckpt.states[s.key]
                if s.strategy == "dpor":
                    if st.exhausted or s.key in self.busy:
                        continue
                    self.busy.add(s.key)
                    end = dpor.chunk_end(st.schedules, self.chunk_size)
                    gave = True
                    yield Chunk(s, st.issued, st.schedules, end)
                    continue
                n = st.issued
                st.issued += 1
                gave = True
                yield Chunk(s, n, n * self.chunk_size, (n + 1) * self.chunk_size)
            if not gave:
                yield None

    def _split(self, pool: Pool) -> None:
        """Add the shards of dpor: each scenario's subtrees, asked of a worker once."""
        if "dpor" not in self.spec.strategies:
            return
        (self.opts.out / "dpor").mkdir(exist_ok=True)
        sc, depth, out = self.spec.scenarios, self.spec.dpor_depth, self.opts.out
        pool.again_if_broken(lambda: dpor.ask_splits(pool.submit, sc, self.images, depth, out))
        for i in range(len(sc)):
            self.prefixes[i] = json.loads(dpor.prefixes_path(out, i).read_text())
            for k in range(len(self.prefixes[i])):
                s = Shard(i, "dpor", k)
                self.shards.append(s)
                self.ckpt.add(s)

    def _task(self, c: Chunk, budget: float) -> Task:
        sc = self.spec.scenarios[c.shard.scenario]
        db = str(self.database)
        task = Task(c, sc, self.images[sc.image], self.spec.depth, db, budget)
        if c.shard.strategy != "dpor":
            return task
        i, k = c.shard.scenario, c.shard.seed
        ckpt = str(dpor.checkpoint_path(self.opts.out, i, k))
        prefix = dpor.to_prefix(self.prefixes[i][k])
        return replace(task, prefix=prefix, checkpoint=ckpt, bound=self.spec.preemptions)

    def _submit(self, pool: Pool, c: Chunk) -> None:
        try:
            f = pool.submit(run_chunk, self._task(c, self.remaining()))
        except BrokenProcessPool:  # a worker died since the last collect
            self._broken(pool, [c])
            return
        self.in_flight[f] = c
        self.record.log(
            "chunks.jsonl", {"session": self.record.session, "chunk": c.key, "end": c.end}
        )

    def remaining(self) -> float:
        return max(0.0, self.opts.time_s - self.record.elapsed())

    def _warm(self, pool: Pool) -> None:
        """Build the first shards' executors in every worker before the clock matters."""
        firsts = self.shards[: pool.workers]
        todo = [
            (self.spec.scenarios[s.scenario], self.images[self.spec.scenarios[s.scenario].image])
            for s in firsts
        ]
        futures = [pool.submit(warm, todo) for _ in range(pool.workers)]
        wait(futures, timeout=60)
        self.startup = time.monotonic() - self.started

    # --- results ---------------------------------------------------------------------------

    def _apply(self, res: ChunkResult) -> None:
        c = res.chunk
        for sid, found in res.found.items():
            self.store.save(sid, found.signature, found.finding, c.shard.scenario)
        self.coverage.add(c.shard.scenario, res.coverage)
        self.ckpt.states[c.shard.key].apply(res, round(self.record.elapsed(), 2))
        self.ckpt.save(c.shard.key, sync=False)
        self.busy.discard(c.shard.key)
        runs = max(0, res.reached - c.start)
        self.session_runs[c.shard.scenario] = self.session_runs.get(c.shard.scenario, 0) + runs
        self.peak_rss = max(self.peak_rss, res.rss_mb)
        self.worker_cpu += res.cpu

    def _collect(self, pool: Pool, timeout: float) -> None:
        done, _ = wait(list(self.in_flight), timeout=timeout, return_when=FIRST_COMPLETED)
        dead: list[Chunk] = []
        for f in done:
            c = self.in_flight.pop(f)
            try:
                self._apply(f.result())
            except BrokenProcessPool:
                dead.append(c)
            except Exception as e:
                if type(e).__name__ not in ("KilledWorker", "CancelledError", "CommClosedError"):
                    raise
                self.requeued += 1  # Dask gave up on a dead worker's task: run it again
                self.queue.appendleft(c)
        if dead:
            self._broken(pool, dead)

    def _broken(self, pool: Pool, dead: list[Chunk]) -> None:
        """A local worker died: `dead` and every chunk in flight are lost with the pool."""
        lost = [*dead, *self.in_flight.values()]
        self.requeued += len(lost)
        self.queue.extendleft(lost)
        self.in_flight.clear()
        pool.restart()

    def run(self, show: Callable[[Snapshot], None]) -> Snapshot:
        """Run until the budget is spent; Ctrl-C leaves a resumable DIR."""
        for s in self.shards:
            self.queue.extend(self.ckpt.states[s.key].pending(s, self.chunk_size))
        resumed = len(self.queue)
        fresh = self._new_chunks()
        pool = Pool(self.opts.workers, self.opts.scheduler)
        try:
            self._warm(pool)
            self._split(pool)
            self.record.begin(
                {
                    "workers": pool.workers,
                    "scheduler": self.opts.scheduler or "local",
                    "resumed_chunks": resumed,
                    "startup_s": round(self.startup, 3),
                }
            )
            next_show = time.monotonic()
            while True:
                while len(self.in_flight) < pool.workers * pool.depth and self.remaining() > 0:
                    c = self.queue.popleft() if self.queue else next(fresh)
                    if c is None:
                        break
                    self._submit(pool, c)
                self.ckpt.sync()
                if not self.in_flight:
                    break
                self._collect(pool, max(0.05, next_show - time.monotonic()))
                if time.monotonic() >= next_show:
                    show(self.snapshot(pool.workers))
                    next_show = time.monotonic() + self.opts.interval
        finally:
            pool.close()
            self.ckpt.sync()
            self.record.save(
                requeued=self.requeued,
                peak_rss_mb=round(self.peak_rss, 1),
                coordinator_cpu_s=round(time.process_time(), 2),
                worker_cpu_s=round(self.worker_cpu, 2),
            )
        snap = self.snapshot(pool.workers, done=True)
        show(snap)
        return snap

    # --- status ----------------------------------------------------------------------------

    def snapshot(self, workers: int, done: bool = False) -> Snapshot:
        spent = time.monotonic() - self.record.started  # this session's rates
        rows = [self._row(i, sc, spent) for i, sc in enumerate(self.spec.scenarios)]
        total = sum(self.session_runs.values())
        snap = Snapshot(
            self.record.elapsed(),
            self.remaining(),
            workers,
            len(self.in_flight),
            self.requeued,
            sum(r.schedules for r in rows),
            total / spent if spent > 0 else 0.0,
            self.store.count(),
            self.coverage.total(),
            rows,
            done,
        )
        self.record.save()
        self.record.log(
            "timeline.jsonl",
            {
                "t": round(snap.elapsed, 2),
                "schedules": snap.schedules,
                "coverage": snap.coverage,
                "signatures": snap.signatures,
                "hits": sum(r.hits for r in rows),
            },
        )
        return snap

    def _row(self, i: int, sc: Scenario, spent: float) -> Row:
        mine = [s for s in self.shards if s.scenario == i]
        states = [self.ckpt.states[s.key] for s in mine]
        by: dict[str, int] = {}
        for s, st in zip(mine, states, strict=True):
            by[s.strategy] = by.get(s.strategy, 0) + st.schedules
        k = max((st.k for st in states), default=0)
        n, d = sc.vcpus + 1, self.spec.depth
        sigs = {sid for st in states for sid in st.hits}
        return Row(
            label(sc),
            sum(by.values()),
            self.session_runs.get(i, 0) / spent if spent > 0 else 0.0,
            sum(sum(st.hits.values()) for st in states),
            len(sigs),
            len(self.coverage.seen[i]),
            residual(by["pct"], n, k, d) if "pct" in by else None,
            residual(by["random"], n, k, d) if "random" in by else None,
            self.spec.expected.get(i, ""),
            dpor.progress(
                [st for s, st in zip(mine, states, strict=True) if s.strategy == "dpor"],
                self.spec.preemptions,
            ),
        )
