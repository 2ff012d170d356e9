"""The catalog: scenarios with expected verdicts, and `vdsofuzz check`, which runs them.

A catalog entry is a scenario (image + host model + parameters + machine options + oracle
set) plus a search budget and the verdict it is expected to get: `pass`, or `violation`
with the oracle expected to fire. `check` runs every entry (in parallel), stores each
violation's minimal finding so `vdsofuzz trace` can show it, and reports a matrix whose
verdict is "every entry got its expected verdict".

With a user's image, `check` runs the *reference* entries (those marked `reference`, the
host behaviours run against the current kernel's reader) with the image substituted, and
expects what the reference reader gets: a difference means the image behaves differently
from today's reader on that host, for better or worse, and the matrix says which.
"""

from __future__ import annotations

import json
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import vdso_blobs
from emu.engine.scenario import ORACLES, Scenario
from emu.errors import BAD_INPUT, ScheduleError, UsageError, check_range

CATALOG = vdso_blobs.path(vdso_blobs.CATALOG)  # package data: works from a wheel too
FORMAT = "vdsofuzz-catalog/1"
PASS, VIOLATION, ERROR = "pass", "violation", "error"
#: Reference readers by page family: the current kernel's pvclock reader, the Hyper-V one.
REFERENCE = {"pvclock": "modern", "hvclock": "hyperv"}


class CatalogError(UsageError):
    """The catalog file is missing or malformed."""


@dataclass(frozen=True)
class Entry:
    """One catalog row: what to run, how hard to search, what verdict to expect."""

    name: str
    scenario: Scenario
    expect: str
    oracle: str | None = None
    #: Strategies run in turn, each with the whole budget, until one finds a violation.
    strategies: tuple[str, ...] = ("hypothesis",)
    seed: int = 0
    #: Schedules per strategy.
    max_schedules: int = 2000
    reference: bool = False
    why: str = ""

    @property
    def budget(self) -> int:
        return self.max_schedules * len(self.strategies)

    @property
    def expected(self) -> str:
        return f"{self.expect} ({self.oracle})" if self.oracle else self.expect

    def options(self) -> str:
        """The host parameters and machine options, as a short string for the matrix."""
        sc = self.scenario
        out = [f"{k}={v}" for k, v in sorted(sc.host_params.items())]
        if sc.vcpus != 2:
            out.append(f"{sc.vcpus} vCPU" + ("s" if sc.vcpus > 1 else ""))
        if sc.task_migration:
            out.append("--task-migration")
        if sc.speculative_tsc:
            out.append("--speculative-tsc")
        return " ".join(out) or "-"


@dataclass
class Result:
    """What `check` measured for one entry."""

    name: str
    image: str
    host: str
    options: str
    expect: str
    expected_oracle: str | None
    verdict: str
    oracle: str | None = None
    message: str = ""
    schedule: str = ""
    schedules: int = 0
    elapsed: float = 0.0
    finding: str | None = None
    why: str = ""

    @property
    def ok(self) -> bool:
        if self.verdict != self.expect:
            return False
        return self.expect != VIOLATION or self.expected_oracle in (None, self.oracle)

    @property
    def got(self) -> str:
        return f"{self.verdict} ({self.oracle})" if self.oracle else self.verdict

    @property
    def expected(self) -> str:
        return f"{self.expect} ({self.expected_oracle})" if self.expected_oracle else self.expect

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["elapsed"] = round(self.elapsed, 3)
        return d


# --- loading ------------------------------------------------------------------------------

_ENTRY_KEYS = {
    "name",
    "image",
    "host",
    "params",
    "vcpus",
    "reads",
    "task_migration",
    "speculative_tsc",
    "oracles",
    "accuracy_ns",
    "expect",
    "oracle",
    "strategy",
    "seed",
    "max_schedules",
    "reference",
    "why",
}


