#!/usr/bin/env python3
"""Benchmark vdsofuzz: search throughput, time to each catalog bug, exhaustive
verification, and the same readers run natively.

    python tools/bench.py            # tables (several minutes: the native runs wait 60 s)
    python tools/bench.py --json     # one JSON object
    python tools/bench.py --quick    # small budgets, 1 s native runs (a smoke test)

Sections:
- throughput: schedules/s of every strategy on the reference workload (image `modern`,
  2 vCPUs x 2 reads, host `kvm` making one update of vCPU 0's page), and executor runs/s
  in fast mode (with the native lane when it is available), with every visible operation
  in Python, and in stepping mode (an observer on every instruction), with the ratio;
- bugs: for each catalog bug (seeded-bug images of vdso_blobs/manifest.json with the host
  and options that expose them, and host bugs), per strategy, the median over seeds of the
  time and schedules to the first violation, the time including shrinking, and the shrunk
  schedule;
- exhaustive: interleavings and time to cover preemption bounds 1..3 for `modern` (2 vCPUs
  x 1 read) against `kvm` and `kvm-legacy-copy` (one update);
- native: the same reader sources compiled for this CPU, a writer thread in a tight loop
  and at 1 kHz (tools/run_native_stress.py), time to the first violation, and its ratio to
  the emulator's best median;
- the floor: per-run time of the host model and the oracles alone, which no speed-up of
  guest execution removes;
- peak RSS of the benchmark process (the emulator part; native runs are child processes).

Wall-clock time is used here only to measure; the emulation itself runs on logical time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from emu.engine import lane  # noqa: E402
from emu.engine.executor import Executor  # noqa: E402
from emu.engine.scenario import Scenario  # noqa: E402
from emu.engine.scheduler import Default  # noqa: E402
from emu.errors import ImageError  # noqa: E402
from emu.image.loader import manifest  # noqa: E402
from emu.oracles import judge  # noqa: E402
from emu.search.fuzz import Fuzzer  # noqa: E402
from emu.search.random import RandomWalk  # noqa: E402
from emu.search.registry import STRATEGIES  # noqa: E402
from host_model.base import HostView  # noqa: E402
from host_model.clock import Clock  # noqa: E402
from host_model.registry import HOSTS, make_host  # noqa: E402

#: Host and scenario options that expose each seeded bug, for images the catalog (if any)
#: does not describe: reader name -> (host, host params, scenario options).
BUG_SETUPS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "bug-no-retry": ("kvm", {}, {}),
    "bug-no-odd-check": ("kvm", {}, {}),
    "bug-no-barrier": ("kvm", {}, {}),
    "bug-stale-flags": ("kvm-masterclock", {"masterclock": 0}, {}),
    "bug-percpu-no-recheck": ("unsynced-tsc", {}, {"task_migration": True}),
    "bug-unfenced-rdtsc": ("kvm", {}, {"speculative_tsc": True}),
}
#: Host bugs: a correct reader against a buggy host.
HOST_BUGS = [("modern", "kvm-legacy-copy", {}, {})]
TARGET_BUG_S = 2.0
TARGET_VERIFY_S = 60.0


def machine() -> dict[str, Any]:
    import capstone
    import hypothesis
    import unicorn

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "unicorn": unicorn.__version__,
        "capstone": capstone.__version__,
        "hypothesis": hypothesis.__version__,
    }


def _scenario(image: str, host: str, params: dict, options: dict, reads: int) -> Scenario:
    known = {f.name for f in fields(Scenario)}
    bad = [k for k in options if k not in known]
    if bad:
        raise ValueError(f"scenario option {bad[0]!r} is not supported yet")
    return Scenario(image=image, host=host, host_params=dict(params), reads=reads, **options)


def catalog_bugs() -> list[dict[str, Any]]:
    """Every bug the benchmark times: the catalog's expected violations, then any seeded-bug
    image of the manifest the catalog does not cover (with the setup of BUG_SETUPS)."""
    out: list[dict[str, Any]] = []
    try:
        from emu.search import catalog

        entries = [e for e in catalog.load() if e.expect == catalog.VIOLATION]
    except Exception:  # no catalog yet, or a malformed one: fall back to the manifest
        entries = []
    for e in entries:
        sc = e.scenario
        opts: dict[str, Any] = {
            k: True for k in ("task_migration", "speculative_tsc") if getattr(sc, k)
        }
        if sc.vcpus != 2:
            opts["vcpus"] = sc.vcpus
        if sc.writer:
            opts["writer"] = sc.writer
        out.append(_spec(e.name, sc.image, sc.host, dict(sc.host_params), opts, sc.reads, e.oracle))
    covered = {b["image"] for b in out}
    man = manifest()
    aliases = man.get("aliases", {})
    readers = []
    for e in man.get("images", []):
        r = e.get("reader")
        if e.get("bug") and r in aliases and r not in readers and r not in covered:
            readers.append(r)
    for r in sorted(readers):
        host, params, opts = BUG_SETUPS.get(r, ("kvm", {}, {}))
        out.append(_spec(f"{r}/{host}", r, host, params, opts, 2, None))
    if not entries:
        for image, host, params, opts in HOST_BUGS:
            out.append(_spec(f"{image}/{host}", image, host, params, opts, 2, None))
    # The two the targets name first, then the rest in catalog order.
    first = ("bug-no-retry", "bug-no-odd-check")
    return sorted(out, key=lambda b: first.index(b["image"]) if b["image"] in first else 2)


def _spec(name, image, host, params, options, reads, expect) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "host": host,
        "params": params,
        "options": options,
        "reads": reads,
        "expect": expect,
    }


# --- throughput -----------------------------------------------------------------------


def reference() -> Scenario:
    return Scenario(image="modern", host="kvm", host_params={"updates": 1, "vcpu": 0}, reads=2)


def floor(ex: Executor, n: int) -> dict[str, float]:
    """Microseconds per reference run of the work that does not depend on the guest code:
    the host model (boot and every step, as the executor asks for them), and judging the
    run's reads with the oracles. Their sum bounds the schedules/s of any strategy."""
    sc = ex.scenario
    runs = [ex.run(RandomWalk(i)) for i in range(n)]
    steps = [[e.t for e in r.host] for r in runs]
    t = time.perf_counter()
    for times in steps:
        host = make_host(sc.host, sc.host_params)
        clock = Clock(sc.vcpus, offsets=host.tsc_offsets(sc.vcpus))
        view = HostView(clock, 0, sc.vcpus)
        host.setup(view)
        for step_t, _ in zip(times, host.steps(view), strict=False):
            view.t = step_t + 1
    host_us = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    for r in runs:
        judge(r, sc)
    judge_us = (time.perf_counter() - t) / n * 1e6
    return {
        "host_model_us": round(host_us, 1),
        "oracles_us": round(judge_us, 1),
        "max_schedules_per_s": round(1e6 / (host_us + judge_us)),
    }


