"""`fuzz`, `replay`, `trace`: search interleavings for a bad timestamp, and re-run one."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emu.cli.options import (
    DEFAULT_HOST,
    DEFAULT_IMAGE,
    DEFAULT_OUT,
    add_max_insns,
    add_real_vdso,
    add_writer,
    check_search,
    scenario,
    strategy_detail,
    writable_dir,
)
from emu.errors import UsageError
from emu.search.registry import STRATEGIES

if TYPE_CHECKING:  # the search driver loads the engine (Unicorn): only when a command runs
    from emu.report.trace import Trace
    from emu.search.fuzz import Fuzzer
    from emu.search.fuzz import Outcome as FuzzOutcome


def register(sub: argparse._SubParsersAction) -> None:
    """The `fuzz`, `replay` and `trace` commands."""
    f = sub.add_parser("fuzz", help="search interleavings for a bad timestamp")
    _scenario_options(f)
    _search_options(f)
    _model_options(f)
    add_max_insns(f, "default 1000000; kept in the finding")
    f.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where findings go")
    f.add_argument("--no-db", action="store_true", help="no Hypothesis example database")
    f.add_argument("--no-trace", action="store_true", help="do not print the trace")
    f.add_argument("--json", action="store_true", help="one JSON object on stdout")
    f.set_defaults(func=cmd_fuzz)
    r = sub.add_parser("replay", help="re-run a schedule or finding file")
    r.add_argument("file", type=Path)
    r.add_argument("--json", action="store_true")
    add_max_insns(r, "default: the file's")
    r.set_defaults(func=cmd_replay)
    t = sub.add_parser("trace", help="instruction-level trace of a schedule or finding")
    t.add_argument("file", type=Path)
    t.add_argument("--jsonl", action="store_true", help="one JSON object per step")
    t.add_argument("--svg", type=Path, metavar="FILE", help="also draw the timeline as SVG")
    t.add_argument("--perfetto", type=Path, metavar="FILE", help="also write a Perfetto trace")
    add_max_insns(t, "default: the file's")
    t.add_argument(
        "--watch",
        action="append",
        default=[],
        metavar="FIELD",
        help="instead of the trace, every store and load of FIELD (a name the trace shows, "
        "e.g. vcpu0.system_time); repeatable",
    )
    t.set_defaults(func=cmd_trace)
    e = sub.add_parser("explain", help="the cause of a finding in a few lines")
    e.add_argument("file", type=Path)
    e.add_argument("--json", action="store_true", help="one JSON object on stdout")
    e.set_defaults(func=cmd_explain)


def _scenario_options(f: argparse.ArgumentParser) -> None:
    """What runs: the image, the host model and its parameters, vCPUs and reads."""
    f.add_argument(
        "--image",
        default=DEFAULT_IMAGE,
        help=f"bundled image name or path (default {DEFAULT_IMAGE})",
    )
    f.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"host model (see `vdsofuzz hosts`; default {DEFAULT_HOST})",
    )
    f.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="host model parameter, repeatable (ranges: `vdsofuzz hosts`)",
    )
    f.add_argument("--vcpus", type=int, default=2, help="1..64 (default 2)")
    add_real_vdso(f)
    add_writer(f)
    f.add_argument("--reads", type=int, default=2, help="reads per task, 1..1000 (default 2)")


def _search_options(f: argparse.ArgumentParser) -> None:
    """How interleavings are searched: seed, strategy and its budget and bounds."""
    f.add_argument("--seed", type=int, default=0)
    f.add_argument(
        "--strategy",
        default=STRATEGIES[0],
        choices=STRATEGIES,
        help="portfolio (default: random walks interleaved with a bounded exhaustive "
        "search, later PCT; replays Hypothesis' database first), hypothesis (shrinks, "
        "keeps a database), random, pct (probabilistic "
        "concurrency testing, see --depth), exhaustive (every interleaving up to "
        "--preemptions preemptions; without it, dpor) or dpor (every interleaving, one "
        "per equivalence class)",
    )
    f.add_argument(
        "--max-schedules",
        type=int,
        default=None,
        help="runs to try, 1 or more (default 10000; exhaustive: until the bound is covered)",
    )
    f.add_argument("--depth", type=int, default=3, help="pct: the bug depth d, 1 or more (3)")
    f.add_argument(
        "--preemptions",
        type=int,
        default=None,
        help="exhaustive, dpor: the preemption bound, 0 or more (default: none, every "
        "interleaving)",
    )
    f.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        metavar="FILE",
        help="dpor (and unbounded exhaustive): save the exploration frontier to FILE and "
        "resume from it when it exists",
    )


def _model_options(f: argparse.ArgumentParser) -> None:
    """The accurate oracle's bound and the machine behaviours that widen the search."""
    f.add_argument(
        "--accuracy-ns",
        type=int,
        default=1_000_000,
        help="bound of the accurate oracle (ns), 1 or more",
    )
    f.add_argument(
        "--task-migration",
        action="store_true",
        help="guest tasks may migrate between vCPUs at any decision point (host not told)",
    )
    f.add_argument(
        "--speculative-tsc",
        action="store_true",
        help="an rdtsc with no fence since a shared-page load may return an earlier TSC",
    )


