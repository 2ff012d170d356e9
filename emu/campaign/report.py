"""A campaign directory read back: the signature list (table, JSON, Markdown), DIR/report.md,
and an HTML page with an inline SVG plot of coverage and signatures over campaign time."""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emu.errors import UsageError


@dataclass
class Entry:
    id: str
    oracle: str
    scenario: str
    signature: str
    hits: int
    first_seen: float
    choices: int
    schedule: str
    message: str
    file: str

    @property
    def replay(self) -> str:
        return f"vdsofuzz replay {self.file}"

    @property
    def trace(self) -> str:
        return f"vdsofuzz trace {self.file}"


@dataclass
class Summary:
    out: Path
    source: str
    elapsed: float
    schedules: int
    entries: list[Entry]
    timeline: list[dict[str, Any]]
    #: Scenario label -> (expected verdict, signatures found) for catalog campaigns.
    expected: list[tuple[str, str, int]]
    #: dpor: (scenario label, progress or verdict) per scenario it explored.
    dpor: list[tuple[str, str]] = field(default_factory=list)


def _describe(sig: dict[str, Any]) -> str:
    sites = ", ".join(sig.get("sites", [])) or "every load from one store"
    return f"{sites} <- {'+'.join(sig.get('steps', [])) or 'no host step'}"


def _tally(out: Path) -> tuple[int, dict[str, int], dict[str, float], dict[int, set[str]]]:
    """From the checkpoints: schedules, hits and first-seen time per signature, and the
    signatures of each scenario."""
    hits: dict[str, int] = {}
    first: dict[str, float] = {}
    schedules = 0
    per_scenario: dict[int, set[str]] = {}
    for p in sorted((out / "checkpoints").glob("*.json")):
        st = json.loads(p.read_text())
        schedules += st["schedules"]
        idx = int(p.stem.split("-")[0][1:])
        for sid, n in st["hits"].items():
            hits[sid] = hits.get(sid, 0) + n
            per_scenario.setdefault(idx, set()).add(sid)
        for sid, t in st["first_seen"].items():
            first[sid] = min(first.get(sid, t), t)
    return schedules, hits, first, per_scenario


def read(out: Path) -> Summary:
    """Everything `findings` and the report show, from the files in `out`."""
    from emu.campaign.status import label
    from emu.engine.scenario import Scenario

    rec_path = out / "campaign.json"
    if not rec_path.exists():
        raise UsageError(
            f"{out}: no campaign here (no campaign.json); run `vdsofuzz campaign --out {out}`"
        )
    rec = json.loads(rec_path.read_text())
    scenarios = [Scenario.from_json(s) for s in rec["scenarios"]]
    schedules, hits, first, per_scenario = _tally(out)
    entries = []
    for p in sorted((out / "findings").glob("*.json")):
        d = json.loads(p.read_text())
        sid = p.stem
        choices = d.get("choices", [])
        entries.append(
            Entry(
                sid,
                d["violation"]["oracle"],
                label(scenarios[d["scenario_index"]]),
                _describe(d["signature"]),
                hits.get(sid, 0),
                first.get(sid, 0.0),
                len(choices),
                " ".join(f"{a}:{b}" for a, b in choices) or "(no preemption)",
                d["violation"]["message"],
                str(p),
            )
        )
    entries.sort(key=lambda e: (e.first_seen, e.id))
    timeline = []
    tl = out / "timeline.jsonl"
    if tl.exists():
        timeline = [json.loads(line) for line in tl.read_text().splitlines() if line.strip()]
    expected = [
        (label(scenarios[int(i)]), exp, len(per_scenario.get(int(i), ())))
        for i, exp in sorted(rec.get("expected", {}).items(), key=lambda kv: int(kv[0]))
    ]
    from emu.campaign.dpor import verdicts

    found = verdicts(out, rec.get("preemptions"), len(scenarios))
    dp = [(label(scenarios[i]), text) for i, text in sorted(found.items())]
    return Summary(out, rec["source"], rec["elapsed"], schedules, entries, timeline, expected, dp)


def to_json(s: Summary) -> str:
    rows = [dict(asdict(e), replay=e.replay, trace=e.trace) for e in s.entries]
    return json.dumps(
        {
            "campaign": str(s.out),
            "elapsed": s.elapsed,
            "schedules": s.schedules,
            "signatures": rows,
            "dpor": [{"scenario": a, "dpor": b} for a, b in s.dpor],
        },
        indent=2,
        sort_keys=True,
    )


