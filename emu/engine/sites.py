"""What each kind of hooked site does in Python: a handler per kind of visible operation.

The executor hooks every site (emu/engine/decode.py) with the handler of its kind, bound
to the site and, for loads, to how its address is formed. A handler asks the executor
whether the running task may go on (`may_run`: a decision, maybe a switch), then executes
or emulates the operation and records it (`record_op`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Protocol

from emu.engine import decode, lane
from emu.engine.decisions import Decider
from emu.engine.decode import FENCE, LOAD, RDPID, SYSCALL, TSC, TSCP, Site
from emu.engine.lane_bridge import How, LaneBridge
from emu.engine.machine import Machine
from emu.engine.run import FALLBACK, HANG, Op
from emu.engine.state import READ_OPS, State, Task

#: The handler of a site kind other than loads: (site, address) -> None.
Handler = Callable[[Site, int], None]


class Runner(Protocol):
    """What the handlers need of the executor that runs them (the executor is one): its
    machine, its decisions, the run in progress, and the three calls a site makes."""

    machine: Machine
    decider: Decider
    st: State | None

    def may_run(self, kind: str, ea: int, size: int) -> State | None: ...

    def record_op(self, st: State, task: Task, ops: Sequence[Op]) -> int: ...

    def end_read(
        self, st: State, task: Task, outcome: str, value: int | None, detail: str = ""
    ) -> None: ...


class SiteHandlers:
    """The Python side of every hooked site of one executor."""

    def __init__(self, ex: Runner) -> None:
        self.ex = ex
        self.machine = ex.machine
        self.shared = ex.machine.layout.shared
        #: How many sites of the image are hooked (visible operations and fences).
        self.hooked = 0
        #: Load width at each hooked load's address, what `emu.engine.readsfrom` needs to
        #: know which bytes a load read: the decider's own map (it tells schedulers that
        #: reduce), filled by `hook_all`.
        self.widths = ex.decider.widths
        self._by_kind: dict[str, Handler] = {
            FENCE: self.fence,
            TSC: self.rdtsc,
            TSCP: self.rdtscp,
            RDPID: self.rdpid,
            SYSCALL: self.syscall,
        }

    def hook_all(self, native: bool) -> LaneBridge | None:
        """Hook every site of the image: with the native lane when `native` and it can be
        built (the bridge is returned), else each with its handler, in Python."""
        m = self.machine
        lay = m.layout
        rel_shared = (self.shared[0] - lay.base, self.shared[1] - lay.base)
        found = {lay.base + s.addr: s for s in decode.scan(m.image, rel_shared)}
        hooked: dict[int, tuple[Site, How]] = {
            addr: (site, self.address(site) if site.kind == LOAD else 0)
            for addr, site in sorted(found.items())
        }
        self.hooked = len(hooked)
        self.widths.update({a: s.mem.size for a, (s, _) in hooked.items() if s.mem is not None})
        on_site = {addr: self.bind(site, how) for addr, (site, how) in hooked.items()}
        if native and lane.library() is not None:
            return LaneBridge(m, hooked, on_site, self.ex.decider, self.ex.record_op)
        for addr, hook in on_site.items():
            m.hook_code(addr, hook)
        return None

    def address(self, site: Site) -> How:
        """How a load's effective address is formed: the address itself when it is fixed,
        else (base reg, index reg, scale, disp, mask) with 0 for no register."""
        m = site.mem
        if m is None:
            return 0
        if m.fixed is not None:
            return self.machine.layout.base + m.fixed
        mask = (1 << self.machine.bits) - 1
        return (m.base or 0, m.index or 0, m.scale, m.disp, mask)

    def bind(self, site: Site, how: How) -> Callable[[int], None]:
        """The hook of `site`: its kind's handler, called with the site's address."""
        if isinstance(how, int):
            if site.kind == LOAD:
                return partial(self.load_at, site, how)
            return partial(self._by_kind[site.kind], site)
        return partial(self.load, site, how)

    def load(self, site: Site, how: tuple[int, int, int, int, int], addr: int) -> None:
        """A load whose address is formed from registers: a visible operation when it
        touches the clock pages."""
        base, index, scale, ea, mask = how
        reg = self.machine.reg
        if base:
            ea += reg(base)
        if index:
            ea += reg(index) * scale
        self.load_at(site, ea & mask, addr)

    def load_at(self, site: Site, ea: int, addr: int) -> None:
        """A load of address `ea` (fixed, or computed by `load`)."""
        lo, hi = self.shared
        if not lo <= ea < hi:
            return
        assert site.mem is not None
        st = self.ex.may_run(LOAD, ea, site.mem.size)
        if st is None:
            return
        task = st.running
        assert task is not None
        op = Op(st.t, task.index, task.vcpu, LOAD, addr, ea)
        self._record(st, task, op)

    def fence(self, site: Site, addr: int) -> None:
        """`lfence`, `mfence`, `cpuid`: no rdtsc after it is taken from before it."""
        st = self.ex.st
        assert st is not None
        task = st.running
        if task is not None:
            task.spec_from, task.spec_loads = st.t, 0

    def rdtsc(self, site: Site, addr: int) -> None:
        """`rdtsc`: with `--speculative-tsc`, maybe the TSC of a few steps back."""
        self._tsc(site, addr, TSC)

    def rdtscp(self, site: Site, addr: int) -> None:
        """`rdtscp`: ordered (never speculative), and sets TSC_AUX to the vCPU number."""
        self._tsc(site, addr, TSCP)

    def _tsc(self, site: Site, addr: int, kind: str) -> None:
        """Emulated (registers set, the instruction skipped): the binding cannot hook
        rdtsc, and the engine's own would read the host's TSC."""
        st = self.ex.may_run(kind, 0, 0)
        if st is None:
            return
        task = st.running
        assert task is not None
        t = at = st.t
        aux = None
        if kind == TSCP:
            aux = task.vcpu
        elif st.speculative:
            at = self.ex.decider.speculate(st, task, t)
        tsc = st.clock.tsc(task.vcpu, at)
        m = self.machine
        m.set_tsc(tsc, aux)
        m.set_reg(m.pc, addr + site.size)
        op = Op(t, task.index, task.vcpu, kind, addr, tsc)
        self._record(st, task, op)

    def rdpid(self, site: Site, addr: int) -> None:
        """`rdpid`: the task's vCPU number, emulated like the TSC reads."""
        st = self.ex.may_run(RDPID, 0, 0)
        if st is None:
            return
        task = st.running
        assert task is not None
        m = self.machine
        assert site.reg is not None
        m.set_reg(site.reg, task.vcpu)
        m.set_reg(m.pc, addr + site.size)
        op = Op(st.t, task.index, task.vcpu, RDPID, addr, task.vcpu)
        self._record(st, task, op)

    def syscall(self, site: Site, addr: int) -> None:
        """A way into the kernel: the read falls back to the syscall, which returns the
        model's true time."""
        st = self.ex.may_run(SYSCALL, 0, 0)
        if st is None:
            return
        task = st.running
        assert task is not None
        t = st.t
        self.ex.record_op(st, task, (Op(t, task.index, task.vcpu, SYSCALL, addr, 0),))
        self.ex.end_read(st, task, FALLBACK, st.clock.ns(t))
        st.stop = "read"
        self.machine.stop()

    def _record(self, st: State, task: Task, op: Op) -> None:
        """Record `op` in the task's read; a read that makes more than READ_OPS visible
        operations with the host quiescent is a hang."""
        if self.ex.record_op(st, task, (op,)) > READ_OPS and st.host_next is None:
            self.ex.end_read(st, task, HANG, None, f"no result after {READ_OPS} visible operations")
            st.run.stopped = HANG
            st.stop = "read"
            self.machine.stop()
