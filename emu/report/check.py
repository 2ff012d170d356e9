"""How `vdsofuzz check` prints what it measured: the text matrix, Markdown, JUnit XML and
JSON of catalog results, and the same four views of the sensitivity matrix (seeded reader
bugs x host models). Running lives in emu/search/catalog.py and emu/search/sensitivity.py.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import asdict
from typing import Any

from emu.search.entry import ERROR, VACUOUS, Result
from emu.search.sensitivity import CAUGHT, Cell, Sensitivity

HEADERS = ("scenario", "image", "host", "expected", "got", "schedules", "time")


def _witness_lines(r: Result) -> list[str]:
    return [f"  witness {w.image}: {w.verdict} in {w.schedules} schedules" for w in r.missed]


def matrix(results: list[Result]) -> str:
    """The plain-text matrix `check` prints."""
    rows = [
        (r.name, r.image, r.host, r.expected, r.got, str(r.schedules), f"{r.elapsed:.1f}s")
        for r in results
    ]
    widths = [max(len(x) for x in col) for col in zip(HEADERS, *rows, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(f"{c:<{w}}" for c, w in zip(cells, widths, strict=True))

    lines = [line(HEADERS).rstrip()]
    for r, cells in zip(results, rows, strict=True):
        lines.append(f"{line(cells)}  {'ok' if r.ok else 'DIFFERS'}")
    for r in results:
        if not r.ok:
            lines.append("")
            lines.append(f"{r.name}: expected {r.expected}, got {r.got}")
            if r.verdict == VACUOUS:
                lines.append("  the scenario does not catch a reader it must catch:")
                lines.extend(_witness_lines(r))
            elif r.message:
                lines.append(f"  {r.message}")
            if r.why:
                lines.append(f"  catalog: {r.why}")
    bad = sum(not r.ok for r in results)
    vacuous = sum(r.verdict == VACUOUS for r in results)
    lines.append("")
    lines.append(
        f"{len(results)} scenarios, {len(results) - bad} as expected, {bad} differ"
        f"{f' ({vacuous} vacuous)' if vacuous else ''} "
        f"({sum(r.elapsed for r in results):.1f} s of search, "
        f"{sum(r.cpu for r in results):.1f} s CPU)"
    )
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """`text` in a Markdown table cell: an oracle list (`accurate|monotonic`) keeps its bar."""
    return text.replace("|", "\\|")


def markdown(results: list[Result]) -> str:
    """The matrix as a Markdown table (for the README)."""
    lines = [
        "| scenario | image | host | options | expected | measured | witnesses | schedules |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        wit = ", ".join(
            f"`{w.image}` {'caught' if w.caught else '**not caught**'}" for w in r.witnesses
        )
        lines.append(
            f"| {r.name} | `{r.image}` | `{r.host}` | {r.options} | {_cell(r.expected)} | "
            f"{_cell(r.got)}{'' if r.ok else ' **differs**'} | {wit or '-'} | {r.schedules} |"
        )
    return "\n".join(lines) + "\n"


def junit(results: list[Result], *, suite: str = "vdsofuzz-check") -> bytes:
    """JUnit XML: one testcase per scenario, a failure when the verdict differs (type
    `vacuous` when a witness was not caught), an error when the scenario could not run."""
    failures = sum(not r.ok and r.verdict != ERROR for r in results)
    errors = sum(r.verdict == ERROR for r in results)
    root = ET.Element("testsuites")
    ts = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(results)),
        failures=str(failures),
        errors=str(errors),
        skipped="0",
        time=f"{sum(r.elapsed for r in results):.3f}",
    )
    for r in results:
        tc = ET.SubElement(
            ts,
            "testcase",
            classname=f"vdsofuzz.catalog.{r.host}",
            name=r.name,
            time=f"{r.elapsed:.3f}",
        )
        detail = f"{r.image} on {r.host} [{r.options}]: expected {r.expected}, got {r.got}"
        if r.verdict == ERROR:
            ET.SubElement(tc, "error", message=r.message or "error", type="error").text = detail
        elif not r.ok:
            kind = "vacuous" if r.verdict == VACUOUS else "verdict"
            f = ET.SubElement(tc, "failure", message=detail, type=kind)
            f.text = "\n".join(x for x in (r.message, r.schedule, r.why) if x)
        out = [f"{r.schedules} schedules, {r.got}"]
        out += [f"witness {w.image}: {w.verdict} in {w.schedules} schedules" for w in r.witnesses]
        if r.finding:
            out.append(f"finding: {r.finding} (vdsofuzz trace {r.finding})")
        ET.SubElement(tc, "system-out").text = "\n".join(out)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def result_json(r: Result) -> dict[str, Any]:
    d = asdict(r)
    d["ok"] = r.ok
    d["expected_oracle"] = list(r.expected_oracle)
    d["elapsed"] = round(r.elapsed, 3)
    d["cpu"] = round(r.cpu, 3)
    d["witnesses"] = [
        {**asdict(w), "expected_oracle": list(w.expected_oracle), "caught": w.caught}
        for w in r.witnesses
    ]
    return d


def to_json(results: list[Result], *, wall: float | None = None) -> dict[str, Any]:
    """`elapsed` is the wall time of the whole check when `wall` is given (else the sum of
    the scenarios' wall times); `cpu` sums the workers' CPU seconds."""
    return {
        "ok": all(r.ok for r in results),
        "vacuous": [r.name for r in results if r.verdict == VACUOUS],
        "scenarios": [result_json(r) for r in results],
        "elapsed": round(wall if wall is not None else sum(r.elapsed for r in results), 3),
        "cpu": round(sum(r.cpu for r in results), 3),
    }


# --- the sensitivity matrix ---------------------------------------------------------------


def _cell_text(c: Cell, notes: dict[str, int]) -> str:
    if c.status == CAUGHT:
        return f"{c.oracle} ({c.schedules})"
    if c.reason:
        return f"n/a [{notes.setdefault(c.reason, len(notes) + 1)}]"
    return c.status


def _grid(m: Sensitivity) -> tuple[list[str], list[list[str]], dict[str, int]]:
    notes: dict[str, int] = {}
    rows = [[row] + [_cell_text(m.cell(row, col), notes) for col in m.columns] for row in m.rows]
    return ["reader bug \\ host", *m.columns], rows, notes


def _legend(m: Sensitivity, notes: dict[str, int]) -> list[str]:
    out = [
        f"caught: the oracle that fired first (schedules to the first violation); not caught: "
        f"no violation in {m.budget}; n/a: not expressible, for the reason noted"
    ]
    out += [f"[{n}] {reason}" for reason, n in notes.items()]
    return out


def sensitivity_text(m: Sensitivity) -> str:
    """The matrix as aligned text, then the legend and the numbered reasons."""
    head, rows, notes = _grid(m)
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    lines = [
        "  ".join(f"{c:<{w}}" for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [head, *rows]
    ]
    return "\n".join([*lines, "", *_legend(m, notes)]) + "\n"


def sensitivity_markdown(m: Sensitivity) -> str:
    """The matrix as a Markdown table; the legend below it, one line each."""
    head, rows, notes = _grid(m)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [f"| `{r[0]}` | " + " | ".join(r[1:]) + " |" for r in rows]
    return "\n".join([*lines, "", "\n\n".join(_legend(m, notes))]) + "\n"


def sensitivity_json(m: Sensitivity, *, wall: float | None = None) -> dict[str, Any]:
    return {
        "rows": list(m.rows),
        "columns": list(m.columns),
        "budget": m.budget,
        "cells": [asdict(c) for c in m.cells],
        "elapsed": round(wall if wall is not None else sum(c.elapsed for c in m.cells), 3),
        "cpu": round(sum(c.cpu for c in m.cells), 3),
    }


__all__ = [
    "junit",
    "markdown",
    "matrix",
    "result_json",
    "sensitivity_json",
    "sensitivity_markdown",
    "sensitivity_text",
    "to_json",
]
