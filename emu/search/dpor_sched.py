"""The scheduler of one `dpor` run and the exploration tree's nodes.

A run follows the recorded choices of its prefix (the path down to the node being
re-explored), then, in the fresh part, builds a `Node` per event as it goes: it keeps the
sleep set (agents whose next event was already explored from an equivalent state and
that nothing dependent has happened to since) and the preemption count when a bound is
asked. A task that starts a retry is stuck from there (retry-assume, emu/search/dpor_spin.py):
its operations become `STUCK` events that depend on nothing, and it is not chosen while
another agent can run. When every agent it could choose is asleep, stuck or over the
bound, the run is *blocked*: it is redundant from there, finishes with default choices
(which the executor's native lane runs without asking), and its rest is not analysed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from emu.engine.choice import Options, SpeculativeTsc
from emu.engine.run import Read, Run
from emu.engine.scheduler import NEVER, PointInfo, Scheduler
from emu.errors import UsageError
from emu.search.dependence import HOST, Event, dependent
from emu.search.dpor_spin import spinning
from emu.search.dpor_trace import Offers, host_event, read_events


class Nondeterminism(RuntimeError):
    """A re-execution offered different options than the recorded one at the same point."""


@dataclass
class Node:
    """One step of the exploration path: an event position (t) or an action point."""

    #: Logical time of the event (action points: of the event they precede).
    t: int
    #: The decision point's number, -1 when the event was forced (one agent could run).
    point: int
    #: Agent nodes: the agents offered, in option order (tasks 0.., the host HOST).
    #: Action nodes: the option count as range(n).
    options: tuple[int, ...]
    chosen: int
    #: Preemptions before this node and the agent chosen at the previous agent decision.
    preemptions: int = 0
    prev: int | None = None
    action: bool = False
    sleep: dict[int, Event] = field(default_factory=dict)
    spin: frozenset[int] = frozenset()
    #: The chosen agent's event here in the latest run.
    event: Event | None = None
    #: Agents explored here before `chosen`, with their events (they sleep in later ones).
    explored: dict[int, Event] = field(default_factory=dict)
    #: Agents (or action options) still to explore here.
    backtrack: list[int] = field(default_factory=list)
    #: Part of a fixed prefix (a subtree's root path): never backtracked to.
    fixed: bool = False
    #: The executor's snapshot of the run just before this decision (None: not taken, as
    #: after a checkpoint's resume): a later run whose path goes through here starts here.
    snap: object | None = field(default=None, repr=False, compare=False)

    def pending(self) -> list[int]:
        """What is left to explore here."""
        return [
            a
            for a in self.backtrack
            if a != self.chosen and a not in self.explored and a not in self.sleep
        ]


_NOBODY: frozenset[int] = frozenset()
#: The event kind of a stuck task's operation (retry-assume): it depends on nothing.
STUCK = "stuck"


def _time(p: tuple[int, Event]) -> int:
    return p[0]


def _open_to(node: Node, chosen: int) -> bool:
    """Can `node` ever be explored with another agent than `chosen` (one neither asleep
    nor spin-blocked there)? Only then is a snapshot worth taking there."""
    return any(a != chosen and a not in node.sleep and a not in node.spin for a in node.options)


def cost(node: Node, agent: int, vcpus: int) -> int:
    """Preemptions that choosing `agent` at `node` adds (as `exhaustive` counts them: a
    non-default choice while the previous agent could go on; switching away from a
    spin-blocked agent is free where the executor's fairness rotation would go)."""
    if node.action:
        return 1 if agent else 0
    if agent == node.options[0] or node.prev is None or node.prev not in node.options:
        return 0
    if node.prev in node.spin:
        n = vcpus + 1
        p = node.prev if node.prev >= 0 else vcpus
        rot = min(node.options, key=lambda a: ((a if a >= 0 else vcpus) - p - 1) % n)
        return 0 if agent == rot else 1
    return 1


def sleepers(node: Node, bound: int | None, vcpus: int) -> dict[int, Event]:
    """The agents explored at `node` before its chosen one that sleep after it: under a
    bound only those that cost less there than the chosen one (emu/search/dpor.py says
    why that is sound and why all of them would not be)."""
    if bound is None:
        return node.explored
    mine = cost(node, node.chosen, vcpus)
    return {q: e for q, e in node.explored.items() if cost(node, q, vcpus) < mine}


def first_retries(reads: Iterable[Read], stuck: dict[int, int]) -> dict[int, int]:
    """Add to `stuck` (task -> time) the first retry of each task not in it yet: a stuck
    task stays stuck from there (its reads come in order)."""
    for r in reads:
        if r.task not in stuck and (at := r.first_retry()) is not None:
            stuck[r.task] = at
    return stuck


def _wake(sleep: dict[int, Event], e: Event) -> dict[int, Event]:
    """The sleep set after `e`: the agents whose events depend on it wake, and so does its
    own agent (under a bound it may run asleep, below a spin-blocked agent)."""
    return {q: s for q, s in sleep.items() if q != e.agent and not dependent(s, e)}


def follow(node: Node, options: Options, agents: tuple[int, ...] | None) -> int:
    """The recorded choice at `node`, where a run offers `options` (`agents` of them)."""
    if node.action:
        if len(options) != len(node.options):
            raise Nondeterminism(f"decision {node.point} offered {len(options)} options")
        return node.chosen
    if agents is None or agents != node.options:
        raise Nondeterminism(
            f"decision {node.point} offered agents {agents}, an earlier run with the same "
            f"choices {node.options}: the executor is not deterministic"
        )
    return agents.index(node.chosen)


class DporRun(Scheduler):
    """Follows `path` (its last node's `chosen` is the new choice), then explores afresh."""

    wants_info = True
    takes_snapshots = True
    #: Once blocked, a run only finishes with default choices: the lane runs the rest.
    quiet_with_info = True

    def __init__(
        self,
        path: list[Node],
        bound: int | None,
        vcpus: int = 0,
        fixed: dict[int, int] | None = None,
        assume_retries: bool = True,
        asleep: dict[int, dict[int, Event]] | None = None,
    ) -> None:
        self.path = path
        #: Retry-assume (emu/search/dpor_spin.py): a task that retries is stuck; if not,
        #: spin-assume.
        self.assume_retries = assume_retries
        #: Decision point -> agent: the subtree's prefix, taken when first met; and the
        #: events of the options before it there, explored by sibling subtrees.
        self.fixed = fixed or {}
        self.asleep = asleep or {}
        self.vcpus = vcpus
        self.bound = bound
        self._by_point = {n.point: n for n in path if n.point >= 0}
        last = path[-1] if path else None
        #: Events from this time on are new (analysed here); before it, the prefix's.
        self.fresh_t = last.t if last is not None else 0
        self.sleep: dict[int, Event] = {}
        self.preempt = 0
        self.prev: int | None = None
        if last is not None:
            self._start_at(last)
        self.events: dict[int, Event] = {}
        #: The agent node whose event has not run yet (it is the next event).
        self._open: Node | None = None
        for n in reversed(path):
            if n.t != self.fresh_t:
                break
            if not n.action:
                self._open = n
                break
        self.blocked_at: int | None = None
        self.run: Run | None = None
        self._done_t = self.fresh_t
        self._ended = 0
        self._host = 0
        self._pages: Mapping[str, int] = {}
        self._widths: Mapping[int, int] = {}
        self._agents_of = Offers()
        #: Task -> when its first retry started (retry-assume): from then on the task is
        #: stuck, its operations are nobody's business and it is not chosen.
        self._stuck: dict[int, int] = {}
        self._scanned = False

    @property
    def stuck_from(self) -> int:
        """When the run's first retry started (`NEVER`: none; a run with one is no class)."""
        return min(self._stuck.values(), default=NEVER)

    def _start_at(self, node: Node) -> None:
        """The sleep set and preemptions right after the re-chosen last node of the path."""
        self.preempt = node.preemptions + cost(node, node.chosen, self.vcpus)
        if node.action:
            self.sleep = dict(node.sleep) if not node.chosen else {}
            self.prev = node.prev
        else:
            self.sleep = {**node.sleep, **sleepers(node, self.bound, self.vcpus)}
            self.prev = node.chosen

    def start_from(self) -> object | None:
        """The snapshot of the deepest node of the path that has one: the run starts there
        (the path's choices before it are the ones its run made)."""
        for n in reversed(self.path):
            if n.snap is not None:
                return n.snap
        return None

    # --- the run's events ------------------------------------------------------------

    def catch_up(self, run: Run, reads: tuple[Read | None, ...], until: int) -> None:
        """Take the events with fresh_t <= t < `until` into nodes and the sleep set."""
        since = self._done_t
        if until <= since:
            return
        got: list[tuple[int, Event]] = []
        pages, widths = self._pages, self._widths
        fresh = run.reads[self._ended :]
        for r in fresh:
            got += read_events(r, True, since, widths, pages)
        self._ended = len(run.reads)
        for live in reads:
            # Most reads made no operation since the last call: skip them cheaply.
            if live is not None and live.ops and live.ops[-1].t >= since:
                got += read_events(live, False, since, widths, pages)
                fresh.append(live)
        if self.assume_retries:
            if not self._scanned:  # tasks that got stuck in the prefix
                self._scanned = True
                fresh = [*run.reads, *(r for r in reads if r is not None)]
            first_retries(fresh, self._stuck)
        for ev in run.host[self._host :]:
            if ev.t >= since:
                got.append((ev.t, host_event(ev, pages)))
        self._host = len(run.host)
        if len(got) > 1:
            got.sort(key=_time)
        for t, e in got:
            if t >= until:
                break
            self._take(t, e)
        self._done_t = until

    def _take(self, t: int, e: Event) -> None:
        if e.agent >= 0 and t >= self._stuck.get(e.agent, NEVER):
            e = Event(e.agent, STUCK)  # depends on nothing: a stuck task's operations
        self.events[t] = e
        if self.blocked_at is not None:
            return
        node = self._open
        if node is None or node.t != t:
            if e.agent in self.sleep:
                # The only agent that could run is asleep: the rest is redundant.
                self.blocked_at = t
                return
            node = Node(t, -1, (e.agent,), e.agent, self.preempt, self.prev, sleep=self.sleep)
            self.path.append(node)
        self._open = None
        node.event = e
        if self.sleep:
            self.sleep = _wake(self.sleep, e)

    def finish(self, run: Run) -> None:
        """After the run: take its last events."""
        self.run = run
        if self.blocked_at is None:  # a blocked run is analysed up to the block only
            self.catch_up(run, (), run.steps)

    # --- decisions -------------------------------------------------------------------

    def quiet_until(self, point: int, options: Options) -> int:
        """Quiet once blocked (nothing after the block is analysed), else never."""
        return NEVER if self.blocked_at is not None else point

    def choose(self, point: int, options: Options, info: PointInfo | None) -> int:
        assert info is not None and info.run is not None
        self.run = info.run
        if self.blocked_at is not None:
            return 0  # the path's decisions all come before the block, and nothing after
        self.vcpus = len(info.reads)
        self._pages, self._widths = info.pages, info.widths
        self.catch_up(info.run, info.reads, info.t)
        node = self._by_point.get(point)
        if node is not None:
            return follow(node, options, self._agents_of(options))
        if self.blocked_at is not None:
            return 0
        agents = self._agents_of(options)
        if agents is None:
            return self._action(point, options, info)
        spin = _NOBODY
        if self._stuck:
            now = info.t
            spin = frozenset(a for a, at in self._stuck.items() if at <= now and a in agents)
        elif HOST in agents and not self.assume_retries:
            run, pages, widths = info.run, info.pages, info.widths
            spin = frozenset(
                a for a in agents if a >= 0 and spinning(info.reads[a], run, pages, widths)
            )
        node = Node(info.t, point, agents, agents[0], self.preempt, self.prev, False)
        node.sleep, node.spin = self.sleep, spin
        if point in self.fixed:
            return self._fixed(node, agents)
        # Under a bound, from a spin-blocked agent the switch to the fairness rotation's
        # next agent is free, which the bounded sleep sets' argument does not cover.
        sleep = self.sleep if self.bound is None or self.prev not in spin else _NOBODY
        for k in self._order(node, agents):
            a = agents[k]
            if a in sleep or a in spin:
                continue
            c = cost(node, a, self.vcpus)
            if self.bound is not None and self.preempt + c > self.bound:
                continue
            if info.snapshot is not None and _open_to(node, a):
                node.snap = info.snapshot()
            node.chosen = a
            self.path.append(node)
            self._open = node
            self.preempt += c
            self.prev = a
            return k
        self.blocked_at = info.t
        return 0

    def _order(self, node: Node, agents: tuple[int, ...]) -> Sequence[int]:
        """The order the fresh part tries options in (any is sound: tests check three).
        Under a bound a free one first: a costly first choice can use up the bound and
        block the run, whose alternatives are then never analysed."""
        if self.bound is None:
            return range(len(agents))
        return sorted(range(len(agents)), key=lambda k: cost(node, agents[k], self.vcpus))

    def _fixed(self, node: Node, agents: tuple[int, ...]) -> int:
        """Take the prefix's choice at `node`; every other option there belongs to a
        sibling subtree, and those before it sleep here as if explored
        (emu/search/dpor_siblings.py)."""
        a = self.fixed[node.point]
        if a not in agents:
            raise Nondeterminism(f"prefix choice {a} not offered at decision {node.point}")
        node.chosen, node.fixed, node.sleep = a, True, dict(self.sleep)
        if a in self.sleep and (self.bound is None or self.prev not in node.spin):
            # Asleep since an earlier split point: every run here has an equivalent in
            # the sibling subtree that took it there, so this whole subtree is redundant.
            self.blocked_at = node.t
        before = agents[: agents.index(a)]
        mine = self.asleep.get(node.point, {})
        node.explored = {q: mine[q] for q in before if q in mine and q not in node.spin}
        self.sleep = {**self.sleep, **sleepers(node, self.bound, self.vcpus)}
        self.path.append(node)
        self._open = node
        self.preempt += cost(node, a, self.vcpus)
        self.prev = a
        return agents.index(a)

    def _action(self, point: int, options: Options, info: PointInfo) -> int:
        """An action point (migration, speculative TSC): every option is explored within the
        bound and before any retry (emu/search/dpor.py says why)."""
        if self.assume_retries and isinstance(options[0], SpeculativeTsc):
            raise UsageError(
                "dpor: retry-assume loses classes with speculative TSCs (a retry's rdtsc can "
                "return an older TSC): assume_retries=scenario.independent_attempts"
            )
        node = Node(info.t, point, tuple(range(len(options))), 0, self.preempt, self.prev, True)
        node.sleep = self.sleep
        if (self.bound is None or self.preempt < self.bound) and self.stuck_from > info.t:
            node.backtrack = list(range(1, len(options)))
            if info.snapshot is not None:
                node.snap = info.snapshot()
        self.path.append(node)
        return 0
