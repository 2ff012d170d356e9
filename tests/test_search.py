"""The search strategies: PCT, exhaustive (bounded DFS with reduction), random, Hypothesis,
and their dispatch through `Fuzzer.fuzz` and `vdsofuzz fuzz --strategy`."""

from __future__ import annotations

import json
import random

import pytest

from emu.cli import main
from emu.engine.choice import Options, RunTask, is_agent_point
from emu.engine.executor import Executor
from emu.engine.scenario import Scenario
from emu.engine.scheduler import Default, Scheduler
from emu.search.exhaustive import ExhaustiveStrategy, Walk
from emu.search.fuzz import STRATEGIES, Fuzzer
from emu.search.pct import PctRun, PctStrategy, guarantee
from emu.search.random import RandomStrategy
from emu.search.schedule import parse_choice
from emu.search.strategy import Result

_EXECUTORS: dict[tuple, Executor] = {}


def campaign(image: str, host: str = "kvm", reads: int = 2, **kw) -> Fuzzer:
    key = (image, host, reads, tuple(sorted(kw.items())))
    if key not in _EXECUTORS:
        _EXECUTORS[key] = Executor(Scenario(image=image, host=host, reads=reads, **kw))
    ex = _EXECUTORS[key]
    return Fuzzer(ex.scenario, ex)


def options(*labels: str) -> Options:
    """The options of a decision point, written as their labels."""
    return tuple(parse_choice(label) for label in labels)


T0, T1, HOST = options("t0", "t1", "host")


# --- labels and the preemption / reduction bookkeeping -----------------------------------


def test_agent_points_and_action_points():
    assert is_agent_point(options("t0", "t1", "host"))
    assert not is_agent_point(options("stay", "t0>v1"))
    assert not is_agent_point(options("tsc", "tsc-1", "tsc-2"))


def test_walk_counts_preemptions_only_when_the_last_agent_could_go_on():
    w = Walk()
    opts = (T0, T1, HOST)
    assert w.cost(opts, 1) == 0  # nobody ran yet: who starts is free
    w = w.after(opts, 0)  # t0 ran
    assert w.cost(opts, 0) == 0
    assert w.cost(opts, 1) == 1  # t0 was still enabled
    assert w.cost((T1, HOST), 1) == 0  # t0 finished or was parked: free switch
    assert w.cost(options("stay", "t0>v1"), 1) == 1  # every action counts


def test_walk_prunes_switching_back_to_a_task_that_ran_since_the_last_host_step():
    opts = (T0, T1, HOST)
    w = Walk().after(opts, 0).after(opts, 1)  # t0, then t1 (no host step)
    assert w.last == T1 and w.ran == {T0, T1}
    assert w.pruned((T1, T0, HOST), 1)  # back to t0: reorders reads only
    assert not w.pruned((T1, T0, HOST), 2)  # the host is never pruned
    w2 = w.after((T1, T0, HOST), 2)  # the host steps: a new gap
    assert w2.ran == frozenset()
    assert not w2.pruned((HOST, T0, T1), 1)
    # An unseen host step: t0 reappears among the options (a vCPU was unparked).
    w3 = Walk().after(opts, 0).after((T1, HOST), 0)
    assert not w3.pruned((T1, T0, HOST), 1)


def test_walk_goes_on_unchanged_only_while_the_options_stay():
    opts = (T0, T1, HOST)
    w = Walk().after((T0, HOST), 0).after((T0, HOST), 0)  # t0 runs on, t1 parked
    assert w.after((T0, HOST), 0) is w
    # t1 is unparked by a host step the search did not see: the gap starts again.
    w2 = w.after(opts, 0)
    assert w2.prev == opts and w2.ran == {T0}
    assert not Walk(T0, 0, frozenset({T0, T1}), (T0, HOST)).after(opts, 0).pruned((T0, T1, HOST), 1)


def test_walk_ends_the_gap_at_an_action():
    opts = (T0, T1, HOST)
    w = Walk().after(opts, 0).after(opts, 1)
    moved = w.after(options("stay", "t0>v1"), 1)
    assert moved.ran == frozenset() and moved.last == T1 and moved.preemptions == 2
    assert w.after(options("stay", "t0>v1"), 0).ran == w.ran


# --- exhaustive -----------------------------------------------------------------------------


def test_exhaustive_finds_bug_no_retry_at_bound_1():
    out = campaign("bug-no-retry").fuzz(strategy="exhaustive", preemptions=1)
    assert out.verdict == "violation"
    assert out.finding.oracle == "consistent"
    assert out.stats["bound"] == 1 and not out.stats["complete"]
    assert any("violation after" in n for n in out.notes)


