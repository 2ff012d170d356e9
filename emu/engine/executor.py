"""Runs a scenario under a scheduler: the vCPU tasks, the host, and the decision points.

Fast mode lets Unicorn run the guest natively and calls Python only at hooked sites (see
`emu.engine.decode`); stepping mode executes one instruction per engine call and reports each
to an observer, for traces. Both make the same decisions at the same visible operations,
so they produce the same run.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import chain

from unicorn import UC_HOOK_MEM_READ, UcError
from unicorn import x86_const as ux

from emu.engine import decode, lane
from emu.engine.decode import FENCE, LOAD, RDPID, SYSCALL, TSC, TSCP, Site
from emu.engine.machine import EXIT_ADDR, Machine
from emu.engine.run import DECLINED, FALLBACK, FAULT, HANG, VALUE, HostEvent, Op, Read, Run
from emu.engine.scenario import Scenario
from emu.engine.scheduler import PointInfo, Scheduler
from emu.errors import UsageError
from emu.image.elf import Image
from host_model.base import HostModel, HostStep, HostView
from host_model.clock import NS_PER_STEP, Clock
from host_model.pvti import PVTI_SLOT, U64_MAX
from host_model.registry import make_host
from host_model.vdso_data import timekeeping, with_vdso_data

#: Consecutive events one agent may run before the default choice moves on (fairness, so
#: a reader spinning on an odd version lets the host finish).
SPIN = 32
#: Visible operations one read may make once the host is quiescent before it is a hang.
READ_OPS = 4096
#: Instructions a task may run without a visible operation before it is a hang (counted
#: per engine call; a call that made some visible operation goes on with a fresh count).
INSNS = 1_000_000
#: Guest task migrations one run may make (`--task-migration`); then no more are offered.
MIGRATIONS = 64
#: How many steps back a speculative `rdtsc` may be taken (`--speculative-tsc`).
SPECULATION = 16
#: Words of the native lane's state the executor sets and reads (emu/engine/lane.py).
BUDGET, FREE, T, VCPU = (lane.WORD[f] for f in ("budget", "free", "t", "vcpu"))
SEG_START, SEG_TSC, SEG_HZ, N = (lane.WORD[f] for f in ("seg_start", "seg_tsc", "seg_hz", "n"))


@dataclass
class Task:
    index: int
    vcpu: int
    reads_left: int
    read: Read | None = None
    ctx: object | None = None
    saved: object | None = None
    #: Chosen by the last decision: its next visible operation runs without another.
    poised: bool = False
    done: bool = False
    reads: int = 0
    #: Speculative rdtsc window: the step since which no fence, VM exit or context switch
    #: ordered this task, and how many shared-page loads it has made since.
    spec_from: int = 0
    spec_loads: int = 0


@dataclass
class State:
    """Everything one run mutates; a fresh one per run."""

    scheduler: Scheduler
    clock: Clock
    host: HostModel
    view: HostView
    tasks: list[Task]
    run: Run
    host_iter: object = None
    host_next: HostStep | None = None
    parked: frozenset[int] = frozenset()
    parked_since: dict[int, int] = field(default_factory=dict)
    t: int = 0
    point: int = 0
    current: int = -1
    run_len: int = 0
    pending: int | None = None
    running: Task | None = None
    stop: str = ""
    #: Who can run now (task indices, then the host) and a counter of its changes.
    enabled: list[int] = field(default_factory=list)
    epoch: int = 0
    #: The visible operation the running task is about to execute, while it waits for a
    #: decision: (kind, address, size).
    op: tuple[str, int, int] | None = None
    migrations: int = 0


Observer = Callable[[str, object], None]


class _Keys(dict):
    """A cache of `name(address)`, filled on first lookup."""

    def __init__(self, name: Callable[[int], str]) -> None:
        super().__init__()
        self.name = name

    def __missing__(self, ea: int) -> str:
        key = self[ea] = self.name(ea)
        return key


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
        make_host(scenario.host, scenario.host_params)  # validate parameters early
        if scenario.timekeeping and self.image.vdso_data is None:
            raise UsageError(
                f"--timekeeping needs a real vDSO (with vdso_data); {self.image.name} "
                "is a project reader"
            )
        self.machine = Machine(self.image, scenario.vcpus, clock=scenario.clock)
        self.uc = self.machine.uc
        lay = self.machine.layout
        self.shared = lay.shared
        self.labels = tuple(f"t{i}" for i in range(scenario.vcpus)) + ("host",)
        self.HOST = scenario.vcpus
        base = lay.base
        rel_shared = (self.shared[0] - base, self.shared[1] - base)
        self.sites: dict[int, Site] = {}
        for s in decode.scan(self.image, rel_shared):
            self.sites[base + s.addr] = s
        self._site_hooks = {
            addr: (site, self._address(site) if site.kind == LOAD else 0)
            for addr, site in sorted(self.sites.items())
        }
        self._lane = self._start_lane() if native else None
        #: Visible operations (and fences) the lane handed to Python, over all runs.
        self.dispatches = 0
        if self._lane is None:
            for addr, (site, how) in self._site_hooks.items():
                self.machine.hook_code(addr, partial(self._hook, site, how))
        self._lane_on = False
        self._quiet: Callable[[int, tuple[str, ...]], int] | None = None
        self.observer: Observer | None = None
        self.st: State | None = None
        #: Address in the clock pages -> the name of the record it belongs to ("pvti0").
        self._keys = _Keys(self._key_of)
        #: Boot steps seen (kept alive, so their ids stay theirs) -> the page image they give.
        self._images: dict[int, tuple[HostStep, tuple[bytes, HostStep]]] = {}

    def _start_lane(self) -> lane.LaneState | None:
        """Hook every site with the native lane (emu/engine/lane.py), or return None without it."""
        lib = lane.library()
        if lib is None:
            return None
        m = self.machine
        wide = m.bits == 64
        log = (ctypes.c_uint64 * (4 * lane.CAPACITY))()
        python = lane.PYTHON_FN(m.guarded(self._dispatch))
        ls = lane.LaneState(
            reg_read=m.c_function("uc_reg_read"),
            reg_write=m.c_function("uc_reg_write"),
            python=ctypes.cast(python, ctypes.c_void_p).value,
            lo=self.shared[0],
            hi=self.shared[1],
            mask=(1 << m.bits) - 1,
            pc=m.pc,
            ax=ux.UC_X86_REG_RAX if wide else ux.UC_X86_REG_EAX,
            dx=ux.UC_X86_REG_RDX if wide else ux.UC_X86_REG_EDX,
            cx=ux.UC_X86_REG_RCX if wide else ux.UC_X86_REG_ECX,
            ns_per_step=NS_PER_STEP,
            cap=lane.CAPACITY,
            log=ctypes.cast(log, ctypes.POINTER(ctypes.c_uint64)),
        )
        ref = ctypes.pointer(ls)
        lane.hook_sites(m, lib, ref, self._site_hooks)
        for obj in (ls, ref, log, python):
            m.keep(obj)
        self._log = log
        self._words = lane.words(ls)
        return ls

    @property
    def native(self) -> bool:
        """Does this executor run plain continuations in the native lane?"""
        return self._lane is not None

    # --- one run ------------------------------------------------------------------------

    def run(self, scheduler: Scheduler, *, observer: Observer | None = None) -> Run:
        """Run every task's reads to the end under `scheduler`; `observer` turns on stepping."""
        sc = self.scenario
        host = make_host(sc.host, sc.host_params)
        seed = self.image.clock_seed
        if seed is None:
            clock = Clock(sc.vcpus, offsets=host.tsc_offsets(sc.vcpus))
        else:
            clock = Clock(
                sc.vcpus,
                seed.tsc_hz,
                seed.boot_ns,
                host.tsc_offsets(sc.vcpus),
                tsc_base=seed.tsc_base,
            )
        view = HostView(clock, 0, sc.vcpus)
        run = Run([], [], {}, clock, [], 0, 0)
        tasks = [Task(i, i, sc.reads) for i in range(sc.vcpus)]
        st = self.st = State(scheduler, clock, host, view, tasks, run)
        self._wants_info = getattr(scheduler, "wants_info", False)
        self._migrate = self.scenario.task_migration
        self._options_cache: dict[int, tuple[tuple[int, ...], tuple[str, ...]]] = {}
        self.observer = observer
        self._lane_on = self._lane is not None and not (
            observer or self._wants_info or self._migrate or sc.speculative_tsc
        )
        self._quiet = getattr(scheduler, "quiet_until", None)
        setup = with_vdso_data(host.setup(view), self.image.vdso_data, clock.boot_ns)
        pages, effects = self._boot(setup)
        self.machine.reset(pages)
        self._apply(effects, -1)
        st.host_iter = host.steps(view)
        if sc.timekeeping:
            spec = self.image.vdso_data
            st.host_iter = chain(timekeeping(spec, view, sc.timekeeping), st.host_iter)
        st.host_next = next(st.host_iter, None)
        self._refresh()
        while not st.run.stopped:
            agent = st.pending if st.pending is not None else self._next_agent()
            st.pending = None
            if agent is None:
                if all(t.done for t in tasks):
                    break
                raise RuntimeError(f"host {sc.host!r} left every vCPU parked with reads pending")
            if agent == self.HOST:
                self._host_step()
            else:
                tasks[agent].poised = True
                self._resume(tasks[agent])
        run.points = st.point
        run.steps = st.t
        for v, since in st.parked_since.items():
            run.parked.append((since, st.t, frozenset({v})))
        self.st = None
        self.observer = None
        return run

    # --- decisions -----------------------------------------------------------------------

    def _next_agent(self) -> int | None:
        st = self.st
        if self._migrate and st.migrations < MIGRATIONS:
            self._migration_point()
        cur = st.current
        enabled = st.enabled
        if st.run_len < SPIN and cur in enabled:
            default = cur
        elif not enabled:
            return None
        else:
            n = self.HOST + 1
            default = min(enabled, key=lambda a: (a - cur - 1) % n)
        if len(enabled) == 1:
            choice = default
        else:
            options, labels = self._options(default)
            if self._wants_info:
                k = st.scheduler.choose(st.point, labels, self._info())
            else:
                k = st.scheduler.choose(st.point, labels)
            if k:
                if not 0 < k < len(options):
                    raise ValueError(f"scheduler chose option {k} of {len(options)}")
                st.run.choices.append((st.point, labels[k]))
                choice = options[k]
            else:
                choice = default
            st.point += 1
        if choice == cur:
            st.run_len += 1
        else:
            st.run_len = 1
            st.current = choice
        return choice

    def _options(self, default: int) -> tuple[tuple[int, ...], tuple[str, ...]]:
        """The agents a decision offers when `default` is the default, and their labels."""
        st = self.st
        key = st.epoch * 256 + default
        cached = self._options_cache.get(key)
        if cached is None:
            opts = (default,) + tuple(a for a in st.enabled if a != default)
            cached = self._options_cache[key] = (opts, tuple(self.labels[a] for a in opts))
        return cached

    def _migration_point(self) -> None:
        """`--task-migration`: the guest scheduler may move one task to another vCPU here.

        Option 0 (`stay`) moves nobody; `t0>v1` moves task 0 to vCPU 1: its registers go
        with it, its TSC, TSC_AUX and rdpid come from vCPU 1 from now on. Only a task whose
        vCPU is in guest mode can be moved; the host is not told.
        """
        st = self.st
        n = self.scenario.vcpus
        moves = [
            (t, w)
            for t in st.tasks
            if not t.done and t.vcpu not in st.parked
            for w in range(n)
            if w != t.vcpu
        ]
        if not moves:
            return
        labels = ("stay",) + tuple(f"t{t.index}>v{w}" for t, w in moves)
        k = self._choose_action(labels)
        if k:
            st.run.choices.append((st.point, labels[k]))
            task, w = moves[k - 1]
            task.vcpu = w
            # A context switch serialises: no rdtsc is taken from before it.
            task.spec_from, task.spec_loads = st.t, 0
            st.migrations += 1
            self._refresh()
        st.point += 1

    def _speculate(self, task: Task, t: int) -> int:
        """`--speculative-tsc`: the step whose TSC an unfenced `rdtsc` at step `t` returns.

        With a shared-page load since the task's last fence (`lfence`, `mfence`, `cpuid`),
        VM exit or context switch, the rdtsc may have executed before those loads completed:
        option `tsc-k` returns the TSC of step t-k, as far back as the start of that window
        but never before the read's first visible operation (so a stale but consistent TSC
        is not reported as a mis-timed read; a TSC from before a retry's version load is).
        """
        st = self.st
        back = min(t - task.spec_from, SPECULATION)
        if not task.spec_loads or back <= 0:
            return t
        # Farthest back first: the earliest TSCs are the ones that can predate a record.
        labels = ("tsc",) + tuple(f"tsc-{k}" for k in range(back, 0, -1))
        k = self._choose_action(labels)
        if not k:
            st.point += 1
            return t
        st.run.choices.append((st.point, labels[k]))
        st.point += 1
        return t - (back + 1 - k)

    def _refresh(self) -> None:
        """Recompute who can run; called whenever a task finishes, a vCPU is parked or
        resumed, a task migrates, or the host runs out of steps."""
        st = self.st
        parked = st.parked
        st.enabled = [t.index for t in st.tasks if not t.done and t.vcpu not in parked]
        if st.host_next is not None:
            st.enabled.append(self.HOST)
        st.epoch += 1

    def _choose_action(self, labels: tuple[str, ...]) -> int:
        """Ask the scheduler at an action point (migration, speculation)."""
        st = self.st
        if self._wants_info:
            k = st.scheduler.choose(st.point, labels, PointInfo())
        else:
            k = st.scheduler.choose(st.point, labels)
        if not 0 <= k < len(labels):
            raise ValueError(f"scheduler chose option {k} of {len(labels)}")
        return k

    def _info(self) -> PointInfo:
        st = self.st
        step = st.host_next
        writes = None
        if step is not None and not (step.park or step.unpark or step.tsc):
            pages = self.machine.layout.pages
            writes = tuple(
                (pages[w.page] + w.offset, pages[w.page] + w.offset + len(w.data))
                for w in step.writes
            )
        task = st.running.index if st.op is not None and st.running is not None else None
        return PointInfo(None if task is None else self.labels[task], st.op, writes)

    def _turn(self, task: Task, agent: int | None = None) -> bool:
        """May `task` (not poised) execute its visible operation now? Runs host steps
        chosen before it. `agent`: the next agent when the caller has already chosen it."""
        st = self.st
        if agent is None:
            agent = self._next_agent()
        while agent == self.HOST:
            self._host_step()
            agent = self._next_agent()
        if agent == task.index:
            return True
        st.pending = agent
        return False

    # --- host --------------------------------------------------------------------------

    def _apply(self, step: HostStep, t: int) -> None:
        st = self.st
        pages = self.machine.layout.pages
        for w in step.writes:
            self.machine.write(pages[w.page] + w.offset, w.data)
        for p in step.publish:
            st.run.history.setdefault(p.key, []).append((t, p.snapshot))
        for c in step.tsc:
            st.clock.retune(c.vcpu, max(t, 0), hz=c.hz, jump=c.jump)
        if step.park or step.unpark:
            for v in step.park:
                st.parked_since.setdefault(v, t)
            for task in st.tasks:
                if task.vcpu in step.unpark:
                    # VM exit and entry serialise the vCPU: no rdtsc is taken from before.
                    task.spec_from, task.spec_loads = t + 1, 0
            for v in step.unpark:
                if v in st.parked_since:
                    st.run.parked.append((st.parked_since.pop(v), t, frozenset({v})))
            st.parked = (st.parked | step.park) - step.unpark
            self._refresh()

    def _boot(self, step: HostStep) -> tuple[bytes, HostStep]:
        """The shared pages as bytes after the boot `step`'s writes (for one memory write),
        and the step without its writes (for its records and other effects)."""
        hit = self._images.get(id(step))
        if hit is not None and hit[0] is step:
            return hit[1]
        boot = (self._build_page_image(step), replace(step, writes=()))
        if len(self._images) >= 16:  # hosts whose boot differs per run: keep it bounded
            self._images.clear()
        self._images[id(step)] = (step, boot)
        return boot

    def _build_page_image(self, step: HostStep) -> bytes:
        lo, hi = self.shared
        buf = bytearray(hi - lo)
        pages = self.machine.layout.pages
        for w in step.writes:
            at = pages[w.page] + w.offset - lo
            buf[at : at + len(w.data)] = w.data
        return bytes(buf)

    def _host_step(self) -> None:
        st = self.st
        step = st.host_next
        t = st.t
        st.t += 1
        self._apply(step, t)
        event = HostEvent(t, step)
        st.run.host.append(event)
        if self.observer:
            self.observer("host", event)
        st.view.t = st.t
        st.host_next = next(st.host_iter, None)
        if st.host_next is None:
            self._refresh()

    # --- guest -------------------------------------------------------------------------

    def _key_of(self, ea: int) -> str:
        hit = self.machine.layout.locate(ea)
        if hit is None:
            return "?"
        name, off = hit
        return f"pvti{off // PVTI_SLOT}" if name == "pvclock" else name

    def _address(self, site: Site) -> tuple[int, int, int, int, int] | int:
        """How a load's effective address is formed, for `_hook`: the address itself when it
        is fixed, else (base reg, index reg, scale, disp, mask) with 0 for no register."""
        m = site.mem
        if m.fixed is not None:
            return self.machine.layout.base + m.fixed
        mask = (1 << self.machine.bits) - 1
        return (m.base or 0, m.index or 0, m.scale, m.disp, mask)

    def _hook(self, site: Site, how: tuple[int, int, int, int, int] | int, addr: int) -> None:
        st = self.st
        task = st.running
        kind = site.kind
        ea = 0
        if kind == LOAD:
            if how.__class__ is int:
                ea = how
            else:
                base, index, scale, ea, mask = how
                reg = self.machine.reg
                if base:
                    ea += reg(base)
                if index:
                    ea += reg(index) * scale
                ea &= mask
            lo, hi = self.shared
            if not lo <= ea < hi:
                return
        elif kind == FENCE:
            if task is not None:
                task.spec_from, task.spec_loads = st.t, 0
            return
        if task.poised:
            task.poised = False
            turn = True
        elif self._wants_info:
            st.op = (kind, ea, site.mem.size if site.mem is not None else 0)
            turn = self._turn(task)
            st.op = None
        else:
            agent = self._next_agent()
            turn = agent == task.index or self._turn(task, agent)
        if not turn:
            if self.observer is None and st.pending is not None:
                self._switch(task, st.tasks[st.pending])
            else:
                st.stop = "switch"
                self.machine.stop()
            return
        t = st.t
        st.t += 1
        read = task.read
        if read.start < 0:
            read.start = t
            # A speculative rdtsc stays within its own read (see `_speculate`).
            task.spec_from = max(task.spec_from, t)
        read.end = t
        if kind == LOAD:
            read.keys.add(self._keys[ea])
            read.ops.append(Op(t, task.index, task.vcpu, kind, addr, ea))
            task.spec_loads += 1
        elif kind in (TSC, TSCP):
            at = t
            if kind == TSC and self.scenario.speculative_tsc:
                at = self._speculate(task, t)
            tsc = st.clock.tsc(task.vcpu, at)
            # Emulated here (registers set, the instruction skipped): the binding cannot hook
            # rdtsc, and the engine's own would read the host's TSC.
            m = self.machine
            m.set_tsc(tsc, task.vcpu if kind == TSCP else None)
            m.set_reg(m.pc, addr + site.size)
            read.ops.append(Op(t, task.index, task.vcpu, kind, addr, tsc))
        elif kind == RDPID:
            m = self.machine
            m.set_reg(site.reg, task.vcpu)
            m.set_reg(m.pc, addr + site.size)
            read.ops.append(Op(t, task.index, task.vcpu, kind, addr, task.vcpu))
        elif kind == SYSCALL:
            read.ops.append(Op(t, task.index, task.vcpu, kind, addr, 0))
            self._end_read(task, FALLBACK, st.clock.ns(t))
            st.stop = "read"
            self.machine.stop()
            return
        if len(read.ops) > READ_OPS and st.host_next is None:
            self._end_read(task, HANG, None, f"no result after {READ_OPS} visible operations")
            st.run.stopped = HANG
            st.stop = "read"
            self.machine.stop()

    def _end_read(self, task: Task, outcome: str, value: int | None, detail: str = "") -> None:
        read = task.read
        read.outcome = outcome
        read.value = value
        read.detail = detail
        if read.start < 0:
            read.start = read.end = self.st.t
        self.st.run.reads.append(read)
        if self.observer:
            self.observer("read", read)
        task.read = None
        task.ctx = None
        task.spec_from, task.spec_loads = self.st.t, 0
        task.reads += 1
        task.reads_left -= 1
        if task.reads_left == 0:
            task.done = True
            self._refresh()

    # --- the native lane ----------------------------------------------------------------

    def _dispatch(self, addr: int) -> None:
        """The lane's call into Python: settle its log, run the hook, grant a new budget."""
        self.dispatches += 1
        if self._words[N]:
            self._settle()
        site, how = self._site_hooks[addr]
        self._hook(site, how, addr)
        self._grant()

    def _grant(self, chosen: bool = False) -> None:
        """Let the lane run the running task's next visible operations that are plain
        continuations: the scheduler keeps the default there (`quiet_until`), fairness
        keeps the same agent (SPIN), and no hang check is due (READ_OPS). `chosen`: the
        task was just chosen to run, so its first operation is decided already."""
        w = self._words
        st = self.st
        task = st.running
        if not chosen and w[FREE] and task is not None and task.poised:
            return  # the task was just switched to, and its grant stands
        budget = -1
        if (
            self._lane_on
            and not st.stop
            and task is not None
            and (chosen or not task.poised)
            and task.read is not None
            and st.current == task.index
            and task.index in st.enabled
        ):
            budget = READ_OPS - len(task.read.ops) - 1
            if len(st.enabled) > 1:
                quiet = self._quiet
                if quiet is None:
                    budget = 0
                else:
                    labels = self._options(task.index)[1]
                    budget = min(budget, SPIN - st.run_len, quiet(st.point, labels) - st.point)
        if budget < 0 or (budget == 0 and not chosen):
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

    def _drain(self) -> None:
        """Settle the lane's log if it holds operations the run does not have yet."""
        if self._lane is not None and self._words[N]:
            self._settle()

    def _settle(self) -> None:
        """Take the operations the lane ran into the run, as `_hook` would have."""
        w = self._words
        n = w[N]
        w[N] = w[BUDGET] = w[FREE] = 0
        st = self.st
        task = st.running
        read = task.read
        vals = self._log[: 4 * n]
        index, vcpu = task.index, task.vcpu
        names = lane.KIND_NAMES
        ops = read.ops
        keys = read.keys
        known = self._keys
        counted = n
        loads = 0
        it = iter(vals)
        for t, k, pc, arg in zip(it, it, it, it, strict=True):
            if k & lane.FREE:
                k ^= lane.FREE
                task.poised = False
                counted -= 1
            if k == 0:  # a load
                keys.add(known[arg])
                loads += 1
            ops.append(Op(t, index, vcpu, names[k], pc, arg))
        if read.start < 0:
            read.start = vals[0]
            task.spec_from = max(task.spec_from, vals[0])
        read.end = vals[-4]
        st.t = read.end + 1
        task.spec_loads += loads
        if len(st.enabled) > 1:
            st.point += counted
        st.run_len += counted

    # --- task contexts -----------------------------------------------------------------

    def _save(self, task: Task) -> None:
        """Keep `task`'s registers, stopped before its pending visible operation."""
        if task.saved is None:
            task.saved = self.uc.context_save()
        else:
            self.uc.context_update(task.saved)
        task.ctx = task.saved

    def _load(self, task: Task) -> None:
        """Put `task`'s registers in the CPU: where it stopped, or the entry of a new read."""
        self.st.running = task
        if task.ctx is None:
            task.read = Read(task.index, task.reads, task.vcpu)
            self.uc.context_restore(self.machine.entry_context(task.index))
        else:
            self.uc.context_restore(task.ctx)

    def _switch(self, old: Task, new: Task) -> None:
        """From a hook: continue with `new` in the same engine call (an engine entry costs
        more than the switch). Writing the PC makes the engine leave the current
        translation block and go on at `new`'s PC."""
        st = self.st
        st.pending = None
        self._save(old)
        new.poised = True
        self._load(new)
        if self._lane is not None:
            self._grant(chosen=True)
        m = self.machine
        m.set_reg(m.pc, m.reg(m.pc))

    def _resume(self, task: Task) -> None:
        st = self.st
        m = self.machine
        st.stop = ""
        self._load(task)
        pc = m.reg(m.pc)
        if self._lane is not None:
            self._grant(chosen=True)
        try:
            if self.observer is None:
                while True:
                    t = st.t
                    m.start(pc, EXIT_ADDR, INSNS)
                    pc = m.reg(m.pc)
                    if st.stop or pc == EXIT_ADDR:
                        break
                    # The engine ran out of instructions. Tasks switch inside an engine
                    # call, so that is a hang only if no visible operation happened.
                    self._drain()
                    if st.t == t:
                        break
                    if self._lane is not None:
                        self._grant()
            else:
                self._step_until_stop(task, pc)
        except UcError as e:
            self._drain()
            task = st.running
            pc = m.reg(m.pc)
            self._end_read(task, FAULT, None, f"{e} at {self.image.symbolize(pc - m.layout.base)}")
            st.run.stopped = FAULT
            return
        self._drain()
        task = st.running
        if st.stop == "read":
            return
        pc = m.reg(m.pc)
        if st.stop == "switch":
            self._save(task)
            return
        if pc == EXIT_ADDR:
            value = m.result(task.index)
            self._end_read(task, DECLINED if value == U64_MAX else VALUE, value)
            return
        self._end_read(task, HANG, None, f"{INSNS} instructions without a visible operation")
        st.run.stopped = HANG

    # --- stepping mode -----------------------------------------------------------------

    def _step_until_stop(self, task: Task, pc: int) -> None:
        """Execute one instruction per engine call, reporting each to the observer."""
        uc = self.uc
        m = self.machine
        st = self.st
        reads: list[tuple[int, int, bytes]] = []
        quiet, last = 0, st.t

        def on_read(uc, access, addr, size, value, _):
            reads.append((addr, size, bytes(uc.mem_read(addr, size))))

        h = uc.hook_add(UC_HOOK_MEM_READ, on_read, None, self.shared[0], self.shared[1] - 1)
        # Code translated before the hook existed would not call it.
        uc.ctl_flush_tb()
        try:
            while quiet < INSNS:
                if pc == EXIT_ADDR:
                    return
                before = m.regs()
                t = st.t
                reads.clear()
                m.start(pc, EXIT_ADDR, 1)
                if st.stop and m.reg(m.pc) == pc:
                    return  # stopped before the instruction: nothing executed
                after = m.regs()
                ops = task.read.ops if task.read else []
                op = ops[-1] if ops and ops[-1].pc == pc and ops[-1].t >= t else None
                self.observer(
                    "insn", (task.index, task.vcpu, st.t, pc, before, after, list(reads), op)
                )
                pc = m.reg(m.pc)
                if st.stop:
                    return
                if st.t != last:
                    quiet, last = 0, st.t
                else:
                    quiet += 1
        finally:
            uc.hook_del(h)
            uc.ctl_flush_tb()
