"""The native lane: it is built and used, a run is the same with or without it, and the
executor still works (in Python) when it cannot be built."""

from __future__ import annotations

import random

import pytest
from conftest import DEBIAN, needs_running_vdso, needs_samples

from emu.engine import lane
from emu.engine.choice import Options, RunHost, RunTask
from emu.engine.executor import Executor
from emu.engine.scenario import Scenario
from emu.engine.scheduler import Default, PointInfo, Scheduler
from emu.errors import ScheduleError
from emu.image.dump import dump_running_vdso
from emu.oracles import judge
from emu.search.dpor import DporStrategy
from emu.search.exhaustive import ExhaustiveStrategy
from emu.search.hypothesis import Plan
from emu.search.pct import PctRun
from emu.search.random import RandomWalk
from emu.search.replay import Replay
from emu.search.strategy import Result

IMAGES = [
    "modern",
    "modern-i386",
    "modern-rdtscp",
    "modern-x86_64-clang-O0",
    "bug-no-odd-check",
    "vcpu0",
    "percpu",
    "percpu-rdpid",
    "percpu-rdpid-i386",
]

_PAIRS: dict[str, tuple[Executor, Executor]] = {}


def pair(image: str, **kw) -> tuple[Executor, Executor]:
    """(with the lane, without it) for one scenario."""
    key = f"{image} {sorted(kw.items())}"
    if key not in _PAIRS:
        sc = Scenario(image=image, **kw)
        _PAIRS[key] = (Executor(sc), Executor(sc, native=False))
    return _PAIRS[key]


def test_the_lane_is_built_with_the_system_compiler():
    assert lane.library() is not None, (
        f"the native lane is unavailable ({lane.unavailable}); .ci/run installs gcc"
    )


def test_the_lane_takes_most_visible_operations_off_python():
    native, python = pair("modern", host="kvm", host_params={"updates": 1})
    assert native.native and not python.native
    before = native.dispatches
    run = native.run(Default())
    ops = sum(len(r.ops) for r in run.reads)
    # Without preemptions, Python sees each read's first operation and the host's turns.
    assert native.dispatches - before < ops / 3
    assert python.dispatches == 0  # the Python path has no lane to dispatch from


@pytest.mark.parametrize("image", IMAGES)
def test_runs_are_the_same_with_and_without_the_lane(image):
    native, python = pair(image, host="kvm", host_params={"updates": 2})
    rng = random.Random(image)
    # 9 images x 200 schedules of four kinds: random walks, Hypothesis-style plans, PCT
    # runs, and replays of what the random walks chose
    for seed in range(200):
        walk = RandomWalk(seed, preempt=0.3)
        a = native.run(walk)
        b = python.run(RandomWalk(seed, preempt=0.3))
        assert a.outcome() == b.outcome(), f"random walk {seed}"
        plan = [(rng.randrange(60), rng.randrange(1, 9)) for _ in range(rng.randrange(6))]
        assert native.run(Plan(plan)).outcome() == python.run(Plan(plan)).outcome(), plan
        depth = 1 + seed % 4
        a = native.run(PctRun(random.Random(seed), depth, 60))
        assert a.outcome() == python.run(PctRun(random.Random(seed), depth, 60)).outcome()
        assert native.run(Replay(a.choices)).outcome() == a.outcome()


@pytest.mark.parametrize(
    "host,params",
    [
        ("kvm-legacy-copy", {}),
        ("kvm-masterclock", {"masterclock": 0}),
        ("unsynced-tsc", {}),
        ("kvm", {"tsc_hz": 3_000_000_000, "tsc_jump": 5000}),
        ("xen", {}),
    ],
)
def test_hosts_that_park_retune_and_tear_give_the_same_runs(host, params):
    native, python = pair("modern", host=host, host_params=params)
    for seed in range(150):
        a = native.run(RandomWalk(seed, preempt=0.25))
        b = python.run(RandomWalk(seed, preempt=0.25))
        assert a.outcome() == b.outcome(), f"{host} seed {seed}"


