#!/usr/bin/env python3
"""Benchmark campaigns: scaling over local workers, a Dask LocalCluster against local
processes, peak RSS per worker and start-up time.

    python tools/bench_campaign.py              # 20 s per configuration
    python tools/bench_campaign.py --time 10 --repeat 2 --json
    python tools/bench_campaign.py --ci         # CI: a 10 s campaign on a LocalCluster

Each configuration runs `vdsofuzz campaign` (this checkout's `python -m emu`) on the same
spec (random walks over four scenarios that pass, so every run is a plain search run) in a
fresh directory and reads back:
- rate: schedules checkpointed / campaign seconds (the clock starts once the workers are
  warm, so start-up is not in the rate);
- start-up: wall seconds from launching the command to its first status line (the spec
  parsed, images packed, the pool started and every worker's first executors built);
- peak RSS: the largest `ru_maxrss` any worker reported with a chunk.
Targets (issue 11): 2 local workers >= 1.8x one worker; a LocalCluster of 2 processes
>= 0.85x 2 local workers; RSS <= 300 MB per worker; start-up <= 3 s locally. The machine
may be shared: run it when it is idle, or read the figures as lower bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# This checkout's `emu`, in the campaign processes and in the Dask workers this starts.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
sys.path.insert(0, str(ROOT))
# Dask's statistical profiler samples a worker's task thread every 10 ms for the dashboard;
# a campaign's workers are better off without it (measured: 13% more schedules/s on two
# rounds of three; the README says how to start `dask worker` so).
os.environ["DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"] = "False"
SPEC = """strategies = ["random"]
chunk = 400
[[scenario]]
images = ["modern"]
hosts = ["kvm", "xen", "kvm-masterclock"]
[[scenario]]
images = ["percpu"]
hosts = ["kvm"]
"""


def run(spec: Path, seconds: float, workers: int | None, scheduler: str | None) -> dict[str, Any]:
    """One campaign; its rate, start-up and the workers' peak RSS."""
    out = Path(tempfile.mkdtemp(prefix="bench-campaign-"))
    cmd = [sys.executable, "-m", "emu", "campaign", str(spec), "--out", str(out / "c")]
    cmd += ["--time", f"{seconds}s", "--json", "--interval", "1"]
    cmd += ["--workers", str(workers)] if workers else []
    cmd += ["--scheduler", scheduler] if scheduler else []
    env = dict(os.environ)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    assert proc.stdout is not None
    first = None
    lines = []
    for line in proc.stdout:
        if first is None:
            first = time.monotonic() - start
        lines.append(json.loads(line))
    proc.wait()
    rec = json.loads((out / "c" / "campaign.json").read_text())
    session = rec["sessions"][-1]
    last = lines[-1]
    return {
        "workers": session["workers"],
        "scheduler": "dask" if scheduler else "local",
        "schedules": last["schedules"],
        "seconds": rec["elapsed"],
        "rate": last["schedules"] / rec["elapsed"],
        "startup_s": first,
        "warm_s": session["startup_s"],
        "peak_rss_mb": session.get("peak_rss_mb"),
        # Schedules per CPU second of the workers: what the rate would be per fully
        # available core, whatever else the machine runs.
        "per_cpu_s": last["schedules"] / max(session["worker_cpu_s"], 1e-9),
    }


