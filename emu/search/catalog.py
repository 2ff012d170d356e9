"""The catalog: scenarios with expected verdicts, and `vdsofuzz check`, which runs them.

A catalog entry is a scenario (image + host model + parameters + machine options + oracle
set) plus a search budget and the verdict it is expected to get: `pass`, or `violation`
with the oracle (or one of a list of oracles) expected to fire. `check` runs every entry
(in parallel), stores each violation's minimal finding so `vdsofuzz trace` can show it, and
reports whether every entry got its expected verdict (the formats live in emu/report/check.py).

A pass is only worth something if the same scenario fails a broken reader, so every entry
that expects `pass` names *witnesses*: seeded-bug readers that the same scenario (host,
parameters, vCPUs, options, budget) must catch. A pass whose witness is not caught is the
verdict `vacuous`, a failure of the catalog.

With a user's image, `check` runs the *reference* entries (those marked `reference`, the
host behaviours run against the current kernel's reader) with the image substituted, and
expects what the reference reader gets, oracle included: a difference means the image
behaves differently from today's reader on that host, for better or worse.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import vdso_blobs
from emu.engine.scenario import ORACLES, Scenario
from emu.errors import BAD_INPUT, ScheduleError, UsageError, check_range
from emu.search.entry import (
    PASS,
    VACUOUS,
    VIOLATION,
    Entry,
    Outcome,
    Result,
    Witness,
    label,
)

CATALOG = vdso_blobs.path(vdso_blobs.CATALOG)  # package data: works from a wheel too
FORMAT = "vdsofuzz-catalog/1"
#: Reference readers by page family: the current kernel's pvclock reader, the Hyper-V one.
REFERENCE = {"pvclock": "modern", "hvclock": "hyperv"}


class CatalogError(UsageError):
    """The catalog file is missing or malformed."""


# --- loading ------------------------------------------------------------------------------

#: The keys of a catalog entry: the scenario's, then the expectation's.
_SCENARIO_KEYS = ("image", "host", "params", "vcpus", "reads", "task_migration", "speculative_tsc")
_EXPECT_KEYS = ("name", "oracles", "accuracy_ns", "expect", "oracle", "strategy", "seed", "why")
_ENTRY_KEYS = {*_SCENARIO_KEYS, *_EXPECT_KEYS, "max_schedules", "reference", "witness"}


def oracle_list(value: Any, where: str) -> tuple[str, ...]:
    """`"consistent"` or `["accurate", "monotonic"]` -> a tuple of known oracle names."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or any(n not in ORACLES for n in names):
        raise CatalogError(f"{where}: oracle must name one or a list of {', '.join(ORACLES)}")
    return tuple(names)


def _witnesses(value: Any, where: str) -> tuple[Witness, ...]:
    from emu.errors import ImageError
    from emu.image.loader import resolve

    if not isinstance(value, list) or not value:
        raise CatalogError(f"{where}: witness must be a list of reader names")
    out = []
    for w in value:
        if isinstance(w, str):
            w = {"image": w}
        if not isinstance(w, dict) or set(w) - {"image", "oracle"} or "image" not in w:
            raise CatalogError(f"{where}: a witness is a name or {{'image': ..., 'oracle': ...}}")
        try:
            resolve(str(w["image"]))
        except ImageError:
            raise CatalogError(f"{where}: witness {w['image']!r} is not a known image") from None
        oracles = oracle_list(w["oracle"], where) if "oracle" in w else ()
        out.append(Witness(str(w["image"]), oracles))
    return tuple(out)