def parse(data: Any, *, source: str = "catalog") -> list[Entry]:
    """Catalog JSON -> entries; every mistake is a CatalogError naming the entry."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CatalogError(f"{source}: not a vdsofuzz catalog (expected format {FORMAT!r})")
    defaults = data.get("defaults", {})
    entries: list[Entry] = []
    seen: set[str] = set()
    for i, raw in enumerate(data.get("scenarios", [])):
        if not isinstance(raw, dict):
            raise CatalogError(f"{source}: scenario #{i} is not an object")
        row = {**defaults, **raw}
        name = str(row.get("name", f"#{i}"))
        bad = sorted(set(row) - _ENTRY_KEYS)
        if bad:
            raise CatalogError(f"{source}: {name}: unknown key {bad[0]!r}")
        if name in seen:
            raise CatalogError(f"{source}: two scenarios are called {name!r}")
        seen.add(name)
        expect = row.get("expect")
        oracle = row.get("oracle")
        if expect not in (PASS, VIOLATION):
            raise CatalogError(f"{source}: {name}: expect must be 'pass' or 'violation'")
        if oracle is not None and (expect != VIOLATION or oracle not in ORACLES):
            raise CatalogError(
                f"{source}: {name}: oracle must name one of {', '.join(ORACLES)} and only "
                "for an expected violation"
            )
        if "image" not in row:
            raise CatalogError(f"{source}: {name}: no image")
        strategies = row.get("strategy", "hypothesis")
        strategies = (strategies,) if isinstance(strategies, str) else tuple(strategies)
        from emu.search.fuzz import STRATEGIES

        unknown = [s for s in strategies if s not in STRATEGIES]
        if unknown or not strategies:
            raise CatalogError(
                f"{source}: {name}: strategy must be one or a list of {', '.join(STRATEGIES)}"
            )
        try:
            check_range("max_schedules", row.get("max_schedules", 2000), 1, None)
            scenario = Scenario(
                image=str(row["image"]),
                host=str(row.get("host", "kvm")),
                host_params=dict(row.get("params", {})),
                vcpus=int(row.get("vcpus", 2)),
                reads=int(row.get("reads", 2)),
                oracles=tuple(row.get("oracles", ORACLES)),
                accuracy_ns=int(row.get("accuracy_ns", 1_000_000)),
                task_migration=bool(row.get("task_migration", False)),
                speculative_tsc=bool(row.get("speculative_tsc", False)),
            )
        except (ScheduleError, TypeError, ValueError) as e:
            raise CatalogError(f"{source}: {name}: {e}") from None
        entries.append(
            Entry(
                name=name,
                scenario=scenario,
                expect=expect,
                oracle=oracle,
                strategies=strategies,
                seed=int(row.get("seed", 0)),
                max_schedules=int(row.get("max_schedules", 2000)),
                reference=bool(row.get("reference", False)),
                why=str(row.get("why", "")),
            )
        )
    if not entries:
        raise CatalogError(f"{source}: no scenarios")
    return entries


def load(path: Path | None = None) -> list[Entry]:
    path = path or CATALOG
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise CatalogError(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise CatalogError(f"{path}: not JSON ({e})") from None
    return parse(data, source=str(path))


# --- a user's image -------------------------------------------------------------------------


def family(image: str) -> str:
    """Which clock page a reader uses: run it once with no preemption and look.

    Returns "pvclock" or "hvclock" (whichever it loaded from; pvclock when both)."""
    from emu.engine.executor import Executor
    from emu.engine.scheduler import Default

    for host in ("kvm", "hyperv"):
        run = Executor(Scenario(image=image, host=host, vcpus=1, reads=1)).run(Default())
        keys = {k for r in run.reads for k in r.keys}
        if any(k.startswith("pvti") for k in keys) and host == "kvm":
            return "pvclock"
        if "hvclock" in keys and host == "hyperv":
            return "hvclock"
    raise CatalogError(
        f"{image}: the reader loads from neither the pvclock nor the hvclock page; "
        "check cannot tell which host scenarios apply"
    )


def for_image(entries: Iterable[Entry], image: str) -> list[Entry]:
    """The reference entries of `image`'s page family, with `image` substituted.

    Another reader may break a different oracle first (a TSC jump breaks both `accurate`
    and `monotonic`), so for a user's image any violation matches an expected violation.
    """
    ref = REFERENCE[family(image)]
    out = []
    for e in entries:
        if e.reference and e.scenario.image == ref:
            sc = replace(e.scenario, image=image)
            name = e.name.replace(ref, "image", 1)
            out.append(replace(e, name=name, scenario=sc, oracle=None))
    if not out:
        raise CatalogError(f"the catalog has no reference scenarios for {ref!r} readers")
    return out


# --- every build of every reader ------------------------------------------------------------


def homes(path: Path | None = None) -> dict[str, str]:
    """Reader name -> the catalog entry that is its home scenario (`"homes"` in the file)."""
    path = path or CATALOG
    data = json.loads(Path(path).read_text())
    return dict(data.get("homes", {}))


def for_builds(entries: Iterable[Entry], home: dict[str, str], schedules: int) -> list[Entry]:
    """Every bundled image (all arches, compilers, levels) under its reader's home scenario.

    A build expected to pass is searched with `schedules` random schedules; a build of a
    seeded bug is expected to break an oracle (any: another compiler may break it another
    way) unless the manifest says that build does not contain the bug.
    """
    from emu.image.loader import manifest

    by_name = {e.name: e for e in entries}
    out = []
    for img in manifest()["images"]:
        name = home.get(img["reader"])
        if name is None:
            raise CatalogError(f"the catalog has no home scenario for reader {img['reader']!r}")
        try:
            e = by_name[name]
        except KeyError:
            raise CatalogError(f"home scenario {name!r} is not in the catalog") from None
        sc = replace(e.scenario, image=img["name"])
        expect = e.expect
        if img.get("bug") and not img.get("bug_compiled_in", True):
            expect = PASS
        if expect == PASS:
            out.append(
                replace(
                    e,
                    name=img["name"],
                    scenario=sc,
                    expect=PASS,
                    oracle=None,
                    strategies=("random",),
                    max_schedules=schedules,
                    reference=False,
                )
            )
        else:
            out.append(replace(e, name=img["name"], scenario=sc, oracle=None, reference=False))
    return out


# --- running -------------------------------------------------------------------------------


def finding_path(out: Path, name: str) -> Path:
    return out / f"{name.replace('/', '_')}.json"


def run_entry(entry: Entry, out: Path | None) -> Result:
    """Fuzz one entry with its budget; save the finding (if any) under `out`."""
    from emu.search.fuzz import Campaign

    sc = entry.scenario
    res = Result(
        entry.name,
        Path(sc.image).name if os.sep in sc.image else sc.image,
        sc.host,
        entry.options(),
        entry.expect,
        entry.oracle,
        ERROR,
        why=entry.why,
    )
    start = time.monotonic()
    f = None
    try:
        executor = None
        for strategy in entry.strategies:
            campaign = Campaign(sc, executor)
            executor = campaign.executor
            outcome = campaign.fuzz(
                strategy=strategy, seed=entry.seed, max_schedules=entry.max_schedules
            )
            res.schedules += outcome.schedules
            f = outcome.finding
            if f is not None:
                break
    except BAD_INPUT as e:  # an image the scenario cannot run; any other error is ours
        res.message = f"{type(e).__name__}: {e}"
        res.elapsed = time.monotonic() - start
        return res
    res.elapsed = time.monotonic() - start
    if f is None:
        res.verdict = PASS
        if out is not None:
            # A finding left by an earlier run no longer describes this scenario.
            finding_path(out, entry.name).unlink(missing_ok=True)
        return res
    res.verdict = VIOLATION
    res.oracle = f.oracle
    res.message = f.message
    res.schedule = f.schedule.compact()
    if out is not None:
        res.finding = str(f.save(finding_path(out, entry.name)))
    return res


def _run_star(args: tuple[Entry, Path | None]) -> Result:
    return run_entry(*args)


def check(
    entries: list[Entry],
    *,
    out: Path | None,
    jobs: int | None = None,
    progress: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Run every entry, `jobs` at a time (default: one per CPU); results in catalog order."""
    jobs = max(1, jobs or os.cpu_count() or 1)
    # Longest first, so the slow ones do not end up alone at the end.
    order = sorted(range(len(entries)), key=lambda i: -entries[i].budget)
    results: dict[int, Result] = {}
    if jobs == 1:
        for i in order:
            results[i] = run_entry(entries[i], out)
            if progress:
                progress(results[i])
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            futures = {i: pool.submit(_run_star, (entries[i], out)) for i in order}
            for i in order:
                results[i] = futures[i].result()
                if progress:
                    progress(results[i])
    return [results[i] for i in range(len(entries))]


