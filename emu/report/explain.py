"""`explain`: the cause of a finding in a few lines, computed from its run.

Replays the schedule, takes the read the verdict's oracle blames, and says: what it
returned against the published records (in ns), which host store each of its shared-page
loads read (with the value and the source line), the host stores around its window, why
the reader's version/sequence check let it through, and the nearest passing schedule.
Nothing here is written per bug: every sentence comes from the run's reads-from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from emu.engine.executor import Executor
from emu.engine.readsfrom import BOOT, LoadSource
from emu.engine.run import HANG, Read, Run
from emu.oracles import Violation, judge, match
from emu.report.explain_parts import CHECK_FIELDS, Context, Load, check_story, member
from emu.report.nearest import Nearest, nearest_passing
from emu.report.watch import base_name
from emu.search.replay import Replay
from emu.search.schedule import Schedule


@dataclass(frozen=True)
class RecordGap:
    """How far the returned value is from what one published record gives."""

    key: str
    published: int
    expected: int
    delta: int


@dataclass
class Explanation:
    """The cause of one finding (or `oracle` None: the schedule passes)."""

    oracle: str | None
    message: str
    read: str = ""
    vcpu: int = 0
    window: tuple[int, int] = (0, 0)
    outcome: str = ""
    value: int | None = None
    #: The TSC instant the gaps are computed at (the read's last TSC read).
    tsc_t: int = 0
    gaps: list[RecordGap] = field(default_factory=list)
    loads: list[Load] = field(default_factory=list)
    #: Host steps with stores inside the read's window, and the update around it.
    inside: list[str] = field(default_factory=list)
    around: str = ""
    check: list[str] = field(default_factory=list)
    tsc: str = ""
    #: Fields whose parts (halves loaded apart, or bytes of one load) came from different stores.
    split: str = ""
    #: Fields the read used from before its last attempt that had changed by its end.
    stale: str = ""
    #: The other reads of the violation (a monotonic pair), with their values.
    others: list[str] = field(default_factory=list)
    hang: str = ""
    nearest: Nearest | None = None

    def text(self) -> str:
        """The few-line summary people read above a trace."""
        if self.oracle is None:
            return f"no violation: {self.message}\n"
        out = [f"{self.oracle}: {self.message}", f"  {_gap_line(self)}"]
        out.append(f"  {self.read}'s shared-page loads, each with the store it read:")
        for ld in self.loads:
            src = f"  ; {ld.source}" if ld.source else ""
            torn = " TORN" if ld.torn else ""
            what = f"{ld.field} = {ld.value:#x}"
            out.append(f"    t={ld.t:<4} {ld.where:<24} {what:<40} <- {ld.store}{torn}{src}")
        w = f"t={self.window[0]}..{self.window[1]}"
        out.append(f"  host stores inside the read ({w}): " + (", ".join(self.inside) or "none"))
        extra = (*self.others, self.around, self.split, *self.check, self.stale, self.tsc)
        extra += (self.hang,)
        out += [f"  {x}" for x in extra if x]
        n = self.nearest
        if n is None:
            out.append("  nearest passing schedule: none within one choice removed or moved")
        else:
            out.append(f"  nearest passing schedule: {n.schedule} ({n.change}); there")
            out += [f"    {d}" for d in n.differences]
        return "\n".join(out) + "\n"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _gap_line(e: Explanation) -> str:
    """On which vCPU the read ran, and how far its value is from each record."""
    head = f"{e.read} on vcpu{e.vcpu}"
    if e.outcome == HANG or e.value is None:
        return f"{head} ended {e.outcome}, no value returned"
    gaps = []
    for g in e.gaps:
        when = "at boot" if g.published < 0 else f"at t={g.published}"
        rel = "more" if g.delta > 0 else "less"
        how = "exactly" if g.delta == 0 else f"{abs(g.delta)} ns {rel} than"
        gaps.append(f"{how} {g.key} as published {when} gives ({g.expected})")
    return f"{head}, TSC read at t={e.tsc_t}: returned {e.value}, " + "; ".join(gaps)


def _blamed(run: Run, violation: Violation) -> Read:
    """The read a violation is about: the first of its reads no published record explains
    (a torn value), else its last (the later read of a monotonic pair)."""
    by_label = {r.label: r for r in run.reads}
    reads = [by_label[x] for x in violation.reads if x in by_label]
    for r in reads:
        if r.value is not None and r.returned() and match(run, r) is None:
            return r
    return reads[-1]


def _gaps(run: Run, read: Read) -> tuple[int, list[RecordGap]]:
    """The read's TSC instant and, per record current during the read or published next,
    what it gives there minus the returned value."""
    tscs = [op.t for op in read.ops if op.kind in ("rdtsc", "rdtscp")]
    t = tscs[-1] if tscs else read.start
    if read.value is None:
        return t, []
    tsc = run.clock.tsc(read.vcpu_at(t), t)
    out = []
    for key in sorted(read.keys):
        hist = run.history.get(key, [])
        chosen = [(tp, s) for tp, s in hist if read.start <= tp <= read.end]
        before = [(tp, s) for tp, s in hist if tp < read.start][-1:]
        after = [(tp, s) for tp, s in hist if tp > read.end][:1]
        for tp, snap in before + chosen + after:
            expected = snap.ns_at(tsc)
            out.append(RecordGap(key, tp, expected, read.value - expected))
    return t, out


def explain(schedule: Schedule, executor: Executor, oracle: str | None = None) -> Explanation:
    """Replay `schedule` on `executor` and explain its violation (of `oracle`, when given
    and broken; else the verdict's)."""
    run = executor.run(Replay(schedule.choices))
    violations = judge(run, executor.scenario)
    if not violations:
        return Explanation(None, f"{len(run.reads)} reads, every oracle holds")
    v = next((x for x in violations if x.oracle == oracle), violations[0])
    read = _blamed(run, v)
    ctx = Context(executor, run)
    mine = [s for s in ctx.sources if s.read == read.label]
    tsc_t, gaps = _gaps(run, read)
    e = Explanation(
        v.oracle,
        v.message,
        read.label,
        read.vcpu,
        (read.start, read.end),
        read.outcome,
        read.value,
        tsc_t,
        gaps,
        [ctx.load(s) for s in mine],
    )
    e.inside, e.around = _window_stores(run, read)
    e.check = check_story(ctx, mine)
    e.tsc = _tsc_story(ctx, read, mine)
    e.split = _split_fields(ctx, mine)
    e.stale = _stale_fields(ctx, read, mine)
    e.others = _others(run, read, v)
    if read.outcome == HANG:
        e.hang = _hang_story(ctx, read, mine)
    e.nearest = nearest_passing(schedule, executor, run, read, ctx)
    return e


def _window_stores(run: Run, read: Read) -> tuple[list[str], str]:
    """Host steps that stored inside the read's window, and the record update in progress
    across it (its stores before and after the window, where it was published)."""
    inside = [
        f"t={ev.t} ({ev.step.label})"
        for ev in run.host
        if read.start <= ev.t <= read.end and ev.step.writes
    ]
    pubs = sorted(tp for k in read.keys for tp, _ in run.history.get(k, []))
    begin = max((tp for tp in pubs if tp < read.start), default=-1)
    end = min((tp for tp in pubs if tp >= read.start), default=None)
    stores = [ev for ev in run.host if ev.step.writes and ev.t > begin]
    if end is not None:
        stores = [ev for ev in stores if ev.t <= end]
    pre = [f"t={ev.t}" for ev in stores if ev.t < read.start]
    post = [f"t={ev.t}" for ev in stores if ev.t > read.end]
    if not pre and not post:
        return inside, ""
    keys = ", ".join(sorted(read.keys))
    done = f"published at t={end}" if end is not None else "never published in this run"
    before = f"stores at {', '.join(pre)} before it" if pre else "no store before it"
    after = f"{', '.join(post)} after it" if post else "none after it"
    return inside, (
        f"a host update of {keys} was in progress across the read: {before}, {after} ({done})"
    )


def _hang_story(ctx: Context, read: Read, mine: list[LoadSource]) -> str:
    """Which loads led into the loop that never made another visible operation: the torn
    ones; else those of the last attempt whose store landed inside the read's window."""
    last = read.ops[-1] if read.ops else None
    where = ctx.image.symbolize(last.pc - ctx.base) if last else "its entry"
    attempt = _last_attempt(mine)
    led = [s for s in attempt if s.torn]
    what = "torn loads"
    if not led:
        led = [s for s in attempt if s.source != BOOT and ctx.run.host[s.source].t >= read.start]
        what = "loads of host stores made during the read"
    named = ", ".join(
        f"{s.field} (t={s.t}, {ctx.store(s.source)})"
        for s in led
        if member(s.field) not in CHECK_FIELDS
    )
    return (
        f"after its last visible operation at {where} (t={read.end}) it looped: {read.detail}; "
        f"{what} that led into the loop: {named or 'none'}"
    )


def _others(run: Run, read: Read, v: Violation) -> list[str]:
    """The violation's other reads: what each returned, where, and how far from this one."""
    out = []
    for r in run.reads:
        if r.label in v.reads and r.label != read.label:
            gap = ""
            if r.value is not None and read.value is not None:
                gap = (
                    f", {abs(r.value - read.value)} ns {'more' if r.value > read.value else 'less'}"
                )
            out.append(
                f"against {r.label} on vcpu{r.vcpu} (t={r.start}..{r.end}), which returned "
                f"{r.value}{gap}"
            )
    return out


def _stale_fields(ctx: Context, read: Read, mine: list[LoadSource]) -> str:
    """Fields loaded only before the read's last attempt whose value had changed by the
    time the read ended: the reader used them without re-reading (a flags check made
    once before the loop)."""
    last = _last_attempt(mine)
    again = {base_name(s.field) for s in last}
    stale = []
    for s in mine:
        name = base_name(s.field)
        if s in last or name in again or member(s.field) in CHECK_FIELDS:
            continue
        then, now = (
            ctx.pages.value(s.addr, s.width, s.t),
            ctx.pages.value(s.addr, s.width, read.end),
        )
        if then != now:
            again.add(name)
            stale.append(f"{s.field} read {then:#x} at t={s.t}, {now:#x} by t={read.end}")
    if not stale:
        return ""
    return "used from before the last attempt and not read again: " + "; ".join(stale)


def _last_attempt(mine: list[LoadSource]) -> list[LoadSource]:
    """The loads of the read's last attempt: from its second-to-last check load on (a
    retrying reader's earlier attempts were thrown away)."""
    checks = [s for s in mine if member(s.field) in CHECK_FIELDS]
    return [s for s in mine if len(checks) < 2 or s.t >= checks[-2].t]


def _split_fields(ctx: Context, mine: list[LoadSource]) -> str:
    """Fields the read assembled from parts of different stores (an i386 reader loads a
    64-bit field as two halves; a host may store them apart)."""
    parts: dict[str, set[int]] = {}
    for s in _last_attempt(mine):
        if member(s.field) not in CHECK_FIELDS:
            parts.setdefault(base_name(s.field), set()).update(s.stores)
    split = {f: hs for f, hs in parts.items() if len(hs) > 1}
    if not split:
        return ""
    return "torn fields: " + "; ".join(
        f"{f} from {' and '.join(ctx.store(h) for h in sorted(hs))}" for f, hs in split.items()
    )


def _tsc_story(ctx: Context, read: Read, mine: list[LoadSource]) -> str:
    """When the read's TSC is older than the stores its loads read: the delta it computes
    from them is negative (and wraps), whatever the check says."""
    tscs = [op for op in read.ops if op.kind in ("rdtsc", "rdtscp")]
    stored = [
        (ctx.run.host[s.source].t, s.field)
        for s in mine
        if s.source != BOOT and member(s.field) not in CHECK_FIELDS
    ]
    if not tscs or not stored:
        return ""
    t_store, name = max(stored)
    tsc = tscs[-1]
    if tsc.t > t_store:
        return ""
    return (
        f"its TSC read at t={tsc.t} ({tsc.arg:#x}) predates host step t={t_store}, whose "
        f"{name} it loaded: the record is newer than the TSC it is applied to"
    )
