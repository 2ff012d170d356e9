"""A campaign killed with SIGKILL resumes: no saved finding lost or duplicated, each run
counted once, and only the chunks that were in flight (one per worker: one checkpoint
interval) run again. Also: a worker killed mid-run is re-queued and reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SPEC = """strategies = ["random", "pct"]
chunk = 60
[[scenario]]
images = ["modern", "bug-no-retry"]
hosts = ["kvm-legacy-copy"]
"""
WORKERS = 2


def _start(spec: Path, out: Path, budget: str, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "emu", "campaign", str(spec), "--out", str(out)]
    cmd += ["--time", budget, "--workers", str(WORKERS), "--json", "--interval", "0.3"]
    with open(log, "wb") as f:
        return subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1]
        )


def _wait_for(cond, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


def _states(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "checkpoints").glob("*.json")}


def _findings(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "findings").glob("*.json")}


def _chunks(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "chunks.jsonl").read_text().splitlines() if x.strip()]


def test_sigkill_and_resume(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    out = tmp_path / "camp"
    proc = _start(spec, out, "10s", tmp_path / "log1")

    def progressed() -> bool:
        done = (
            sum(s["schedules"] for s in _states(out).values())
            if (out / "checkpoints").exists()
            else 0
        )
        return done >= 300 and (out / "findings").is_dir() and any((out / "findings").iterdir())

    _wait_for(progressed)
    proc.send_signal(signal.SIGKILL)  # a real kill -9: no handler runs
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before_states, before = _states(out), _findings(out)
    session0 = {c["chunk"].split("@")[0] for c in _chunks(out) if c["session"] == 0}
    # Handed out by the killed session and not finished in its checkpoints: in flight.
    unfinished = set()
    for name in session0:
        key, n = name.split("/")
        st = before_states.get(key)
        if st is None or not (int(n) < st["done_below"] or int(n) in st["done"]):
            unfinished.add(name)
    assert len(unfinished) <= WORKERS

    proc = _start(spec, out, "10s", tmp_path / "log2")
    assert proc.wait(timeout=300) == 1, (tmp_path / "log2").read_text()[-2000:]
    after = _findings(out)
    # Nothing saved is lost; a signature's file may only get a smaller schedule.
    for sid, f in before.items():
        assert sid in after and len(after[sid]["choices"]) <= len(f["choices"])
    # Never duplicated: one file per signature, no temporary files left behind.
    sigs = [json.dumps(f["signature"], sort_keys=True) for f in after.values()]
    assert len(sigs) == len(set(sigs))
    assert not [p for p in (out / "findings").iterdir() if p.suffix != ".json"]
    # Repeated work: the chunks session 1 ran again are exactly those left unfinished by
    # the killed session, at most one per worker (one checkpoint interval).
    rerun = {c["chunk"].split("@")[0] for c in _chunks(out) if c["session"] == 1} & session0
    assert rerun == unfinished
    assert len(rerun) <= WORKERS
    # Each run counted once: a shard's schedules are exactly what its chunks covered.
    for key, st in _states(out).items():
        chunk = 60
        covered = chunk * (st["done_below"] + len(st["done"]))
        covered += sum(reached - int(n) * chunk for n, reached in st["partial"].items())
        assert st["schedules"] == covered, key
    rec = json.loads((out / "campaign.json").read_text())
    assert len(rec["sessions"]) == 2 and rec["sessions"][1]["resumed_chunks"] <= len(unfinished)


def _children(pid: int) -> list[int]:
    """The campaign's worker processes (forked: same command line, unlike helpers such as
    multiprocessing's resource tracker)."""
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(x) for x in (task / "children").read_text().split()]
    mine = Path(f"/proc/{pid}/cmdline").read_bytes()

    def cmdline(k: int) -> bytes:
        try:
            return Path(f"/proc/{k}/cmdline").read_bytes()
        except OSError:  # it has just exited
            return b""

    return [k for k in kids if cmdline(k) == mine]


def test_a_dead_worker_is_requeued(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    out = tmp_path / "camp"
    proc = _start(spec, out, "6s", tmp_path / "log")
    _wait_for(lambda: (out / "checkpoints").is_dir() and len(_children(proc.pid)) >= WORKERS)
    os.kill(_children(proc.pid)[0], signal.SIGKILL)
    assert proc.wait(timeout=300) == 1, (tmp_path / "log").read_text()[-2000:]
    last = json.loads((tmp_path / "log").read_text().splitlines()[-1])
    assert last["done"] and last["requeued"] >= 1
    # The re-queued chunks were finished: nothing handed out is left unfinished but for
    # the chunks the deadline cut short.
    for st in _states(out).values():
        for n in range(st["done_below"], st["issued"]):
            assert n in st["done"] or str(n) in st["partial"]


DPOR_SPEC = """strategies = ["dpor"]
dpor_depth = 1
[[scenario]]
images = ["modern"]
hosts = ["kvm"]
reads = 1
"""


@pytest.mark.parametrize("when", ["chunk", "split"])
def test_a_worker_dead_before_a_submit_is_requeued(tmp_path, monkeypatch, when):
    """A worker that dies between two collects breaks the pool under the next submit; the
    chunk and those in flight are re-queued (a dpor split is asked again), not reported as
    an internal error."""
    from emu.campaign import driver
    from emu.campaign.dpor import split
    from emu.campaign.spec import load
    from emu.campaign.worker import run_chunk

    target = run_chunk if when == "chunk" else split

    class KillBeforeFirst(driver.Pool):
        killed = False

        def submit(self, fn, *args):
            if fn is target and not KillBeforeFirst.killed:
                KillBeforeFirst.killed = True
                os.kill(next(iter(self.executor._processes)), signal.SIGKILL)
                _wait_for(lambda: self.executor._broken)
            return super().submit(fn, *args)

    monkeypatch.setattr(driver, "Pool", KillBeforeFirst)
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC if when == "chunk" else DPOR_SPEC)
    camp = driver.Campaign(load(spec), driver.Options(tmp_path / "camp", 3.0, WORKERS))
    snap = camp.run(lambda s: None)
    assert KillBeforeFirst.killed and snap.done and snap.schedules > 0
    assert snap.requeued >= (1 if when == "chunk" else 0)
    states = _states(tmp_path / "camp").values()
    if when == "split":  # the subtrees were split after all, and searched to the end
        assert states and all(st["exhausted"] for st in states)
    for st in states:
        for n in range(st["done_below"], st["issued"]):
            assert n in st["done"] or str(n) in st["partial"] or st["exhausted"]
