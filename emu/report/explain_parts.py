"""The parts of an explanation: a run's loads with the stores they read, and why the
reader's version/sequence check let a torn read through (derived from the values and
sources of its check loads, not written per bug)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from emu.engine.executor import Executor
from emu.engine.readsfrom import BOOT, LoadSource, reads_from
from emu.engine.run import Run
from emu.image.lines import Lines, read_lines
from emu.report.pagehist import PageHistory

#: The fields a reader's retry check compares (pvti, vdso_data, Hyper-V TSC page).
CHECK_FIELDS = ("version", "seq", "tsc_sequence")
_MEMBER = re.compile(r"\.([a-z_]+)(?:\[\d+\])?(?:\+\d+)?$")


@dataclass(frozen=True)
class Load:
    """One shared-page load of the explained read and the store it read."""

    t: int
    where: str
    field: str
    value: int
    #: The host steps (logical times) its bytes came from, -1 for boot, latest last.
    stores: tuple[int, ...]
    #: The store as people read it: `host t=4` or `boot`, and what that host step did.
    store: str
    torn: bool
    source: str = ""
    label: str = ""


class Context:
    """What one explanation reads from: the run, its reads-from and its page history."""

    def __init__(self, executor: Executor, run: Run, lines: Lines | None = None) -> None:
        self.executor = executor
        self.run = run
        self.image = executor.image
        self.base = executor.machine.layout.base
        self.sources = reads_from(
            run, executor.machine.layout, executor.sites.widths, self.image.vdso_data
        )
        self.pages = PageHistory(executor, run)
        self.lines = lines if lines is not None else read_lines(path=self.image.path)

    def store(self, h: int) -> str:
        """`host t=4` for the host step at index `h` of the run, `boot` for BOOT."""
        return "boot" if h == BOOT else f"host t={self.run.host[h].t}"

    def label(self, h: int) -> str:
        """What the host step at index `h` did (`vcpu0.version 0x2 -> 0x4`)."""
        return "boot image" if h == BOOT else self.run.host[h].step.label

    def load(self, s: LoadSource) -> Load:
        order = sorted(set(s.stores))
        stores = tuple(self.run.host[h].t if h != BOOT else -1 for h in order)
        store = " + ".join(self.store(h) for h in order)
        rel = s.pc - self.base
        return Load(
            s.t,
            self.image.symbolize(rel),
            s.field,
            self.pages.value(s.addr, s.width, s.t),
            stores,
            store,
            s.torn,
            self.lines.at(rel),
            " + ".join(self.label(h) for h in order),
        )


def member(name: str) -> str:
    """`version` for `vcpu0.version`, `seq` for `vdso_data[0].seq`."""
    m = _MEMBER.search(name)
    return m.group(1) if m else name


def _odd_spans(ctx: Context, s: LoadSource) -> tuple[list[tuple[int, int]], list[str]]:
    """When the check field at `s` held an odd value (intervals of logical time) and every
    value the host stored into it (`4 at t=3`)."""
    run, pages = ctx.run, ctx.pages
    steps = sorted(
        {h for a in range(s.addr, s.addr + s.width) for _, h, _ in pages.stores.get(a, ())}
    )
    stored, spans = [], []
    odd_from: int | None = None
    if pages.value(s.addr, s.width, 0) & 1:
        odd_from = -1
    for h in steps:
        t = run.host[h].t
        v = pages.after(s.addr, s.width, h)
        stored.append(f"{v} at t={t}")
        if v & 1 and odd_from is None:
            odd_from = t
        elif not v & 1 and odd_from is not None:
            spans.append((odd_from, t))
            odd_from = None
    if odd_from is not None:
        spans.append((odd_from, run.steps))
    return spans, stored


def _one_check(
    ctx: Context, first: LoadSource, last: LoadSource, mine: list[LoadSource]
) -> list[str]:
    """Why the pair (`first`, `last`) of check loads did or did not stop the read."""
    vb = ctx.pages.value(first.addr, first.width, first.t)
    ve = ctx.pages.value(last.addr, last.width, last.t)
    name = first.field
    seen = f"{name} read {vb} at t={first.t} and {ve} at t={last.t}"
    if member(name) == "tsc_sequence":
        if vb != ve or vb == 0:
            return [f"{seen}: the check saw it change or invalid (0)"]
        verdict = f"{seen}: unchanged and valid, so the check passed"
    else:
        if vb != ve or vb & 1:
            return [f"{seen}: the check saw it {'odd' if vb & 1 else 'change'} and retried"]
        verdict = f"{seen}: even and unchanged, so the check passed"
    spans, stored = _odd_spans(ctx, first)
    if not stored:
        why = "the host never stored it"
    elif not spans:
        why = f"the host never made it odd (it stored {', '.join(stored)})"
    else:
        shown = ", ".join(f"t={a}..{b - 1}" for a, b in spans)
        why = f"it was odd only at {shown}, outside the loads at t={first.t}..{last.t}"
    body = [s for s in mine if first.t < s.t < last.t and s.field != name]
    groups: dict[int, list[str]] = {}
    for s in body:
        groups.setdefault(s.source, [])
        if s.field not in groups[s.source]:
            groups[s.source].append(s.field)
    lines = [f"{verdict}: {why}"]
    if any(member(s.field) in CHECK_FIELDS for s in body):
        return lines  # an outer check (vdso_data's seq around the pvti's version): the
        # inner one's line says what its loads read
    whole = _published_with(ctx, body)
    if whole is not None:
        lines.append(f"the loads between them all hold the record as published {whole}")
    elif len(groups) > 1:
        lines.append(
            "yet the loads between them match no published record: "
            + "; ".join(f"{', '.join(fs)} from {ctx.store(h)}" for h, fs in sorted(groups.items()))
        )
    return lines


def _published_with(ctx: Context, loads: list[LoadSource]) -> str | None:
    """`at t=15` (or `at boot`) when every load's value is what the page held right after
    one record was published; None when no publication explains them all (a torn read)."""
    if not loads:
        return None
    times = sorted({tp for hist in ctx.run.history.values() for tp, _ in hist})
    for tp in times:
        if all(
            ctx.pages.value(s.addr, s.width, tp + 1) == ctx.pages.value(s.addr, s.width, s.t)
            for s in loads
        ):
            return "at boot" if tp < 0 else f"at t={tp}"
    return None


def check_story(ctx: Context, mine: list[LoadSource]) -> list[str]:
    """One line per check field of the read: what its last two loads saw and why that
    let the read through (or did not)."""
    checks: dict[str, list[LoadSource]] = {}
    for s in mine:
        if member(s.field) in CHECK_FIELDS:
            checks.setdefault(s.field, []).append(s)
    if not checks:
        return ["the read made no version or sequence load: no check could catch a torn record"]
    out = []
    for name, loads in checks.items():
        if len(loads) < 2:
            out.append(f"{name} was read once (t={loads[0].t}): nothing compared it")
            continue
        out += _one_check(ctx, loads[-2], loads[-1], mine)
    return out