def test_exhaustive_verifies_modern_kvm_at_bound_1_with_a_stable_count():
    counts = []
    for _ in range(2):
        out = campaign("modern", reads=1).fuzz(strategy="exhaustive", preemptions=1)
        assert out.verdict == "pass"
        assert out.stats["complete"]
        assert any("verified within bound 1" in n for n in out.notes)
        counts.append(out.stats["interleavings"])
        assert out.schedules == out.stats["interleavings"]
    assert counts[0] > 1
    assert counts[0] == counts[1]


def test_exhaustive_bound_0_and_growth_with_the_bound():
    n = []
    for b in (0, 1, 2):
        out = campaign("modern", reads=1).fuzz(strategy="exhaustive", preemptions=b)
        assert out.stats["complete"]
        n.append(out.stats["interleavings"])
    assert 1 <= n[0] < n[1] < n[2]


def _explore(c: Fuzzer, bound: int, reduce: bool) -> tuple[int, set]:
    verdicts: set = set()
    s = ExhaustiveStrategy(bound, reduce)

    def run_one(sched):
        run, vs = c.run(sched)
        verdicts.add(tuple(sorted({v.oracle for v in vs})))
        return Result(False, run.points)

    s.explore(run_one, 10**6)
    assert s.complete
    return s.interleavings, verdicts


@pytest.mark.parametrize(
    "image,host", [("bug-no-odd-check", "kvm"), ("modern", "kvm-legacy-copy"), ("modern", "kvm")]
)
def test_reduction_prunes_but_reaches_the_same_verdicts(image, host):
    c = campaign(image, host=host, reads=1)
    reduced, v1 = _explore(c, 2, True)
    full, v2 = _explore(c, 2, False)
    assert reduced < full
    assert v1 == v2


def test_exhaustive_stops_at_the_budget_and_says_it_did_not_verify():
    out = campaign("modern").fuzz(strategy="exhaustive", preemptions=3, max_schedules=20)
    assert out.schedules == 20
    assert not out.stats["complete"]
    assert any("NOT verified" in n for n in out.notes)


# --- pct --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pct_finds_bug_no_odd_check_within_a_budget(seed):
    out = campaign("bug-no-odd-check").fuzz(strategy="pct", seed=seed, max_schedules=500)
    assert out.verdict == "violation"
    assert out.finding.oracle == "consistent"
    assert out.stats["depth"] == 3 and out.stats["agents"] == 3 and out.stats["k"] > 0
    note = next(n for n in out.notes if n.startswith("pct depth 3"))
    assert "1/(n·k^(d-1))" in note


def test_pct_guarantee():
    assert guarantee(3, 10, 1) == pytest.approx(1 / 3)
    assert guarantee(3, 10, 3) == pytest.approx(1 / 300)


def _drive(run: PctRun, n: int, agents=(T0, T1, HOST)) -> list:
    """Choices of `run` over `n` decision points where, as in the executor, option 0 is the
    agent that ran last."""
    out = []
    cur = agents[0]
    for i in range(n):
        opts = (cur,) + tuple(a for a in agents if a != cur)
        cur = opts[run.choose(i, opts, None)]
        out.append(cur)
    return out


def test_pct_run_follows_priorities_and_drops_at_change_points():
    assert len(set(_drive(PctRun(random.Random(5), depth=1, k=10), 10))) == 1
    checked = 0
    for seed in range(20):
        run = PctRun(random.Random(seed), depth=2, k=10)
        (cp,) = run.changes
        labels = _drive(run, 10)
        if cp == 0:
            continue
        # The highest-priority agent runs until the change point drops it below everyone.
        assert set(labels[:cp]) == {labels[0]}
        assert labels[cp] != labels[0]
        assert set(labels[cp:]) == {labels[cp]}
        checked += 1
    assert checked


def test_pct_treats_a_fairness_rotation_as_a_yield():
    run = PctRun(random.Random(1), depth=1, k=100)
    labels = _drive(run, 40)
    top = labels[0]
    assert set(labels) == {top}
    # The executor moved the default away from `top` (it ran 32 events in a row).
    rotated = tuple(o for o in (T0, T1, HOST) if o != top) + (top,)
    assert rotated[run.choose(40, rotated, None)] != top


