"""The Python API: what the command line does, as functions that return the records it prints.

    from emu import api

    out = api.fuzz("build/vdso64.so.dbg", "kvm-legacy-copy", vcpus=2, max_schedules=2000)
    if out.finding:                      # a Finding: oracle, message, schedule
        print(api.explain(out.finding).text())
        out.finding.save(Path("finding.json"))
    again = api.replay("finding.json")   # Replayed: run, violations, reproduced
    results = api.check("build/vdso64.so.dbg", only=["kvm"])  # catalog Results, .ok each

`fuzz` returns the search's `Outcome` (its `finding` is a `Finding` or None), `replay` a
`Replayed`, `trace` the `Trace` that `vdsofuzz trace` prints, `explain` the `Explanation`
that `vdsofuzz explain` prints, `check` the catalog `Result`s that `vdsofuzz check` prints.
Bad input raises the same errors the CLI turns into exit code 2 (`emu.errors.BAD_INPUT`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emu.errors import ScheduleError, UsageError
from emu.search.registry import DEFAULT_STRATEGY

if TYPE_CHECKING:  # the engine loads Unicorn: only when a function runs
    from emu.engine.executor import Executor
    from emu.engine.run import Run
    from emu.engine.scenario import Scenario
    from emu.oracles import Violation
    from emu.report.explain import Explanation
    from emu.report.trace import Trace
    from emu.search.entry import Entry, Result
    from emu.search.fuzz import Outcome
    from emu.search.schedule import Finding, Schedule

__all__ = [
    "Replayed",
    "check",
    "entries",
    "executor",
    "explain",
    "fuzz",
    "load",
    "replay",
    "scenario",
    "trace",
]


def scenario(
    image: str | Path = "modern",
    host: str = "kvm-legacy-copy",
    *,
    params: dict[str, Any] | None = None,
    vcpus: int = 2,
    reads: int = 2,
    **options: Any,
) -> Scenario:
    """A scenario (what `vdsofuzz fuzz --image --host --param --vcpus --reads` runs);
    `options` are the other Scenario fields (task_migration, speculative_tsc, cpu, clock,
    timekeeping, accuracy_ns, oracles)."""
    from emu.engine.scenario import Scenario

    params = dict(params or {})
    return Scenario(str(image), host, params, vcpus=vcpus, reads=reads, **options)


def fuzz(
    image: str | Path = "modern",
    host: str = "kvm-legacy-copy",
    *,
    params: dict[str, Any] | None = None,
    vcpus: int = 2,
    reads: int = 2,
    strategy: str = DEFAULT_STRATEGY,
    seed: int = 0,
    max_schedules: int | None = None,
    database: Path | None = None,
    out: Path | None = None,
    **options: Any,
) -> Outcome:
    """Search the scenario's interleavings like `vdsofuzz fuzz` (no example database unless
    `database` is given); with `out`, save the finding there as the CLI does and set
    `Outcome.path`."""
    from emu.search.fuzz import Fuzzer

    sc = scenario(image, host, params=params, vcpus=vcpus, reads=reads, **options)
    fuzzer = Fuzzer(sc)
    outcome = fuzzer.fuzz(
        strategy=strategy, seed=seed, max_schedules=max_schedules, database=database
    )
    f = outcome.finding
    if f is not None and out is not None:
        name = f"finding-{sc.host}-{fuzzer.executor.image.name}-{f.oracle}.json"
        outcome.path = f.save(Path(out) / name.replace("/", "_"))
    return outcome


def load(path: str | Path) -> tuple[Schedule, dict[str, Any] | None]:
    """A schedule or finding file: (schedule, the recorded violation or None)."""
    from emu.search.schedule import load_file

    return load_file(Path(path))


def _schedule(what: Any) -> tuple[Schedule, str | None]:
    """(schedule, the oracle it was recorded violating) of anything `replay` accepts."""
    from emu.search.schedule import Finding, Schedule

    if isinstance(what, Finding):
        return what.schedule, what.oracle
    if isinstance(what, Schedule):
        return what, None
    if isinstance(what, str | Path):
        schedule, recorded = load(what)
        return schedule, (recorded or {}).get("oracle")
    raise UsageError(f"cannot replay a {type(what).__name__}: pass a Finding, Schedule or path")


def executor(schedule: Schedule) -> Executor:
    """An executor for `schedule`'s scenario, refusing an image that changed since the
    schedule was recorded (its sha256 differs)."""
    from emu.engine.executor import Executor
    from emu.image.loader import load as load_image

    sc = schedule.scenario
    image = load_image(sc.image, cpu=sc.cpu or None)
    if image.sha256 != schedule.image_sha256:
        raise ScheduleError(
            f"recorded for image sha256 {schedule.image_sha256[:16]}, but {sc.image!r} is now "
            f"{image.sha256[:16]}; rebuild or pass the original image"
        )
    return Executor(sc, image)


@dataclass
class Replayed:
    """What `vdsofuzz replay` prints: the run, its violations, whether the recorded one
    came back."""

    schedule: Schedule
    run: Run
    violations: list[Violation]
    #: The oracle the finding recorded, if it was one.
    recorded: str | None = None

    @property
    def violation(self) -> Violation | None:
        """The recorded oracle's violation if it fired again, else the first one."""
        first = self.violations[0] if self.violations else None
        return next((v for v in self.violations if v.oracle == self.recorded), first)

    @property
    def verdict(self) -> str:
        return "violation" if self.violations else "pass"

    @property
    def reproduced(self) -> bool:
        return self.recorded is not None and any(v.oracle == self.recorded for v in self.violations)


