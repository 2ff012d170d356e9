"""The executor's side of the native lane (lane.c, built by emu/engine/lane.py).

`LaneBridge` hooks every site with the lane, grants it a budget of visible operations that
are already decided (plain continuations of the running task), and settles the lane's log
into the run whenever Python runs again, through the executor's `record_op`. The C
protocol: the lane runs an operation itself while `budget` > 0 (or `free` is set: the
operation was chosen by the last decision), logging (t, kind, pc, arg), and calls Python
for the rest.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence

from unicorn import x86_const as ux

from emu.engine import lane
from emu.engine.decisions import Decider
from emu.engine.decode import Site
from emu.engine.machine import Machine
from emu.engine.run import Op
from emu.engine.state import READ_OPS, State, Task
from host_model.clock import NS_PER_STEP
from host_model.pvti import U64_MAX

#: Words of the lane's state the bridge sets and reads (emu/engine/lane.py).
BUDGET, FREE, T, VCPU = (lane.WORD[f] for f in ("budget", "free", "t", "vcpu"))
SEG_START, SEG_TSC, SEG_HZ, N = (lane.WORD[f] for f in ("seg_start", "seg_tsc", "seg_hz", "n"))

#: Runs the Python side of the hooked site at an address.
OnSite = Callable[[int], None]
#: The executor's `record_op`: executed operations of the running task into the run.
Record = Callable[[State, Task, Sequence[Op]], int]
#: How a load's address is formed (see `SiteHandlers.address`).
How = tuple[int, int, int, int, int] | int


class LaneBridge:
    """The lane of one executor's machine; `st` is the run in progress (None between)."""

    def __init__(
        self,
        machine: Machine,
        sites: dict[int, tuple[Site, How]],
        on_site: dict[int, OnSite],
        decider: Decider,
        record: Record,
    ) -> None:
        self.machine = machine
        self.decider = decider
        self.record = record
        self.on_site = on_site
        self.st: State | None = None
        #: Visible operations (and fences) the lane handed to Python, over all runs.
        self.dispatches = 0
        self._log = (ctypes.c_uint64 * (4 * lane.CAPACITY))()
        self.state = self._hook_sites(sites)
        self.words = lane.words(self.state)

    def _hook_sites(self, sites: dict[int, tuple[Site, How]]) -> lane.LaneState:
        m = self.machine
        wide = m.bits == 64
        python = lane.PYTHON_FN(m.guarded(self._dispatch))
        lo, hi = m.layout.shared
        ls = lane.LaneState(
            reg_read=m.c_function("uc_reg_read"),
            reg_write=m.c_function("uc_reg_write"),
            python=ctypes.cast(python, ctypes.c_void_p).value,
            lo=lo,
            hi=hi,
            mask=(1 << m.bits) - 1,
            pc=m.pc,
            ax=ux.UC_X86_REG_RAX if wide else ux.UC_X86_REG_EAX,
            dx=ux.UC_X86_REG_RDX if wide else ux.UC_X86_REG_EDX,
            cx=ux.UC_X86_REG_RCX if wide else ux.UC_X86_REG_ECX,
            ns_per_step=NS_PER_STEP,
            cap=lane.CAPACITY,
            log=ctypes.cast(self._log, ctypes.POINTER(ctypes.c_uint64)),
        )
        library = lane.library()
        assert library is not None
        ref = ctypes.pointer(ls)
        lane.hook_sites(m, library, ref, sites)
        for obj in (ls, ref, self._log, python):
            m.keep(obj)
        return ls

    def _dispatch(self, addr: int) -> None:
        """The lane's call into Python: settle its log, run the site, grant a new budget."""
        st = self.st
        assert st is not None
        self.dispatches += 1
        if self.words[N]:
            self.settle(st)
        self.on_site[addr](addr)
        self.grant(st)

    def grant(self, st: State, chosen: bool = False) -> None:
        """Let the lane run the running task's next visible operations that are plain
        continuations: the decisions keep the default there (`Decider.quiet`), and no hang
        check is due (READ_OPS). `chosen`: the task was just chosen to run, so its first
        operation is decided already."""
        w = self.words
        task = st.running
        if not chosen and w[FREE] and task is not None and task.poised:
            return  # the task was just switched to, and its grant stands
        budget = -1
        if (
            st.lane_on
            and not st.stop
            and task is not None
            and (chosen or not task.poised)
            and task.read is not None
            and st.current == task.index
            and task.index in st.enabled
        ):
            budget = min(READ_OPS - len(task.read.ops) - 1, self.decider.quiet(st, task))
        if task is None or budget < 0 or (budget == 0 and not chosen):
            w[BUDGET] = w[FREE] = 0
            return
        seg = st.clock.segments[task.vcpu][-1]
        w[BUDGET] = min(budget, lane.CAPACITY - 1)
        w[FREE] = 1 if chosen else 0
        w[T] = st.t
        w[VCPU] = task.vcpu
        w[SEG_START] = seg.start
        w[SEG_TSC] = seg.start_tsc & U64_MAX
        w[SEG_HZ] = seg.hz

    def drain(self, st: State) -> None:
        """Settle the log if it holds operations the run does not have yet."""
        if self.words[N]:
            self.settle(st)

    def settle(self, st: State) -> None:
        """Take the operations the lane ran into the run, as the sites' Python side would
        have: one `record_op`, and the decision points they passed."""
        w = self.words
        n = w[N]
        w[N] = w[BUDGET] = w[FREE] = 0
        task = st.running
        assert task is not None
        vals = self._log[: 4 * n]
        index, vcpu = task.index, task.vcpu
        names = lane.KIND_NAMES
        ops: list[Op] = []
        add = ops.append
        make = tuple.__new__  # a named tuple built without its keyword-parsing __new__
        counted = n
        it = iter(vals)
        for t, k, pc, arg in zip(it, it, it, it, strict=True):
            if k & lane.FREE:
                k ^= lane.FREE
                task.poised = False
                counted -= 1
            add(make(Op, (t, index, vcpu, names[k], pc, arg)))
        self.record(st, task, ops)
        self.decider.passed(st, counted)