def local_cluster() -> Any:
    """The benchmark's and CI's Dask cluster: 2 worker processes of 1 thread, loopback."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )


CI_SPEC = """strategies = ["random", "pct", "hypothesis"]
chunk = 100
[[scenario]]
images = ["modern", "bug-no-retry"]
hosts = ["kvm"]
"""


def ci(seconds: float) -> int:
    """A short campaign on a Dask LocalCluster (2 worker processes, loopback): the seeded
    bug is found, the correct reader passes, `findings` lists what was found."""
    tmp = Path(tempfile.mkdtemp(prefix="ci-campaign-"))
    spec = tmp / "spec.toml"
    spec.write_text(CI_SPEC)
    out = tmp / "c"
    env = dict(os.environ)
    with local_cluster() as cluster:
        cmd = [sys.executable, "-m", "emu", "campaign", str(spec), "--out", str(out)]
        cmd += ["--time", f"{seconds}s", "--json", "--scheduler", cluster.scheduler_address]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    last = json.loads(done.stdout.splitlines()[-1]) if done.stdout.strip() else {}
    rows = {r["scenario"]: r for r in last.get("rows", [])}
    listed = subprocess.run(
        [sys.executable, "-m", "emu", "findings", str(out), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    ok = (
        done.returncode == 1
        and rows.get("bug-no-retry/kvm", {}).get("signatures", 0) >= 1
        and rows.get("modern/kvm", {}).get("hits", 1) == 0
        and len(json.loads(listed.stdout)["signatures"]) == last["signatures"]
    )
    print(
        f"campaign on a LocalCluster: exit {done.returncode}, {last.get('schedules')} "
        f"schedules, {last.get('signatures')} signatures: {'ok' if ok else 'FAILED'}"
    )
    if not ok:
        print(done.stdout[-2000:], done.stderr[-4000:], listed.stderr[-2000:], file=sys.stderr)
    return 0 if ok else 1


def show(summary: dict[str, Any]) -> None:
    """The figures as lines, each with its target."""
    for k, v in summary["runs"].items():
        for r in v:
            print(
                f"{k:8} {r['rate']:8.0f} schedules/s  start-up {r['startup_s']:.2f} s "
                f"(warm {r['warm_s']:.2f} s)  peak RSS {r['peak_rss_mb']} MB  "
                f"{r['per_cpu_s']:.0f} schedules per worker CPU second"
            )
    print(f"2 workers / 1 worker: {summary['scaling_2_vs_1']:.2f}x (target >= 1.8)")
    print(f"Dask LocalCluster / local: {summary['dask_vs_local']:.2f}x (target >= 0.85)")
    print(f"peak RSS per worker: {summary['peak_rss_mb']:.0f} MB (target <= 300)")
    print(f"local start-up: {summary['startup_local_s']:.2f} s (target <= 3)")
    print(f"load average at the end: {summary['load_after']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--time", type=float, default=20.0, help="seconds per campaign (20)")
    p.add_argument("--repeat", type=int, default=1, help="rounds of every configuration (1)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--ci", action="store_true", help="the CI check: a short LocalCluster run")
    args = p.parse_args(argv)
    if args.ci:
        return ci(args.time if args.time != 20.0 else 10.0)
    spec = Path(tempfile.mkdtemp(prefix="bench-spec-")) / "spec.toml"
    spec.write_text(SPEC)
    results: dict[str, list[dict[str, Any]]] = {"local-1": [], "local-2": [], "dask-2": []}
    for _ in range(args.repeat):  # interleaved, so load from others hits every config
        results["local-1"].append(run(spec, args.time, 1, None))
        results["local-2"].append(run(spec, args.time, 2, None))
        # A cluster of its own for each Dask round, gone during the local ones (an idle
        # cluster's heartbeats would take from the local workers' cores).
        with local_cluster() as cluster:
            results["dask-2"].append(run(spec, args.time, None, cluster.scheduler_address))
    rate = {k: statistics.median(r["rate"] for r in v) for k, v in results.items()}
    summary = {
        "cpus": os.cpu_count(),
        "load_after": os.getloadavg(),
        "runs": results,
        "rate": rate,
        "scaling_2_vs_1": rate["local-2"] / rate["local-1"],
        "dask_vs_local": rate["dask-2"] / rate["local-2"],
        "peak_rss_mb": max(r["peak_rss_mb"] or 0 for v in results.values() for r in v),
        "startup_local_s": max(r["startup_s"] for r in results["local-2"]),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        show(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
