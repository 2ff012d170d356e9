"""A run's state at a decision point, and a new run that starts from it.

A search that explores a tree of runs (`dpor`, `exhaustive`) runs the same prefix of
choices again and again; a run that starts from the state at the decision point where it
first differs runs only its new part. A scheduler asks for that with
`Scheduler.start_from`, giving back a `Snapshot` it took earlier through
`PointInfo.snapshot` (only schedulers that want a `PointInfo`, and not with speculative
TSCs or an observer: a speculation point decides in the middle of a site's handler, where
no run can resume; with migrations, only at migration points, which open the choice of
the next agent).

What is saved and how it comes back:
- the guest side is saved: each task's CPU registers (Unicorn contexts only: the clock
  pages and the stacks are memory the machine owns through `mem_map_ptr`, which Unicorn
  snapshots would not restore), the hot end of each task's stack, its read so far (the
  number of its operations: reads only grow), the run's ended reads and choices (by count:
  those lists only grow), the logical time, the decision counter and the fairness state;
- the host side is replayed: the host model is a generator, which cannot be copied, so a
  fresh host is booted and takes its steps again at the logical times they ran, with the
  same view; that also rewrites the clock pages, republishes the records, retunes the TSCs
  and parks vCPUs as they were. Each step must equal the saved run's (checked).

A resumed run records the same run as one from the start (tests/test_dpor_speed.py
compares them), except where the hang limit counts instructions per engine call: a
resumed run's first call starts at the decision point (a reader that runs more than the
limit without a visible operation is a hang either way).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from unicorn.unicorn_py3.unicorn import UcContext

from emu.engine.decode import LOAD
from emu.engine.host_side import HostSide
from emu.engine.machine import Machine
from emu.engine.run import HostEvent, Read
from emu.engine.state import RecordKeys, State


class TaskSnap(NamedTuple):
    """One task at the decision point (a named tuple: one per task per decision)."""

    vcpu: int
    reads_left: int
    done: bool
    reads: int
    spec_from: int
    spec_loads: int
    #: Registers to resume from (None: its next read starts at the entry).
    ctx: UcContext | None
    #: The read in progress (a live object of the saved run: only its first `ops`
    #: operations, and `start`/`end` as they were, belong to the snapshot).
    read: Read | None
    ops: int
    start: int
    end: int


class Snapshot(NamedTuple):
    """The state of a run just before decision point `point` (see the module docstring)."""

    #: The executor that took it (another one cannot resume it).
    owner: object
    point: int
    t: int
    current: int
    run_len: int
    migrations: int
    tasks: tuple[TaskSnap, ...]
    #: The saved run's lists and how much of each belongs to the snapshot.
    reads: list[Read]
    n_reads: int
    choices: list[Any]
    n_choices: int
    host: list[HostEvent]
    n_host: int
    stacks: tuple[bytes, ...]


def capture(st: State, machine: Machine, owner: object, live: bool) -> Snapshot:
    """The state of `st` now. `live`: the running task's registers are in the CPU (a
    site's handler is deciding whether it may go on), not in its saved context."""
    tasks = []
    make = tuple.__new__  # named tuples built without their keyword-parsing __new__
    for task in st.tasks:
        ctx = machine.uc.context_save() if live and task is st.running else task.ctx
        r = task.read
        now = (r, len(r.ops), r.start, r.end) if r is not None else (None, 0, -1, -1)
        mine = (task.vcpu, task.reads_left, task.done, task.reads, task.spec_from)
        tasks.append(make(TaskSnap, (*mine, task.spec_loads, ctx, *now)))
    run = st.run
    fields = (owner, st.point, st.t, st.current, st.run_len, st.migrations, tuple(tasks))
    lists = (run.reads, len(run.reads), run.choices, len(run.choices), run.host, len(run.host))
    return make(Snapshot, (*fields, *lists, _stacks(st, machine, live)))


def _stacks(st: State, machine: Machine, live: bool) -> tuple[bytes, ...]:
    """The hot ends of the stacks: a task's is read again only when it may have run since
    the run's previous snapshot (`State.touched`; the running task's while it is live)."""
    prev = st.stacks
    if prev is None:
        got = machine.stacks()
    else:
        touched = st.touched
        got = tuple(machine.stack(i) if i in touched else prev[i] for i in range(len(st.tasks)))
    st.stacks = got
    st.touched = {st.running.index} if live and st.running is not None else set()
    return got


def at_point(st: State | None, machine: Machine, owner: object) -> Snapshot | None:
    """A snapshot of the run now, at a decision point (`PointInfo.snapshot`), when the run
    takes them. Inside a site's handler (`may_run` set `st.op`) the running task's
    registers are live."""
    if st is None or not st.snapshots:
        return None
    return capture(st, machine, owner, st.op is not None)


def resume(
    st: State, snap: object, owner: object, machine: Machine, host: HostSide, keys: RecordKeys
) -> None:
    """Start the run `st` from `snap`, the snapshot the scheduler asks to start from, if it
    is one `owner` (the executor) took."""
    if isinstance(snap, Snapshot) and snap.owner is owner:
        restore(st, snap, machine, host, keys)


class Diverged(RuntimeError):
    """The host replayed a different step than the saved run took: not deterministic."""


def restore(st: State, snap: Snapshot, machine: Machine, host: HostSide, keys: RecordKeys) -> None:
    """Bring the fresh, booted state `st` to `snap`: replay the host's steps, then put the
    tasks, the run's lists, the counters and the stacks back."""
    for ev in snap.host[: snap.n_host]:
        st.t = ev.t
        host.step(st)
        if st.run.host[-1].step != ev.step:
            raise Diverged(
                f"host step at t={ev.t} replayed as {st.run.host[-1].step.label!r}, the saved "
                f"run took {ev.step.label!r}"
            )
    for task, ts in zip(st.tasks, snap.tasks, strict=True):
        task.vcpu, task.reads_left, task.done = ts.vcpu, ts.reads_left, ts.done
        task.reads, task.spec_from, task.spec_loads = ts.reads, ts.spec_from, ts.spec_loads
        task.ctx, task.saved, task.poised = ts.ctx, None, False
        task.read = _read_copy(ts, keys) if ts.read is not None else None
    run = st.run
    run.reads = snap.reads[: snap.n_reads]
    run.choices = snap.choices[: snap.n_choices]
    st.t, st.point, st.current, st.run_len = snap.t, snap.point, snap.current, snap.run_len
    st.migrations = snap.migrations
    machine.set_stacks(snap.stacks)
    st.stacks, st.touched = snap.stacks, set()
    host.decider.refresh(st)


def _read_copy(ts: TaskSnap, keys: RecordKeys) -> Read:
    r = ts.read
    assert r is not None
    ops = r.ops[: ts.ops]
    got = {keys[op.arg] for op in ops if op.kind == LOAD}
    return Read(r.task, r.index, r.vcpu, ts.start, ts.end, ops=ops, keys=got)
