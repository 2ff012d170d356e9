"""A worker's records and its warm fuzzers: what a chunk is given (`Task`), what it returns
(`ChunkResult`, `Found`), and the module-level cache of warm fuzzers (`get_warm`) that the
random/PCT/Hypothesis chunks (worker.py) and the dpor chunks (dpor.py) share."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emu.campaign.images import ImageRef, load_ref
from emu.campaign.shards import Chunk
from emu.engine.executor import Executor
from emu.engine.scenario import Scenario
from emu.engine.scheduler import Default
from emu.search.fuzz import Fuzzer


@dataclass(frozen=True)
class Task:
    chunk: Chunk
    scenario: Scenario
    image: ImageRef
    depth: int = 3
    #: The shared Hypothesis example database (a directory), or None.
    database: str | None = None
    #: Seconds this chunk may run before it stops where it is (the campaign's deadline).
    budget_s: float = 1e9
    #: dpor: the subtree's prefix (JSON pairs), its checkpoint file, the preemption bound.
    prefix: tuple[tuple[int, int], ...] = ()
    checkpoint: str = ""
    bound: int | None = None


@dataclass
class Found:
    signature: dict[str, Any]
    finding: dict[str, Any]
    #: Number of choices of the shrunk schedule: the smaller finding wins.
    size: int


@dataclass
class ChunkResult:
    chunk: Chunk
    #: The run index reached: `chunk.end` when the chunk is complete.
    reached: int
    runs: int = 0
    hits: dict[str, int] = field(default_factory=dict)
    found: dict[str, Found] = field(default_factory=dict)
    coverage: list[int] = field(default_factory=list)
    elapsed: float = 0.0
    #: CPU seconds the worker spent on the chunk (time.process_time).
    cpu: float = 0.0
    pid: int = 0
    host: str = ""
    rss_mb: float = 0.0
    #: PCT's k (decision points of the default run).
    k: int = 0
    #: dpor: equivalence classes of the subtree so far; its search is over (exhausted or
    #: stopped at a violation).
    classes: int = 0
    exhausted: bool = False
    violated: bool = False


class Warm:
    """A scenario's warm fuzzer and what a worker learned about it."""

    def __init__(self, scenario: Scenario, ref: ImageRef) -> None:
        image = load_ref(ref, scenario.cpu or None)
        self.fuzzer = Fuzzer(scenario, Executor(scenario, image))
        self.k = self.fuzzer.run(Default())[0].points
        #: Raw signature id -> the shrunk signature and its finding.
        self.shrunk: dict[str, Found] = {}
        self.image_name = Path(ref.name).name


#: Warm fuzzers by (thread, scenario), least recently used first: a Dask worker with
#: several threads must not share a machine between them. Each holds a Unicorn machine
#: (about 3.6 MB: peak RSS 49 MB with 4 warm, 176 MB with the catalog's 39).
_WARM: OrderedDict[str, Warm] = OrderedDict()
#: Warm fuzzers a worker keeps; beyond, the least recently used is dropped.
MAX_WARM = 48


def get_warm(scenario: Scenario, ref: ImageRef) -> Warm:
    key = f"{threading.get_ident()}:{ref.sha256}:{scenario!r}"
    w = _WARM.get(key)
    if w is None:
        w = _WARM[key] = Warm(scenario, ref)
        while len(_WARM) > MAX_WARM:
            _WARM.popitem(last=False)
    _WARM.move_to_end(key)
    return w


def warm(tasks: list[tuple[Scenario, ImageRef]]) -> int:
    """Build the warm fuzzers of `tasks` in this worker; its pid (start-up measure)."""
    for scenario, ref in tasks:
        get_warm(scenario, ref)
    return os.getpid()
