"""The sleep set a `dpor` subtree starts with: what its earlier siblings do at the split.

A subtree (emu/search/dpor_checkpoint.py `subtrees`) is the search below a prefix of
choices at the first decision points; at each of them the split takes every option, one
subtree each, in option order. One search exploring the options of such a point in that
order would put each explored option to sleep in the later ones (its event, until
something dependent happens), and so does a subtree: the option taken before its own at a
split point is explored by a sibling subtree, which covers every class that starts with
it. The subtree needs those options' events there, which it never runs; probes find them:
a run that follows the prefix up to the split point, takes the sibling's option there and
the default after. The event is recorded as the search would record it (`STUCK` when it
starts a retry, under retry-assume). Under a preemption bound the subtree puts to sleep
only the siblings that cost less there than its own choice, as one bounded search would
(`dpor_sched.sleepers`).
"""

from __future__ import annotations

from collections.abc import Callable

from emu.engine.choice import Options, is_agent_point
from emu.engine.run import Run
from emu.engine.scheduler import NEVER, PointInfo, Scheduler
from emu.search.dependence import HOST, Event
from emu.search.dpor_sched import STUCK, first_retries
from emu.search.dpor_trace import agent_of, host_event, read_events
from emu.search.strategy import Result

#: Per split point, the events of the options taken before the subtree's own there.
Asleep = dict[int, dict[int, Event]]


class _Follow(Scheduler):
    """Follows `plan` (point -> agent), the default elsewhere; keeps the agents offered
    and the point's information at the points of `watch`."""

    wants_info = True

    def __init__(self, plan: dict[int, int], watch: set[int]) -> None:
        self.plan = plan
        self.watch = watch
        self.offered: dict[int, tuple[int, ...]] = {}
        self.infos: dict[int, PointInfo] = {}

    def choose(self, point: int, options: Options, info: PointInfo | None) -> int:
        if not is_agent_point(options):
            return 0
        agents = tuple(agent_of(o) for o in options)
        if point in self.watch and info is not None:
            self.offered[point], self.infos[point] = agents, info
        a = self.plan.get(point)
        return agents.index(a) if a in agents else 0


def _event_at(info: PointInfo, agent: int, assume_retries: bool) -> Event | None:
    """The event `agent` took at the point `info` describes (the run is over)."""
    run, t = info.run, info.t
    if run is None:
        return None
    if agent == HOST:
        hit = next((ev for ev in run.host if ev.t == t), None)
        return None if hit is None else host_event(hit, info.pages)
    for r in run.reads:
        if r.task == agent and r.ops and r.ops[0].t <= t <= r.ops[-1].t:
            for et, e in read_events(r, True, t, info.widths, info.pages):
                if et == t:
                    return Event(agent, STUCK) if _stuck(run, agent, t, assume_retries) else e
    return None


def _stuck(run: Run, agent: int, t: int, assume_retries: bool) -> bool:
    """Is `agent` stuck at `t` under retry-assume (its first retry started by then)?"""
    return assume_retries and first_retries(run.reads, {}).get(agent, NEVER) <= t


def asleep(
    run_one: Callable[[Scheduler], Result],
    prefix: tuple[tuple[int, int], ...],
    assume_retries: bool = True,
) -> tuple[Asleep, int, bool]:
    """The events of the options before the prefix's own at each of its points, the runs
    the probes took, and whether one of them violated. An event not found (the option's
    operation never showed) is left out: a smaller sleep set only prunes less."""
    plan = dict(prefix)
    first = _Follow(plan, set(plan))
    runs, hit = 1, run_one(first).hit
    out: Asleep = {}
    for point, chosen in prefix:
        agents = first.offered.get(point, ())
        before = agents[: agents.index(chosen)] if chosen in agents else ()
        for q in before:
            if hit:
                return out, runs, hit
            probe = _Follow({p: a for p, a in prefix if p < point} | {point: q}, {point})
            runs += 1
            hit = run_one(probe).hit
            info = probe.infos.get(point)
            e = None if info is None else _event_at(info, q, assume_retries)
            if e is not None:
                out.setdefault(point, {})[q] = e
    return out, runs, hit
