"""Runs a scenario under a scheduler: the run loop over the vCPU tasks and the host.

Fast mode lets Unicorn run the guest natively and calls Python only at hooked sites (see
`emu.engine.decode`); stepping mode executes one instruction per engine call and reports each
to an observer, for traces. Both make the same decisions at the same visible operations,
so they produce the same run.

The parts, each owning one concern: `Decider` (decisions.py: who may run, fairness,
migration, speculation; the only caller of the scheduler), `HostSide` (host_side.py: the
host model's steps and the parked vCPUs), `LaneBridge` (lane_bridge.py: the native lane's
grant and settle protocol), `SiteHandlers` (sites.py: what each kind of visible operation
does), `snapshot.py` (a run that starts from the state an earlier run had at a decision
point, for schedulers that take snapshots: `dpor`, `exhaustive`). The executor keeps the
loop, the switches between tasks and `record_op`.
"""

from __future__ import annotations

from collections.abc import Sequence

from unicorn.unicorn_py3.unicorn import UcError

from emu.engine.decisions import Decider
from emu.engine.decode import LOAD
from emu.engine.host_side import HostSide
from emu.engine.lane_bridge import LaneBridge
from emu.engine.machine import EXIT_ADDR, Machine
from emu.engine.run import DECLINED, FAULT, HANG, VALUE, Op, Run
from emu.engine.scenario import Scenario
from emu.engine.scheduler import Scheduler
from emu.engine.sites import SiteHandlers
from emu.engine.snapshot import at_point, resume
from emu.engine.state import Contexts, Observer, RecordKeys, State, Task
from emu.engine.stepping import step_until_stop
from emu.engine.view import TimedView
from emu.errors import UsageError
from emu.image.elf import Image
from host_model.pvti import U64_MAX
from host_model.registry import make_host