def _progress(count: int, budget: int) -> None:
    if sys.stderr.isatty():
        print(f"\r  {count}/{budget} schedules", end="", file=sys.stderr, flush=True)


def cmd_fuzz(args: argparse.Namespace) -> int:
    """Search the scenario's interleavings; save and show the minimal finding, if any."""
    from emu.search.fuzz import Fuzzer

    check_search(args)
    sc = scenario(args)
    campaign = Fuzzer(sc)
    img = campaign.executor.image
    if args.clock is not None and img.call_abi != "clock_gettime":
        raise UsageError(
            f"--clock {args.clock} applies to a real vDSO's __vdso_clock_gettime; {img.name} "
            "is a project reader, which takes no clock id"
        )
    out_dir: Path = writable_dir(args.out, "--out")
    db = None if args.no_db else out_dir / ".hypothesis"
    _announce(args, campaign)
    outcome = campaign.fuzz(
        strategy=args.strategy,
        seed=args.seed,
        max_schedules=args.max_schedules,
        depth=args.depth,
        preemptions=args.preemptions,
        checkpoint=args.checkpoint,
        database=db,
        progress=None if args.json else _progress,
    )
    if sys.stderr.isatty() and not args.json:
        print("\r", end="", file=sys.stderr)
    path = None
    f = outcome.finding
    if f is not None:
        from host_model.registry import host_label

        name = f"finding-{host_label(sc.host)}-{img.name}-{f.oracle}.json"
        path = f.save(out_dir / name.replace("/", "_"))
    if args.json:
        print(json.dumps(_outcome_json(outcome, path), sort_keys=True))
    else:
        _print_outcome(args, campaign, outcome, path)
    if outcome.interrupted:
        return 130
    return 1 if f else 0


def _announce(args: argparse.Namespace, fuzzer: Fuzzer) -> None:
    """Say what is searched (not with --json), and on stderr when the native lane is off."""
    sc, img = fuzzer.scenario, fuzzer.executor.image
    if not args.json:
        writer = f" storing with writer {sc.writer}" if sc.writer else ""
        print(
            f"fuzzing {img.name} ({img.arch}) against host {sc.host}{writer} on "
            f"{sc.vcpus} vCPUs x {sc.reads} reads, strategy {args.strategy}" + strategy_detail(args)
        )
    if not fuzzer.executor.native:
        from emu.engine import lane

        if not lane.turned_off():
            print(
                f"note: {lane.unavailable}; every visible operation runs in Python (same "
                "results, slower); install a C compiler (gcc or clang) for the native lane",
                file=sys.stderr,
            )


def _outcome_json(outcome: FuzzOutcome, path: Path | None) -> dict[str, Any]:
    """The `--json` object: verdict, finding and the search's statistics."""
    f = outcome.finding
    return {
        "verdict": outcome.verdict,
        "oracle": f.oracle if f else None,
        "message": f.message if f else None,
        "schedule": f.schedule.compact() if f else None,
        "schedules": outcome.schedules,
        "finding": str(path) if path else None,
        "elapsed": round(outcome.elapsed, 3),
        "interrupted": outcome.interrupted,
        "notes": outcome.notes,
        "stats": outcome.stats,
    }


def _print_outcome(
    args: argparse.Namespace, campaign: Fuzzer, outcome: FuzzOutcome, path: Path | None
) -> None:
    """The human report: notes, the verdict and, for a finding, where it went and its trace."""
    from emu.report.trace import trace

    for note in outcome.notes:
        print(note)
    f = outcome.finding
    if f is None:
        print(f"no violation in {outcome.schedules} schedules ({outcome.elapsed:.1f} s)")
        return
    print(
        f"VIOLATION of {f.oracle} after {outcome.schedules} schedules "
        f"({outcome.elapsed:.1f} s): {f.message}"
    )
    print(f"minimal schedule: {f.schedule.compact()}")
    print(f"saved {path}  (replay: vdsofuzz replay {path}; trace: vdsofuzz trace {path})")
    from emu.report.explain import explain

    print()
    print(explain(f.schedule, campaign.executor, f.oracle).text(), end="")
    if not args.no_trace:
        print()
        print(trace(f.schedule, campaign.executor, fold=True).text(), end="")


