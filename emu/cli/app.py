"""The parser and `main`: run one command and turn how it ended into an exit code.

Exit codes: 0 no violation, 1 a violation found or reproduced, 2 bad input (one line on
stderr saying what to do), 70 an internal error (a bug of ours, saved for a report),
130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys

from emu.cli import campaign, check, fuzz, images, internal
from emu.errors import BAD_INPUT

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
#: As a shell reports a command killed by SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE = 141


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vdsofuzz",
        description="Run compiled x86 vDSO clock readers on emulated vCPUs against a host "
        "model that rewrites the pvclock page between guest instructions.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    fuzz.register(sub)
    images.register(sub)
    check.register(sub)
    campaign.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except BAD_INPUT as e:
        print(f"vdsofuzz: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("vdsofuzz: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (`| head`): not a bug; stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as e:  # every other exception is a bug of ours: say so, save the run
        return internal.report(e, argv, vars(args).get("out"))
