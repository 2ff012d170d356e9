"""Where chunks run: local worker processes or a Dask cluster, behind one interface.

Both are a `concurrent.futures.Executor`: a `ProcessPoolExecutor` (default: one worker per
core) or the executor of a `distributed.Client` connected to `--scheduler tcp://HOST:PORT`
(workers started with Dask's own `dask worker`, one thread each: a worker's Unicorn
machines are not shared between threads). The campaign submits and waits the same way on
both. A local worker that dies breaks the whole `ProcessPoolExecutor`; `restart` makes a
new one (the campaign re-queues what was in flight). Dask re-runs a dead worker's tasks on
its own and reports `KilledWorker` when it gives up; the campaign re-queues those too.

`depth` is how many chunks the campaign keeps handed out per worker. Local: one, handed
over through a pipe in well under a millisecond. Dask: two, because a task's round trip
through the scheduler takes milliseconds; the second waits in the worker's queue and starts
when the first ends, so it is not work a kill can lose (one chunk per worker still runs).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from emu.campaign.worker import init_local
from emu.errors import UsageError


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Pool:
    def __init__(self, workers: int | None, scheduler: str | None) -> None:
        self.scheduler = scheduler
        self.client: Any = None
        if scheduler is None:
            self.workers = workers or default_workers()
            self.depth = 1
            self.executor: Executor = self._local()
        else:
            self.executor = self._dask(scheduler)
            self.workers = workers or self._dask_threads()
            self.depth = 2

    def _local(self) -> Executor:
        # fork: the workers start with the engine already imported (start-up < 1 s).
        ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        return ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=init_local)

    def _dask(self, address: str) -> Executor:
        try:
            from distributed import Client
        except ImportError:
            raise UsageError(
                "--scheduler needs Dask's distributed: pip install 'vdsofuzz[cluster]'"
            ) from None
        try:
            self.client = Client(address, timeout="10s")
        except OSError as e:
            raise UsageError(f"--scheduler {address}: cannot connect ({e})") from None
        return self.client.get_executor(pure=False)

    def _dask_threads(self) -> int:
        info = self.client.scheduler_info()
        return max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        return self.executor.submit(fn, *args)

    def again_if_broken(self, work: Callable[[], None], tries: int = 3) -> None:
        """Run `work`, which submits here and waits; a local worker that dies meanwhile
        breaks the pool: make a new one and run `work` again."""
        for attempt in range(tries):
            try:
                return work()
            except BrokenProcessPool:
                if attempt == tries - 1:
                    raise
                self.restart()

    def restart(self) -> None:
        """A new local pool after a worker died (Dask recovers on its own)."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = self._local()

    def close(self) -> None:
        if self.client is not None:
            self.executor.shutdown(wait=False)
            self.client.close()
        else:
            self.executor.shutdown(wait=False, cancel_futures=True)
