"""The `vdsofuzz` command: fuzz, replay, trace, check, images, disasm, dump-vdso, hosts.

Exit codes: 0 no violation, 1 a violation found or reproduced, 2 bad input (one line on
stderr saying what to do), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from emu.errors import UsageError

#: The README's main job: the modern (5.3+) reader against KVM's pre-2016 pvclock update,
#: the host bug the seed thread is about.
DEFAULT_IMAGE = "modern"
DEFAULT_HOST = "kvm-legacy-copy"
DEFAULT_OUT = Path("vdsofuzz-out")


def _params(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--param takes NAME=VALUE, not {item!r}")
        try:
            out[key] = int(value, 0)
        except ValueError:
            out[key] = value
    return out


def _scenario(args: argparse.Namespace):
    from emu.engine.scenario import Scenario

    return Scenario(
        image=args.image,
        host=args.host,
        host_params=_params(args.param),
        vcpus=args.vcpus,
        reads=args.reads,
        accuracy_ns=args.accuracy_ns,
        cpu=args.cpu or "",
        clock=args.clock,
        timekeeping=args.timekeeping,
        task_migration=args.task_migration,
        speculative_tsc=args.speculative_tsc,
    )


def _progress(count: int, budget: int) -> None:
    if sys.stderr.isatty():
        print(f"\r  {count}/{budget} schedules", end="", file=sys.stderr, flush=True)


def _strategy_detail(args: argparse.Namespace) -> str:
    if args.strategy == "exhaustive":
        what = f", preemption bound {args.preemptions}"
    else:
        what = f", seed {args.seed}" + (f", depth {args.depth}" if args.strategy == "pct" else "")
    if args.max_schedules is not None:
        what += f", up to {args.max_schedules} schedules"
    elif args.strategy != "exhaustive":
        what += ", up to 10000 schedules"
    return what


def cmd_fuzz(args: argparse.Namespace) -> int:
    from emu.report.trace import trace
    from emu.search.fuzz import Campaign

    scenario = _scenario(args)
    campaign = Campaign(scenario)
    out_dir: Path = args.out
    db = None if args.no_db else out_dir / ".hypothesis"
    if not args.json:
        img = campaign.executor.image
        print(
            f"fuzzing {img.name} ({img.arch}) against host {scenario.host} on "
            f"{scenario.vcpus} vCPUs x {scenario.reads} reads, strategy {args.strategy}"
            + _strategy_detail(args)
        )
    if not campaign.executor.native:
        from emu.engine import lane

        if not lane.turned_off():
            print(
                f"note: {lane.unavailable}; every visible operation runs in Python (same "
                "results, slower); install a C compiler (gcc or clang) for the native lane",
                file=sys.stderr,
            )
    outcome = campaign.fuzz(
        strategy=args.strategy,
        seed=args.seed,
        max_schedules=args.max_schedules,
        depth=args.depth,
        preemptions=args.preemptions,
        database=db,
        progress=None if args.json else _progress,
    )
    if sys.stderr.isatty() and not args.json:
        print("\r", end="", file=sys.stderr)
    path = None
    f = outcome.finding
    if f is not None:
        name = f"finding-{scenario.host}-{campaign.executor.image.name}-{f.oracle}.json"
        path = f.save(out_dir / name.replace("/", "_"))
    if args.json:
        print(
            json.dumps(
                {
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
                },
                sort_keys=True,
            )
        )
    else:
        for note in outcome.notes:
            print(note)
        if f is None:
            print(f"no violation in {outcome.schedules} schedules ({outcome.elapsed:.1f} s)")
        else:
            print(
                f"VIOLATION of {f.oracle} after {outcome.schedules} schedules "
                f"({outcome.elapsed:.1f} s): {f.message}"
            )
            print(f"minimal schedule: {f.schedule.compact()}")
            print(f"saved {path}  (replay: vdsofuzz replay {path}; trace: vdsofuzz trace {path})")
            if not args.no_trace:
                print()
                print(trace(f.schedule, campaign.executor).text(), end="")
    if outcome.interrupted:
        return 130
    return 1 if f else 0


def _load_schedule(path: Path):
    from emu.engine.executor import Executor
    from emu.image.loader import load
    from emu.search.schedule import load_file

    schedule, violation = load_file(path)
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

    schedule, recorded, executor = _load_schedule(args.file)
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
    from emu.report.trace import trace

    schedule, _, executor = _load_schedule(args.file)
    tr = trace(schedule, executor)
    sys.stdout.write(tr.jsonl() if args.jsonl else tr.text())
    return 1 if tr.violations else 0


def cmd_images(args: argparse.Namespace) -> int:
    from emu.image.loader import manifest

    man = manifest()
    rows = man.get("images", [])
    if args.json:
        print(json.dumps(man, indent=2, sort_keys=True))
        return 0
    if not rows:
        print("no bundled images; build them with `python tools/build_blobs.py`")
        return 0
    short = {v: k for k, v in sorted(man.get("aliases", {}).items(), key=lambda kv: -len(kv[0]))}
    print(f"{'name':<36} {'alias':<22} {'arch':<7} {'gen':<7} seeded bug")
    for e in rows:
        print(
            f"{e['name']:<36} {short.get(e['name'], ''):<22} {e['arch']:<7} "
            f"{str(e.get('generation', '')):<7} {e.get('bug') or '-'}"
        )
    return 0


def cmd_disasm(args: argparse.Namespace) -> int:
    from emu.image.loader import load
    from emu.report.disasm import listing

    sys.stdout.write(listing(load(args.image, cpu=args.cpu), args.host))
    return 0


def cmd_dump_vdso(args: argparse.Namespace) -> int:
    from emu.image.dump import dump_running_vdso
    from emu.image.loader import load

    dest = dump_running_vdso(args.dir)
    image = load(dest, cpu=args.cpu)
    info = image.info
    pages = ", ".join(f"{k}@{v:#x}" for k, v in sorted(image.pages.items(), key=lambda kv: kv[1]))
    print(
        f"dumped the running kernel's vDSO to {dest}: {image.arch}, entry {image.entry_name}, "
        f"pages {pages}; "
        f"layout from {info['layout_source']} ({info['layout_profile'] or 'no profile'}); "
        f"alternatives for --cpu {info['cpu']}"
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from emu.report import check as report
    from emu.search import catalog

    if args.matrix:
        return _check_matrix(args)
    entries = catalog.load(args.catalog)
    if args.image and args.builds:
        raise UsageError("--image and --builds do not go together")
    if args.image:
        entries = catalog.for_image(entries, args.image)
    if args.builds:
        entries = catalog.for_builds(entries, catalog.homes(args.catalog), args.schedules)
    if args.only:
        entries = [e for e in entries if any(s in e.name for s in args.only)]
        if not entries:
            raise UsageError(f"no catalog scenario matches {', '.join(args.only)}")
    quiet = args.json or args.markdown

    def progress(r: catalog.Result) -> None:
        if not quiet:
            mark = "ok" if r.ok else "DIFFERS"
            print(f"  {r.name}: {r.got} ({r.elapsed:.1f} s) {mark}", file=sys.stderr, flush=True)

    if not quiet:
        print(f"checking {len(entries)} scenarios, {args.jobs or 'one per CPU'} at a time")
    start = time.monotonic()
    results = catalog.check(entries, out=args.out, jobs=args.jobs, progress=progress)
    wall = time.monotonic() - start
    if args.junit:
        args.junit.parent.mkdir(parents=True, exist_ok=True)
        args.junit.write_bytes(report.junit(results))
    if args.json:
        print(json.dumps(report.to_json(results, wall=wall), indent=2, sort_keys=True))
    elif args.markdown:
        sys.stdout.write(report.markdown(results))
    else:
        sys.stdout.write(report.matrix(results))
        saved = [r for r in results if r.finding]
        if saved:
            print(f"findings in {args.out} (show one with: vdsofuzz trace {saved[0].finding})")
    return 0 if all(r.ok for r in results) else 1


def _check_matrix(args: argparse.Namespace) -> int:
    """`check --matrix`: seeded reader bugs x host models; exit 1 only if a cell errs."""
    from emu.report import check as report
    from emu.search import sensitivity

    if args.image or args.builds or args.junit:
        raise UsageError("--matrix does not go with --image, --builds or --junit")
    spec = sensitivity.spec(args.catalog)
    if args.only:
        spec = spec.only(args.only)
    quiet = args.json or args.markdown

    def progress(c: sensitivity.Cell) -> None:
        if not quiet:
            print(f"  {c.row} x {c.column}: {c.status}", file=sys.stderr, flush=True)

    start = time.monotonic()
    m = sensitivity.run(spec, jobs=args.jobs, progress=progress)
    wall = time.monotonic() - start
    if args.json:
        print(json.dumps(report.sensitivity_json(m, wall=wall), indent=2, sort_keys=True))
    elif args.markdown:
        sys.stdout.write(report.sensitivity_markdown(m))
    else:
        sys.stdout.write(report.sensitivity_text(m))
    return 1 if any(c.status == "error" for c in m.cells) else 0


def cmd_hosts(args: argparse.Namespace) -> int:
    from host_model.registry import HOSTS

    for name, cls in sorted(HOSTS.items()):
        print(f"{name:<22} {cls.summary}")
        for p in cls.params:
            print(f"    --param {f'{p.name}={p.default}':<22} {p.help}")
    return 0


def _real_vdso_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cpu",
        choices=("rdtscp", "lfence", "plain"),
        default=None,
        help="real vDSO: patch .altinstructions for this CPU (default: this machine's)",
    )
    p.add_argument(
        "--clock",
        default="CLOCK_MONOTONIC",
        help="real vDSO: clock id for __vdso_clock_gettime (CLOCK_MONOTONIC, "
        "CLOCK_MONOTONIC_RAW, CLOCK_REALTIME)",
    )
    p.add_argument(
        "--timekeeping",
        type=int,
        default=0,
        metavar="N",
        help="real vDSO: N updates of vdso_data by the guest kernel's timekeeping (its seq "
        "protocol), taken by the host agent before the host model's steps",
    )


def parser() -> argparse.ArgumentParser:
    from emu.search.fuzz import STRATEGIES

    p = argparse.ArgumentParser(
        prog="vdsofuzz",
        description="Run compiled x86 vDSO clock readers on emulated vCPUs against a host "
        "model that rewrites the pvclock page between guest instructions.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fuzz", help="search interleavings for a bad timestamp")
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
        help="host model parameter, repeatable",
    )
    f.add_argument("--vcpus", type=int, default=2)
    _real_vdso_args(f)
    f.add_argument("--reads", type=int, default=2, help="reads per task")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument(
        "--strategy",
        default="hypothesis",
        choices=STRATEGIES,
        help="hypothesis (default: shrinks, keeps a database), random, pct (probabilistic "
        "concurrency testing, see --depth) or exhaustive (every interleaving up to "
        "--preemptions preemptions)",
    )
    f.add_argument(
        "--max-schedules",
        type=int,
        default=None,
        help="runs to try (default 10000; exhaustive: until the bound is covered)",
    )
    f.add_argument("--depth", type=int, default=3, help="pct: the bug depth d (default 3)")
    f.add_argument(
        "--preemptions", type=int, default=2, help="exhaustive: the preemption bound (default 2)"
    )
    f.add_argument(
        "--accuracy-ns", type=int, default=1_000_000, help="bound of the accurate oracle (ns)"
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
    f.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where findings go")
    f.add_argument("--no-db", action="store_true", help="no Hypothesis example database")
    f.add_argument("--no-trace", action="store_true", help="do not print the trace")
    f.add_argument("--json", action="store_true", help="one JSON object on stdout")
    f.set_defaults(func=cmd_fuzz)
    r = sub.add_parser("replay", help="re-run a schedule or finding file")
    r.add_argument("file", type=Path)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_replay)
    t = sub.add_parser("trace", help="instruction-level trace of a schedule or finding")
    t.add_argument("file", type=Path)
    t.add_argument("--jsonl", action="store_true", help="one JSON object per step")
    t.set_defaults(func=cmd_trace)
    i = sub.add_parser("images", help="list the bundled reader images")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_images)
    d = sub.add_parser("disasm", help="the reader's code, shared-page loads named by field")
    d.add_argument("image", help="bundled image name or path")
    d.add_argument("--host", default="kvm", help="host model for the annotating run")
    d.add_argument(
        "--cpu",
        choices=("rdtscp", "lfence", "plain"),
        default=None,
        help="real vDSO: patch .altinstructions for this CPU (default: this machine's)",
    )
    dv = sub.add_parser("dump-vdso", help="save this machine's [vdso] image and clock pages")
    dv.add_argument("dir", type=Path, help="directory to write (an image spec afterwards)")
    dv.add_argument(
        "--cpu",
        choices=("rdtscp", "lfence", "plain"),
        default=None,
        help="check the dump loads with this CPU's alternatives",
    )
    dv.set_defaults(func=cmd_dump_vdso)
    d.set_defaults(func=cmd_disasm)
    h = sub.add_parser("hosts", help="list the host models and their parameters")
    h.set_defaults(func=cmd_hosts)
    c = sub.add_parser(
        "check",
        help="run the catalog's scenarios and compare every verdict with the expected one",
        description="Exit 0 iff every scenario gets its expected verdict. With --image, run "
        "the reference host scenarios against that image and expect the reference reader's "
        "verdicts.",
    )
    c.add_argument("--image", help="a reader image (path or name) to run the host scenarios on")
    c.add_argument(
        "--builds",
        action="store_true",
        help="every bundled image (all arches, compilers, levels) under its reader's home "
        'scenario (the catalog\'s "homes")',
    )
    c.add_argument(
        "--schedules",
        type=int,
        default=20_000,
        help="with --builds: random schedules for each build expected to pass (default 20000)",
    )
    c.add_argument("--out", type=Path, default=DEFAULT_OUT / "check", help="where findings go")
    c.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML here")
    c.add_argument("--json", action="store_true", help="the results as JSON on stdout")
    c.add_argument("--markdown", action="store_true", help="the matrix as a Markdown table")
    c.add_argument("--jobs", type=int, default=None, help="scenarios run at once (default: CPUs)")
    c.add_argument(
        "--only", action="append", default=[], metavar="TEXT", help="scenarios whose name has TEXT"
    )
    c.add_argument(
        "--matrix",
        action="store_true",
        help="the sensitivity matrix instead: every seeded reader bug against every host "
        "model setting of the catalog (--only TEXT picks rows and columns)",
    )
    c.add_argument("--catalog", type=Path, default=None, help=argparse.SUPPRESS)
    c.set_defaults(func=cmd_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"vdsofuzz: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"vdsofuzz: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vdsofuzz: interrupted", file=sys.stderr)
        return 130