def throughput(n: int, stepping_n: int) -> dict[str, Any]:
    sc = reference()
    ex = Executor(sc)
    ex.run(Default())  # warm the JIT
    out: dict[str, Any] = {
        "workload": {
            "image": "modern",
            "vcpus": sc.vcpus,
            "reads": sc.reads,
            "host": sc.host,
            "host_params": sc.host_params,
        },
        "strategies": {},
    }
    for name in STRATEGIES:
        c = Fuzzer(sc, ex)
        t = time.perf_counter()
        o = c.fuzz(strategy=name, max_schedules=n, preemptions=3)
        dt = time.perf_counter() - t
        out["strategies"][name] = {
            "schedules": o.schedules,
            "seconds": round(dt, 3),
            "schedules_per_s": round(o.schedules / dt, 1),
            "reads_per_s": round(o.schedules * sc.vcpus * sc.reads / dt, 1),
            "verdict": o.verdict,
        }

    def noop(kind: str, data: object) -> None:
        pass

    python = Executor(sc, native=False)
    python.run(Default())
    rates = {}
    for mode, e, obs, m in (
        ("fast", ex, None, stepping_n * 10),
        ("python", python, None, stepping_n * 10),
        ("stepping", ex, noop, stepping_n),
    ):
        t = time.perf_counter()
        for i in range(m):
            e.run(RandomWalk(i), observer=obs)
        rates[mode] = m / (time.perf_counter() - t)
    out["floor"] = floor(ex, stepping_n * 10)
    out["native_lane"] = ex.native
    if not ex.native:
        out["native_lane_unavailable"] = lane.unavailable
    out["executor_fast_runs_per_s"] = round(rates["fast"], 1)
    out["executor_python_runs_per_s"] = round(rates["python"], 1)
    out["executor_stepping_runs_per_s"] = round(rates["stepping"], 1)
    out["stepping_ratio"] = round(rates["fast"] / rates["stepping"], 1)
    return out


