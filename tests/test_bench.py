"""tools/bench.py in quick mode, and the native stress harness (tools/native_stress)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import run_native_stress as ns  # noqa: E402


def test_bench_quick_json_has_the_keys():
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench.py"), "--json", "--quick"]
        + ["--native-timeout", "0.3"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    for key in ("machine", "throughput", "bugs", "exhaustive", "native", "peak_rss_kb"):
        assert key in d
    assert d["quick"] is True
    tp = d["throughput"]
    names = {"portfolio", "hypothesis", "random", "pct", "exhaustive", "dpor"}
    assert set(tp["strategies"]) == names
    for v in tp["strategies"].values():
        assert v["schedules_per_s"] > 0
    assert tp["stepping_ratio"] > 1
    assert tp["native_lane"] is True  # CI has a compiler
    assert tp["executor_python_runs_per_s"] > 0
    fl = tp["floor"]
    assert fl["host_model_us"] > 0 and fl["oracles_us"] > 0
    assert fl["max_schedules_per_s"] > tp["executor_fast_runs_per_s"]
    images = {b["image"] for b in d["bugs"]}
    assert {"bug-no-retry", "bug-no-odd-check"} <= images
    for b in d["bugs"]:
        if b.get("skipped"):
            continue
        assert set(b["strategies"]) == names
        for v in b["strategies"].values():
            assert {"found", "median_first_s", "median_schedules", "shrunk"} <= set(v)
    kvm = [e for e in d["exhaustive"] if e["host"] == "kvm"]
    assert [e["bound"] for e in kvm] == [1, 2]
    assert all(e["verdict"] == "verified" and e["interleavings"] > 1 for e in kvm)
    assert isinstance(d["targets"]["bugs_within_2s"], bool)
    assert d["peak_rss_kb"] > 0


def test_native_stress_finds_bug_no_retry():
    res = ns.run("bug-no-retry", writer="seqlock", rate=0, timeout=60, updates=10_000_000)
    # A torn read is caught as inconsistent, or, when the writer lapped the record ring
    # before it could be checked, by the next read that returns less.
    assert res["violation"] in ("consistent", "monotonic"), res
    assert res["reads"] > 0


def test_native_stress_passes_a_correct_reader():
    # A fixed amount of work, not a rate: the writer keeps updating until it has made
    # 20,000 updates and the readers 20,000 reads meanwhile, whatever the machine's load
    # (the timeout is only a safety net).
    res = ns.run("modern", writer="seqlock", rate=0, timeout=300, readers=2, updates=20_000)
    assert res["violation"] is None, res["detail"]
    assert res["updates"] >= 20_000 and res["reads"] >= 20_000, res


def test_native_stress_rejects_i386_and_unknown_writers():
    with pytest.raises(ns.NativeError):
        ns.source_and_flags("modern-i386")
    with pytest.raises(ns.NativeError):
        ns.run("modern", writer="nope")
