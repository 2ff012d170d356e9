"""Who may run, and the decisions: fairness, migration, speculation, and the scheduler.

`Decider` is the only caller of the run's `Scheduler`. It keeps the set of agents that can
run, offers options with the default first, records the non-default choices into the run
and advances the decision counter (in `_ask`, and in `passed` for points the native lane
ran without asking).
"""

from __future__ import annotations

from collections.abc import Callable

from emu.engine.choice import (
    Choice,
    Migrate,
    Options,
    RunHost,
    RunTask,
    SpeculativeTsc,
    Stay,
)
from emu.engine.scheduler import NEVER, PointInfo
from emu.engine.state import State, Task

#: Consecutive events one agent may run before the default choice moves on (fairness, so
#: a reader spinning on an odd version lets the host finish).
SPIN = 32
#: Guest task migrations one run may make (`--task-migration`); then no more are offered.
MIGRATIONS = 64
#: How many steps back a speculative `rdtsc` may be taken (`--speculative-tsc`).
SPECULATION = 16
#: Options are cached under epoch * _KEY + default: agent numbers (at most 64 vCPUs and
#: the host) stay below it.
_KEY = 256

_STAY: Options = (Stay(),)


class Decider:
    """Decisions for one executor's scenario; the run's part lives in its `State`."""

    def __init__(self, vcpus: int, pages: dict[str, int]) -> None:
        self.vcpus = vcpus
        #: The host's agent number (tasks are 0 .. vcpus - 1).
        self.host = vcpus
        self.agents: tuple[Choice, ...] = tuple(RunTask(i) for i in range(vcpus)) + (RunHost(),)
        self.pages = pages
        #: Load site address -> the width of its load in bytes (filled by the site handlers;
        #: only `PointInfo` reads it).
        self.widths: dict[int, int] = {}
        #: Takes a snapshot at a decision point (set by the executor; `PointInfo.snapshot`).
        self.capture: Callable[[], object] | None = None

    def refresh(self, st: State) -> None:
        """Recompute who can run; called whenever a task finishes, a vCPU is parked or
        resumed, a task migrates, or the host runs out of steps."""
        parked = st.parked
        st.enabled = [t.index for t in st.tasks if not t.done and t.vcpu not in parked]
        if st.host_next is not None:
            st.enabled.append(self.host)
        st.epoch += 1

    def next_agent(self, st: State) -> int | None:
        """The agent that runs the next event (None: nobody can), after a migration point
        when those are on."""
        if st.migrate and st.migrations < MIGRATIONS:
            self._migration_point(st)
        cur = st.current
        enabled = st.enabled
        if st.run_len < SPIN and cur in enabled:
            default = cur
        elif not enabled:
            return None
        else:
            n = self.host + 1
            default = min(enabled, key=lambda a: (a - cur - 1) % n)
        if len(enabled) == 1:
            choice = default
        else:
            agents, options = self.options(st, default)
            choice = agents[self._ask(st, options, self._info(st) if st.wants_info else None)]
        if choice == cur:
            st.run_len += 1
        else:
            st.run_len = 1
            st.current = choice
        return choice

    def options(self, st: State, default: int) -> tuple[tuple[int, ...], Options]:
        """The agents a decision offers when `default` is the default, and their choices."""
        key = st.epoch * _KEY + default
        cached = st.options.get(key)
        if cached is None:
            agents = (default,) + tuple(a for a in st.enabled if a != default)
            cached = st.options[key] = (agents, tuple(self.agents[a] for a in agents))
        return cached

    def _ask(self, st: State, options: Options, info: PointInfo | None) -> int:
        """Ask the scheduler at the next decision point; record a non-default choice."""
        k = st.scheduler.choose(st.point, options, info)
        if not 0 <= k < len(options):
            raise ValueError(f"scheduler chose option {k} of {len(options)}")
        if k:
            st.run.choices.append((st.point, options[k]))
        st.point += 1
        return k

    def passed(self, st: State, events: int) -> None:
        """The running task ran `events` more events without a decision (the native lane
        ran them: each was a decision point whose default stood when others could run)."""
        if len(st.enabled) > 1:
            st.point += events
        st.run_len += events

    def quiet(self, st: State, task: Task) -> int:
        """Decision points `task` may pass without asking: fairness keeps it (SPIN) and the
        scheduler keeps the default (`quiet_until`). NEVER when nobody else can run."""
        if len(st.enabled) <= 1:
            return NEVER
        options = self.options(st, task.index)[1]
        until = st.scheduler.quiet_until(st.point, options)
        return min(SPIN - st.run_len, until - st.point)

    def _migration_point(self, st: State) -> None:
        """`--task-migration`: the guest scheduler may move one task to another vCPU here.

        Option 0 (`stay`) moves nobody; `t0>v1` moves task 0 to vCPU 1: its registers go
        with it, its TSC, TSC_AUX and rdpid come from vCPU 1 from now on. Only a task whose
        vCPU is in guest mode can be moved; the host is not told.
        """
        # The moves change only with who can run (the epoch: a move itself refreshes it).
        options = st.moves.get(st.epoch)
        if options is None:
            moves = tuple(
                Migrate(t.index, w)
                for t in st.tasks
                if not t.done and t.vcpu not in st.parked
                for w in range(self.vcpus)
                if w != t.vcpu
            )
            options = st.moves[st.epoch] = _STAY + moves if moves else ()
        if not options:
            return
        k = self._ask(st, options, self._action_info(st, True))
        if k:
            move = options[k]
            assert isinstance(move, Migrate)
            task = st.tasks[move.task]
            task.vcpu = move.vcpu
            # A context switch serialises: no rdtsc is taken from before it.
            task.spec_from, task.spec_loads = st.t, 0
            st.migrations += 1
            self.refresh(st)

    def speculate(self, st: State, task: Task, t: int) -> int:
        """`--speculative-tsc`: the step whose TSC an unfenced `rdtsc` at step `t` returns.

        With a shared-page load since the task's last fence (`lfence`, `mfence`, `cpuid`),
        VM exit or context switch, the rdtsc may have executed before those loads completed:
        option `tsc-k` returns the TSC of step t-k, as far back as the start of that window
        but never before the read's first visible operation (so a stale but consistent TSC
        is not reported as a mis-timed read; a TSC from before a retry's version load is).
        """
        back = min(t - task.spec_from, SPECULATION)
        if not task.spec_loads or back <= 0:
            return t
        # Farthest back first: the earliest TSCs are the ones that can predate a record.
        options = tuple(SpeculativeTsc(k) for k in range(back, 0, -1))
        k = self._ask(st, (SpeculativeTsc(0),) + options, self._action_info(st, False))
        return t - options[k - 1].back if k else t

    def _info(self, st: State) -> PointInfo:
        """What the pending operation and the host's next step touch (`Scheduler.wants_info`)."""
        step = st.host_next
        writes = None
        if step is not None and not (step.park or step.unpark or step.tsc):
            pages = self.pages
            writes = tuple(
                (pages[w.page] + w.offset, pages[w.page] + w.offset + len(w.data))
                for w in step.writes
            )
        task = st.running
        choice: RunTask | None = None
        if st.op is not None and task is not None:
            agent = self.agents[task.index]
            assert isinstance(agent, RunTask)
            choice = agent
        reads = tuple([t.read for t in st.tasks])
        return PointInfo(
            choice,
            st.op,
            writes,
            st.t,
            st.run,
            reads,
            self.pages,
            self.widths,
            # With migrations, the agent decision follows a migration point in the same
            # `next_agent`: a run can resume only at the migration point.
            self.capture if st.snapshots and not st.migrate else None,
        )

    def _action_info(self, st: State, first: bool) -> PointInfo | None:
        """The `PointInfo` of an action point: only the time and the run so far. `first`:
        the point opens `next_agent` (a migration point), where a snapshot can be taken."""
        if not st.wants_info:
            return None
        reads = tuple([t.read for t in st.tasks])
        capture = self.capture if first and st.snapshots else None
        return PointInfo(None, None, None, st.t, st.run, reads, self.pages, self.widths, capture)
