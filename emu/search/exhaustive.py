"""`exhaustive`: every interleaving up to a preemption bound, by stateless DFS (loom-style).

Without a bound (`Settings.preemptions` None, the CLI's default) `exhaustive` runs `dpor`
(emu/search/dpor.py) instead, which verifies every interleaving.

The executor is deterministic, so a run is fixed by the option taken at each decision
point. The search re-executes the scenario once per interleaving: it follows a recorded
prefix of choices, takes the default everywhere after it, and records the options offered
at every decision point it passes; then it backtracks to the deepest decision point with an
alternative left and runs again. Where alternatives are left, it also keeps the executor's
snapshot of the run (emu/engine/snapshot.py), so the next run starts at the decision it
changes instead of re-running the prefix (as `dpor` does); the runs are the same
(tests/test_dpor_speed.py). Where it cannot branch (the prefix it follows, and every point
past its last preemption within the bound) the executor's native lane runs the points
without asking it; the search is the same as with every point in Python
(tests/test_lane.py).

Preemption bound. A non-default choice is a preemption when the agent chosen at the
previous decision point is still among the options (it could have gone on running);
switching away from an agent that finished, or was parked, is free. Choosing the agent the
executor's fairness rotation just moved away from also counts as a preemption. At action
points (a guest task migration, a speculative TSC: options that are not agents) every
non-default choice counts as one. With `bound` preemptions per run the search is finite,
and it says "verified within bound k" when it finishes without a violation.

Reduction (sound for the information a decision point carries today: the options).
Tasks only read the shared pages and write their own stacks, so between two host steps
their visible operations commute: every load returns the same bytes whichever task goes
first. Within such a gap the search therefore never switches to a task that has already
run in the gap (other than the one running): any interleaving that does is equivalent to
one in which that task's operations in the gap are contiguous, which takes no more
preemptions and is explored. A gap ends at every step of the host or of any option that
is neither a task nor the host (task migration, speculation), and at host steps the
search cannot see: a task reappearing among the options after being absent (only a host
step unparks a vCPU). Two caveats of the equivalence: operations that read the TSC see the
logical time, which the reordering shifts by a few steps, and the executor's fairness
rotation (32 events per agent) can make a merged segment cost one more preemption.
A second reduction uses what the executor tells a decision point (`PointInfo`): when the
running task is about to load an address that the host's next step does not write, running
the host first or the load first gives the same values, and the host can still go right
after the load at the same preemption cost; so the host alternative is skipped there.
`reduce=False` turns both reductions off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from emu.engine.choice import Choice, Options, RunHost, RunTask, is_agent_point
from emu.engine.scheduler import NEVER, PointInfo, Scheduler
from emu.errors import UsageError
from emu.search.strategy import RunOne, Settings, Strategy

NO_INFO = PointInfo()


class Nondeterminism(RuntimeError):
    """A re-execution offered different options than the recorded one at the same point."""


@dataclass(frozen=True)
class Walk:
    """What the search knows before a decision point: enough to judge its alternatives."""

    #: The choice taken at the previous agent decision point (None before the first).
    last: Choice | None = None
    preemptions: int = 0
    #: Tasks that ran since the last host step or action (the current gap).
    ran: frozenset[Choice] = frozenset()
    #: The options offered at the previous agent decision point.
    prev: Options = ()

    def gap_reset(self, options: Options) -> bool:
        """Did a host step the search could not see happen since the previous point?"""
        return bool(self.prev) and any(
            isinstance(o, RunTask) and o not in self.prev for o in options
        )

    def cost(self, options: Options, k: int) -> int:
        """Preemptions that taking option `k` adds."""
        if not k:
            return 0
        if not is_agent_point(options):
            return 1
        return 1 if self.last is not None and self.last in options else 0

    def branches(self, options: Options, bound: int) -> bool:
        """May a point with `options` take an alternative within `bound` preemptions? (Every
        alternative costs the same, so the first says it for all.)"""
        return len(options) > 1 and self.preemptions + self.cost(options, 1) <= bound

    def pruned(self, options: Options, k: int) -> bool:
        """Does the reduction skip option `k` (a switch to a task that already ran here)?"""
        choice = options[k]
        if not isinstance(choice, RunTask) or choice == self.last:
            return False
        ran = frozenset() if self.gap_reset(options) else self.ran
        return choice in ran

    def after(self, options: Options, k: int) -> Walk:
        if (
            not k
            and options[0] == self.last
            and options[0] in self.ran
            and (options is self.prev or options == self.prev)
        ):
            # The running task goes on at the same options: nothing changes (the common
            # case, at almost every point of a run).
            return self
        cost = self.cost(options, k)
        if not is_agent_point(options):
            # An action (migration, speculation) ends the gap; "nothing" changes nothing.
            return Walk(
                self.last, self.preemptions + cost, frozenset() if k else self.ran, self.prev
            )
        choice = options[k]
        ran = frozenset() if self.gap_reset(options) else self.ran
        ran = ran | {choice} if isinstance(choice, RunTask) else frozenset()
        return Walk(choice, self.preemptions + cost, ran, options)


#: The alternatives a decision point leaves to explore, from its options, the walk before
#: it and what the executor says there.
Todo = Callable[[Options, Walk, PointInfo], list[int]]


@dataclass
class Frame:
    options: Options
    before: Walk
    chosen: int = 0
    todo: list[int] = field(default_factory=list)
    #: The run's state just before this decision, taken when alternatives are left here:
    #: the runs that take them start from it (None: none could be taken here).
    snap: object | None = None


class Guided(Scheduler):
    """One run's scheduler: follow `frames`' choices, then the default, adding a frame for
    every decision point past them (with the alternatives `todo` gives).

    It wants a `PointInfo` only where the search may branch: the executor's native lane
    runs the rest (`quiet_until`), the followed frames that keep the default and, once
    the run has spent its preemptions, every point that offers the agent that ran last.
    """

    wants_info = True
    takes_snapshots = True

    def __init__(self, frames: list[Frame], todo: Todo, bound: int) -> None:
        self.frames = frames
        self.todo = todo
        #: Frames the run follows; past them it adds its own.
        self.known = len(frames)
        #: The preemption bound: past it, a point whose options hold the agent that ran
        #: last leaves nothing to explore.
        self.bound = bound
        #: The options `quiet_until` was last told (what the points it passed offered).
        self.told: Options = ()
        # The search's first run follows nothing and spends no preemption: never quiet.
        self.quiet_with_info = self.known > 0

    def quiet_until(self, point: int, options: Options) -> int:
        """Quiet along the followed frames that keep the default (up to the one the run
        changes, which takes its snapshot there), and past them once the run has spent
        its preemptions: no point it passes then has an alternative within the bound."""
        self._fill(point)
        self.told = options
        frames = self.frames
        if point < self.known:
            i = point
            while i < self.known - 1 and not frames[i].chosen and frames[i].options == options:
                i += 1
            return i
        walk, bound = self._walk(), self.bound
        # Here and at the points after it (the default leaves the walk as it is then).
        if walk.branches(options, bound) or walk.after(options, 0).branches(options, bound):
            return point
        return NEVER

    def _walk(self) -> Walk:
        """What the search knows before the next point past the frames."""
        f = self.frames[-1] if self.frames else None
        return f.before.after(f.options, f.chosen) if f is not None else Walk()

    def _fill(self, point: int) -> None:
        """Frames for the points the executor passed without asking (all kept the
        default, and offered the options `quiet_until` was told)."""
        frames = self.frames
        if len(frames) < point:
            # They leave nothing to explore, so only the walk after the last one matters,
            # and the default at the same options leaves the walk as it was after the first.
            walk = self._walk()
            frames.extend(Frame(self.told, walk) for _ in range(point - len(frames)))

    def start_from(self) -> object | None:
        """The deepest followed frame's snapshot: only its choice differs from the run
        that took it (the search changes the deepest frame, and drops those below)."""
        for f in reversed(self.frames[: self.known]):
            if f.snap is not None:
                return f.snap
        return None

    def choose(self, index: int, options: Options, info: PointInfo | None) -> int:
        frames = self.frames
        if index < self.known:
            f = frames[index]
            if f.options != options:
                raise Nondeterminism(
                    f"decision {index} offered {_labels(options)}, but an earlier run with the "
                    f"same choices offered {_labels(f.options)}: the executor is not deterministic"
                )
            if index == self.known - 1 and f.todo and f.snap is None and info is not None:
                f.snap = info.snapshot() if info.snapshot is not None else None
            return f.chosen
        self._fill(index)
        info = info or NO_INFO
        walk = self._walk()
        todo = self.todo(options, walk, info)
        # Not in the search's first run: the search comes back to most of its decision
        # points only much later (or never, when it stops at a violation), so each is
        # taken when the search first changes its decision (just above).
        snap = info.snapshot() if todo and self.known and info.snapshot is not None else None
        frames.append(Frame(options, walk, 0, todo, snap))
        return 0


def _labels(options: Options) -> str:
    return " ".join(o.label for o in options)


class ExhaustiveStrategy(Strategy):
    name = "exhaustive"
    #: Until done: the search is finite.
    default_budget = 10**12

    def __init__(self, bound: int = 2, reduce: bool = True) -> None:
        if bound < 0:
            raise UsageError(f"--preemptions must be at least 0, not {bound}")
        super().__init__()
        self.bound = bound
        self.reduce = reduce
        self.interleavings = 0
        self.pruned = 0
        self.commuted = 0
        self.complete = False
        self.violated = False
        #: The search's path, kept between calls so `explore` resumes where it stopped.
        self.frames: list[Frame] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> Strategy:
        """Bounded: this search. Without a bound: `dpor`, which covers every interleaving
        with one execution per equivalence class (emu/search/dpor.py)."""
        if settings.preemptions is None:
            from emu.search.dpor import DporStrategy

            return DporStrategy(
                None,
                label="exhaustive",
                checkpoint=settings.checkpoint,
                assume_retries=settings.assume_retries,
            )
        return cls(settings.preemptions)

    def _alternatives(self, options: Options, before: Walk, info: PointInfo) -> list[int]:
        if not before.branches(options, self.bound):
            return []
        out = []
        for k in range(1, len(options)):
            if self.reduce and before.pruned(options, k):
                self.pruned += 1
                continue
            if (
                self.reduce
                and isinstance(options[k], RunHost)
                and options[0] == info.task
                and info.host_commutes()
            ):
                self.commuted += 1
                continue
            out.append(k)
        return out

    def explore(self, run_one: RunOne, budget: int) -> None:
        """Search until a hit, `budget` interleavings in all (a later call resumes), or done."""
        frames = self.frames
        try:
            while self.interleavings < budget:
                res = run_one(Guided(frames, self._alternatives, self.bound))
                self.interleavings += 1
                if res.hit:
                    self.violated = True
                    return
                while frames and not frames[-1].todo:
                    frames.pop()
                if not frames:
                    self.complete = True
                    return
                top = frames[-1]
                top.chosen = top.todo.pop(0)
        finally:
            self._report(budget)

    def _report(self, budget: int) -> None:
        n = self.interleavings
        self.stats.update(
            {
                "bound": self.bound,
                "interleavings": n,
                "complete": self.complete,
                "reduction": self.reduce,
                "pruned": self.pruned,
                "commuted": self.commuted,
            }
        )
        what = f"{n} distinct interleaving{'s' if n != 1 else ''}"
        red = (
            f", {self.pruned} reordered-only and {self.commuted} commuting host alternatives pruned"
            if self.reduce
            else ""
        )
        if self.violated:
            self.notes.append(f"exhaustive: violation after {what} (preemption bound {self.bound})")
        elif self.complete:
            self.notes.append(
                f"exhaustive: verified within bound {self.bound}: {what} covered, none "
                f"violates{red}"
            )
        else:
            self.notes.append(
                f"exhaustive: NOT verified: stopped after {what} (budget {budget}) before "
                f"covering preemption bound {self.bound}; raise --max-schedules"
            )
