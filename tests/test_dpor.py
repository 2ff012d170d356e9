"""`dpor`: dependence, soundness against brute force, spin-assume, catalog bugs, checkpoints
and subtrees.

Soundness is checked on scenarios where brute force (`exhaustive` without reduction)
terminates: `bug-no-retry` (a reader with no retry loop: six loads and a TSC read, whose
torn reads the oracles flag) and `modern`, 2 vCPUs x 1 read at bounds 1-3 and 3 vCPUs x 1
read at bound 1. An outcome is each read's ending, the oracles that flag it, and which host
step each load of its returned attempt read (by the step's index, which equivalent runs
share). A retried attempt's loads are not part of it: in `dpor` a task that retries is
stuck and its run counts no class (retry-assume, emu/search/dpor_spin.py); the search
explores the equivalent run without the retry instead, which
the oracles judge the same (emu/search/dependence.py says why); the comparisons show that
nothing an oracle flags in brute force's runs is missing from `dpor`'s.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emu.engine.executor import Executor
from emu.engine.run import Op, Read, Run
from emu.engine.scenario import Scenario
from emu.errors import UsageError
from emu.oracles import Violation
from emu.search import catalog, dpor_sched
from emu.search.dependence import HOST, Event, dependent
from emu.search.dpor import DporStrategy
from emu.search.dpor_checkpoint import subtrees
from emu.search.dpor_trace import Trace
from emu.search.exhaustive import ExhaustiveStrategy
from emu.search.fuzz import Fuzzer
from emu.search.strategy import Result, Strategy

ROOT = Path(__file__).resolve().parent.parent
_EXECUTORS: dict[tuple[str, int, int], Executor] = {}

Outcome = tuple[tuple[str, str, frozenset[str], frozenset[tuple[int, int]]], ...]


def campaign(image: str, vcpus: int = 2, reads: int = 1) -> Fuzzer:
    key = (image, vcpus, reads)
    if key not in _EXECUTORS:
        sc = Scenario(image=image, host="kvm", host_params={"updates": 1}, vcpus=vcpus, reads=reads)
        _EXECUTORS[key] = Executor(sc)
    ex = _EXECUTORS[key]
    return Fuzzer(ex.scenario, ex)


def outcome(run: Run, violations: list[Violation], pages: dict[str, int]) -> Outcome:
    """Per read: label, ending, flagging oracles, and (load site, index of the host step
    that last wrote the loaded address before the load; -1: the boot image) for the loads
    of its returned attempt."""
    writes = []
    for k, e in enumerate(run.host):
        ranges = [(pages[w.page] + w.offset, len(w.data)) for w in e.step.writes]
        if ranges:
            writes.append((e.t, k, ranges))
    out = []
    for r in run.reads:
        srcs = set()
        for op in r.last_attempt():
            if op.kind == "load":
                src = -1
                for t, k, ranges in writes:
                    if t < op.t and any(lo <= op.arg < lo + n for lo, n in ranges):
                        src = k
                srcs.add((op.pc, src))
        flagged = frozenset(v.oracle for v in violations if r.label in v.reads)
        out.append((r.label, r.outcome, flagged, frozenset(srcs)))
    return tuple(sorted(out))


def outcomes(c: Fuzzer, strategy: Strategy) -> set[Outcome]:
    pages = c.executor.machine.layout.pages
    seen: set[Outcome] = set()

    def run_one(s):
        run, vs = c.run(s)
        seen.add(outcome(run, vs, pages))
        return Result(False, run.points)

    strategy.explore(run_one, 10**9)
    return seen


def reads_from(found: set[Outcome]) -> set[tuple]:
    return {tuple((label, end, srcs) for label, end, _, srcs in o) for o in found}


def verdicts(found: set[Outcome]) -> set[frozenset]:
    return {frozenset((label, o) for label, _, flagged, _ in run for o in flagged) for run in found}


def flagged(found: set[Outcome]) -> set[tuple]:
    return {(label, srcs, o) for run in found for label, _, f, srcs in run for o in f}


# --- dependence ---------------------------------------------------------------------------


def _load(task: int, lo: int, hi: int, **kw: bool) -> Event:
    return Event(task, "load", task, lo, hi, **kw)


def _host(writes=(), control=frozenset(), pub=False, plans=False) -> Event:
    return Event(
        HOST,
        "host",
        writes=tuple(writes),
        control=frozenset(control),
        publishes=pub,
        plans=plans,
    )


def test_loads_conflict_only_with_overlapping_host_stores():
    store = _host([(8, 16)])
    assert dependent(_load(0, 8, 16), store)
    assert dependent(store, _load(1, 12, 13))
    assert not dependent(_load(0, 0, 4), store)
    assert not dependent(_load(0, 16, 24), store)
    assert not dependent(_load(0, 8, 16), _load(1, 8, 16))  # loads never conflict


def test_control_steps_conflict_with_their_vcpus_ops():
    park = _host(control={1})
    assert dependent(_load(1, 100, 104), park)
    assert not dependent(_load(0, 100, 104), park)
    assert dependent(Event(1, "rdpid", 1), park)
    assert not dependent(Event(0, "rdpid", 0), park)


def test_clock_reads_conflict_with_publications_and_plans_not_with_each_other():
    assert dependent(Event(0, "rdtsc", 0), _host([(8, 16)], plans=True))
    assert dependent(Event(0, "syscall", 0), _host(pub=True))
    # A field store in the middle of an update moves neither the record nor the plan.
    assert not dependent(Event(0, "rdtsc", 0), _host([(8, 16)]))
    assert not dependent(Event(0, "rdtsc", 0), _host(control={1}))
    # Only monotonic compares across tasks, and only reads one of which ended first: their
    # boundaries are dependent (below), the clock reads inside them need not be.
    assert not dependent(Event(0, "rdtsc", 0), Event(1, "rdtscp", 1))
    assert not dependent(Event(0, "rdtsc", 0), _load(1, 0, 4))


def test_read_boundaries_conflict_across_tasks():
    assert dependent(_load(0, 0, 4, last=True), _load(1, 0, 4, first=True))
    assert dependent(_load(0, 0, 4, first=True), _load(1, 0, 4, last=True))
    assert not dependent(_load(0, 0, 4, first=True), _load(1, 0, 4, first=True))


def _random_events(rng: random.Random, n: int) -> list[Event]:
    fields = [(0, 4), (4, 8), (8, 16), (16, 24), (0, 8)]
    out = []
    for _ in range(n):
        agent = rng.choice([HOST, 0, 1, 2])
        if agent == HOST:
            out.append(
                Event(
                    HOST,
                    "host",
                    writes=tuple(rng.sample(fields, rng.randint(0, 2))),
                    control=frozenset(rng.sample([0, 1, 2], rng.randint(0, 1))),
                    publishes=rng.random() < 0.2,
                    plans=rng.random() < 0.2,
                )
            )
        else:
            kind = rng.choice(["load", "load", "rdtsc", "syscall", "rdpid"])
            lo, hi = rng.choice(fields) if kind == "load" else (0, 0)
            first, last = rng.random() < 0.2, rng.random() < 0.2
            out.append(Event(agent, kind, rng.randint(0, 2), lo, hi, first, last))
    return out


def test_the_traces_indexes_find_exactly_the_dependent_predecessors():
    """`Trace` looks up predecessors by index instead of testing every earlier event;
    it must find exactly the events `dependent` names, after a truncation too."""
    rng = random.Random(7)
    for _ in range(200):
        events = _random_events(rng, 30)
        tr = Trace()
        for e in events[:20]:
            tr.append(e)
        tr.truncate(rng.randint(0, 20))
        for e in events[len(tr.events) : 30]:
            tr.append(e)
        for j, e in enumerate(tr.events):
            earlier = tr.events[:j]
            want = [k for k, d in enumerate(earlier) if d.agent != e.agent and dependent(d, e)]
            mine = [k for k, d in enumerate(earlier) if d.agent == e.agent]
            assert tr.direct[j] == want + mine[-1:]
            reach = 0
            for k in tr.direct[j]:
                reach |= tr.hb[k] | (1 << k)
            assert tr.hb[j] == reach


# --- soundness against brute force ----------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "vcpus", "bound", "reads"),
    [
        ("bug-no-retry", 2, 1, 1),
        ("bug-no-retry", 2, 2, 1),
        ("bug-no-retry", 2, 3, 1),
        ("bug-no-retry", 3, 1, 1),
        ("bug-no-retry", 2, 2, 2),
        ("modern", 2, 1, 1),
        ("modern", 2, 2, 1),
        ("modern", 2, 3, 1),
        ("modern", 3, 1, 1),
        ("modern", 2, 2, 2),
    ],
)
def test_bounded_dpor_sees_what_brute_force_sees(image, vcpus, bound, reads):
    """With 2 reads per vCPU one task's second read can run while the other's first is
    open, and the sleep sets under the bound prune across both."""
    c = campaign(image, vcpus, reads)
    brute = outcomes(c, ExhaustiveStrategy(bound, reduce=False))
    dpor = outcomes(c, DporStrategy(bound))
    assert reads_from(dpor) == reads_from(brute)
    assert verdicts(dpor) == verdicts(brute)
    assert flagged(brute) <= flagged(dpor)
    assert dpor <= brute  # nothing beyond the bound


@pytest.mark.parametrize("reads", [1, 2])
def test_dpor_with_speculative_tscs_sees_what_brute_force_sees(reads):
    """A speculative rdtsc in a retry can return the TSC of the attempt before, from before
    the host planned the record the retry reads: attempts are not independent, so `dpor`
    spin-blocks a retrying task instead of taking its retry as stuck (retry-assume). So
    built (from the scenario, as Fuzzer builds it) it flags what brute force flags at
    bound 2; retry-assume would lose those classes, so it is refused."""
    entry = next(e for e in catalog.load() if e.name == "bug-unfenced-rdtsc/speculative-tsc")
    sc = dataclasses.replace(entry.scenario, reads=reads)
    assert not sc.independent_attempts
    c = Fuzzer(sc)
    brute = outcomes(c, ExhaustiveStrategy(2, reduce=False))
    dpor = outcomes(c, DporStrategy(2, assume_retries=sc.independent_attempts))
    assert reads_from(dpor) == reads_from(brute)
    assert verdicts(dpor) == verdicts(brute)
    assert flagged(brute) <= flagged(dpor)
    assert any(o == "consistent" for _, _, o in flagged(brute))
    with pytest.raises(UsageError, match="assume_retries"):
        outcomes(c, DporStrategy(2))


@pytest.mark.parametrize("bound", [1, 2])
@pytest.mark.parametrize("image", ["percpu", "bug-percpu-no-recheck"])
def test_dpor_with_task_migrations_sees_what_brute_force_sees(image, bound):
    """A migration in the middle of a per-CPU read makes a correct reader retry, which
    blocks the run: the class where the read runs whole on the new CPU is found from the
    migration point before it. After a retry no migration point offers its alternatives
    (every run through there has the retry), as no race there is reversed."""
    sc = Scenario(image=image, host="unsynced-tsc", vcpus=2, reads=1, task_migration=True)
    c = Fuzzer(sc)
    brute = outcomes(c, ExhaustiveStrategy(bound, reduce=False))
    dpor = outcomes(c, DporStrategy(bound))
    assert reads_from(dpor) == reads_from(brute)
    assert verdicts(dpor) == verdicts(brute)
    assert flagged(brute) <= flagged(dpor)


def test_unbounded_dpor_finds_the_task_migration_bug():
    """Migration points after a retry used to offer every alternative: the unbounded
    search spent more than 10,000 executions below retries, counting no class, before
    it reached the ABA migration of the per-CPU reader (about 200 now)."""
    e = next(x for x in catalog.load() if x.name == "percpu/unsynced-tsc-task-migration")
    o = Fuzzer(e.scenario).fuzz(strategy="dpor", preemptions=None, max_schedules=1000)
    assert o.verdict == "violation" and o.finding is not None
    assert o.finding.oracle in e.oracles


@pytest.mark.parametrize("image", ["bug-no-retry", "modern"])
def test_unbounded_dpor_covers_brute_force_and_fewer_runs(image):
    c = campaign(image)
    brute = outcomes(c, ExhaustiveStrategy(2, reduce=False))
    strat = DporStrategy(None)
    dpor = outcomes(c, strat)
    assert reads_from(brute) <= reads_from(dpor)
    assert verdicts(brute) <= verdicts(dpor)
    assert flagged(brute) <= flagged(dpor)
    assert strat.complete and strat.redundant == 0
    assert "verified: every interleaving" in strat.notes[-1]


def test_bounded_sleep_sets_keep_only_the_cheaper_siblings(monkeypatch):
    """Under a bound an agent explored at a point sleeps below a sibling only if it cost
    less there (emu/search/dpor_sched.py `sleepers` says why). Letting every explored
    agent sleep loses classes whose only members within the bound are pruned."""
    c = campaign("bug-no-retry")
    brute = outcomes(c, ExhaustiveStrategy(2, reduce=False))
    monkeypatch.setattr(dpor_sched, "sleepers", lambda node, bound, vcpus: node.explored)
    assert reads_from(outcomes(c, DporStrategy(2))) != reads_from(brute)


def test_bounded_dpor_explores_a_fifth_of_exhaustive_on_the_reference_scenario(monkeypatch):
    """modern + kvm updating vCPU 0, 2 vCPUs x 1 read (the README's reduction table): at
    bounds 2 and 3 dpor explores at most a fifth of the interleavings `exhaustive` does,
    and without sleep sets it would not at bound 2."""
    sc = Scenario(image="modern", host="kvm", host_params={"updates": 1, "vcpu": 0}, reads=1)
    fz = Fuzzer(sc)

    def runs(strategy: str, bound: int) -> int:
        stats = fz.fuzz(strategy=strategy, preemptions=bound, max_schedules=10**6).stats
        assert stats["complete"]
        return stats["executions" if strategy == "dpor" else "interleavings"]

    for bound in (2, 3):
        assert 5 * runs("dpor", bound) <= runs("exhaustive", bound)
    monkeypatch.setattr(dpor_sched, "sleepers", lambda node, bound, vcpus: {})
    assert 5 * runs("dpor", 2) > runs("exhaustive", 2)


def _read(*pcs: int) -> Read:
    return Read(0, 0, 0, ops=[Op(t, 0, 0, "load", pc) for t, pc in enumerate(pcs)])


def _pcs(read: Read) -> list[int]:
    return [op.pc for op in read.last_attempt()]


def test_a_retry_is_a_loop_back_and_its_iterations_are_dropped():
    assert _pcs(_read(1, 2, 3)) == [1, 2, 3] and _read(1, 2, 3).first_retry() is None
    r = _read(1, 2, 3, 1, 2, 3)
    assert r.last_attempt() == r.ops[3:] and r.first_retry() == 3
    assert _pcs(_read(4, 4, 4, 6)) == [4, 6]  # a spin on one load
    # Code laid out with the loop head above the body: the head's address repeats first.
    r = _read(9, 10, 3, 5, 9, 10, 3, 5)
    assert r.last_attempt() == r.ops[4:] and r.first_retry() == 4
    # A nested loop's retry (2, 5 again) keeps the outer attempt's first load.
    r = _read(1, 2, 5, 2, 5, 7)
    assert r.last_attempt() == [r.ops[0], *r.ops[3:]] and r.first_retry() == 3
    r = _read(1, 2, 5, 2, 5, 7, 1, 2, 5, 7)
    assert r.last_attempt() == r.ops[6:] and r.first_retry() == 3


@pytest.mark.parametrize("assume_retries", [True, False])
def test_retry_and_spin_assume_make_unbounded_seqlock_verification_finite(assume_retries):
    # One vCPU that stays in guest mode during the update: the reader spins on the odd
    # version for as long as the host lets it, which without either assume has no end.
    sc = Scenario(image="modern", host="kvm", host_params={"park": 0}, vcpus=1, reads=1)
    strat = DporStrategy(None, assume_retries=assume_retries)
    found = outcomes(Fuzzer(sc), strat)
    assert strat.complete and not strat.violated
    assert "verified: every interleaving" in strat.notes[-1]
    # Every read returned (no attempt spun for ever), and nothing was flagged.
    assert all(end == "value" and not f for o in found for _, end, f, _ in o)
    assert len(strat.classes) + strat.blocked == strat.executions
    # Retry-assume blocks every run with a retry, and leaves one run per class.
    assert (strat.retried > 0) == assume_retries


def test_exhaustive_without_a_bound_runs_dpor():
    out = campaign("bug-no-retry").fuzz(strategy="exhaustive", preemptions=None)
    assert out.verdict == "violation"
    assert out.notes[0].startswith("exhaustive: violation after")


@pytest.mark.parametrize(
    "name",
    [e.name for e in catalog.load() if e.expect == catalog.VIOLATION],
)
def test_dpor_finds_every_catalog_bug(name):
    entry = next(e for e in catalog.load() if e.name == name)
    out = Fuzzer(entry.scenario).fuzz(strategy="dpor", max_schedules=5000, preemptions=2)
    assert out.verdict == "violation"
    assert out.finding is not None
    run, vs = Fuzzer(entry.scenario).replay(out.finding.schedule.choices)
    assert any(v.oracle == out.finding.oracle for v in vs)  # the shrunk schedule replays


# --- subtrees and checkpoints --------------------------------------------------------------


def test_subtrees_cover_the_whole_search():
    c = campaign("bug-no-retry")
    whole = outcomes(c, DporStrategy(None))

    def probe(s):
        run, vs = c.run(s)
        return Result(False, run.points)

    prefixes = subtrees(probe, 2)
    assert len(prefixes) >= 4
    parts: set[Outcome] = set()
    for p in prefixes:
        parts |= outcomes(c, DporStrategy(None, prefix=p))
    assert reads_from(parts) == reads_from(whole)
    assert flagged(parts) == flagged(whole)


def _verify(checkpoint: Path, out: Path) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        "-m",
        "emu",
        "fuzz",
        "--image",
        "modern",
        "--host",
        "kvm",
        "--param",
        "park=0",
        "--vcpus",
        "2",
        "--reads",
        "2",
        "--strategy",
        "dpor",
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--no-db",
        "--json",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


def test_checkpoint_survives_sigkill_and_resumes_to_the_same_count(tmp_path):
    full = _verify(tmp_path / "full.json", tmp_path)
    whole = json.loads(full.communicate(timeout=600)[0])["stats"]
    ck = tmp_path / "ck.json"
    proc = _verify(ck, tmp_path)
    deadline = time.monotonic() + 300
    while not ck.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = json.loads(ck.read_text())
    assert not saved["complete"] and saved["executions"] < whole["executions"]
    resumed = json.loads(_verify(ck, tmp_path).communicate(timeout=600)[0])["stats"]
    for key in ("executions", "classes", "blocked", "redundant", "complete"):
        assert resumed[key] == whole[key], key


# --- the default portfolio -----------------------------------------------------------------


def test_portfolio_is_the_default_and_deterministic():
    from emu.search.registry import STRATEGIES

    assert STRATEGIES[0] == "portfolio"
    runs = []
    for _ in range(2):
        c = Fuzzer(Scenario(image="bug-no-odd-check", host="kvm"))
        out = c.fuzz(strategy="portfolio", seed=3, max_schedules=2000)
        assert out.verdict == "violation"
        runs.append((out.first_hit[0], out.finding.schedule.compact(), out.stats["phases"]))
    assert runs[0] == runs[1]


def test_checkpoint_with_another_strategy_is_bad_input(tmp_path, capsys):
    from emu.cli import main

    argv = ["fuzz", "--image", "modern", "--strategy", "random", "--no-db"]
    rc = main(argv + ["--checkpoint", str(tmp_path / "ck.json"), "--out", str(tmp_path)])
    assert rc == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_exhaustive_resumed_in_slices_makes_the_same_runs(monkeypatch):
    """The portfolio resumes one bounded search across explore calls, with random walks
    on the same executor in between: run in slices of 3, it makes the same runs, in the
    same order, as in one call with every run from the start (its snapshots survive the
    walks), and then completes."""
    from emu.search.exhaustive import ExhaustiveStrategy, Guided
    from emu.search.random import RandomWalk
    from emu.search.strategy import Result

    # i386: the reader takes its arguments on the stack, which a resumed run restores.
    c = Fuzzer(Scenario(image="modern-i386", host="kvm", host_params={"updates": 1}, reads=2))

    def search(slice_: int) -> list[tuple]:
        made: list[tuple] = []

        def run_one(sched):
            run, _ = c.run(sched)
            made.append((tuple(run.choices), run.outcome()))
            return Result(False, run.points)

        s = ExhaustiveStrategy(1)
        for i in range(100):  # a search that restarted on each call would never end
            if s.complete:
                break
            s.explore(run_one, s.interleavings + slice_)
            c.run(RandomWalk(i, preempt=0.5))
        assert s.complete and s.interleavings == len(made)
        return made

    with monkeypatch.context() as m:
        m.setattr(Guided, "start_from", lambda self: None)
        whole = search(10**6)
    assert len(whole) > 6 and len(set(whole)) == len(whole)
    assert search(3) == whole


def test_portfolio_splits_its_first_rounds_about_evenly_in_time():
    """On a scenario without a bug: one walk, then rounds of the bounded search's runs
    (s) and walks (w) as `ROUNDS` and `LATER` give them; the fourth round gives the
    bounded search two runs (that start from a snapshot, about half a walk each)."""
    from emu.search.portfolio import PortfolioStrategy
    from emu.search.random import RandomWalk
    from emu.search.strategy import Result

    c = Fuzzer(Scenario(image="modern", host="kvm", host_params={"updates": 1}, reads=1))
    kinds: list[str] = []

    def run_one(sched):
        kinds.append("w" if isinstance(sched, RandomWalk) else "s")
        return Result(False, c.run(sched)[0].points)

    PortfolioStrategy(seed=0).explore(run_one, 16)
    assert "".join(kinds) == "w" + "sw" + "sw" + "sw" + "ssw" + "sww" + "sww"


def test_portfolio_interleaves_walks_and_the_bounded_search():
    """A bug the bounded search finds in a few runs and random walks rarely find (the
    unfenced rdtsc): the portfolio gets there with both phases having run, and within
    the bounded search's runs plus about two walks per run."""
    entry = next(e for e in catalog.load() if e.name == "bug-unfenced-rdtsc/speculative-tsc")
    alone = Fuzzer(entry.scenario).fuzz(strategy="exhaustive", max_schedules=10_000)
    out = Fuzzer(entry.scenario).fuzz(strategy="portfolio", seed=0, max_schedules=10_000)
    assert alone.first_hit is not None and out.first_hit is not None
    phases = out.stats["phases"]
    assert phases["exhaustive"] == alone.first_hit[0]
    assert 0 < phases["random"] <= 2 * phases["exhaustive"]
    assert out.first_hit[0] == phases["exhaustive"] + phases["random"]
