"""The `vdsofuzz` command: fuzz, replay, trace, images, hosts.

Exit codes: 0 no violation, 1 a violation found or reproduced, 2 bad input (one line on
stderr saying what to do), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from emu.errors import UsageError

DEFAULT_IMAGE = "bug-no-odd-check"
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
    from emu.scenario import Scenario

    return Scenario(
        image=args.image,
        host=args.host,
        host_params=_params(args.param),
        vcpus=args.vcpus,
        reads=args.reads,
        accuracy_ns=args.accuracy_ns,
    )


def _progress(count: int, budget: int) -> None:
    if sys.stderr.isatty():
        print(f"\r  {count}/{budget} schedules", end="", file=sys.stderr, flush=True)


def cmd_fuzz(args: argparse.Namespace) -> int:
    from emu.campaign import Campaign
    from emu.trace import trace

    scenario = _scenario(args)
    campaign = Campaign(scenario)
    out_dir: Path = args.out
    db = None if args.no_db else out_dir / ".hypothesis"
    if not args.json:
        img = campaign.executor.image
        print(
            f"fuzzing {img.name} ({img.arch}) against host {scenario.host} on "
            f"{scenario.vcpus} vCPUs x {scenario.reads} reads, strategy {args.strategy}, "
            f"seed {args.seed}, up to {args.max_schedules} schedules"
        )
    outcome = campaign.fuzz(
        strategy=args.strategy,
        seed=args.seed,
        max_schedules=args.max_schedules,
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
    from emu.executor import Executor
    from emu.image import load
    from emu.schedule import load_file

    schedule, violation = load_file(path)
    image = load(schedule.scenario.image)
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
    from emu.trace import trace

    schedule, _, executor = _load_schedule(args.file)
    tr = trace(schedule, executor)
    sys.stdout.write(tr.jsonl() if args.jsonl else tr.text())
    return 1 if tr.violations else 0


def cmd_images(args: argparse.Namespace) -> int:
    from emu.image import manifest

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
    from emu.disasm import listing
    from emu.image import load

    sys.stdout.write(listing(load(args.image), args.host))
    return 0


def cmd_hosts(args: argparse.Namespace) -> int:
    from host_model.registry import HOSTS

    for name, cls in sorted(HOSTS.items()):
        print(f"{name:<22} {cls.summary}")
        for p in cls.params:
            print(f"    --param {p.name}={p.default!s:<8} {p.help}")
    return 0


def parser() -> argparse.ArgumentParser:
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
    f.add_argument("--host", default="kvm", help="host model (see `vdsofuzz hosts`)")
    f.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="host model parameter, repeatable",
    )
    f.add_argument("--vcpus", type=int, default=2)
    f.add_argument("--reads", type=int, default=2, help="reads per task")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--strategy", default="hypothesis", help="hypothesis (default) or random")
    f.add_argument("--max-schedules", type=int, default=10_000)
    f.add_argument(
        "--accuracy-ns", type=int, default=1_000_000, help="bound of the accurate oracle (ns)"
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
    d.set_defaults(func=cmd_disasm)
    h = sub.add_parser("hosts", help="list the host models and their parameters")
    h.set_defaults(func=cmd_hosts)
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
