"""Hang findings: a loop without visible operations folds into one trace line, the hang
limit is the scenario's `max_insns` (kept in the finding), and `explain` names the loads
that led into the loop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import build_reader

from emu.engine.executor import Executor
from emu.engine.scenario import Scenario
from emu.report.explain import explain
from emu.report.trace import stream, trace
from emu.search.fuzz import Fuzzer
from emu.search.replay import Replay
from emu.search.schedule import Finding, load_file

PVTI = """
struct pvti { unsigned int version, pad0; unsigned long long tsc_timestamp, system_time;
  unsigned int mul; signed char shift; unsigned char flags; unsigned char pad[2]; }
  __attribute__((packed));
extern volatile struct pvti pvclock_page[] __attribute__((visibility("hidden")));
"""
#: Takes the TSC before its seqlock loop, then divides tsc - tsc_timestamp by repeated
#: subtraction: when the host publishes a newer record in between, the delta wraps and
#: the division runs for about 2^64 / 7 iterations (a hang).
DIVISION = (
    PVTI
    + """
static inline unsigned long long rdtsc(void) {
  unsigned lo, hi; __asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi));
  return ((unsigned long long)hi << 32) | lo; }
unsigned long long vdsofuzz_read(void) {
  unsigned long long now = rdtsc(), ts, st, d, n = 0;
  unsigned v;
  do {
    v = pvclock_page[0].version;
    ts = pvclock_page[0].tsc_timestamp;
    st = pvclock_page[0].system_time;
  } while ((v & 1) || v != pvclock_page[0].version);
  d = now - ts;
  while (d >= 7) { d -= 7; n++; __asm__ volatile("" : "+r"(n)); }
  return st + n;
}"""
)
#: Reads the version once and waits for it to become even without reading it again.
SPIN = (
    PVTI
    + """
unsigned long long vdsofuzz_read(void) {
  unsigned v = pvclock_page[0].version;
  while (v & 1) __asm__ volatile("pause" : "+r"(v));
  return v;
}"""
)


def _hang(tmp_path: Path, name: str, source: str, limit: int) -> Finding:
    path = build_reader(tmp_path, name, source)
    sc = Scenario(image=str(path), host="kvm", oracles=("terminates",), max_insns=limit)
    f = Fuzzer(sc).fuzz(strategy="random", seed=0, max_schedules=3000).finding
    assert f is not None and f.oracle == "terminates"
    assert f"{limit} instructions without a visible operation" in f.message
    return f


def _traced(f: Finding) -> list[dict]:
    """The finding's streamed trace, one dict per shown step."""
    out: list[str] = []
    stream(f.schedule, Executor(f.schedule.scenario), out.append, jsonl=True)
    return [json.loads(x) for x in out]


def _after_last_visible(steps: list[dict], task: str) -> list[dict]:
    """The instruction and loop steps of `task` after its last visible operation."""
    mine = [s for s in steps if s["who"].startswith(task + "/") and s["kind"] in ("insn", "loop")]
    last = max(i for i, s in enumerate(mine) if s["visible"])
    return mine[last + 1 :]


@pytest.mark.parametrize(("name", "source", "body"), [("division", DIVISION, 4), ("spin", SPIN, 3)])
def test_a_hang_folds_into_one_line_per_loop(tmp_path, name, source, body):
    limit = 30_000
    f = _hang(tmp_path, name, source, limit)
    steps = _traced(f)
    assert len(steps) < 200  # unfolded it would be more than `limit` lines
    hung = next(s for s in steps if s["kind"] == "read" and "hang" in s["text"])
    tail = _after_last_visible(steps, hung["who"])
    loops = [s for s in tail if s["kind"] == "loop"]
    assert len(loops) == 1
    # Every instruction since the last visible operation is either shown or folded.
    plain = [s for s in tail if s["kind"] == "insn"]
    assert len(plain) + loops[0]["iterations"] * body + loops[0]["partial"] == limit
    if name == "division":
        assert set(loops[0]["regs"]) == {"rax", "rdx"}  # the quotient and the remainder
    else:
        assert loops[0]["regs"] == {}


def test_a_folded_trace_runs_what_the_fast_run_runs(tmp_path):
    """The engine runs a folded loop unreported: the run (reads, values, hang, steps) is
    the one the fast mode makes, and the folded loop's registers are the real ones."""
    f = _hang(tmp_path, "division", DIVISION, 30_000)
    ex = Executor(f.schedule.scenario)
    fast = ex.run(Replay(f.schedule.choices))
    tr = trace(f.schedule, ex, fold=True)
    assert tr.run.outcome() == fast.outcome()
    unfolded = trace(f.schedule, ex)
    assert unfolded.run.outcome() == fast.outcome()
    last = {}
    for s in unfolded.steps:
        last.update({r: new for r, (_, new) in s.regs.items()})
    folded = {}
    for s in tr.steps:
        folded.update({r: new for r, (_, new) in s.regs.items()})
    assert folded == last
    assert len(tr.steps) < 200 < len(unfolded.steps)


def test_explain_names_the_loads_that_led_into_the_loop(tmp_path):
    f = _hang(tmp_path, "division", DIVISION, 20_000)
    e = explain(f.schedule, Executor(f.schedule.scenario))
    assert e.oracle == "terminates" and e.outcome == "hang"
    assert "vcpu0.tsc_timestamp" in e.hang and "20000 instructions" in e.hang
    assert "predates host step" in e.tsc


def test_the_limit_is_kept_in_the_finding_and_replay_uses_it(tmp_path):
    f = _hang(tmp_path, "spin", SPIN, 5_000)
    path = f.save(tmp_path / "hang.json")
    assert load_file(path)[0].scenario.max_insns == 5_000
    cmd = [sys.executable, "-m", "emu", "replay", str(path)]
    same = subprocess.run(cmd, capture_output=True, text=True)
    assert same.returncode == 1 and "5000 instructions" in same.stdout
    more = subprocess.run([*cmd, "--max-insns", "7000"], capture_output=True, text=True)
    assert more.returncode == 1 and "7000 instructions" in more.stdout
    bad = subprocess.run([*cmd, "--max-insns", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--max-insns" in bad.stderr
