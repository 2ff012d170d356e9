"""`dpor` in a campaign: a scenario's exploration tree cut into independent subtrees, each a
shard, and one chunk of a subtree's search.

The driver asks a worker (through the pool) for the scenario's subtrees of depth
`dpor_depth` (emu/search/dpor_checkpoint.py `subtrees`) and keeps them in
`DIR/dpor/s<i>.json`, so a resumed campaign has the same shards. Shard `s<i>-dpor-<k>`
explores the executions that start with prefix k; its search state is the dpor checkpoint
`DIR/dpor/s<i>-<k>.ckpt`. A chunk resumes from that file and runs until the search's
execution count reaches the chunk's end (a multiple of the checkpoint interval, so the
checkpoint is saved there), the search is exhausted, a run violates (the search stops
there: the shard is finished, violated), or the deadline (the chunk reports the
executions the file holds: a repeated chunk repeats at most one checkpoint interval).
Only one chunk of a subtree is ever in flight: the file is the search's single state.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emu.campaign.images import ImageRef
from emu.campaign.store import atomic_write
from emu.engine.scenario import Scenario
from emu.engine.scheduler import Scheduler
from emu.search import dpor_checkpoint
from emu.search.dpor import SAVE_EVERY, DporStrategy
from emu.search.dpor_checkpoint import Prefix
from emu.search.strategy import Result

if TYPE_CHECKING:
    from emu.campaign.warm import ChunkResult, Task


class _OutOfTime(Exception):
    """The chunk's deadline passed between two executions."""


def split(scenario: Scenario, ref: ImageRef, depth: int) -> list[list[list[int]]]:
    """Run in a worker: the scenario's subtree prefixes (as JSON lists)."""
    from emu.campaign.warm import get_warm

    w = get_warm(scenario, ref)

    def run_one(scheduler: Scheduler) -> Result:
        run, vs = w.fuzzer.run(scheduler)
        return Result(bool(vs), run.points)

    return [[list(p) for p in prefix] for prefix in dpor_checkpoint.subtrees(run_one, depth)]


def ask_splits(
    submit: Callable[..., Future[Any]],
    scenarios: Sequence[Scenario],
    images: dict[str, ImageRef],
    depth: int,
    out: Path,
) -> None:
    """Ask workers (through `submit`) for the subtree prefixes of every scenario not split
    yet, and save them."""
    asked = {}
    for i, sc in enumerate(scenarios):
        if not prefixes_path(out, i).exists():
            asked[i] = submit(split, sc, images[sc.image], depth)
    for i, f in asked.items():
        atomic_write(prefixes_path(out, i), json.dumps(f.result()) + "\n")


def prefixes_path(out: Path, scenario: int) -> Path:
    return out / "dpor" / f"s{scenario}.json"


def checkpoint_path(out: Path, scenario: int, subtree: int) -> Path:
    return out / "dpor" / f"s{scenario}-{subtree}.ckpt"


def to_prefix(raw: Any) -> Prefix:
    return tuple((int(p), int(a)) for p, a in raw)


def chunk_end(start: int, chunk: int) -> int:
    """The execution count a chunk runs to: a checkpoint save falls exactly there."""
    size = -(-chunk // SAVE_EVERY) * SAVE_EVERY
    return (start // SAVE_EVERY) * SAVE_EVERY + size


def run(task: Task, out: ChunkResult, deadline: float, one: Any) -> None:
    """Run the chunk of `task`'s subtree; fill `out` (reached, classes, finished)."""
    import time

    c = task.chunk
    ckpt = Path(task.checkpoint)
    strat = DporStrategy(
        task.bound,
        checkpoint=ckpt,
        prefix=to_prefix(task.prefix),
        assume_retries=task.scenario.independent_attempts,
    )

    def run_one(scheduler: Scheduler) -> Result:
        if time.monotonic() >= deadline:
            raise _OutOfTime
        run, vs = one(c.start, scheduler)
        return Result(bool(vs), run.points)

    with contextlib.suppress(_OutOfTime):
        strat.explore(run_one, c.end)
    if strat.violated:
        out.reached, out.exhausted, out.violated = strat.executions, True, True
        out.classes = len(strat.classes)
        return
    got = dpor_checkpoint.load(ckpt)
    doc: dict[str, Any] = got[0] if got is not None else {}
    out.reached = int(doc.get("executions", c.start))
    out.classes = len(doc.get("classes", ()))
    out.exhausted = bool(doc.get("complete", False))


def classes(out: Path, scenario: int, subtrees: int) -> set[int] | None:
    """The union of the scenario's classes over its subtrees' checkpoints (None if one is
    missing)."""
    union: set[int] = set()
    for k in range(subtrees):
        p = checkpoint_path(out, scenario, k)
        if not p.exists():
            return None
        union.update(int(x) for x in json.loads(p.read_text()).get("classes", ()))
    return union


def progress(states: list[Any], bound: int | None) -> str:
    """A scenario's dpor cell from its subtrees' shard states: `3/8 subtrees, 120 exec,
    40 classes summed` (each subtree's own count: a class can count in several; the
    report gives the distinct ones, `classes`), then
    `verified: every interleaving` (or `within bound k`) once every subtree is exhausted
    without a violation, or `violation` when one stopped at one."""
    if not states:
        return ""
    done = sum(1 for st in states if st.exhausted)
    execs = sum(st.schedules for st in states)
    cls = sum(st.classes for st in states)
    head = f"{done}/{len(states)} subtrees, {execs} exec, {cls} classes summed"
    if any(st.violated for st in states):
        return f"{head}; violation"
    if done == len(states):
        scope = "every interleaving" if bound is None else f"within bound {bound}"
        return f"{head}; verified: {scope}"
    return head


def verdicts(out: Path, bound: int | None, scenarios: int) -> dict[int, str]:
    """Scenario index -> its dpor progress, read from DIR (the report's view)."""
    from types import SimpleNamespace

    got: dict[int, str] = {}
    for i in range(scenarios):
        p = prefixes_path(out, i)
        if not p.exists():
            continue
        n = len(json.loads(p.read_text()))
        states = []
        for k in range(n):
            f = out / "checkpoints" / f"s{i}-dpor-{k}.json"
            d = json.loads(f.read_text()) if f.exists() else {}
            states.append(
                SimpleNamespace(
                    exhausted=d.get("exhausted", False),
                    violated=d.get("violated", False),
                    schedules=d.get("schedules", 0),
                    classes=d.get("classes", 0),
                )
            )
        text = progress(states, bound)
        union = classes(out, i, n)
        if union is not None and "verified" in text:
            text += f" ({len(union)} distinct classes)"
        got[i] = text
    return got