class Executor:
    """One machine for a scenario, reused across runs (the JIT cache stays warm)."""

    def __init__(
        self, scenario: Scenario, image: Image | None = None, *, native: bool = True
    ) -> None:
        """`native=False` runs every visible operation in Python, even when the native
        lane (emu/engine/lane.py) is available: the reference the lane is tested against."""
        from emu.image.loader import load

        self.scenario = scenario
        self.image = image if image is not None else load(scenario.image, cpu=scenario.cpu or None)
        if scenario.timekeeping and self.image.vdso_data is None:
            raise UsageError(
                f"--timekeeping needs a real vDSO (with vdso_data); {self.image.name} "
                "is a project reader"
            )
        self.machine = Machine(self.image, scenario.vcpus, clock=scenario.clock)
        self.uc = self.machine.uc
        lay = self.machine.layout
        self.shared = lay.shared
        self.decider = Decider(scenario.vcpus, lay.pages)
        self.host_side = HostSide(self.machine, self.decider, scenario.writer)
        self.sites = SiteHandlers(self)
        #: The native lane's side in Python, when there is a lane (emu/engine/lane.py).
        self.lane: LaneBridge | None = self.sites.hook_all(native)
        self.st: State | None = None
        #: The run of the latest `run` call, complete or not: after an exception it holds
        #: the choices that led there (the fuzz driver saves them as a replay file).
        self.last_run: Run | None = None
        #: Address in the clock pages -> the name of the record it belongs to ("pvti0").
        self._keys = RecordKeys(self.machine.layout)
        self.contexts = Contexts(self.machine)
        self.decider.capture = lambda: at_point(self.st, self.machine, self)

    @property
    def native(self) -> bool:
        """Does this executor run plain continuations in the native lane?"""
        return self.lane is not None

    @property
    def dispatches(self) -> int:
        """Visible operations (and fences) the lane handed to Python, over all runs."""
        return 0 if self.lane is None else self.lane.dispatches

    # --- one run ------------------------------------------------------------------------

    def run(self, scheduler: Scheduler, *, observer: Observer | None = None) -> Run:
        """Run every task's reads to the end under `scheduler`; `observer` turns on stepping."""
        st = self.st = self._start(scheduler, observer)
        if st.snapshots:
            resume(st, scheduler.start_from(), self, self.machine, self.host_side, self._keys)
        self.last_run = st.run
        if self.lane is not None:
            self.lane.st = st
        try:
            while not st.run.stopped:
                agent = st.pending if st.pending is not None else self.decider.next_agent(st)
                st.pending = None
                if agent is None:
                    if all(t.done for t in st.tasks):
                        break
                    raise RuntimeError(
                        f"host {self.scenario.host!r} left every vCPU parked with reads pending"
                    )
                if agent == self.decider.host:
                    self.host_side.step(st)
                else:
                    st.tasks[agent].poised = True
                    self._resume(st, st.tasks[agent])
        finally:
            self.st = None
            if self.lane is not None:
                self.lane.st = None
        st.run.points = st.point
        st.run.steps = st.t
        self.host_side.finish(st)
        return st.run

    def _start(self, scheduler: Scheduler, observer: Observer | None) -> State:
        """A fresh state for a run: the host, its clock, the tasks, the booted pages."""
        sc = self.scenario
        host = make_host(sc.host, sc.host_params)
        clock = self.host_side.clock(host, self.image.clock_seed)
        wants_info = scheduler.wants_info
        st = State(
            scheduler,
            clock,
            host,
            TimedView(clock, 0, sc.vcpus),
            [Task(i, i, sc.reads) for i in range(sc.vcpus)],
            Run([], [], {}, clock, [], 0, 0),
            observer=observer,
            wants_info=wants_info,
            migrate=sc.task_migration,
            speculative=sc.speculative_tsc,
            lane_on=self.lane is not None
            and not (observer or sc.task_migration or sc.speculative_tsc)
            and (not wants_info or scheduler.quiet_with_info),
            # A speculation point decides inside a site's handler, after its decision: no
            # run could resume there.
            snapshots=wants_info
            and scheduler.takes_snapshots
            and not (observer or sc.speculative_tsc),
        )
        self.host_side.boot(st, self.image.vdso_data, sc.timekeeping)
        self.decider.refresh(st)
        return st

    # --- visible operations ------------------------------------------------------------

    def may_run(self, kind: str, ea: int, size: int) -> State | None:
        """May the running task execute its visible operation (`kind` at address `ea` of
        `size` bytes) now? Yes: the run's state. No (None): the chosen agent was switched
        to or the engine stopped."""
        st = self.st
        assert st is not None and st.running is not None
        task = st.running
        if task.poised:
            task.poised = False
            return st
        if st.wants_info:
            st.op = (kind, ea, size)
            turn = self._turn(st, task)
            st.op = None
        else:
            agent = self.decider.next_agent(st)
            turn = agent == task.index or self._turn(st, task, agent)
        if turn:
            return st
        if st.observer is None and st.pending is not None:
            self._switch(st, task, st.tasks[st.pending])
        else:
            st.stop = "switch"
            self.machine.stop()
        return None

    def _turn(self, st: State, task: Task, agent: int | None = None) -> bool:
        """May `task` (not poised) execute its visible operation now? Runs host steps
        chosen before it. `agent`: the next agent when the caller has already chosen it."""
        if agent is None:
            agent = self.decider.next_agent(st)
        while agent == self.decider.host:
            self.host_side.step(st)
            agent = self.decider.next_agent(st)
        if agent == task.index:
            return True
        st.pending = agent
        return False

    def record_op(self, st: State, task: Task, ops: Sequence[Op]) -> int:
        """Take visible operations `task` executed into its read: from a site's handler
        (one) or from the native lane's log (several, in order). The read's operations
        so far."""
        read = task.read
        assert read is not None
        first = ops[0].t
        if read.start < 0:
            read.start = first
            # A speculative rdtsc stays within its own read (see `Decider.speculate`).
            task.spec_from = max(task.spec_from, first)
        read.end = ops[-1].t
        st.t = read.end + 1
        read.ops += ops
        keys = self._keys
        loads = 0
        for op in ops:
            if op.kind == LOAD:
                read.keys.add(keys[op.arg])
                loads += 1
        task.spec_loads += loads
        return len(read.ops)

    def end_read(
        self, st: State, task: Task, outcome: str, value: int | None, detail: str = ""
    ) -> None:
        """`task`'s read ended (`outcome`); the task's next read starts at its entry."""
        if st.end_read(task, outcome, value, detail):
            self.decider.refresh(st)  # a finished task is no longer offered

    # --- running tasks -----------------------------------------------------------------

    def _switch(self, st: State, old: Task, new: Task) -> None:
        """From a hook: continue with `new` in the same engine call (an engine entry costs
        more than the switch). Writing the PC makes the engine leave the current
        translation block and go on at `new`'s PC."""
        st.pending = None
        self.contexts.save(old, st.snapshots)
        new.poised = True
        self.contexts.load(st, new)
        if self.lane is not None:
            self.lane.grant(st, chosen=True)
        m = self.machine
        m.set_reg(m.pc, m.reg(m.pc))

    def _resume(self, st: State, task: Task) -> None:
        """Run `task` until it is switched away from, its read ends, or the run stops."""
        m = self.machine
        st.stop = ""
        self.contexts.load(st, task)
        pc = m.reg(m.pc)
        if self.lane is not None:
            self.lane.grant(st, chosen=True)
        try:
            if st.observer is None:
                self._run_fast(st, pc)
            else:
                step_until_stop(m, st, task, pc, st.observer, self.scenario.max_insns)
        except UcError as e:
            self._drain(st)
            now = st.running
            assert now is not None
            where = self.image.symbolize(m.reg(m.pc) - m.layout.base)
            self.end_read(st, now, FAULT, None, f"{e} at {where}")
            st.run.stopped = FAULT
            return
        self._drain(st)
        now = st.running
        assert now is not None
        if st.stop == "read":
            return
        if st.stop == "switch":
            self.contexts.save(now, st.snapshots)
            return
        if m.reg(m.pc) == EXIT_ADDR:
            value = m.result(now.index)
            self.end_read(st, now, DECLINED if value == U64_MAX else VALUE, value)
            return
        limit = self.scenario.max_insns
        self.end_read(st, now, HANG, None, f"{limit} instructions without a visible operation")
        st.run.stopped = HANG

    def _run_fast(self, st: State, pc: int) -> None:
        """Let the engine run from `pc` until it stops. Tasks switch inside an engine call,
        so running out of instructions is a hang only if no visible operation happened."""
        m = self.machine
        while True:
            t = st.t
            m.start(pc, EXIT_ADDR, self.scenario.max_insns)
            pc = m.reg(m.pc)
            if st.stop or pc == EXIT_ADDR:
                return
            self._drain(st)
            if st.t == t:
                return
            if self.lane is not None:
                self.lane.grant(st)

    def _drain(self, st: State) -> None:
        if self.lane is not None:
            self.lane.drain(st)
