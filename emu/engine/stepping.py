"""Stepping mode: one instruction per engine call, each reported to the observer (traces).

The hooks make the same decisions as in fast mode, so a stepped run equals a fast one (a
test checks); this only adds the per-instruction report.
"""

from __future__ import annotations

from typing import Any

from unicorn import UC_HOOK_MEM_READ

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
            observer("insn", (task.index, task.vcpu, st.t, pc, before, after, list(reads), op))
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
