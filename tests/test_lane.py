"""The native lane: it is built and used, a run is the same with or without it, and the
executor still works (in Python) when it cannot be built."""

from __future__ import annotations

import random

import pytest
from conftest import DEBIAN

from emu import lane
from emu.executor import Executor
from emu.scenario import Scenario
from emu.search.base import Default
from emu.search.hypothesis import Plan
from emu.search.random import RandomWalk
from emu.search.replay import Replay

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
    # 8 images x 200 schedules of three kinds: random walks, Hypothesis-style plans,
    # and replays of what the random walks chose
    for seed in range(200):
        walk = RandomWalk(seed, preempt=0.3)
        a = native.run(walk)
        b = python.run(RandomWalk(seed, preempt=0.3))
        assert a.outcome() == b.outcome(), f"random walk {seed}"
        plan = [(rng.randrange(60), rng.randrange(1, 9)) for _ in range(rng.randrange(6))]
        assert native.run(Plan(plan)).outcome() == python.run(Plan(plan)).outcome(), plan
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


@pytest.mark.skipif(not DEBIAN, reason="no Debian sample vDSOs (set VDSOFUZZ_VDSO_SAMPLES)")
def test_a_real_vdso_gives_the_same_runs():
    native, python = pair(str(DEBIAN[0]), host="kvm-legacy-copy")
    for seed in range(100):
        a = native.run(RandomWalk(seed, preempt=0.25))
        assert a.outcome() == python.run(RandomWalk(seed, preempt=0.25)).outcome()


def test_ctrl_c_in_a_decision_is_not_swallowed():
    native, _ = pair("modern", host="kvm", host_params={"updates": 1})

    class Interrupt:
        def quiet_until(self, index: int) -> int:
            return 5

        def choose(self, index: int, options: tuple[str, ...]) -> int:
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


def _choices(scheduler, lengths: list[int], skip: bool) -> list[int]:
    """What `scheduler` picks at each point; with `skip`, asked only where it is not quiet."""
    out = []
    for index, n in enumerate(lengths):
        quiet = scheduler.quiet_until(index)
        assert quiet >= index
        if skip and index < quiet:
            out.append(0)
        else:
            out.append(scheduler.choose(index, tuple(f"t{i}" for i in range(n))))
    return out


def _make(kind: str, trial: int, lengths: list[int]):
    r = random.Random(trial)
    if kind == "random":
        return RandomWalk(trial, preempt=r.choice([0.0, 0.05, 0.3, 1.0]))
    if kind == "plan":
        return Plan([(r.randrange(80), r.randrange(1, 9)) for _ in range(r.randrange(8))])
    if kind == "replay":
        picks = {r.randrange(len(lengths)) for _ in range(r.randrange(6))}
        return Replay([(i, f"t{r.randrange(1, lengths[i])}") for i in sorted(picks)])
    return Default()


@pytest.mark.parametrize("kind", ["random", "plan", "replay", "default"])
def test_schedulers_choose_the_same_when_quiet_points_are_skipped(kind):
    rng = random.Random(kind)
    for trial in range(200):
        lengths = [rng.randrange(2, 5) for _ in range(rng.randrange(1, 80))]
        every = _choices(_make(kind, trial, lengths), lengths, skip=False)
        assert _choices(_make(kind, trial, lengths), lengths, skip=True) == every


def test_random_walk_preempts_at_its_rate():
    hits = 0
    total = 0
    for seed in range(200):
        walk = RandomWalk(seed, preempt=0.2)
        for index in range(100):
            total += 1
            hits += walk.choose(index, ("t0", "t1", "host")) != 0
    assert 0.17 < hits / total < 0.23
