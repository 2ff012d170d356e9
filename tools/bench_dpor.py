#!/usr/bin/env python3
"""Benchmark verification: `dpor` beside today's `exhaustive`, and the default portfolio
against the best single strategy on every catalog bug.

    python tools/bench_dpor.py               # tables
    python tools/bench_dpor.py --json        # one JSON object
    python tools/bench.py --dpor             # the same, from the main benchmark
    python tools/bench_dpor.py --skip reduction,bugs --match '2x1$'          # two rows
    python tools/bench_dpor.py --skip verify,reduction --match percpu --strategies dpor

Sections:
- verify: scenarios `dpor` verifies with no preemption bound (modern + kvm: 2 vCPUs x 1
  read, 2 x 2, 3 x 1, 2 x 1 with updates=2; a distribution vdso64.so from
  ~/vdso-samples when present), each with a run budget (`--budget`): executions, classes,
  blocked, seconds and whether it was verified;
- reduction: modern + kvm 2 x 1 at preemption bounds 2 and 3: executions of `dpor` and of
  `exhaustive` (with its own reductions), and their ratio;
- bugs: per catalog bug, the median time to the first violation of `portfolio`, `dpor`
  (bound 2, and `dpor:none` with no bound) and the single strategies over seeds (each
  seed's time the least of `--repeat` identical searches, taken in turns across the
  strategies), and whether the portfolio is within 2x of the best.

Wall-clock time is used here only to measure; the emulation runs on logical time.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emu.engine.scenario import Scenario  # noqa: E402
from emu.search import catalog  # noqa: E402
from emu.search.fuzz import Fuzzer  # noqa: E402
from emu.search.registry import strategy_class  # noqa: E402

SAMPLES = Path.home() / "vdso-samples"
#: The single strategies the portfolio is compared with (`hypothesis`, the slowest to every
#: catalog bug in the main benchmark, only with --with-hypothesis).
SINGLE = ("dpor", "dpor:none", "exhaustive", "random", "pct")


def _verify_row(name: str, sc: Scenario, budget: int) -> dict[str, Any]:
    c = Fuzzer(sc)
    t = time.perf_counter()
    o = c.fuzz(strategy="dpor", preemptions=None, max_schedules=budget)
    s = o.stats
    return {
        "scenario": name,
        "executions": s.get("executions"),
        "classes": s.get("classes"),
        "blocked": s.get("blocked"),
        "verified": bool(s.get("complete")) and o.verdict == "pass",
        "verdict": o.verdict,
        "seconds": round(time.perf_counter() - t, 2),
    }


def verify(budget: int, match: str = "") -> list[dict[str, Any]]:
    kvm = {"updates": 1, "vcpu": 0}
    rows = [
        ("modern+kvm 2x1", Scenario(image="modern", host="kvm", host_params=kvm, reads=1)),
        ("modern+kvm 2x2", Scenario(image="modern", host="kvm", host_params=kvm, reads=2)),
        (
            "modern+kvm 3x1",
            Scenario(image="modern", host="kvm", host_params=kvm, vcpus=3, reads=1),
        ),
        (
            "modern+kvm 2x1 updates=2",
            Scenario(image="modern", host="kvm", host_params={"updates": 2}, reads=1),
        ),
    ]
    samples = sorted(SAMPLES.glob("deb-*/vdso64.so"))
    if samples:
        name = f"{samples[0].parent.name} vdso64.so+kvm 2x1"
        rows.append((name, Scenario(image=str(samples[0]), reads=1)))
    return [_verify_row(name, sc, budget) for name, sc in rows if re.search(match, name)]


def reduction(bounds: tuple[int, ...] = (2, 3)) -> list[dict[str, Any]]:
    sc = Scenario(image="modern", host="kvm", host_params={"updates": 1, "vcpu": 0}, reads=1)
    out = []
    for b in bounds:
        row: dict[str, Any] = {"bound": b}
        for name in ("dpor", "exhaustive"):
            t = time.perf_counter()
            o = Fuzzer(sc).fuzz(strategy=name, preemptions=b)
            n = o.stats.get("executions", o.stats.get("interleavings"))
            row[name] = {"executions": n, "seconds": round(time.perf_counter() - t, 2)}
        row["ratio"] = round(row["dpor"]["executions"] / row["exhaustive"]["executions"], 3)
        out.append(row)
    return out


def _first(e: catalog.Entry, name: str, seed: int, budget: int) -> float | None:
    """Seconds to the first violation of one search (None: none within `budget`). `name`
    may give a preemption bound: `dpor:none` is `dpor` with none (the CLI's default),
    plain `dpor` and `exhaustive` have bound 2 (the API's default)."""
    name, _, bound = name.partition(":")
    kw: dict[str, Any] = {}
    if bound:
        kw["preemptions"] = None if bound == "none" else int(bound)
    o = Fuzzer(e.scenario).fuzz(strategy=name, seed=seed, max_schedules=budget, **kw)
    return None if o.first_hit is None else o.first_hit[1]


def bugs(
    seeds: int, budget: int, strategies: tuple[str, ...], repeat: int = 3, match: str = ""
) -> list[dict[str, Any]]:
    """Per bug and strategy, the median over seeds of the least of `repeat` timings of the
    same search (the runs are identical each time; the least is the one other work on the
    machine disturbed least). The repetitions go round every strategy in turn, so a change
    of load in between touches them all alike."""
    names = ("portfolio",) + tuple(s for s in strategies if s != "portfolio")
    for name in names:
        strategy_class(name.partition(":")[0])  # imported now, not inside a timed search
    out = []
    for e in catalog.load():
        if e.expect != catalog.VIOLATION or not re.search(match, e.name):
            continue
        best: dict[tuple[str, int], float | None] = {}
        for _ in range(repeat):
            for name in names:
                for seed in range(seeds):
                    t = _first(e, name, seed, budget)
                    old = best.get((name, seed), t)
                    best[name, seed] = None if t is None or old is None else min(t, old)
        row: dict[str, Any] = {"bug": e.name, "strategies": {}}
        for name in names:
            firsts = [t for seed in range(seeds) if (t := best[name, seed]) is not None]
            ok = len(firsts) * 2 > seeds
            row["strategies"][name] = round(statistics.median(firsts), 6) if ok else None
        singles = [v for k, v in row["strategies"].items() if k != "portfolio" and v is not None]
        least = min(singles) if singles else None
        mine = row["strategies"]["portfolio"]
        row["best_single_s"] = least
        row["ratio"] = round(mine / least, 3) if mine is not None and least else None
        row["portfolio_within_2x"] = mine is not None and least is not None and mine <= 2 * least
        out.append(row)
    return out


def render(r: dict[str, Any]) -> str:
    lines = ["verify (dpor, no preemption bound):"]
    for v in r["verify"]:
        state = "verified" if v["verified"] else f"NOT verified ({v['verdict']})"
        lines.append(
            f"  {v['scenario']:<34} {v['executions']:>7} executions {v['classes']:>7} classes "
            f"{v['blocked']:>6} blocked {v['seconds']:>8.1f} s  {state}"
        )
    lines.append("reduction (modern+kvm 2x1):")
    for x in r["reduction"]:
        d, e = x["dpor"], x["exhaustive"]
        lines.append(
            f"  bound {x['bound']}: dpor {d['executions']} ({d['seconds']} s), exhaustive "
            f"{e['executions']} ({e['seconds']} s), ratio {x['ratio']}"
        )
    lines.append("bugs (median s to the first violation):")
    names = list(r["bugs"][0]["strategies"]) if r["bugs"] else []
    lines.append("  " + f"{'bug':<50}" + "".join(f"{n:>12}" for n in names) + "  portfolio/best")
    for b in r["bugs"]:
        cells = "".join(
            f"{'-' if v is None else format(v * 1000, '.1f') + 'ms':>12}"
            for v in b["strategies"].values()
        )
        ratio = "-" if b["ratio"] is None else f"{b['ratio']:.2f}"
        within = "within 2x" if b["portfolio_within_2x"] else "NOT within 2x"
        lines.append(f"  {b['bug']:<50}{cells}  {ratio} {within}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--seeds", type=int, default=3, help="seeds per bug and strategy (3)")
    p.add_argument("--repeat", type=int, default=3, help="timings per seed, least kept (3)")
    p.add_argument("--budget", type=int, default=200_000, help="verification runs (200000)")
    p.add_argument("--skip", default="", help="comma-separated sections to skip")
    p.add_argument("--with-hypothesis", action="store_true", help="time hypothesis too")
    p.add_argument(
        "--match",
        default="",
        help="only the verify scenarios and catalog bugs whose name this regular expression "
        "matches (e.g. '2x1$', 'percpu')",
    )
    p.add_argument(
        "--strategies",
        default=",".join(SINGLE),
        help=f"bugs: the single strategies beside the portfolio ({','.join(SINGLE)})",
    )
    a = p.parse_args(argv)
    skip = set(a.skip.split(",")) if a.skip else set()
    r: dict[str, Any] = {}
    r["verify"] = [] if "verify" in skip else verify(a.budget, a.match)
    r["reduction"] = [] if "reduction" in skip else reduction()
    single = tuple(a.strategies.split(",")) + (("hypothesis",) if a.with_hypothesis else ())
    r["bugs"] = [] if "bugs" in skip else bugs(a.seeds, 10_000, single, a.repeat, a.match)
    if a.json:
        print(json.dumps(r, sort_keys=True))
    else:
        sys.stdout.write(render(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
