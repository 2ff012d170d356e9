"""`campaign` and `findings`: run a fuzzing campaign over many scenarios, and list what
it found."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from emu.errors import UsageError, check_range

if TYPE_CHECKING:  # the campaign loads the engine: only when the command runs
    from emu.campaign.driver import Campaign
    from emu.campaign.status import Snapshot


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "campaign",
        help="fuzz many scenarios on every core or a Dask cluster, resumable, deduplicated",
    )
    c.add_argument("spec", nargs="?", type=Path, help="campaign spec (TOML); none: the catalog")
    c.add_argument(
        "--out", type=Path, required=True, help="campaign directory (resumed if it exists)"
    )
    c.add_argument("--workers", type=int, default=None, help="worker processes (default: cores)")
    c.add_argument("--time", default="30m", help="campaign time budget: 90s, 30m, 2h (default 30m)")
    c.add_argument(
        "--scheduler", default=None, metavar="tcp://HOST:PORT", help="run on this Dask scheduler"
    )
    c.add_argument("--interval", type=float, default=1.0, help="seconds between status updates (1)")
    c.add_argument("--json", action="store_true", help="one JSON status line per interval")
    c.set_defaults(func=cmd_campaign)
    f = sub.add_parser(
        "findings", help="list a campaign's signatures with replay and trace commands"
    )
    f.add_argument("dir", type=Path)
    fmt = f.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--markdown", action="store_true")
    fmt.add_argument("--html", action="store_true", help="a page with a plot of coverage over time")
    f.set_defaults(func=cmd_findings)


def cmd_campaign(args: argparse.Namespace) -> int:
    from emu.campaign import report
    from emu.campaign.driver import Campaign, Options
    from emu.campaign.spec import load, parse_duration
    from emu.campaign.store import atomic_write

    time_s = parse_duration(args.time)
    if args.workers is not None:
        check_range("--workers", args.workers, 1, 1024)
    if args.interval <= 0:
        raise UsageError(f"--interval must be positive, not {args.interval}")
    if args.scheduler is not None and not args.scheduler.startswith(
        ("tcp://", "tls://", "inproc://")
    ):
        raise UsageError(f"--scheduler takes tcp://HOST:PORT, not {args.scheduler!r}")
    spec = load(args.spec)
    camp = Campaign(spec, Options(args.out, time_s, args.workers, args.scheduler, args.interval))
    try:
        snap = camp.run(lambda s: print(s.json_line(), flush=True)) if args.json else _live(camp)
    finally:  # after Ctrl-C too: the report of what the checkpoints hold
        atomic_write(args.out / "report.md", report.markdown(report.read(args.out)))
    if not args.json:
        for label, verdict in report.read(args.out).dpor:
            print(f"dpor {label}: {verdict}")
        print(
            f"{snap.signatures} signatures; report: {args.out / 'report.md'}; "
            f"list: vdsofuzz findings {args.out}"
        )
    return 1 if snap.signatures else 0


def _live(camp: Campaign) -> Snapshot:
    from rich.console import Console
    from rich.live import Live

    from emu.campaign.status import table

    console = Console(stderr=not sys.stdout.isatty())
    with Live(console=console, auto_refresh=False) as live:

        def show(snap: Snapshot) -> None:
            live.update(table(snap), refresh=True)

        return camp.run(show)


def cmd_findings(args: argparse.Namespace) -> int:
    from emu.campaign import report

    s = report.read(args.dir)
    if args.json:
        print(report.to_json(s))
    elif args.markdown:
        sys.stdout.write(report.markdown(s))
    elif args.html:
        sys.stdout.write(report.to_html(s))
    else:
        from rich.console import Console

        Console().print(report.table(s))
        sys.stdout.write(report.commands(s))
    return 1 if s.entries else 0