# --- real vDSOs -------------------------------------------------------------------------

#: The distribution vDSO samples (tools/fetch_vdso_samples.sh puts them here, as the tests
#: expect them).
SAMPLES = Path(os.environ.get("VDSOFUZZ_VDSO_SAMPLES", "~/vdso-samples")).expanduser()
#: Rounds the real-vDSO row's schedules are split into, each image taking a share in turn,
#: so a burst of load on a shared machine falls on every image alike.
ROUNDS = 3


def real_vdso(n: int) -> dict[str, Any]:
    """Schedules/s of the `random` strategy on the reference workload with the bundled
    `modern` reader and with each distribution sample image, and each one's ratio to
    `modern` (the goal is >= 0.5)."""
    paths = sorted(SAMPLES.glob("deb-*/vdso*.so")) if SAMPLES.is_dir() else []
    if not paths:
        return {"skipped": f"no samples in {SAMPLES} (tools/fetch_vdso_samples.sh)", "rows": []}
    ref = reference()
    images = {"modern": "modern"} | {f"{p.parent.name}/{p.name}": str(p) for p in paths}
    runs: dict[str, tuple[Fuzzer, Executor]] = {}
    for label, image in images.items():
        ex = Executor(replace(ref, image=image))
        ex.run(Default())  # warm the JIT
        runs[label] = (Fuzzer(ex.scenario, ex), ex)
    done = dict.fromkeys(images, 0)
    seconds = dict.fromkeys(images, 0.0)
    for k in range(ROUNDS):
        share = n // ROUNDS + (1 if k < n % ROUNDS else 0)
        for label, (c, _) in runs.items():
            t = time.perf_counter()
            o = c.fuzz(strategy="random", max_schedules=share, seed=k)
            seconds[label] += time.perf_counter() - t
            done[label] += o.schedules
    rate = {label: done[label] / seconds[label] for label in images}
    return {
        "schedules": n,
        "rows": [
            {
                "image": label,
                "arch": runs[label][1].image.arch,
                "sites": runs[label][1].sites.hooked,
                "schedules_per_s": round(rate[label], 1),
                "ratio_to_modern": round(rate[label] / rate["modern"], 2),
            }
            for label in images
        ],
    }


