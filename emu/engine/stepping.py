"""Stepping mode: one instruction per engine call, each reported to the observer (traces).

The hooks make the same decisions as in fast mode, so a stepped run equals a fast one (a
test checks); this only adds the per-instruction report.
"""

from __future__ import annotations

from typing import Any

from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_READ

from emu.engine.machine import EXIT_ADDR, Machine
from emu.engine.state import Observer, State, Task


def step_until_stop(
    m: Machine, st: State, task: Task, pc: int, observer: Observer, insns: int
) -> None:
    """Execute `task` from `pc` one instruction per engine call, reporting each to
    `observer` as ("insn", (task, vcpu, t, pc, registers before, after, shared-page reads,
    the visible operation it made or None)), until the engine stops, the read ends, or
    `insns` instructions pass without a visible operation."""
    uc = m.uc
    reads: list[tuple[int, int, bytes]] = []
    quiet, last = 0, st.t

    def on_read(uc: Any, access: int, addr: int, size: int, value: int, _: object) -> None:
        reads.append((addr, size, bytes(uc.mem_read(addr, size))))

    lo, hi = m.layout.shared
    h = uc.hook_add(UC_HOOK_MEM_READ, on_read, None, lo, hi - 1)
    # Code translated before the hook existed would not call it.
    uc.ctl_flush_tb()
    try:
        while quiet < insns:
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
            body = observer(
                "insn", (task.index, task.vcpu, st.t, pc, before, after, list(reads), op)
            )
            pc = m.reg(m.pc)
            if st.stop:
                return
            if st.t != last:
                quiet, last = 0, st.t
            else:
                quiet += 1
            if isinstance(body, tuple) and body and pc == body[0] and quiet < insns:
                n = _loop(m, st, pc, body, insns - quiet)
                quiet += n
                pc = m.reg(m.pc)
                observer("loop", (task.index, task.vcpu, st.t, n, after, m.regs()))
    finally:
        uc.hook_del(h)
        uc.ctl_flush_tb()


def _loop(m: Machine, st: State, pc: int, body: tuple[int, ...], budget: int) -> int:
    """Run the loop `body` (its instruction addresses in order, starting at `pc`) without
    reporting each instruction, while the code follows it exactly and at most `budget`
    instructions: the observer asked for this (a trace folding a loop it has seen repeat).
    Stops before the first instruction off the body, or after one that made the run's
    time move (a site's decision). The instructions executed."""
    uc = m.uc
    n = len(body)
    state = [0, 0]  # position in the body, instructions executed
    t0 = st.t

    def on_code(uc: Any, address: int, size: int, _: object) -> None:
        pos = state[0]
        if address != body[pos] or st.t != t0:
            m.stop()  # not executed: the engine stops before it
            return
        state[0] = pos + 1 if pos + 1 < n else 0
        state[1] += 1

    h = uc.hook_add(UC_HOOK_CODE, on_code, None, 1, 0)
    uc.ctl_flush_tb()  # code translated before the hook would not call it
    try:
        m.start(pc, EXIT_ADDR, budget)
    finally:
        uc.hook_del(h)
        uc.ctl_flush_tb()
    return state[1]
