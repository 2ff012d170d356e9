"""Spin-assume for retry loops (the await reduction GenMC applies to spin loops).

A seqlock reader whose attempt read exactly the same stores as its previous attempt, and
retried, learns nothing by trying again until the host writes: every further attempt reads
the same bytes and retries the same way. Under `dpor` such a task is *spin-blocked*: not
chosen while another agent can run, until a host step writes. An execution in which it runs
again before that is equivalent (same stores read, same verdicts) to one in which it waits,
so nothing is lost; and unbounded verification of seqlock readers becomes finite. When the
host has no step left the task is never blocked: it spins, and the executor's hang
detection (the terminates oracle) judges it.

Attempts are found in the task's operations: an operation at a code address the read has
executed before starts a new attempt (a loop back). The two attempts before the latest are
compared by (site, kind, vCPU, and for loads the host step that last wrote its bytes).
"""

from __future__ import annotations

from collections.abc import Mapping

from emu.engine.run import Op, Read, Run


def _writes(run: Run, pages: Mapping[str, int]) -> list[tuple[int, tuple[tuple[int, int], ...]]]:
    out = []
    for ev in run.host:
        if ev.step.writes:
            ranges = tuple(
                (pages[w.page] + w.offset, pages[w.page] + w.offset + len(w.data))
                for w in ev.step.writes
            )
            out.append((ev.t, ranges))
    return out


def _signature(
    ops: list[Op],
    writes: list[tuple[int, tuple[tuple[int, int], ...]]],
    widths: Mapping[int, int],
) -> tuple[tuple[int, str, int, int], ...]:
    sig = []
    for op in ops:
        src = -1
        if op.kind == "load":
            lo, hi = op.arg, op.arg + widths.get(op.pc, 8)
            for t, ranges in writes:
                if t >= op.t:
                    break
                if any(s < hi and lo < e for s, e in ranges):
                    src = t
        sig.append((op.pc, op.kind, op.vcpu, src))
    return tuple(sig)


def spinning(
    read: Read | None, run: Run, pages: Mapping[str, int], widths: Mapping[int, int]
) -> bool:
    """Is the task whose read in progress is `read` spin-blocked now?"""
    if read is None or len(read.ops) < 3:
        return False
    ops = read.ops
    head = ops[-1].pc
    at = [k for k, op in enumerate(ops) if op.pc == head]
    if len(at) < 3:
        return False
    a1, a2, a3 = at[-3], at[-2], at[-1]
    since = ops[a2].t
    # A host write since the previous attempt began: not spinning (the host's events are
    # in time order, so only the latest ones are looked at).
    for ev in reversed(run.host):
        if ev.t < since:
            break
        if ev.step.writes:
            return False
    writes = _writes(run, pages)
    return _signature(ops[a1:a2], writes, widths) == _signature(ops[a2:a3], writes, widths)
