"""Regenerate the README's pictures: `python tools/docs_images.py` (`--check`: exit 1 if a
committed picture differs from what the tool draws now).

docs/finding.svg is the timeline (`vdsofuzz trace FINDING --svg`) of the finding of the
README's first command, `vdsofuzz fuzz` with its defaults (run here without the example
database, so earlier runs cannot change what it finds).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: draw with this checkout's code
    sys.path.insert(0, str(ROOT))

FINDING_SVG = ROOT / "docs" / "finding.svg"


def finding_svg() -> str:
    """The SVG of the finding `vdsofuzz fuzz` (all defaults, no database) prints."""
    from emu.cli.app import parser
    from emu.cli.options import scenario
    from emu.report.svg import svg
    from emu.report.trace import trace
    from emu.search.fuzz import Fuzzer

    args = parser().parse_args(["fuzz", "--no-db"])
    fuzzer = Fuzzer(scenario(args))
    outcome = fuzzer.fuzz(strategy=args.strategy, seed=args.seed, max_schedules=args.max_schedules)
    if outcome.finding is None:
        raise SystemExit("vdsofuzz fuzz found no violation: nothing to draw")
    return svg(trace(outcome.finding.schedule, fuzzer.executor), fuzzer.executor)


def main(argv: list[str]) -> int:
    drawn = finding_svg()
    if "--check" in argv:
        same = FINDING_SVG.is_file() and FINDING_SVG.read_text(encoding="utf-8") == drawn
        if not same:
            print(f"{FINDING_SVG} is stale: run python tools/docs_images.py", file=sys.stderr)
        return 0 if same else 1
    FINDING_SVG.parent.mkdir(parents=True, exist_ok=True)
    FINDING_SVG.write_text(drawn, encoding="utf-8")
    print(f"wrote {FINDING_SVG.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
