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

import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from emu.engine.scenario import Scenario
from emu.errors import BAD_INPUT

# Reading the file lives in catalog_file; its names stay importable from here.
from emu.search.catalog_file import CATALOG, CatalogError, load, parse, read
from emu.search.catalog_file import FORMAT as FORMAT
from emu.search.catalog_file import oracle_list as oracle_list
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

#: Reference readers by page family: the current kernel's pvclock reader, the Hyper-V one.
REFERENCE = {"pvclock": "modern", "hvclock": "hyperv"}


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
    from emu.search.fuzz import Fuzzer

    sc = replace(entry.scenario, image=image)
    res = Outcome(Path(image).name if os.sep in image else image, expected_oracle=oracles)
    executor = None
    try:
        for strategy in entry.strategies:
            campaign = Fuzzer(sc, executor)
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