def test_pct_action_points_take_the_default_off_change_points():
    run = PctRun(random.Random(3), depth=1, k=10)
    assert all(run.choose(i, options("stay", "t0>v1", "t1>v0"), None) == 0 for i in range(10))


def test_pct_strategy_rejects_depth_0():
    with pytest.raises(ValueError):
        PctStrategy(depth=0)


# --- random, hypothesis, dispatch ---------------------------------------------------------------


def test_random_strategy_stops_at_the_first_hit():
    calls = []

    def run_one(sched):
        calls.append(sched)
        return Result(len(calls) == 3, 10)

    RandomStrategy(seed=1).explore(run_one, 100)
    assert len(calls) == 3


def test_hypothesis_target_score_is_the_regression_size():
    c = campaign("bug-no-retry")
    out = c.fuzz(strategy="hypothesis", max_schedules=200)
    assert out.verdict == "violation"
    run, vs = c.replay(out.finding.schedule.choices)
    assert c.score(run, vs) > 0
    ok_run, ok_vs = campaign("modern").run(Default())
    assert not ok_vs
    s = campaign("modern").score(ok_run, ok_vs)
    assert s is not None and s < 0  # the closest margin between two ordered reads


def test_every_strategy_dispatches_and_reports_first_hit():
    assert set(STRATEGIES) == {"portfolio", "hypothesis", "random", "pct", "exhaustive", "dpor"}
    for name in STRATEGIES:
        out = campaign("bug-no-retry").fuzz(strategy=name, seed=0, max_schedules=300)
        assert out.verdict == "violation", name
        count, seconds = out.first_hit
        assert 1 <= count <= out.schedules and seconds >= 0
    with pytest.raises(ValueError):
        campaign("bug-no-retry").fuzz(strategy="nope")


def test_cli_exhaustive_says_verified(capsys, tmp_path):
    rc = main(
        [
            "fuzz",
            "--image",
            "modern",
            "--host",
            "kvm",
            "--reads",
            "1",
            "--strategy",
            "exhaustive",
            "--preemptions",
            "1",
            "--out",
            str(tmp_path),
            "--no-db",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0
    assert "verified within bound 1" in text
    assert "interleavings covered" in text


def test_cli_pct_with_depth(capsys, tmp_path):
    rc = main(
        [
            "fuzz",
            "--image",
            "bug-no-odd-check",
            "--host",
            "kvm",
            "--strategy",
            "pct",
            "--depth",
            "2",
            "--max-schedules",
            "2000",
            "--out",
            str(tmp_path),
            "--no-db",
            "--no-trace",
            "--json",
        ]
    )
    d = json.loads(capsys.readouterr().out)
    assert rc == 1 and d["verdict"] == "violation"
    assert d["stats"]["depth"] == 2


def test_point_info_host_commutes_only_with_disjoint_loads():
    from emu.engine.scheduler import PointInfo

    load = ("load", 0x1000, 4)
    t0 = RunTask(0)
    assert PointInfo(t0, load, ((0x1008, 0x1010),)).host_commutes()
    assert not PointInfo(t0, load, ((0x1002, 0x1003),)).host_commutes()
    assert not PointInfo(t0, load, None).host_commutes()  # parks or retunes: conflicts
    assert not PointInfo(t0, ("rdtsc", 0, 0), ((0x1008, 0x1010),)).host_commutes()


def test_executor_tells_an_info_scheduler_the_pending_load_and_the_host_writes():
    from emu.engine.scheduler import PointInfo

    c = campaign("modern", host="kvm", reads=1)
    lo, hi = c.executor.shared
    seen: list[tuple[Options, PointInfo]] = []

    class Spy(Scheduler):
        wants_info = True

        def choose(self, index, options, info):
            seen.append((options, info))
            return len(options) - 1 if index == 3 else 0

    c.run(Spy())
    loads = [i for _, i in seen if i.op and i.op[0] == "load"]
    assert loads and all(lo <= i.op[1] < hi and i.task for i in loads)
    writes = [i.host_writes for _, i in seen if i.host_writes]
    assert writes and all(lo <= a < b <= hi for w in writes for a, b in w)


def test_exhaustive_prunes_commuting_host_steps_at_bound_2():
    c = campaign("modern", host="kvm", reads=1)
    s = ExhaustiveStrategy(bound=2)

    def run_one(sched):
        run, vs = c.run(sched)
        return Result(bool(vs), run.points)

    s.explore(run_one, 10**6)
    assert s.complete and not s.violated
    assert s.stats["commuted"] > 0
