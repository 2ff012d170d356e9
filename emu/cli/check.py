"""`check`: run the catalog's scenarios and compare every verdict with the expected one."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from emu.cli.options import DEFAULT_OUT, add_max_insns, writable_dir, writable_file
from emu.errors import UsageError, check_range


def register(sub: argparse._SubParsersAction) -> None:
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
    c.add_argument(
        "--writer",
        metavar="ELF",
        help="a compiled host writer: run the reference scenarios of seqlock hosts with it "
        "storing the updates, expecting the Python model's verdicts",
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
    add_max_insns(c, "default: each scenario's, 1000000")
    c.add_argument("--catalog", type=Path, default=None, help=argparse.SUPPRESS)
    c.set_defaults(func=cmd_check)


def _entries(args: argparse.Namespace) -> list[Any]:
    """The catalog's scenarios that `--image`, `--writer`, `--builds` and `--only` select."""
    from emu.search import catalog

    entries = catalog.load(args.catalog)
    if args.image:
        entries = catalog.for_image(entries, args.image)
    if args.writer:
        from emu.cli.options import writer
        from emu.search.catalog_writer import for_writer

        entries = for_writer(entries, writer(args.writer))
    if args.builds:
        entries = catalog.for_builds(entries, catalog.homes(args.catalog), args.schedules)
    if args.only:
        entries = [e for e in entries if any(s in e.name for s in args.only)]
        if not entries:
            raise UsageError(f"no catalog scenario matches {', '.join(args.only)}")
    return entries


def cmd_check(args: argparse.Namespace) -> int:
    from emu.report import check as report
    from emu.search import catalog

    if args.matrix:
        return _check_matrix(args)
    if args.image and args.builds:
        raise UsageError("--image and --builds do not go together")
    check_range("--schedules", args.schedules, 1, None)
    if args.jobs is not None:
        check_range("--jobs", args.jobs, 1, None)
    entries = _with_limits(args, _entries(args))
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


def _with_limits(args: argparse.Namespace, entries: list[Any]) -> list[Any]:
    """The entries with `--max-insns` applied, once the output paths are known writable."""
    writable_dir(args.out, "--out")
    if args.junit:
        writable_file(args.junit, "--junit")
    if args.max_insns is None:
        return entries
    from dataclasses import replace

    return [replace(e, scenario=replace(e.scenario, max_insns=args.max_insns)) for e in entries]


def _check_matrix(args: argparse.Namespace) -> int:
    """`check --matrix`: seeded reader bugs x host models; exit 1 only if a cell errs."""
    from emu.report import check as report
    from emu.search import sensitivity

    if args.image or args.builds or args.junit:
        raise UsageError("--matrix does not go with --image, --builds or --junit")
    if args.jobs is not None:
        check_range("--jobs", args.jobs, 1, None)
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