# --- bugs -------------------------------------------------------------------------------


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def bug(spec: dict[str, Any], seeds: int, budget: int) -> dict[str, Any]:
    image, host, params, opts = spec["image"], spec["host"], spec["params"], spec["options"]
    row: dict[str, Any] = dict(spec)
    row["strategies"] = {}
    if host not in HOSTS:
        row["skipped"] = f"host {host!r} is not available yet"
        return row
    try:
        sc = _scenario(image, host, params, opts, reads=spec["reads"])
        t = time.perf_counter()
        ex = Executor(sc)
        row["setup_s"] = round(time.perf_counter() - t, 3)
    except (ImageError, ValueError) as e:
        row["skipped"] = str(e)
        return row
    oracles = set()
    for name in STRATEGIES:
        firsts, counts, totals, shrunk = [], [], [], []
        found = 0
        for seed in range(seeds):
            c = Fuzzer(sc, ex)
            t = time.perf_counter()
            o = c.fuzz(strategy=name, seed=seed, max_schedules=budget)
            total = time.perf_counter() - t
            if o.finding is None or o.first_hit is None:
                continue
            found += 1
            oracles.add(o.finding.oracle)
            counts.append(o.first_hit[0])
            firsts.append(o.first_hit[1])
            totals.append(total)
            shrunk.append(o.finding.schedule.compact())
        ok = found * 2 > seeds  # a median exists only when most seeds found it
        row["strategies"][name] = {
            "found": f"{found}/{seeds}",
            "median_first_s": round(_median(firsts), 4) if ok else None,
            "median_schedules": _median(counts) if ok else None,
            "median_total_s": round(_median(totals), 4) if ok else None,
            "shrunk": min(shrunk, key=lambda s: (len(s.split()), s)) if shrunk else None,
        }
    row["oracle"] = ", ".join(sorted(oracles)) or None
    best = [
        (v["median_first_s"], k)
        for k, v in row["strategies"].items()
        if v["median_first_s"] is not None
    ]
    if best:
        s, k = min(best)
        row["best"] = {"strategy": k, "median_first_s": s}
    row["target_met"] = bool(best) and min(best)[0] <= TARGET_BUG_S
    return row


# --- exhaustive -------------------------------------------------------------------------


def exhaustive(bounds: list[int]) -> list[dict[str, Any]]:
    out = []
    for host in ("kvm", "kvm-legacy-copy"):
        if host not in HOSTS:
            out.append({"image": "modern", "host": host, "skipped": "host not available yet"})
            continue
        sc = Scenario(image="modern", host=host, reads=1)
        ex = Executor(sc)
        for b in bounds:
            c = Fuzzer(sc, ex)
            t = time.perf_counter()
            o = c.fuzz(strategy="exhaustive", preemptions=b)
            dt = time.perf_counter() - t
            out.append(
                {
                    "image": "modern",
                    "host": host,
                    "vcpus": sc.vcpus,
                    "reads": sc.reads,
                    "bound": b,
                    "interleavings": o.stats.get("interleavings"),
                    "complete": o.stats.get("complete"),
                    "verdict": "verified" if o.stats.get("complete") else o.verdict,
                    "oracle": o.finding.oracle if o.finding else None,
                    "seconds": round(dt, 3),
                    "first_violation_s": round(o.first_hit[1], 4) if o.first_hit else None,
                }
            )
    return out


# --- native -----------------------------------------------------------------------------


