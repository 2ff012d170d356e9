"""An exception that is not bad input is a bug of ours: say so, save the run, exit 70.

The message names the exception, the command line and, when the fuzz driver caught it
during a run, the scenario and the choices the run had made; those are saved as a schedule
file that `vdsofuzz replay` reads (the traceback rides along in the same file), so the bug
can be reproduced and reported. Findings saved before are never touched.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from emu.cli.options import DEFAULT_OUT
from emu.errors import InternalError

#: EX_SOFTWARE from sysexits.h: an internal software error.
EXIT_INTERNAL = 70


def report(e: Exception, argv: list[str], out: Path | None) -> int:
    cause = e.cause if isinstance(e, InternalError) else e
    print(f"vdsofuzz: internal error: {type(cause).__name__}: {cause}", file=sys.stderr)
    print(f"  command: vdsofuzz {shlex.join(argv)}", file=sys.stderr)
    saved = None
    if isinstance(e, InternalError) and e.schedule is not None:
        sched = e.schedule
        sc = sched.scenario
        params = "".join(f" {k}={v}" for k, v in sorted(sc.host_params.items()))
        print(
            f"  scenario: image {sc.image}, host {sc.host}{params}, "
            f"{sc.vcpus} vCPUs x {sc.reads} reads (all of it is in the saved file)",
            file=sys.stderr,
        )
        when = "during the run" if e.in_run else "while judging the finished run"
        print(f"  schedule ({when}): {sched.compact()}", file=sys.stderr)
        try:
            saved = save(e, out or DEFAULT_OUT)
        except OSError as err:
            print(f"  could not save the schedule: {err}", file=sys.stderr)
        else:
            print(f"  saved {saved} (replay: vdsofuzz replay {saved})", file=sys.stderr)
    attach = f" with {saved}" if saved else ""
    print(
        f"  this is a bug in vdsofuzz, not in your input: please report it{attach} and the "
        "command line above; findings already saved are kept",
        file=sys.stderr,
    )
    return EXIT_INTERNAL


def save(e: InternalError, out: Path) -> Path:
    """Write the failing run's schedule to the first free `out/internal-error-<n>.json`."""
    out.mkdir(parents=True, exist_ok=True)
    data = e.schedule.to_json()
    data["internal_error"] = {
        "type": type(e.cause).__name__,
        "message": str(e.cause),
        "in_run": e.in_run,
        "traceback": e.where,
    }
    n = 1
    while True:
        path = out / f"internal-error-{n}.json"
        try:
            # "x": never overwrite an earlier report (or anything else already saved).
            with path.open("x") as fh:
                fh.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
            return path
        except FileExistsError:
            n += 1