def parse(data: Any, *, source: str = "catalog") -> list[Entry]:
    """Catalog JSON -> entries; every mistake is a CatalogError naming the entry."""
    from emu.search.fuzz import STRATEGIES

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
        where = f"{source}: {name}"
        bad = sorted(set(row) - _ENTRY_KEYS)
        if bad:
            raise CatalogError(f"{where}: unknown key {bad[0]!r}")
        if name in seen:
            raise CatalogError(f"{source}: two scenarios are called {name!r}")
        seen.add(name)
        expect = row.get("expect")
        if expect not in (PASS, VIOLATION):
            raise CatalogError(f"{where}: expect must be 'pass' or 'violation'")
        oracles: tuple[str, ...] = ()
        if row.get("oracle") is not None:
            if expect != VIOLATION:
                raise CatalogError(f"{where}: an oracle is only for an expected violation")
            oracles = oracle_list(row["oracle"], where)
        if "image" not in row:
            raise CatalogError(f"{where}: no image")
        witnesses: tuple[Witness, ...] = ()
        if expect == PASS:
            if "witness" not in row:
                raise CatalogError(
                    f"{where}: an expected pass names a witness, a seeded-bug reader the same "
                    'scenario must catch (e.g. "witness": ["bug-no-retry"])'
                )
            witnesses = _witnesses(row["witness"], where)
        elif "witness" in row:
            raise CatalogError(f"{where}: a witness is only for an expected pass")
        strategies = row.get("strategy", "hypothesis")
        strategies = (strategies,) if isinstance(strategies, str) else tuple(strategies)
        if not strategies or any(s not in STRATEGIES for s in strategies):
            raise CatalogError(
                f"{where}: strategy must be one or a list of {', '.join(STRATEGIES)}"
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
            raise CatalogError(f"{where}: {e}") from None
        entries.append(
            Entry(
                name=name,
                scenario=scenario,
                expect=expect,
                oracles=oracles,
                strategies=strategies,
                seed=int(row.get("seed", 0)),
                max_schedules=int(row.get("max_schedules", 2000)),
                reference=bool(row.get("reference", False)),
                why=str(row.get("why", "")),
                witnesses=witnesses,
            )
        )
    if not entries:
        raise CatalogError(f"{source}: no scenarios")
    return entries


def read(path: Path | None = None) -> dict[str, Any]:
    """The catalog file as JSON (the shipped one by default)."""
    path = path or CATALOG
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        raise CatalogError(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise CatalogError(f"{path}: not JSON ({e})") from None


def load(path: Path | None = None) -> list[Entry]:
    return parse(read(path), source=str(path or CATALOG))


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

    Each keeps its expected oracle(s): a reader that breaks another oracle than the
    reference reader on the same host differs from it. Where two oracles may legitimately
    fire first, the entry lists both. The witnesses stay: they test the scenario.
    """
    ref = REFERENCE[family(image)]
    out = []
    for e in entries:
        if e.reference and e.scenario.image == ref:
            sc = replace(e.scenario, image=image)
            name = e.name.replace(ref, "image", 1)
            out.append(replace(e, name=name, scenario=sc))
    if not out:
        raise CatalogError(f"the catalog has no reference scenarios for {ref!r} readers")
    return out


# --- every build of every reader ------------------------------------------------------------


def homes(path: Path | None = None) -> dict[str, str]:
    """Reader name -> the catalog entry that is its home scenario (`"homes"` in the file)."""
    return dict(read(path).get("homes", {}))


def for_builds(entries: Iterable[Entry], home: dict[str, str], schedules: int) -> list[Entry]:
    """Every bundled image (all arches, compilers, levels) under its reader's home scenario.

    A build expected to pass is searched with `schedules` random schedules; a build of a
    seeded bug is expected to break an oracle (any: another compiler may break it another
    way) unless the manifest says that build does not contain the bug. Witnesses are not
    rerun per build: they test the home scenario, which plain `check` runs.
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
        e = replace(
            e, name=img["name"], scenario=replace(e.scenario, image=img["name"]), oracles=()
        )
        e = replace(e, reference=False, witnesses=())
        if e.expect == PASS or (img.get("bug") and not img.get("bug_compiled_in", True)):
            e = replace(e, expect=PASS, strategies=("random",), max_schedules=schedules)
        out.append(e)
    return out


# --- running -------------------------------------------------------------------------------


def finding_path(out: Path, name: str) -> Path:
    return out / f"{name.replace('/', '_')}.json"


def search_image(entry: Entry, image: str, oracles: tuple[str, ...]) -> tuple[Outcome, Any]:
    """Fuzz `entry`'s scenario with `image` in it; the outcome and the finding (or None)."""
    from emu.search.fuzz import Campaign

    sc = replace(entry.scenario, image=image)
    res = Outcome(Path(image).name if os.sep in image else image, expected_oracle=oracles)
    executor = None
    try:
        for strategy in entry.strategies:
            campaign = Campaign(sc, executor)
            executor = campaign.executor
            found = campaign.fuzz(
                strategy=strategy, seed=entry.seed, max_schedules=entry.max_schedules
            )
            res.schedules += found.schedules
            if found.finding is not None:
                f = found.finding
                res.verdict, res.oracle, res.message = VIOLATION, f.oracle, f.message
                res.schedule = f.schedule.compact()
                return res, f
    except BAD_INPUT as e:  # an image the scenario cannot run; any other error is ours
        res.message = f"{type(e).__name__}: {e}"
        return res, None
    res.verdict = PASS
    return res, None


def run_entry(entry: Entry, out: Path | None) -> Result:
    """Fuzz one entry with its budget, then (after a pass) each witness with the same
    budget; save the entry's finding (if any) under `out`."""
    start, cpu = time.monotonic(), time.process_time()
    sc = entry.scenario
    main, f = search_image(entry, sc.image, entry.oracles)
    res = Result(
        entry.name,
        main.image,
        sc.host,
        entry.options(),
        entry.expect,
        entry.oracles,
        main.verdict,
        oracle=main.oracle,
        message=main.message,
        schedule=main.schedule,
        schedules=main.schedules,
        why=entry.why,
    )
    if main.verdict == PASS:
        res.witnesses = [search_image(entry, w.image, w.oracles)[0] for w in entry.witnesses]
        if res.missed:
            res.verdict = VACUOUS
            res.message = "; ".join(
                f"witness {w.image} not caught: got {label(w.verdict, filter(None, [w.oracle]))}"
                f" in {w.schedules} schedules" + (f" ({w.message})" if w.message else "")
                for w in res.missed
            )
    if out is not None:
        if f is None:
            # A finding left by an earlier run no longer describes this scenario.
            finding_path(out, entry.name).unlink(missing_ok=True)
        else:
            res.finding = str(f.save(finding_path(out, entry.name)))
    res.elapsed = time.monotonic() - start
    res.cpu = time.process_time() - cpu
    return res


def _run_star(args: tuple[Entry, Path | None]) -> Result:
    return run_entry(*args)


def run_parallel(
    fn: Callable[[Any], Any],
    items: list[Any],
    *,
    jobs: int,
    order: list[int] | None = None,
    progress: Callable[[Any], None] | None = None,
) -> list[Any]:
    """`[fn(x) for x in items]`, `jobs` processes at a time, started in `order`."""
    order = order if order is not None else list(range(len(items)))
    results: dict[int, Any] = {}
    if jobs <= 1:
        for i in order:
            results[i] = fn(items[i])
            if progress:
                progress(results[i])
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            futures = {i: pool.submit(fn, items[i]) for i in order}
            for i in order:
                results[i] = futures[i].result()
                if progress:
                    progress(results[i])
    return [results[i] for i in range(len(items))]


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
    work = [(e, out) for e in entries]
    return run_parallel(_run_star, work, jobs=jobs, order=order, progress=progress)


__all__ = [
    "CATALOG",
    "CatalogError",
    "Entry",
    "Outcome",
    "Result",
    "Witness",
    "check",
    "for_builds",
    "for_image",
    "load",
    "parse",
    "run_entry",
    "run_parallel",
    "search_image",
]