def replay(what: Finding | Schedule | str | Path) -> Replayed:
    """Re-run a finding, schedule or schedule file, bit for bit, and judge it."""
    from emu.oracles import judge
    from emu.search.replay import Replay

    schedule, recorded = _schedule(what)
    run = executor(schedule).run(Replay(schedule.choices))
    return Replayed(schedule, run, judge(run, schedule.scenario), recorded)


def trace(what: Finding | Schedule | str | Path) -> Trace:
    """The instruction-level trace (`.text()`, `.jsonl()`) `vdsofuzz trace` prints."""
    from emu.report.trace import trace as trace_of

    schedule, _ = _schedule(what)
    return trace_of(schedule, executor(schedule))


def explain(what: Finding | Schedule | str | Path) -> Explanation:
    """The cause of a finding in a few lines (`.text()`, `.as_json()`), as `vdsofuzz
    explain` prints it."""
    from emu.report.explain import explain as explain_of

    schedule, recorded = _schedule(what)
    return explain_of(schedule, executor(schedule), recorded)


def entries(
    image: str | Path | None = None,
    *,
    only: Iterable[str] = (),
    witnesses: bool = True,
    max_schedules: int | None = None,
) -> list[Entry]:
    """The catalog's scenarios `check` runs: all of them, or with `image` its page family's
    reference scenarios with that image in them (`vdsofuzz check --image`). `only` keeps
    the names that contain one of the strings; `witnesses=False` skips re-proving that
    each pass scenario catches the seeded bugs (which tests the catalog, not the image);
    `max_schedules` caps each search's budget."""
    from emu.search import catalog

    found = catalog.load(None)
    if image is not None:
        found = catalog.for_image(found, str(image))
    wanted = list(only)
    if wanted:
        found = [e for e in found if any(s in e.name for s in wanted)]
        if not found:
            raise UsageError(f"no catalog scenario matches {', '.join(wanted)}")
    if not witnesses:
        found = [replace(e, witnesses=()) for e in found]
    if max_schedules is not None:
        found = [replace(e, max_schedules=min(e.max_schedules, max_schedules)) for e in found]
    return found


def check(
    image: str | Path | None = None,
    *,
    only: Sequence[str] = (),
    witnesses: bool = True,
    max_schedules: int | None = None,
    out: Path | None = None,
    jobs: int | None = 1,
) -> list[Result]:
    """Run the catalog (or, with `image`, its host matrix for that image) like `vdsofuzz
    check`; each `Result` says what was expected, what came (`.got`), `.ok` and the saved
    `.finding` path (under `out`)."""
    from emu.search import catalog

    chosen = entries(image, only=only, witnesses=witnesses, max_schedules=max_schedules)
    return catalog.check(chosen, out=out, jobs=jobs)
