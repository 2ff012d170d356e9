"""The `vdsofuzz` command, one module per command group.

- `app`: the argument parser and `main` (exit codes, bad input, internal errors);
- `fuzz`: fuzz, replay, trace (search interleavings and re-run what was found);
- `check`: the catalog and its verdicts;
- `images`: images, disasm, dump-vdso, hosts (what there is to run);
- `options`: options several commands share, and the checks on their values;
- `internal`: what the user sees, and what is saved, when a bug of ours surfaces.

Only the command handlers import the engine (Unicorn, capstone), so `--help` and `hosts`
start without it.
"""

from emu.cli.app import main, parser

__all__ = ["main", "parser"]