@pytest.mark.parametrize(
    ("image", "host", "params", "vcpus", "reads", "bound"),
    [
        ("modern", "kvm", {"updates": 1}, 2, 1, 2),
        ("bug-no-retry", "kvm", {"updates": 1, "park": 0}, 2, 1, 2),
        ("modern", "kvm-migration", {}, 2, 1, 2),
        ("hyperv", "hyperv", {"updates": 1}, 2, 1, 2),
        ("modern", "kvm", {"updates": 1}, 3, 1, 1),
        ("modern-i386", "kvm", {"updates": 1}, 2, 2, 1),
    ],
)
@pytest.mark.parametrize("strategy", ["exhaustive", "dpor"])
def test_searches_that_want_info_make_the_same_search_with_the_lane(
    image, host, params, vcpus, reads, bound, strategy
):
    """The bounded search wants a `PointInfo` at every point it may branch at, and lets the
    lane run the rest (its followed prefix, everything past its last preemption); `dpor`
    lets it run a blocked run's rest. Every run, verdict and count is the Python path's,
    and the lane keeps a share of the operations off Python."""
    sc = Scenario(image=image, host=host, host_params=params, vcpus=vcpus, reads=reads)

    def search(ex: Executor) -> tuple[list[object], tuple[object, ...], int]:
        runs: list[object] = []
        ops = 0

        def run_one(s: Scheduler) -> Result:
            nonlocal ops
            run = ex.run(s)
            runs.append((run.outcome(), [(v.oracle, v.reads) for v in judge(run, sc)]))
            ops += sum(len(r.ops) for r in run.reads)
            return Result(False, run.points)

        if strategy == "exhaustive":
            e = ExhaustiveStrategy(bound)
            e.explore(run_one, 10**9)
            assert e.complete
            return runs, (e.interleavings, e.pruned, e.commuted), ops
        d = DporStrategy(bound, assume_retries=sc.independent_attempts)
        d.explore(run_one, 10**9)
        assert d.complete
        return runs, (d.executions, len(d.classes), d.blocked, d.redundant), ops

    native, python = Executor(sc), Executor(sc, native=False)
    a, b = search(native), search(python)
    assert a[:2] == b[:2]
    # exhaustive: most of a run is past its last preemption; dpor: most runs end blocked
    share = 1 / 3 if strategy == "exhaustive" else 2 / 3
    assert native.dispatches < a[2] * share, (native.dispatches, a[2])


@needs_samples
def test_a_real_vdso_gives_the_same_runs():
    native, python = pair(str(DEBIAN[0]), host="kvm-legacy-copy")
    for seed in range(100):
        a = native.run(RandomWalk(seed, preempt=0.25))
        assert a.outcome() == python.run(RandomWalk(seed, preempt=0.25)).outcome()


def test_ctrl_c_in_a_decision_is_not_swallowed():
    native, _ = pair("modern", host="kvm", host_params={"updates": 1})

    class Interrupt(Scheduler):
        def quiet_until(self, index: int, options: Options) -> int:
            return 5

        def choose(self, index: int, options: Options, info: PointInfo | None) -> int:
            if index >= 5:
                raise KeyboardInterrupt
            return 0

    with pytest.raises(KeyboardInterrupt):
        native.run(Interrupt())
    # and the executor is sound afterwards
    python = pair("modern", host="kvm", host_params={"updates": 1})[1]
    for seed in range(5):
        a = native.run(RandomWalk(seed, preempt=0.3))
        assert a.outcome() == python.run(RandomWalk(seed, preempt=0.3)).outcome()


