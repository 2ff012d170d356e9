"""A run's state: the tasks and everything one run mutates, in one place (a fresh one per
run); the executor's parts (decisions, host side, lane bridge) read and change it here.
Also the tasks' registers (`Contexts`) and the names of the clock records (`RecordKeys`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from unicorn.unicorn_py3.unicorn import UcContext

from emu.engine.choice import Options
from emu.engine.machine import Layout, Machine
from emu.engine.run import Read, Run
from emu.engine.scenario import MAX_INSNS
from emu.engine.scheduler import Scheduler
from emu.engine.view import TimedView
from host_model.base import HostModel, HostStep
from host_model.clock import Clock
from host_model.pvti import PVTI_SLOT

#: Visible operations one read may make once the host is quiescent before it is a hang.
READ_OPS = 4096
#: The default hang limit (`Scenario.max_insns`): instructions a task may run without a
#: visible operation (counted per engine call; a call that made some visible operation
#: goes on with a fresh count).
INSNS = MAX_INSNS

#: Told about each instruction ("insn"), host step ("host") and finished read ("read").
#: Stepping mode: an "insn" report may return a loop body (instruction addresses in order)
#: that the engine then runs unreported while the code follows it, reported as one "loop".
Observer = Callable[[str, object], object]


@dataclass
class Task:
    """A guest task: a thread of reads, on a vCPU, with its saved registers."""

    index: int
    vcpu: int
    reads_left: int
    #: The read in progress (None between reads).
    read: Read | None = None
    #: The registers to resume from (None: start a new read); `saved` is the buffer reused.
    ctx: UcContext | None = None
    saved: UcContext | None = None
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
    view: TimedView
    tasks: list[Task]
    run: Run
    #: Set for stepping mode (traces): every instruction is reported.
    observer: Observer | None = None
    #: The scheduler wants a `PointInfo` at each point (`Scheduler.wants_info`).
    wants_info: bool = False
    #: Machine options of the scenario: offer migrations, speculative TSCs.
    migrate: bool = False
    speculative: bool = False
    #: The native lane may run decided operations (no observer, no info, no actions).
    lane_on: bool = False
    #: Snapshots can be taken at decision points (emu/engine/snapshot.py): then saved
    #: contexts are never overwritten in place (a snapshot may hold them).
    snapshots: bool = False
    #: The stacks' hot ends at the run's latest snapshot, and the tasks loaded since
    #: (whose stacks may differ now): a snapshot reads only those again.
    stacks: tuple[bytes, ...] | None = None
    touched: set[int] = field(default_factory=set)

    # --- the host side (emu/engine/host_side.py) ---
    host_iter: Iterator[HostStep] = field(default_factory=lambda: iter(()))
    #: The host's next step; None once it has no more.
    host_next: HostStep | None = None
    parked: frozenset[int] = frozenset()
    #: Parked vCPU -> the step it was parked at (until it is resumed).
    parked_since: dict[int, int] = field(default_factory=dict)

    # --- decisions (emu/engine/decisions.py) ---
    #: Logical time: the step the next event takes.
    t: int = 0
    #: Decision points passed (asked or run quietly by the lane).
    point: int = 0
    #: The agent that ran last and how many events in a row it ran (fairness).
    current: int = -1
    run_len: int = 0
    #: Who can run now (task indices, then the host) and a counter of its changes.
    enabled: list[int] = field(default_factory=list)
    epoch: int = 0
    #: (epoch, default) -> the agents a decision offers and their choices.
    options: dict[int, tuple[tuple[int, ...], Options]] = field(default_factory=dict)
    #: epoch -> the options of a migration point (staying, then every move).
    moves: dict[int, Options] = field(default_factory=dict)
    migrations: int = 0
    #: The visible operation the running task is about to execute, while it waits for a
    #: decision: (kind, address, size).
    op: tuple[str, int, int] | None = None

    # --- the run loop (emu/engine/executor.py) ---
    #: The agent chosen inside an engine call, to run when it returns.
    pending: int | None = None
    running: Task | None = None
    #: Why the engine was stopped: "" (it was not), "switch" or "read".
    stop: str = ""

    def end_read(self, task: Task, outcome: str, value: int | None, detail: str) -> bool:
        """Close `task`'s read (`outcome`) into the run and tell the observer; its next read
        starts at its entry. Is the task now done (its last read ended)?"""
        read = task.read
        assert read is not None
        read.outcome = outcome
        read.value = value
        read.detail = detail
        if read.start < 0:
            read.start = read.end = self.t
        self.run.reads.append(read)
        if self.observer:
            self.observer("read", read)
        task.read = None
        task.ctx = None
        task.spec_from, task.spec_loads = self.t, 0
        task.reads += 1
        task.reads_left -= 1
        if task.reads_left == 0:
            task.done = True
            return True
        return False


class Contexts:
    """The CPU registers of the tasks of one machine (all tasks share one CPU)."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine

    def save(self, task: Task, fresh: bool = False) -> None:
        """Keep `task`'s registers, stopped before its pending visible operation; `fresh`:
        in a new context, not the task's reused one (a snapshot may hold that)."""
        if task.saved is None or fresh:
            task.saved = self.machine.uc.context_save()
        else:
            self.machine.uc.context_update(task.saved)
        task.ctx = task.saved

    def load(self, st: State, task: Task) -> None:
        """Put `task`'s registers in the CPU: where it stopped, or the entry of a new read."""
        st.running = task
        st.touched.add(task.index)
        if task.ctx is None:
            task.read = Read(task.index, task.reads, task.vcpu)
            self.machine.uc.context_restore(self.machine.entry_context(task.index))
        else:
            self.machine.uc.context_restore(task.ctx)


class RecordKeys(dict[int, str]):
    """Address in the clock pages -> the name of the record it belongs to ("pvti0"),
    filled on first lookup."""

    def __init__(self, layout: Layout) -> None:
        super().__init__()
        self.layout = layout

    def __missing__(self, ea: int) -> str:
        hit = self.layout.locate(ea)
        if hit is None:
            key = "?"
        else:
            name, off = hit
            key = f"pvti{off // PVTI_SLOT}" if name == "pvclock" else name
        self[ea] = key
        return key
