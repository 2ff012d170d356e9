"""Spin-assume and retry-assume for retry loops (the await reduction GenMC applies to spin
loops).

Retry-assume (the default): a reader's attempts are independent, each starting afresh from
what it loads, and an attempt that retries returns nothing and stores nothing. Every run
with a retried attempt therefore has an equivalent, for everything an oracle judges of the
returned attempts, in which the task waits instead and makes only its returned attempt:
the same interleaving without the retried attempt's operations. So `dpor` treats a retry
as an `assume` that failed (`Read.first_retry`): from the operation that starts the retry
the task is *stuck*, as a blocked thread is in GenMC: its operations depend on nothing, it
is not chosen while another agent can run, and the run, which counts no class, goes on
with the other agents and is analysed to its end. Their races with what came before the
retry are how the runs in which that attempt succeeds are found; ending the whole run at
the retry instead lost classes whenever a run reached a retry before another agent's next
event (tests/test_dpor_classes.py tries the options in several orders). Races after the
first retry are not reversed: every run through there has that task stuck too. The stuck
task still runs once nobody else can, so a reader that can never succeed spins into the
terminates oracle. This holds only while attempts are independent: with
`--speculative-tsc` a retry's TSC may come from the attempt before, and the search falls
back to spin-assume below.

Spin-assume (with `--speculative-tsc`): a seqlock reader whose attempt read exactly the
same stores as its previous attempt, and retried, learns nothing by trying again until the
host writes: every further attempt reads the same bytes and retries the same way. Under
`dpor` such a task is *spin-blocked*: not chosen while another agent can run, until a host
step writes. An execution in which it runs again before that is equivalent (same stores
read, same verdicts) to one in which it waits, so nothing is lost; and unbounded
verification of seqlock readers becomes finite. When the host has no step left the task is
never blocked: it spins, and the executor's hang detection (the terminates oracle) judges
it.

Retry-assume finds a retry where a read first executes a code address again (a loop back,
`Read.first_retry`; `Read.last_attempt` drops the retried iterations the same way). This
takes every loop over visible operations in a reader for a retry loop, as the Linux
readers' loops are. Spin-assume compares the two attempts before the latest (each starting
at the latest operation's code address) by (site, kind, vCPU, and for loads the host step
that last wrote its bytes).
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
