"""The live status: per scenario schedules, rate, findings, signatures, coverage and the
residual risk; a rich table on a terminal, or (`--json`) one JSON line per interval.

Residual risk: PCT finds a given bug of depth d in one run with probability at least
p = 1/(n k^(d-1)) (n agents: the vCPU tasks and the host; k decision points of the default
run). After N independent PCT runs a depth-d bug was missed with probability at most
(1 - p)^N. Random walks have no such bound; the same formula over the random runs is shown
as an indication only (marked `~`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from emu.engine.scenario import Scenario


@dataclass
class Row:
    scenario: str
    schedules: int = 0
    rate: float = 0.0
    hits: int = 0
    signatures: int = 0
    coverage: int = 0
    #: Residual risk after the PCT runs, and (indicative) after the random runs.
    risk_pct: float | None = None
    risk_random: float | None = None
    expected: str = ""
    #: dpor: subtrees finished, executions, classes, and the verdict once all are.
    dpor: str = ""


@dataclass
class Snapshot:
    elapsed: float
    remaining: float
    workers: int
    in_flight: int
    requeued: int
    schedules: int
    rate: float
    signatures: int
    coverage: int
    rows: list[Row] = field(default_factory=list)
    done: bool = False

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["elapsed"], d["remaining"], d["rate"] = (
            round(self.elapsed, 2),
            round(self.remaining, 2),
            round(self.rate, 1),
        )
        for r in d["rows"]:
            r["rate"] = round(r["rate"], 1)
        return d

    def json_line(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


def label(sc: Scenario) -> str:
    """`modern/kvm-legacy-copy updates=2 3vcpu`: a scenario in one short cell."""
    img = sc.image.rsplit("/", 1)[-1]
    extra = [f"{k}={v}" for k, v in sorted(sc.host_params.items())]
    extra += [f"{sc.vcpus}vcpu"] if sc.vcpus != 2 else []
    extra += [f"{sc.reads}reads"] if sc.reads != 2 else []
    extra += ["migrate"] * sc.task_migration + ["spec-tsc"] * sc.speculative_tsc
    extra += [sc.cpu] if sc.cpu else []
    return " ".join([f"{img}/{sc.host}", *extra])


def residual(runs: int, agents: int, k: int, depth: int) -> float | None:
    """(1 - 1/(n k^(d-1)))^N, or None before any run."""
    if runs <= 0 or k <= 0:
        return None
    p = 1.0 / (agents * max(k, 1) ** (depth - 1))
    return math.exp(runs * math.log1p(-p)) if p < 1 else 0.0


def _risk(r: float | None, approx: bool = False) -> str:
    if r is None:
        return "-"
    return ("~" if approx else "") + f"{r:.2g}"


def table(snap: Snapshot) -> Any:
    """A rich Table of the snapshot."""
    from rich.table import Table

    mins = f"{snap.elapsed / 60:.1f} min elapsed, {snap.remaining / 60:.1f} min left"
    t = Table(
        title=f"campaign: {mins}; {snap.workers} workers, {snap.in_flight} chunks in flight, "
        f"{snap.requeued} re-queued; {snap.schedules} schedules ({snap.rate:.0f}/s), "
        f"{snap.signatures} signatures, coverage {snap.coverage}",
        title_justify="left",
    )
    cols = ["scenario", "schedules", "rate/s", "hits", "sigs", "coverage", "risk pct"]
    cols += ["risk rnd"] + (["dpor"] if any(r.dpor for r in snap.rows) else [])
    for col in cols:
        if col in ("scenario", "dpor"):  # the wide cells: wrapped, never cut
            t.add_column(col, overflow="fold", min_width=24)
        else:
            t.add_column(col, justify="right", no_wrap=True)
    for r in snap.rows:
        t.add_row(
            r.scenario,
            str(r.schedules),
            f"{r.rate:.0f}",
            str(r.hits),
            str(r.signatures),
            str(r.coverage),
            _risk(r.risk_pct),
            _risk(r.risk_random, True),
            *([r.dpor] if len(cols) > 8 else []),
        )
    return t
