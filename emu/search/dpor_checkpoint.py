"""`dpor`'s durable state: the exploration frontier as a JSON checkpoint, and independent
subtrees for parallel workers.

A checkpoint holds the exploration path (every node with its backtrack, explored and
sleep entries) and the counters, after a whole number of executions; resuming re-runs the
path's prefix and goes on exactly as the interrupted search would have, so the final
counts equal an uninterrupted run's. It is written to a temporary name in the same
directory and renamed over the old one (atomic on POSIX): a kill leaves the previous
checkpoint or the new one, never half of one.

`subtrees(run_one, depth)` splits the search for parallel workers: it returns schedule
prefixes (non-default choices at the first `depth` decision points, every option at
each); `DporStrategy(prefix=p)` explores exactly the executions that start with p, and
the union over all prefixes covers every class (the split points explore every option,
which is always a valid source set, so no reversal crosses from one subtree into another).
A subtree starts with the options its earlier siblings take at the split points asleep
(emu/search/dpor_siblings.py), as one search would; a class may still be explored in two.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emu.engine.choice import Options, is_agent_point
from emu.engine.scheduler import PointInfo, Scheduler
from emu.errors import UsageError
from emu.search.dependence import Event
from emu.search.dpor_sched import Node
from emu.search.dpor_trace import agent_of
from emu.search.strategy import Result

#: /2: events carry the vCPUs a host step parks and resumes; /3: the state says whether
#: retries are assumed (retry-assume) and counts the runs with one; /4: host events say
#: whether the host planned a record right after them; /5: bounded searches keep sleep sets
#: (a file made without them would resume with other sleep entries).
FORMAT = "vdsofuzz-dpor-checkpoint/5"
#: A prefix: (decision point, agent) pairs; agent -1 is the host.
Prefix = tuple[tuple[int, int], ...]


def _node_json(n: Node) -> dict[str, Any]:
    return {
        "t": n.t,
        "point": n.point,
        "options": list(n.options),
        "chosen": n.chosen,
        "preemptions": n.preemptions,
        "prev": n.prev,
        "action": n.action,
        "sleep": [[a, e.to_json()] for a, e in n.sleep.items()],
        "spin": sorted(n.spin),
        "event": None if n.event is None else n.event.to_json(),
        "explored": [[a, e.to_json()] for a, e in n.explored.items()],
        "backtrack": list(n.backtrack),
        "fixed": n.fixed,
    }


def _node(d: dict[str, Any]) -> Node:
    return Node(
        int(d["t"]),
        int(d["point"]),
        tuple(int(a) for a in d["options"]),
        int(d["chosen"]),
        int(d["preemptions"]),
        None if d["prev"] is None else int(d["prev"]),
        bool(d["action"]),
        {int(a): Event.from_json(e) for a, e in d["sleep"]},
        frozenset(int(a) for a in d["spin"]),
        None if d["event"] is None else Event.from_json(d["event"]),
        {int(a): Event.from_json(e) for a, e in d["explored"]},
        [int(a) for a in d["backtrack"]],
        bool(d.get("fixed", False)),
    )


def save(path: Path, state: dict[str, Any], nodes: list[Node]) -> None:
    """Write the checkpoint: `state` (counters, scenario key) and the path `nodes`."""
    doc = {"format": FORMAT, **state, "path": [_node_json(n) for n in nodes]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, separators=(",", ":")))
    os.replace(tmp, path)


def load(path: Path) -> tuple[dict[str, Any], list[Node]] | None:
    """The checkpoint at `path` (None when there is none yet)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UsageError(f"--checkpoint {path}: cannot read ({e.strerror})") from None
    try:
        doc = json.loads(text)
        if doc.get("format") != FORMAT:
            raise ValueError(f"not a dpor checkpoint (format {FORMAT!r})")
        return doc, [_node(n) for n in doc["path"]]
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"--checkpoint {path}: {e}; delete it to start afresh") from None


class _ActionPoint(Exception):
    """The probe met an action point (task migration, speculative TSC)."""


class _Probe(Scheduler):
    """Follows a prefix, then the default; remembers the first point after it."""

    wants_info = True

    def __init__(self, prefix: Prefix) -> None:
        self.plan = dict(prefix)
        self.after = max(self.plan, default=-1)
        self.next: tuple[int, tuple[int, ...]] | None = None

    def choose(self, point: int, options: Options, info: PointInfo | None) -> int:
        if not is_agent_point(options):
            raise _ActionPoint
        agents = tuple(agent_of(o) for o in options)
        if point in self.plan:
            return agents.index(self.plan[point])
        if point > self.after and self.next is None:
            self.next = (point, agents)
        return 0


def subtrees(run_one: Callable[[Scheduler], Result], depth: int) -> list[Prefix]:
    """Prefixes that split the search into independent subtrees (see the module doc).
    Only agent decisions are split (a scenario with action points is one subtree)."""
    out: list[Prefix] = [()]
    for _ in range(depth):
        grown: list[Prefix] = []
        for prefix in out:
            probe = _Probe(prefix)
            try:
                run_one(probe)
            except _ActionPoint:
                return [()]
            if probe.next is None:
                grown.append(prefix)
                continue
            point, agents = probe.next
            grown += [prefix + ((point, a),) for a in agents]
        out = grown
    return out
