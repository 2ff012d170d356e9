"""Field history (`trace --watch FIELD`): every store and load of one shared-page field.

A field is named as the trace names it (emu/engine/fields.py: `vcpu0.system_time`,
`vdso_data[0].seq`, `hvclock.tsc_scale`); a `+n` byte suffix names the same field. The
history comes from one fast replay: the host's stores from the run's host steps, the
loads from the reads' operations, each value from the rebuilt page contents.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from emu.engine.decode import LOAD
from emu.engine.executor import Executor
from emu.engine.fields import field_name
from emu.engine.run import Run
from emu.errors import UsageError
from emu.report.pagehist import PageHistory

_SUFFIX = re.compile(r"\+\d+$")


def base_name(name: str) -> str:
    """`vcpu0.tsc_timestamp` for `vcpu0.tsc_timestamp+4`: the field, not the byte."""
    return _SUFFIX.sub("", name)


def field_spans(executor: Executor) -> dict[str, tuple[int, int]]:
    """Every field name of the clock pages -> its [start, end) addresses."""
    layout = executor.machine.layout
    spec = executor.image.vdso_data
    spans: dict[str, tuple[int, int]] = {}
    lo, hi = layout.shared
    for a in range(lo, hi):
        name = base_name(field_name(layout, spec, a))
        if "+0x" in name or name.endswith("slot_pad"):
            continue  # unnamed bytes of a page, not a field
        start, _ = spans.get(name, (a, a))
        spans[name] = (start, a + 1)
    return spans


def resolve(executor: Executor, names: list[str]) -> dict[str, tuple[int, int]]:
    """The spans of the watched `names`; an unknown name is bad input naming close ones."""
    spans = field_spans(executor)
    out = {}
    for raw in names:
        name = base_name(raw)
        if name not in spans:
            # The same record first (`vcpu0.`), then any: vcpu60.system_time is no help.
            prefix = name.split(".", 1)[0] + "."
            same = [n for n in spans if n.startswith(prefix)]
            close = difflib.get_close_matches(name, same, n=4, cutoff=0.5)
            if len(close) < 4:
                more = difflib.get_close_matches(name, list(spans), n=4 - len(close), cutoff=0.5)
                close = list(dict.fromkeys(close + more))
            hint = ", ".join(close) if close else ", ".join(sorted(spans)[:4]) + ", ..."
            raise UsageError(f"--watch {raw!r}: no such field in this image's pages; close: {hint}")
        out[name] = spans[name]
    return out


@dataclass(frozen=True)
class Access:
    """One store or load of a watched field."""

    t: int
    who: str
    what: str
    value: int


def history(executor: Executor, run: Run, span: tuple[int, int]) -> list[Access]:
    """Every access to the bytes `span` in `run`, in time order, boot value first."""
    lo, hi = span
    pages = PageHistory(executor, run)
    out = [Access(-1, "boot", "boot image", pages.value(lo, hi - lo, -1))]
    for h, ev in enumerate(run.host):
        for w in ev.step.writes:
            start = executor.machine.layout.pages[w.page] + w.offset
            if start < hi and lo < start + len(w.data):
                out.append(Access(ev.t, "host", ev.step.label, pages.after(lo, hi - lo, h)))
                break
    widths = executor.sites.widths
    base = executor.machine.layout.base
    for r in run.reads:
        for op in r.ops:
            width = widths.get(op.pc, 1)
            if op.kind == LOAD and op.arg < hi and lo < op.arg + width:
                where = executor.image.symbolize(op.pc - base)
                value = pages.value(op.arg, width, op.t)
                who = f"t{op.task}/v{op.vcpu}"
                out.append(Access(op.t, who, f"load {where} ({r.label})", value))
    return sorted(out, key=lambda a: a.t)


def text(executor: Executor, run: Run, names: list[str]) -> str:
    """The history of each watched field as a table."""
    lines = []
    for name, span in resolve(executor, names).items():
        lo, hi = span
        lines.append(f"watch {name} ({hi - lo} bytes at {lo:#x}):")
        lines.append(f"{'t':>5}  {'who':<9} {'what':<56} value")
        for a in history(executor, run, span):
            lines.append(f"{a.t:>5}  {a.who:<9} {a.what:<56} {a.value:#x}")
        lines.append("")
    return "\n".join(lines)
