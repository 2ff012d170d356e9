"""Options several commands share, and the checks that refuse values no scenario can use."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from emu.errors import UsageError, check_range

#: The README's main job: the modern (5.3+) reader against KVM's pre-2016 pvclock update,
#: the host bug the seed thread is about.
DEFAULT_IMAGE = "modern"
DEFAULT_HOST = "kvm-legacy-copy"
DEFAULT_OUT = Path("vdsofuzz-out")
CPUS = ("rdtscp", "lfence", "plain")


def host_params(items: list[str]) -> dict[str, Any]:
    """`--param NAME=VALUE` items -> the host's parameters (ints where they parse as one;
    the host model checks names, types and ranges)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param takes NAME=VALUE, not {item!r}")
        try:
            out[key] = int(value, 0)
        except ValueError:
            out[key] = value
    return out


def scenario(args: argparse.Namespace):
    """The scenario `fuzz` runs; emu.engine.scenario refuses meaningless values."""
    from emu.engine.scenario import Scenario

    return Scenario(
        image=args.image,
        host=args.host,
        host_params=host_params(args.param),
        vcpus=args.vcpus,
        reads=args.reads,
        accuracy_ns=args.accuracy_ns,
        cpu=args.cpu or "",
        clock=args.clock or "CLOCK_MONOTONIC",
        timekeeping=args.timekeeping,
        task_migration=args.task_migration,
        speculative_tsc=args.speculative_tsc,
        writer=writer(getattr(args, "writer", None)),
    )


def writer(spec: str | None) -> str:
    """`--writer`: checked now (a missing file, not an ELF, no entry symbol, another
    architecture: one line, exit 2), kept as given."""
    if not spec:
        return ""
    from emu.image.writer import load_writer

    load_writer(spec)
    return spec


def add_writer(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--writer",
        default=None,
        metavar="ELF",
        help="compiled host writer (bundled name such as writer-seqlock, or a path to an "
        "x86-64 ELF exporting vdsofuzz_host_write) that stores the host's pvti updates",
    )


def check_search(args: argparse.Namespace) -> None:
    """The search options of `fuzz` (the scenario's own are checked by Scenario)."""
    if args.max_schedules is not None:
        check_range("--max-schedules", args.max_schedules, 1, None)
    check_range("--depth", args.depth, 1, None)
    check_range("--preemptions", args.preemptions, 0, None)


def add_cpu(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--cpu", choices=CPUS, default=None, help=what)


def add_real_vdso(p: argparse.ArgumentParser) -> None:
    add_cpu(p, "real vDSO: patch .altinstructions for this CPU (default: this machine's)")
    p.add_argument(
        "--clock",
        default=None,
        help="real vDSO: clock id for __vdso_clock_gettime (CLOCK_MONOTONIC (default), "
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