def _load_schedule(path: Path, max_insns: int | None = None):
    """The schedule or finding at `path`, its recorded violation and an executor for it
    (`max_insns`: a hang limit other than the file's)."""
    from dataclasses import replace

    from emu.engine.executor import Executor
    from emu.image.loader import load
    from emu.search.schedule import load_file

    schedule, violation = load_file(path)
    if max_insns is not None:
        sc = replace(schedule.scenario, max_insns=max_insns)
        schedule = replace(schedule, scenario=sc)
    image = load(schedule.scenario.image, cpu=schedule.scenario.cpu or None)
    if image.sha256 != schedule.image_sha256:
        raise UsageError(
            f"{path}: recorded for image sha256 {schedule.image_sha256[:16]}, but "
            f"{schedule.scenario.image!r} is now {image.sha256[:16]}; rebuild or pass the "
            "original image"
        )
    return schedule, violation, Executor(schedule.scenario, image)


def cmd_replay(args: argparse.Namespace) -> int:
    from emu.oracles import judge
    from emu.search.replay import Replay

    schedule, recorded, executor = _load_schedule(args.file, args.max_insns)
    run = executor.run(Replay(schedule.choices))
    violations = judge(run, schedule.scenario)
    first = violations[0] if violations else None
    if recorded:
        # The finding's oracle may not be the first in judging order (a wild value breaks
        # `accurate` and, through the next read, `monotonic`): report the recorded one.
        first = next((v for v in violations if v.oracle == recorded.get("oracle")), first)
    same = bool(first and recorded and first.oracle == recorded.get("oracle"))
    if args.json:
        print(
            json.dumps(
                {
                    "verdict": "violation" if first else "pass",
                    "oracle": first.oracle if first else None,
                    "message": first.message if first else None,
                    "reproduced": same,
                    "reads": [
                        {
                            "read": r.label,
                            "outcome": r.outcome,
                            "value": r.value,
                            "start": r.start,
                            "end": r.end,
                        }
                        for r in run.reads
                    ],
                },
                sort_keys=True,
            )
        )
    else:
        for r in run.reads:
            print(f"{r.label} on vcpu{r.vcpu} t={r.start}..{r.end}: {r.outcome} {r.value}")
        if first:
            print(f"VIOLATION of {first.oracle}: {first.message}")
            if recorded and not same:
                print(f"(the file recorded a violation of {recorded.get('oracle')})")
        else:
            print("no violation")
    return 1 if first else 0


def cmd_trace(args: argparse.Namespace) -> int:
    """Stream the trace (loops folded), so a hang's million instructions keep no steps."""
    from emu.report.trace import stream

    schedule, _, executor = _load_schedule(args.file, args.max_insns)
    if args.watch:
        from emu.report import watch

        watch.resolve(executor, args.watch)  # a bad name is bad input before any run
    if args.svg or args.perfetto:
        tr = _pictures(args, schedule, executor)
        if not args.watch:
            # The pictures' trace is the one stream would print: no second replay.
            sys.stdout.write(tr.jsonl() if args.jsonl else tr.text())
            return 1 if tr.violations else 0
    if args.watch:
        return _watch(args.watch, schedule, executor)
    violations = stream(schedule, executor, sys.stdout.write, jsonl=args.jsonl)
    return 1 if violations else 0


def _watch(names: list[str], schedule: Any, executor: Any) -> int:
    """`trace --watch`: the history of each named field (names checked before the run)."""
    from emu.oracles import judge
    from emu.report import watch
    from emu.search.replay import Replay

    watch.resolve(executor, names)
    run = executor.run(Replay(schedule.choices))
    sys.stdout.write(watch.text(executor, run, names))
    return 1 if judge(run, executor.scenario) else 0


def _pictures(args: argparse.Namespace, schedule: Any, executor: Any) -> Trace:
    """`trace --svg/--perfetto`: the timeline files, from a folded trace of the run."""
    from emu.report import perfetto_trace, svg
    from emu.report.trace import trace

    tr = trace(schedule, executor, fold=True)
    for out, writer in ((args.svg, svg.write), (args.perfetto, perfetto_trace.write)):
        if out is not None:
            writer(tr, executor, out)
    return tr


def cmd_explain(args: argparse.Namespace) -> int:
    from emu.report.explain import explain

    schedule, recorded, executor = _load_schedule(args.file)
    e = explain(schedule, executor, (recorded or {}).get("oracle"))
    if args.json:
        print(json.dumps(e.as_json(), sort_keys=True))
    else:
        sys.stdout.write(e.text())
    return 0 if e.oracle is None else 1