def native(bugs: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    import run_native_stress as ns

    out = []
    for row in bugs:
        writer = ns.WRITERS.get(row["host"])
        if writer is None or row.get("options") or row.get("skipped"):
            continue
        emu_s = row.get("best", {}).get("median_first_s")
        for rate in (0, 1000):
            r: dict[str, Any] = {
                "image": row["image"],
                "host": row["host"],
                "writer": writer,
                "rate_hz": rate,
            }
            try:
                ns.source_and_flags(row["image"])
            except ns.NativeError:
                break  # not an x86-64 reader: nothing to compare
            try:
                res = ns.run(row["image"], writer=writer, rate=rate, timeout=timeout)
            except ns.NativeError as e:
                r["skipped"] = str(e)
                out.append(r)
                continue
            r.update(
                {
                    "violation": res["violation"],
                    "seconds": round(res["seconds"], 4),
                    "timed_out": res["violation"] is None,
                    "reads": res["reads"],
                    "updates": res["updates"],
                    "emulator_s": emu_s,
                }
            )
            if emu_s:
                r["ratio"] = round(res["seconds"] / emu_s, 2)
            out.append(r)
    return out


# --- report -------------------------------------------------------------------------------


def _fmt(x: Any, unit: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3g}{unit}" if x < 100 else f"{x:.0f}{unit}"
    return f"{x}{unit}"


def render(r: dict[str, Any]) -> str:
    lines = []
    m = r["machine"]
    lines.append(
        f"machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}, "
        f"unicorn {m['unicorn']}, hypothesis {m['hypothesis']}" + (" [quick]" if r["quick"] else "")
    )
    tp = r["throughput"]
    w = tp["workload"]
    lines.append("")
    lines.append(
        f"throughput: image {w['image']}, {w['vcpus']} vCPUs x {w['reads']} reads, host "
        f"{w['host']} {w['host_params']}"
    )
    lines.append(f"  {'strategy':<12} {'schedules/s':>12} {'reads/s':>10}")
    for k, v in tp["strategies"].items():
        lines.append(f"  {k:<12} {v['schedules_per_s']:>12.0f} {v['reads_per_s']:>10.0f}")
    lane_note = "on" if tp["native_lane"] else f"off: {tp.get('native_lane_unavailable')}"
    lines.append(
        f"  executor fast {tp['executor_fast_runs_per_s']:.0f} runs/s (native lane {lane_note}; "
        f"every operation in Python: {tp['executor_python_runs_per_s']:.0f} runs/s), stepping "
        f"{tp['executor_stepping_runs_per_s']:.0f} runs/s: ratio {tp['stepping_ratio']}x"
    )
    fl = tp["floor"]
    lines.append(
        f"  per run, independent of the guest: host model {fl['host_model_us']} us, oracles "
        f"{fl['oracles_us']} us: at most {fl['max_schedules_per_s']} schedules/s"
    )
    rv = r["real_vdso"]
    lines.append("")
    if rv.get("skipped"):
        lines.append(f"real vDSOs: skipped ({rv['skipped']})")
    else:
        lines.append(
            f"real vDSOs: random strategy, {rv['schedules']} schedules each, the throughput "
            "workload with the image substituted"
        )
        lines.append(
            f"  {'image':<24} {'arch':<7} {'sites':>5} {'schedules/s':>12} {'vs modern':>10}"
        )
        for row in rv["rows"]:
            lines.append(
                f"  {row['image']:<24} {row['arch']:<7} {row['sites']:>5} "
                f"{row['schedules_per_s']:>12.0f} {row['ratio_to_modern']:>9.0%}"
            )
    lines.append("")
    lines.append(
        f"bugs: median over {r['seeds']} seeds of the time / schedules to the first violation "
        f"(budget {r['budget']} schedules); total includes shrinking"
    )
    for b in r["bugs"]:
        opts = " ".join(
            [f"{k}={v}" for k, v in sorted(b["params"].items())]
            + [f"--{k.replace('_', '-')}" for k in sorted(b["options"])]
        )
        lines.append(
            f"  {b['name']}: {b['image']} on {b['host']}{' ' + opts if opts else ''}"
            + (f"; expected {b['expect']}" if b.get("expect") else "")
            + (f"; found {b['oracle']}" if b.get("oracle") else "")
        )
        if b.get("skipped"):
            lines.append(f"      skipped: {b['skipped']}")
            continue
        for k, v in b["strategies"].items():
            lines.append(
                f"      {k:<11} {v['found']:>5} found, first {_fmt(v['median_first_s'], ' s'):>9} "
                f"after {_fmt(v['median_schedules']):>5} schedules, "
                f"{_fmt(v['median_total_s'], ' s'):>9} with shrinking: {v['shrunk'] or '-'}"
            )
    lines.append("")
    lines.append("exhaustive (2 vCPUs x 1 read, one host update):")
    lines.append(f"  {'image+host':<24} {'bound':>5} {'interleavings':>14} {'time':>9}  verdict")
    for e in r["exhaustive"]:
        name = f"{e['image']}+{e['host']}"
        if e.get("skipped"):
            lines.append(f"  {name:<24} skipped: {e['skipped']}")
            continue
        verdict = e["verdict"] + (f" ({e['oracle']})" if e.get("oracle") else "")
        lines.append(
            f"  {name:<24} {e['bound']:>5} {e['interleavings']:>14} "
            f"{_fmt(e['seconds'], 's'):>9}  {verdict}"
        )
    if r["native"]:
        lines.append("")
        lines.append("native (same C source on this CPU; 2 reader threads + 1 writer thread):")
        lines.append(
            f"  {'image':<18} {'writer':<8} {'rate':>6} {'native':>10} {'emulator':>9} "
            f"{'ratio':>8}  native reads"
        )
        for n in r["native"]:
            if n.get("skipped"):
                lines.append(f"  {n['image']:<18} skipped: {n['skipped']}")
                continue
            rate = "tight" if n["rate_hz"] == 0 else f"{n['rate_hz']}Hz"
            nat = (">" if n["timed_out"] else "") + _fmt(n["seconds"], "s")
            ratio = n.get("ratio")
            ratio_s = "-" if ratio is None else (">" if n["timed_out"] else "") + _fmt(ratio, "x")
            lines.append(
                f"  {n['image']:<18} {n['writer']:<8} {rate:>6} {nat:>10} "
                f"{_fmt(n['emulator_s'], 's'):>9} {ratio_s:>8}  {n['reads']}"
            )
    lines.append("")
    t = r["targets"]
    lines.append(
        f"targets: every bug <= {TARGET_BUG_S:g} s by some strategy: "
        f"{'met' if t['bugs_within_2s'] else 'NOT met'}; modern+kvm bound 2 <= "
        f"{TARGET_VERIFY_S:g} s: {'met' if t['verify_bound2_within_60s'] else 'NOT met'}"
    )
    lines.append(f"peak RSS: {r['peak_rss_kb'] / 1024:.0f} MiB")
    for n in r["notes"]:
        lines.append(f"note: {n}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="small budgets (a smoke test)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per bug and strategy (5)")
    p.add_argument("--no-native", action="store_true", help="skip the native comparison")
    p.add_argument("--native-timeout", type=float, default=None, help="seconds (60)")
    p.add_argument("--dpor", action="store_true", help="only the dpor tables (tools/bench_dpor.py)")
    a, rest = p.parse_known_args(argv)
    if a.dpor:
        import bench_dpor

        return bench_dpor.main(rest + (["--json"] if a.json else []))
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    quick = a.quick
    seeds = a.seeds or (1 if quick else 5)
    budget = 300 if quick else 10_000
    timeout = a.native_timeout or (1.0 if quick else 60.0)
    notes: list[str] = []
    r: dict[str, Any] = {
        "version": 1,
        "quick": quick,
        "machine": machine(),
        "seeds": seeds,
        "budget": budget,
    }
    r["throughput"] = throughput(200 if quick else 3000, 10 if quick else 100)
    r["real_vdso"] = real_vdso(300 if quick else 3000)
    if r["real_vdso"].get("skipped"):
        notes.append(f"real-vDSO row skipped: {r['real_vdso']['skipped']}")
    bugs = []
    for spec in catalog_bugs():
        bugs.append(bug(spec, seeds, budget))
    r["bugs"] = bugs
    r["exhaustive"] = exhaustive([1, 2] if quick else [1, 2, 3])
    if a.no_native:
        r["native"] = []
        notes.append("native comparison skipped (--no-native)")
    else:
        try:
            r["native"] = native(bugs, timeout)
        except Exception as e:  # the comparison is optional; say why it is missing
            r["native"] = []
            notes.append(f"native comparison failed: {type(e).__name__}: {e}")
    for b in bugs:
        if b.get("skipped"):
            notes.append(f"{b['image']}+{b['host']} skipped: {b['skipped']}")
    r["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    timed = [b for b in bugs if not b.get("skipped")]
    v2 = [
        e
        for e in r["exhaustive"]
        if e.get("host") == "kvm" and e.get("bound") == 2 and not e.get("skipped")
    ]
    r["targets"] = {
        "bugs_within_2s": bool(timed) and all(b["target_met"] for b in timed),
        "verify_bound2_within_60s": bool(v2)
        and all(e["verdict"] == "verified" and e["seconds"] <= TARGET_VERIFY_S for e in v2),
    }
    r["notes"] = notes
    if a.json:
        print(json.dumps(r, sort_keys=True))
    else:
        sys.stdout.write(render(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
