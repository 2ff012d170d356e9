"""What runs in a worker process: one chunk of one shard (its warm fuzzers: warm.py).

`run_chunk` is a top-level function of picklable records, so the same call runs in a local
`ProcessPoolExecutor` and on a Dask worker. A worker keeps one warm `Fuzzer` (executor,
Unicorn machine, native lane) per scenario in a module-level cache, so only a worker's
first chunk of a scenario pays for loading the image and building the machine.

A chunk keeps searching after a violation: each violation is shrunk to its minimal
schedule (once per distinct raw signature: a second violation whose unshrunk run has a
signature already seen counts as a hit of the shrunk signature it led to), and the next run
goes on.
"""

from __future__ import annotations

import hashlib
import os
import random
import resource
import signal
import threading
import time
from pathlib import Path
from typing import Any

from emu.campaign.shards import mix
from emu.campaign.signature import Signature, signature
from emu.campaign.warm import ChunkResult, Found, Task, Warm, get_warm
from emu.engine.readsfrom import pattern, reads_from
from emu.engine.run import Run
from emu.engine.scheduler import Scheduler
from emu.oracles import Violation
from emu.search.strategy import Result

#: Coverage is counted on every SAMPLE-th run: computing reads-from costs about half a run
#: (measured: 290-520 us against 530-760 us per run), on a sample it costs about 6%.
SAMPLE = 8


def init_local() -> None:
    """Initializer of a local worker: Ctrl-C is the campaign's to handle, and a worker
    whose campaign process died (kill -9) exits instead of running on as an orphan."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _coverage(w: Warm, run: Run) -> int:
    ex = w.fuzzer.executor
    p = pattern(reads_from(run, ex.machine.layout, ex.sites.widths, ex.image.vdso_data))
    return int.from_bytes(hashlib.blake2b(repr(p).encode(), digest_size=8).digest(), "little")


def _record(w: Warm, task: Task, out: ChunkResult, run: Run, vs: list[Violation]) -> None:
    """Count a violating run under its shrunk signature, shrinking it if it is new here."""
    v = vs[0]
    raw = signature(run, v.oracle, v.reads, w.fuzzer.executor, w.image_name).id
    found = w.shrunk.get(raw)
    if found is None:
        fz = w.fuzzer
        strategy, seed = task.chunk.shard.strategy, task.chunk.shard.seed
        f = fz.finding_of(tuple(run.choices), v.oracle, strategy, seed)
        if f is None:  # the violation did not replay: count it under the raw run
            sig = signature(run, v.oracle, v.reads, fz.executor, w.image_name)
            found = Found(sig.to_json(), {}, len(run.choices))
        else:
            run2, vs2 = fz.replay(f.schedule.choices)
            v2 = next(x for x in vs2 if x.oracle == f.oracle)
            sig = signature(run2, v2.oracle, v2.reads, fz.executor, w.image_name)
            found = Found(sig.to_json(), f.to_json(), len(f.schedule.choices))
        w.shrunk[raw] = found
    sid = Signature.from_json(found.signature).id
    out.hits[sid] = out.hits.get(sid, 0) + 1
    if found.finding and (sid not in out.found or found.size < out.found[sid].size):
        out.found[sid] = found


def run_chunk(task: Task) -> ChunkResult:
    """Run `task`'s chunk; the result says how far it got and what it found."""
    start, cpu = time.monotonic(), time.process_time()
    w = get_warm(task.scenario, task.image)
    c = task.chunk
    out = ChunkResult(c, c.start, pid=os.getpid(), host=os.uname().nodename, k=w.k)
    deadline = start + task.budget_s

    def one(i: int, scheduler: Scheduler) -> tuple[Run, list[Violation]]:
        run, vs = w.fuzzer.run(scheduler)
        out.runs += 1
        if i % SAMPLE == 0:
            out.coverage.append(_coverage(w, run))
        if vs:
            _record(w, task, out, run, vs)
        return run, vs

    strategy = c.shard.strategy
    if strategy == "hypothesis":
        _hypothesis(task, w, out, deadline, one)
    elif strategy == "dpor":
        from emu.campaign import dpor

        dpor.run(task, out, deadline, lambda _i, sch: one(c.start + out.runs, sch))
    else:
        from emu.search.pct import PctRun
        from emu.search.random import RandomWalk

        i = c.start
        while i < c.end and time.monotonic() < deadline:
            if strategy == "random":
                one(i, RandomWalk(c.shard.seed * 1_000_003 + i))
            else:
                one(i, PctRun(random.Random(mix(c.shard.seed, i)), task.depth, w.k))
            i += 1
        out.reached = i
    out.elapsed = time.monotonic() - start
    out.cpu = time.process_time() - cpu
    out.rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _hypothesis(task: Task, w: Warm, out: ChunkResult, deadline: float, one: Any) -> None:
    """Hypothesis searches seeded from (seed, chunk, restart) until the chunk's runs are
    spent; each stops at a violation (after shrinking it), and the next one starts."""
    from hypothesis.errors import Flaky

    from emu.search.hypothesis import HypothesisStrategy

    c = task.chunk
    db = Path(task.database) if task.database else None
    restart = 0
    while out.reached < c.end and time.monotonic() < deadline:
        seed = mix(c.shard.seed, c.number * 1000 + restart) & 0xFFFFFFFF
        # After a violation the database holds it, and a search that read it would find it
        # again first: the chunk's later searches explore without it.
        strat = HypothesisStrategy(seed, db if restart == 0 else None)
        first = out.reached

        def run_one(scheduler: Scheduler) -> Result:
            if time.monotonic() >= deadline:
                return Result(False, w.k)  # out of time: let Hypothesis end without running
            # Runs past the chunk's end (Hypothesis' shrinking and its final replay) are
            # run and counted, but the chunk's index stays at its end.
            run, vs = one(out.reached, scheduler)
            out.reached = min(out.reached + 1, c.end)
            return Result(bool(vs), run.points, None if vs else w.fuzzer.score(run, vs))

        try:
            strat.explore(run_one, c.end - out.reached)
        except Flaky:  # the deadline turned a failing example into a passing one
            break
        restart += 1
        if out.reached == first:
            break