def markdown(s: Summary) -> str:
    """The report: what ran, each signature with its smallest schedule and commands."""
    lines = [
        f"# Campaign {s.out}",
        "",
        f"Spec: {s.source}; {s.elapsed / 60:.1f} min of campaign time; {s.schedules} schedules; "
        f"{len(s.entries)} distinct signatures.",
        "",
        "| signature | oracle | scenario | hits | first seen (s) | choices | sites <- host steps |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for e in s.entries:
        cells = [f"`{e.id}`", e.oracle, e.scenario, str(e.hits), f"{e.first_seen:.1f}"]
        lines.append("| " + " | ".join([*cells, str(e.choices), e.signature]) + " |")
    for e in s.entries:
        lines += [
            "",
            f"## `{e.id}`: {e.oracle} in {e.scenario}",
            "",
            e.message,
            "",
            f"Smallest schedule: `{e.schedule}`",
            "",
            f"    {e.replay}",
            f"    {e.trace}",
        ]
    if s.dpor:
        lines += ["", "## dpor", "", "| scenario | subtrees, executions, classes; verdict |"]
        lines += ["|---|---|", *(f"| {a} | {b} |" for a, b in s.dpor)]
    if s.expected:
        lines += [
            "",
            "## Catalog expectations",
            "",
            "| scenario | expected | signatures | |",
            "|---|---|---:|---|",
        ]
        lines += [
            f"| {name} | {exp.replace('|', ' or ')} | {n} | {_agrees(exp, n)} |"
            for name, exp, n in s.expected
        ]
    return "\n".join(lines) + "\n"


def _agrees(expected: str, signatures: int) -> str:
    """A catalog scenario's campaign result against its expected verdict. A pass is only
    checked within the campaign's budget; a violation not found yet may need more time."""
    if expected.startswith("violation"):
        return "found" if signatures else "not found yet"
    return "UNEXPECTED finding" if signatures else "ok"


def table(s: Summary) -> Any:
    from rich.table import Table

    t = Table(title=f"{len(s.entries)} signatures in {s.out} ({s.schedules} schedules)")
    for col in ("id", "oracle", "scenario", "hits", "first (s)", "choices"):
        t.add_column(col, no_wrap=col in ("id", "oracle"))
    for e in s.entries:
        t.add_row(e.id, e.oracle, e.scenario, str(e.hits), f"{e.first_seen:.1f}", str(e.choices))
    return t


def commands(s: Summary) -> str:
    """Per signature: what it is, and the commands that replay and trace its finding."""
    return "".join(f"{e.id}  {e.signature}\n    {e.replay}\n    {e.trace}\n" for e in s.entries)


_SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}">{body}</svg>'


def _polyline(timeline: list[dict[str, Any]], key: str, color: str, box: tuple[int, ...]) -> str:
    w, h, pad, row = box
    tmax = max(p["t"] for p in timeline) or 1.0
    top = max(p[key] for p in timeline) or 1
    pts = " ".join(
        f"{pad + (w - 2 * pad) * p['t'] / tmax:.1f},{h - pad - (h - 2 * pad) * p[key] / top:.1f}"
        for p in timeline
    )
    return (
        f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>'
        f'<text x="{w - pad}" y="{row}" fill="{color}" text-anchor="end" font-size="12">'
        f"{key} (max {top})</text>"
    )


def svg(timeline: list[dict[str, Any]], w: int = 640, h: int = 240) -> str:
    """Coverage (blue) and signatures (red) over campaign time, each scaled to its maximum."""
    pad = 40
    if not timeline:
        return _SVG.format(w=w, h=h, body='<text x="10" y="20">no timeline yet</text>')
    tmax = max(p["t"] for p in timeline)
    body = (
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>'
        f'<text x="{w / 2}" y="{h - 8}" text-anchor="middle" font-size="12">'
        f"campaign time (s), 0..{tmax:.0f}</text>"
        + _polyline(timeline, "coverage", "blue", (w, h, pad, pad - 20))
        + _polyline(timeline, "signatures", "red", (w, h, pad, pad - 6))
    )
    return _SVG.format(w=w, h=h, body=body)


def _html_row(e: Entry) -> str:
    cells = [f"<code>{e.id}</code>", e.oracle, html.escape(e.scenario), str(e.hits)]
    cells += [f"{e.first_seen:.1f}", str(e.choices), html.escape(e.signature)]
    cells.append(f"<code>{html.escape(e.replay)}</code><br><code>{html.escape(e.trace)}</code>")
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def to_html(s: Summary) -> str:
    """A self-contained page: the plot, then the signature table."""
    cols = ("id", "oracle", "scenario", "hits", "first (s)", "choices", "signature", "commands")
    head = "<tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"
    rows = "".join(_html_row(e) for e in s.entries)
    title = html.escape(f"vdsofuzz campaign {s.out}")
    what = f"{s.schedules} schedules, {len(s.entries)} signatures, {s.elapsed / 60:.1f} min"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body><h1>{title}</h1><p>{what}</p>{svg(s.timeline)}"
        f"<table border='1'>{head}{rows}</table></body></html>\n"
    )
