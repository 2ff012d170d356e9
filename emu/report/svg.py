"""The timeline of a replayed run as one self-contained SVG (`vdsofuzz trace --svg`).

A lane per vCPU (the tasks that ran on it in its label) and one for the host, logical time
left to right. Each read attempt is a bar with what it returned (or `retry`); each shared-
page load a dot and each host store a square, named by field; an arrow runs from each store
to every load that read its bytes; parked intervals are shaded; the violating read is red,
with the oracle's message under the lanes.

The elements carry `data-*` attributes with the facts they draw (times, fields, reads,
host step numbers), so tools and tests can read the picture back. The output depends only
on the run: the same finding gives the same bytes.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from emu.engine.executor import Executor
from emu.errors import UsageError
from emu.report.timeline import RETRY, Timeline, timeline
from emu.report.trace import Trace

#: Pixels per unit of logical time.
UNIT = 26
#: Room for the lane labels on the left, and the right margin.
LEFT, RIGHT = 150, 40
#: Height of the host lane and of each vCPU lane (the field names below the marks are
#: written top to bottom, so the lanes are tall).
HOST_H, LANE_H = 170, 190
LINE = 16
#: Width of one character of the 11px monospace labels (to keep labels from overlapping).
CHAR = 7
#: Colours: load, store, other visible op, reads-from arrow, violation.
C_LOAD, C_STORE, C_OTHER, C_ARROW, C_BAD = "#1f5fbf", "#c06000", "#6a3d9a", "#c06000", "#d62728"
STYLE = (
    "text{font-family:monospace;font-size:11px;fill:#222}"
    ".label{paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}"
    ".small{font-size:9px}.title{font-size:12px}.lane-label{font-size:12px;font-weight:bold}"
    ".attempt{fill:#dfe8f5;stroke:#1f5fbf}.attempt.retry{fill:#f2f2f2;stroke:#999}"
    ".attempt.bad{fill:#fbd5d5;stroke:" + C_BAD + ";stroke-width:2}"
    ".parked{fill:#888;fill-opacity:0.22}.reads-from{fill:none;stroke:" + C_ARROW + ";"
    "stroke-opacity:0.45;stroke-width:1.1}.reads-from.bad{stroke-opacity:0.9;stroke-width:2}"
    ".violation{fill:" + C_BAD + "}"
)


def x_of(t: int) -> int:
    """Left edge of logical time `t`."""
    return LEFT + t * UNIT


def _mid(t: int) -> int:
    return x_of(t) + UNIT // 2


def _text(x: int, y: int, s: str, cls: str = "", down: bool = False, fill: str = "") -> str:
    attrs = f' class="{cls}"' if cls else ""
    attrs += f' fill="{fill}"' if fill else ""
    if down:
        attrs += f' transform="rotate(90 {x} {y})"'
    return f'<text x="{x}" y="{y}"{attrs}>{escape(s)}</text>'


class _Svg:
    """Places a Timeline's facts; `lane_y` gives each lane's top edge."""

    def __init__(self, tl: Timeline) -> None:
        self.tl = tl
        self.top = LINE * (len(tl.title) + 1) + 8
        self.lane_y = {"host": self.top}
        for v in range(tl.vcpus):
            self.lane_y[f"vcpu{v}"] = self.top + HOST_H + v * LANE_H
        self.bottom = self.top + HOST_H + tl.vcpus * LANE_H
        self.width = max(x_of(tl.end + 1) + RIGHT, 900)
        self.out: list[str] = []
        self.labels: list[str] = []

    def render(self) -> str:
        message = self._message_lines()
        height = self.bottom + 40 + LINE * (len(message) + 2)
        o = self.out
        o.append(
            '<svg xmlns="http://www.w3.org/2000/svg" version="1.1" '
            f'width="{self.width}" height="{height}" viewBox="0 0 {self.width} {height}">'
        )
        o.append(f"<style>{STYLE}</style>")
        o.append(
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
            'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{C_ARROW}"/></marker></defs>'
        )
        o.append(f'<rect width="{self.width}" height="{height}" fill="#ffffff"/>')
        for i, line in enumerate(self.tl.title):
            o.append(_text(10, LINE * (i + 1), line, "title"))
        self._lanes()
        self._parked()
        self._attempts()
        self._migrations()
        self._host()
        self._marks()
        self._arrows()
        o.extend(self.labels)  # over the arrows, each on a white halo
        self._axis()
        y = self.bottom + 40
        for i, line in enumerate(message):
            o.append(_text(10, y + LINE * i, line, "violation"))
        o.append(_text(10, y + LINE * (len(message) + 1), _LEGEND, "small"))
        o.append("</svg>")
        return "\n".join(o) + "\n"

    def _message_lines(self) -> list[str]:
        v = self.tl.violation
        if v is None:
            return ["no violation"]
        width = max(60, (self.width - 20) // 7)
        return textwrap.wrap(f"VIOLATION of {v.oracle}: {v.message}", width)

    def _lanes(self) -> None:
        o = self.out
        names = [("host", "host", "")] + [
            (f"vcpu{v}", f"vCPU {v}", " ".join(self.tl.tasks.get(v, [])))
            for v in range(self.tl.vcpus)
        ]
        for i, (lane, label, tasks) in enumerate(names):
            y = self.lane_y[lane]
            h = HOST_H if lane == "host" else LANE_H
            fill = "#fafafa" if i % 2 else "#f4f4f4"
            o.append(f'<g class="lane" data-lane="{lane}" data-tasks="{tasks}">')
            o.append(f'<rect x="0" y="{y}" width="{self.width}" height="{h}" fill="{fill}"/>')
            o.append(_text(10, y + 20, label, "lane-label"))
            if tasks:
                o.append(_text(10, y + 36, f"tasks: {tasks}"))
            o.append("</g>")

    def _parked(self) -> None:
        for start, end, vcpus in self.tl.parked:
            for v in sorted(vcpus):
                y = self.lane_y.get(f"vcpu{v}")
                if y is None:
                    continue
                w = (end - start) * UNIT
                self.out.append(
                    f'<rect class="parked" data-vcpu="{v}" data-from="{start}" data-to="{end}" '
                    f'x="{x_of(start)}" y="{y}" width="{w}" height="{LANE_H}"/>'
                )
                self.out.append(_text(x_of(start) + 3, y + LANE_H - 6, "parked", "small"))

    def _attempts(self) -> None:
        v = self.tl.violation
        bad = set(v.reads) if v else set()
        # A task that migrated mid-attempt has one bar per vCPU: the last one says the result.
        last = {(a.read, a.index): a.start for a in self.tl.attempts}
        #: Per lane, where the labels of each of two rows end: a label that would overlap
        #: the previous one goes one row up.
        ends: dict[int, list[int]] = {}
        for a in self.tl.attempts:
            y = self.lane_y[f"vcpu{a.vcpu}"] + 48
            final = a.outcome != RETRY
            hit = v is not None and final and a.read in bad
            cls = "attempt" + ("" if final else " retry") + (" bad" if hit else "")
            extra = f' data-value="{a.value}"' if a.value is not None else ""
            shown = a.read
            if last[(a.read, a.index)] == a.start:
                shown += f" {a.outcome}" + (f" {a.value}" if a.value is not None else "")
                shown += f" ({v.oracle})" if hit and v is not None else ""
            if hit and v is not None:
                extra += f' data-violation="{v.oracle}"'
            self.out.append(
                f'<rect class="{cls}" data-read="{a.read}" data-attempt="{a.index}" '
                f'data-vcpu="{a.vcpu}" data-start="{a.start}" data-end="{a.end}" '
                f'data-outcome="{a.outcome}"{extra} x="{x_of(a.start)}" y="{y}" '
                f'width="{(a.end - a.start + 1) * UNIT}" height="22" rx="3"/>'
            )
            x = x_of(a.start) + 2
            rows = ends.setdefault(a.vcpu, [0, 0])
            row = next((i for i, end in enumerate(rows) if end < x), 0)
            rows[row] = x + len(shown) * CHAR
            label = _text(x, y - 4 - 14 * row, shown, "label", fill=C_BAD if hit else "")
            self.labels.append(label)

    def _migrations(self) -> None:
        """A dashed line where a task moved to another vCPU in the middle of a read."""
        prev: dict[str, tuple[int, int]] = {}
        for a in sorted(self.tl.attempts, key=lambda a: a.start):
            if a.read in prev and prev[a.read][1] != a.vcpu:
                end, vcpu = prev[a.read]
                y0, y1 = self.lane_y[f"vcpu{vcpu}"] + 59, self.lane_y[f"vcpu{a.vcpu}"] + 59
                self.out.append(
                    f'<line class="migration" data-read="{a.read}" data-to="{a.vcpu}" '
                    f'x1="{x_of(end + 1)}" y1="{y0}" x2="{x_of(a.start)}" y2="{y1}" '
                    'stroke="#555" stroke-dasharray="4 3"/>'
                )
            prev[a.read] = (a.end, a.vcpu)

    def _host(self) -> None:
        """Host steps with no store (exits, parks, TSC changes) as grey ticks."""
        stored = {s.step for s in self.tl.stores}
        y = self.lane_y["host"] + 48
        for h, t, label in self.tl.host:
            if h in stored:
                continue
            x = _mid(t)
            self.out.append(
                f'<g class="host-step" data-step="{h}" data-t="{t}">'
                f'<line x1="{x}" y1="{y - 8}" x2="{x}" y2="{y + 8}" stroke="#777"/>'
                + _text(x - 3, y + 12, label, "small", down=True, fill="#555")
                + "</g>"
            )

    def _marks(self) -> None:
        """Stores on the host lane, loads and TSC/cpu reads on the vCPU lanes."""
        o = self.out
        y_host = self.lane_y["host"] + 48
        for i, s in enumerate(self.tl.stores):
            x = _mid(s.t)
            o.append(
                f'<g class="store" data-index="{i}" data-step="{s.step}" data-t="{s.t}" '
                f'data-field={quoteattr(s.field)} data-new="{s.new}">'
                f'<rect x="{x - 5}" y="{y_host - 5}" width="10" height="10" fill="{C_STORE}"/>'
                + _text(x - 3, y_host + 12, f"{s.field}={s.new:#x}", "small", down=True)
                + "</g>"
            )
        for ld in self.tl.loads:
            x, y = _mid(ld.t), self.lane_y[f"vcpu{ld.vcpu}"] + 59
            torn = ' data-torn="1"' if ld.torn else ""
            o.append(
                f'<g class="load" data-t="{ld.t}" data-read="{ld.read}" data-vcpu="{ld.vcpu}" '
                f"data-field={quoteattr(ld.field)}{torn}>"
                f'<circle cx="{x}" cy="{y}" r="4" fill="{C_LOAD}"/>'
                + _text(x - 3, y + 16, ld.field, "small", down=True)
                + "</g>"
            )
        for ot in self.tl.others:
            x, y = _mid(ot.t), self.lane_y[f"vcpu{ot.vcpu}"] + 59
            o.append(
                f'<g class="op" data-t="{ot.t}" data-read="{ot.read}" data-kind="{ot.kind}">'
                f'<path d="M{x},{y - 5} L{x + 5},{y} L{x},{y + 5} L{x - 5},{y} z" '
                f'fill="{C_OTHER}"/>'
                + _text(x - 3, y + 16, f"{ot.kind} {ot.value:#x}", "small", down=True)
                + "</g>"
            )

    def _arrows(self) -> None:
        y0 = self.lane_y["host"] + 53
        vcpu = {ld.t: ld.vcpu for ld in self.tl.loads}
        bad = set(self.tl.violation.reads) if self.tl.violation else set()
        into_bad = {ld.t for ld in self.tl.loads if ld.read in bad}
        for a in self.tl.arrows:
            s = self.tl.stores[a.store]
            x0, x1 = _mid(s.t), _mid(a.load)
            y1 = self.lane_y[f"vcpu{vcpu[a.load]}"] + 54
            bend = (y1 - y0) // 2
            cls = "reads-from bad" if a.load in into_bad else "reads-from"
            self.out.append(
                f'<path class="{cls}" data-store="{a.store}" data-step="{s.step}" '
                f'data-load="{a.load}" d="M{x0},{y0} C{x0},{y0 + bend} {x1},{y1 - bend} '
                f'{x1},{y1}" marker-end="url(#arrow)"/>'
            )

    def _axis(self) -> None:
        y = self.bottom + 14
        self.out.append(
            f'<line x1="{LEFT}" y1="{self.bottom + 2}" x2="{x_of(self.tl.end)}" '
            f'y2="{self.bottom + 2}" stroke="#999"/>'
        )
        for t in range(0, self.tl.end + 1, 5):
            self.out.append(_text(x_of(t), y, f"t={t}", "small"))


_LEGEND = (
    "square: host store, dot: shared-page load, diamond: TSC/cpu read, arrow: the store a "
    "load read, bar: a read attempt (retry or what it returned), grey: vCPU parked"
)


def render(tl: Timeline) -> str:
    """The SVG document of a timeline."""
    return _Svg(tl).render()


def svg(tr: Trace, executor: Executor) -> str:
    """The SVG of a traced run (`emu.report.trace.trace`)."""
    return render(timeline(tr, executor))


def write(tr: Trace, executor: Executor, path: Path) -> None:
    """Write the SVG of `tr` to `path`; an unwritable path is bad input."""
    text = svg(tr, executor)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise UsageError(f"--svg {path}: cannot write ({e.strerror})") from None
