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
        max_insns=args.max_insns if args.max_insns is not None else MAX_INSNS_DEFAULT,
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


#: The engine's default hang limit (emu.engine.scenario.MAX_INSNS, without importing it).
MAX_INSNS_DEFAULT = 1_000_000


def add_max_insns(p: argparse.ArgumentParser, what: str) -> None:
    """`--max-insns`: the hang limit, for `fuzz`, `check` (`what`: whose limit it sets) and,
    overriding the file's, `replay` and `trace`."""
    p.add_argument(
        "--max-insns",
        type=int,
        default=None,
        metavar="N",
        help=f"hang limit: instructions without a visible operation ({what})",
    )


def check_search(args: argparse.Namespace) -> None:
    """The search options of `fuzz` (the scenario's own are checked by Scenario)."""
    if args.max_schedules is not None:
        check_range("--max-schedules", args.max_schedules, 1, None)
    check_range("--depth", args.depth, 1, None)
    if args.preemptions is not None:
        check_range("--preemptions", args.preemptions, 0, None)
    unbounded = args.strategy == "exhaustive" and args.preemptions is None
    if args.checkpoint is not None and args.strategy != "dpor" and not unbounded:
        raise UsageError(
            "--checkpoint saves a dpor search: use it with --strategy dpor (or exhaustive "
            "without --preemptions)"
        )


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


def _probe(path: Path) -> None:
    """Make directory `path` and write a temporary file in it (OSError if we cannot)."""
    import tempfile

    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
        pass


def writable_dir(path: Path, option: str) -> Path:
    """Make `path` a directory we can write into, before any work is done; otherwise bad
    input naming the option (a file in the way, a read-only file system, no permission)."""
    try:
        _probe(path)
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot write there ({e.strerror or e})") from None
    return path


def writable_file(path: Path, option: str) -> Path:
    """Check that file `path` can be written (its directory is made), before any work."""
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory; give a file name")
    try:
        _probe(path.parent)
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot write there ({e.strerror or e})") from None
    return path


def strategy_detail(args: argparse.Namespace) -> str:
    """What `fuzz` says about its search: the bound or seed, and the budget."""
    if args.strategy in ("exhaustive", "dpor"):
        bound = args.preemptions
        what = ", no preemption bound" if bound is None else f", preemption bound {bound}"
    else:
        what = f", seed {args.seed}" + (f", depth {args.depth}" if args.strategy == "pct" else "")
    if args.max_schedules is not None:
        what += f", up to {args.max_schedules} schedules"
    elif args.strategy not in ("exhaustive", "dpor"):
        what += ", up to 10000 schedules"
    return what
