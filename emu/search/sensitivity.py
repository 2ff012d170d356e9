"""The sensitivity matrix: which host scenarios catch which seeded reader bugs.

Rows are the seeded-bug readers of the bundled manifest (every reader with a `bug`);
columns are host models at their main parameter settings, listed once in the catalog file
under `"sensitivity"` with the search budget and the machine options a row needs (e.g.
`--speculative-tsc` for the unfenced rdtsc). Each cell is searched like a catalog entry
expected to fail, or is *not expressible*, for a reason computed from what the reader
loads and what the host writes, never written per cell:

- the host writes none of the pages the reader loads (a pvclock reader on Hyper-V);
- the host updates none of the pages the reader loads (`kvm vcpu=1` against a reader of
  vCPU 0's page; a host with no update), for a bug that needs an update to show (rows
  declare `"needs_update": false` when the bug shows without one).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from emu.engine.scenario import Scenario
from emu.errors import UsageError
from emu.search.catalog import CatalogError, read, run_parallel, search_image
from emu.search.entry import ERROR, PASS, VIOLATION, Entry

CAUGHT, NOT_CAUGHT, NOT_EXPRESSIBLE = "caught", "not caught", "not expressible"
#: Row options a matrix row may set (machine options its bug needs, or what it needs).
_ROW_KEYS = {"speculative_tsc", "task_migration", "needs_update"}
_COLUMN_KEYS = {"name", "host", "params", "vcpus"}


@dataclass(frozen=True)
class Column:
    name: str
    host: str
    params: dict[str, Any] = field(default_factory=dict)
    vcpus: int = 2


@dataclass(frozen=True)
class Row:
    image: str
    speculative_tsc: bool = False
    task_migration: bool = False
    #: False when the bug shows without any host update (unsynchronised TSCs suffice).
    needs_update: bool = True


@dataclass
class Cell:
    row: str
    column: str
    status: str
    oracle: str | None = None
    #: Schedules to the first violation (caught) or searched (not caught).
    schedules: int = 0
    reason: str = ""
    message: str = ""
    schedule: str = ""
    elapsed: float = 0.0
    cpu: float = 0.0


@dataclass
class Spec:
    """What to run: rows x columns, each cell with `strategies` x `max_schedules`."""

    rows: list[Row]
    columns: list[Column]
    strategies: tuple[str, ...] = ("random", "hypothesis")
    max_schedules: int = 3000
    seed: int = 0

    def only(self, texts: list[str]) -> Spec:
        """The rows and columns whose name contains one of `texts`; all rows (columns) if
        no row (column) matches, and a UsageError if nothing matches at all."""
        rows = [r for r in self.rows if any(t in r.image for t in texts)]
        cols = [c for c in self.columns if any(t in c.name for t in texts)]
        if not rows and not cols:
            raise UsageError(f"no matrix row or column matches {', '.join(texts)}")
        return replace(self, rows=rows or self.rows, columns=cols or self.columns)


@dataclass
class Sensitivity:
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    budget: str
    cells: list[Cell]

    def cell(self, row: str, column: str) -> Cell:
        return next(c for c in self.cells if (c.row, c.column) == (row, column))


def spec(path: Path | None = None) -> Spec:
    """The matrix of the catalog file: rows from the manifest, columns from the file."""
    from emu.image.loader import manifest

    data = read(path).get("sensitivity")
    if not isinstance(data, dict) or not data.get("columns"):
        raise CatalogError("the catalog has no sensitivity columns")
    columns = []
    for c in data["columns"]:
        if not isinstance(c, dict) or set(c) - _COLUMN_KEYS or "host" not in c:
            raise CatalogError(f"sensitivity column {c!r}: needs host (and name, params, vcpus)")
        name = str(c.get("name", c["host"]))
        columns.append(
            Column(name, str(c["host"]), dict(c.get("params", {})), int(c.get("vcpus", 2)))
        )
    options = data.get("rows", {})
    bugs = list(dict.fromkeys(e["reader"] for e in manifest()["images"] if e.get("bug")))
    for name, opts in options.items():
        if name not in bugs or set(opts) - _ROW_KEYS:
            raise CatalogError(f"sensitivity row {name!r}: not a seeded bug, or unknown option")
    strategies = data.get("strategy", ["random", "hypothesis"])
    return Spec(
        rows=[Row(b, **options.get(b, {})) for b in bugs],
        columns=columns,
        strategies=(strategies,) if isinstance(strategies, str) else tuple(strategies),
        max_schedules=int(data.get("max_schedules", 3000)),
        seed=int(data.get("seed", 0)),
    )


def _scenario(row: Row, col: Column, **extra: Any) -> Scenario:
    return Scenario(
        image=row.image,
        host=col.host,
        host_params=dict(col.params),
        vcpus=col.vcpus,
        speculative_tsc=row.speculative_tsc,
        task_migration=row.task_migration,
        **extra,
    )


def _names(keys: set[str]) -> str:
    return ", ".join(sorted(keys)) or "none"


def reason(row: Row, col: Column) -> str:
    """Why the cell cannot show the bug, or "" if it can: computed from the clock records
    the reader loads (one read per vCPU, no preemption) and those the host publishes."""
    from emu.engine.executor import Executor
    from emu.engine.scheduler import Default
    from host_model.base import HostView
    from host_model.clock import Clock
    from host_model.registry import make_host

    run = Executor(_scenario(row, col, reads=1)).run(Default())
    reads = {k for r in run.reads for k in r.keys if k.startswith(("pvti", "hvclock"))}
    host = make_host(col.host, col.params)
    view = HostView(Clock(col.vcpus, offsets=host.tsc_offsets(col.vcpus)), 0, col.vcpus)
    written = {p.key for p in host.setup(view).publish}
    updated = {p.key for step in host.steps(view) for p in step.publish}
    if not reads & written:
        return f"the host writes {_names(written)}; the reader reads {_names(reads)}"
    if row.needs_update and not reads & updated:
        if not updated:
            return "the host makes no update, and the bug needs one to show"
        return f"the host updates {_names(updated)}, which the reader never reads ({_names(reads)})"
    return ""


def run_cell(args: tuple[Spec, Row, Column]) -> Cell:
    s, row, col = args
    start, cpu = time.monotonic(), time.process_time()
    cell = Cell(row.image, col.name, ERROR)
    try:
        why = reason(row, col)
    except (ValueError, RuntimeError) as e:
        why, cell.message = "", f"{type(e).__name__}: {e}"
    if why:
        cell.status, cell.reason = NOT_EXPRESSIBLE, why
    elif not cell.message:
        entry = Entry(
            f"{row.image}@{col.name}",
            _scenario(row, col),
            VIOLATION,
            strategies=s.strategies,
            seed=s.seed,
            max_schedules=s.max_schedules,
        )
        out, _ = search_image(entry, row.image, ())
        cell.schedules, cell.oracle, cell.message = out.schedules, out.oracle, out.message
        cell.schedule = out.schedule
        cell.status = {PASS: NOT_CAUGHT, VIOLATION: CAUGHT}.get(out.verdict, ERROR)
    cell.elapsed, cell.cpu = time.monotonic() - start, time.process_time() - cpu
    return cell


def run(
    s: Spec, *, jobs: int | None = None, progress: Callable[[Cell], None] | None = None
) -> Sensitivity:
    """Every cell, `jobs` at a time (default: one per CPU); cells in row-major order."""
    work = [(s, r, c) for r in s.rows for c in s.columns]
    cells = run_parallel(run_cell, work, jobs=jobs or os.cpu_count() or 1, progress=progress)
    budget = f"{' + '.join(s.strategies)}, {s.max_schedules} schedules each, seed {s.seed}"
    return Sensitivity(
        tuple(r.image for r in s.rows), tuple(c.name for c in s.columns), budget, cells
    )


__all__ = ["CAUGHT", "NOT_CAUGHT", "NOT_EXPRESSIBLE", "Cell", "Sensitivity", "Spec", "run", "spec"]