def test_without_a_compiler_the_executor_runs_in_python(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lane.library.cache_clear()
    try:
        assert lane.library() is None
        assert "no-such-cc" in lane.unavailable
        sc = Scenario(image="bug-no-odd-check", host="kvm")
        ex = Executor(sc)
        assert not ex.native
        reference = pair("bug-no-odd-check", host="kvm")[0]
        for seed in range(20):
            a = ex.run(RandomWalk(seed, preempt=0.3))
            assert a.outcome() == reference.run(RandomWalk(seed, preempt=0.3)).outcome()
    finally:
        monkeypatch.undo()
        lane.library.cache_clear()
    assert lane.library() is not None


AGENTS = (RunTask(0), RunTask(1), RunTask(2), RunHost())


def _walk(scheduler, rng: random.Random, n: int) -> tuple[list[Options], list[int]]:
    """Ask `scheduler` at every point as a run would: the default is the agent chosen last,
    the runnable set changes now and then. (the options offered, the choices)."""
    seq, out = [], []
    enabled = list(AGENTS)
    last = AGENTS[0]
    for index in range(n):
        if rng.random() < 0.1:
            enabled = rng.sample(AGENTS, rng.randrange(2, len(AGENTS) + 1))
        default = last if last in enabled and rng.random() < 0.95 else enabled[0]
        options = (default,) + tuple(a for a in enabled if a != default)
        k = scheduler.choose(index, options, None)
        seq.append(options)
        out.append(k)
        last = options[k]
    return seq, out


def _skipping(scheduler, seq: list[Options]) -> tuple[list[int], int]:
    """The same points asked the way the executor's lane does: not at all while the
    scheduler said it is quiet and the options have not changed. (choices, points skipped)"""
    out = []
    skipped = 0
    until, offered = -1, None
    for index, options in enumerate(seq):
        if index < until and options == offered:
            out.append(0)
            skipped += 1
            continue
        until = scheduler.quiet_until(index, options)
        assert until >= index
        if until > index:
            offered = options
            out.append(0)
            skipped += 1
            continue
        out.append(scheduler.choose(index, options, None))
    return out, skipped


def _make(kind: str, trial: int, n: int):
    r = random.Random(trial)
    if kind == "random":
        return RandomWalk(trial, preempt=r.choice([0.0, 0.05, 0.3, 1.0]))
    if kind == "plan":
        return Plan([(r.randrange(n), r.randrange(1, 9)) for _ in range(r.randrange(8))])
    if kind == "replay":
        picks = {r.randrange(n) for _ in range(r.randrange(6))}
        return Replay([(i, r.choice(AGENTS)) for i in sorted(picks)])
    if kind == "pct":
        return PctRun(random.Random(trial), r.randrange(1, 5), n)
    return Default()


@pytest.mark.parametrize("kind", ["random", "plan", "replay", "pct", "default"])
def test_schedulers_choose_the_same_when_quiet_points_are_skipped(kind):
    quiet = 0
    for trial in range(300):
        n = random.Random(-trial).randrange(1, 120)
        try:
            seq, every = _walk(_make(kind, trial, n), random.Random(trial), n)
        except ScheduleError:
            continue  # a replay that does not fit the walk
        got, skipped = _skipping(_make(kind, trial, n), seq)
        assert got == every, f"trial {trial}"
        quiet += skipped
    assert quiet > 1000  # the lane has points to run


def test_random_walk_preempts_at_its_rate():
    hits = 0
    total = 0
    for seed in range(200):
        walk = RandomWalk(seed, preempt=0.2)
        for index in range(100):
            total += 1
            hits += walk.choose(index, (RunTask(0), RunTask(1), RunHost()), None) != 0
    assert 0.17 < hits / total < 0.23


@needs_running_vdso
@pytest.mark.parametrize("host,timekeeping", [("kvm-legacy-copy", 0), ("kvm", 2)])
def test_the_running_kernels_vdso_gives_the_same_runs(tmp_path_factory, host, timekeeping):
    dump = dump_running_vdso(tmp_path_factory.mktemp("vdso"))
    sc = Scenario(image=str(dump), host=host, timekeeping=timekeeping)
    native, python = Executor(sc), Executor(sc, native=False)
    assert native.native
    for seed in range(100):
        a = native.run(RandomWalk(seed, preempt=0.25))
        assert a.outcome() == python.run(RandomWalk(seed, preempt=0.25)).outcome(), seed