# --- reports -------------------------------------------------------------------------------

HEADERS = ("scenario", "image", "host", "expected", "got", "schedules", "time")


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
            if r.message:
                lines.append(f"  {r.message}")
            if r.why:
                lines.append(f"  catalog: {r.why}")
    bad = sum(not r.ok for r in results)
    total = sum(r.elapsed for r in results)
    lines.append("")
    lines.append(
        f"{len(results)} scenarios, {len(results) - bad} as expected, {bad} differ "
        f"({total:.1f} s of search)"
    )
    return "\n".join(lines) + "\n"


def markdown(results: list[Result]) -> str:
    """The matrix as a Markdown table (for the README)."""
    lines = [
        "| scenario | image | host | options | expected | measured | schedules | time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | `{r.image}` | `{r.host}` | {r.options} | {r.expected} | "
            f"{r.got}{'' if r.ok else ' **differs**'} | {r.schedules} | {r.elapsed:.1f} s |"
        )
    return "\n".join(lines) + "\n"


def junit(results: list[Result], *, suite: str = "vdsofuzz-check") -> bytes:
    """JUnit XML: one testcase per scenario, a failure when the verdict differs, an error
    when the scenario could not run."""
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
            f = ET.SubElement(tc, "failure", message=detail, type="verdict")
            f.text = "\n".join(x for x in (r.message, r.schedule, r.why) if x)
        out = [f"{r.schedules} schedules, {r.got}"]
        if r.finding:
            out.append(f"finding: {r.finding} (vdsofuzz trace {r.finding})")
        ET.SubElement(tc, "system-out").text = "\n".join(out)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def to_json(results: list[Result]) -> dict[str, Any]:
    return {
        "ok": all(r.ok for r in results),
        "scenarios": [r.to_json() for r in results],
        "elapsed": round(sum(r.elapsed for r in results), 3),
    }


__all__ = [
    "CATALOG",
    "CatalogError",
    "Entry",
    "Result",
    "check",
    "for_image",
    "junit",
    "load",
    "markdown",
    "matrix",
    "parse",
    "run_entry",
    "to_json",
]
