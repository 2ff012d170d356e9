"""Machine options: parked vCPUs run nothing, guest task migration, speculative rdtsc."""

from __future__ import annotations

import pytest

from emu.engine.choice import Options
from emu.engine.executor import Executor
from emu.engine.scenario import Scenario
from emu.engine.scheduler import PointInfo, Scheduler
from emu.search.fuzz import Fuzzer
from emu.search.random import RandomWalk
from emu.search.replay import Replay


class Spy(Scheduler):
    """Delegates to a scheduler and remembers every (index, option labels) it was offered."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.offered: list[tuple[int, tuple[str, ...]]] = []

    def choose(self, index: int, options: Options, info: PointInfo | None) -> int:
        self.offered.append((index, tuple(o.label for o in options)))
        return self.inner.choose(index, options, info)


class Pick(Scheduler):
    """Takes the first option whose label matches a predicate, `times` times; otherwise
    the default."""

    def __init__(self, want, times: int = 1) -> None:
        self.want = want
        self.times = times

    def choose(self, index: int, options: Options, info: PointInfo | None) -> int:
        if self.times:
            for k, option in enumerate(options):
                if k and self.want(option.label):
                    self.times -= 1
                    return k
        return 0


_EXEC: dict[str, Executor] = {}


def executor(**kw) -> Executor:
    sc = Scenario(**kw)
    if repr(sc) not in _EXEC:
        _EXEC[repr(sc)] = Executor(sc)
    return _EXEC[repr(sc)]


# --- parking -----------------------------------------------------------------------------

PARKING = [
    ("kvm-masterclock", {"updates": 2, "tsc_jump": 5000}),
    ("kvm-migration", {}),
    ("kvm-migration-parked", {"stable": 1}),
    ("kvm", {"vcpu": -1, "updates": 2}),
    ("xen", {"park": 1, "updates": 2}),
    ("unsynced-tsc", {"updates": 1}),
]


@pytest.mark.parametrize("migration", [False, True])
@pytest.mark.parametrize(("host", "params"), PARKING)
def test_parked_vcpus_execute_no_guest_step(host, params, migration):
    ex = Executor(
        Scenario(
            image="modern",
            host=host,
            host_params=dict(params),
            vcpus=3,
            reads=3,
            task_migration=migration,
        )
    )
    intervals = ops_after_unpark = 0
    for seed in range(150):
        run = ex.run(RandomWalk(seed, preempt=0.3))
        assert not run.stopped
        intervals += len(run.parked)
        for since, until, vcpus in run.parked:
            assert since < until
            for r in run.reads:
                for op in r.ops:
                    assert not (op.vcpu in vcpus and since < op.t < until), (
                        f"seed {seed}: {r.label} ran {op.kind} at t={op.t} on vCPU {op.vcpu}, "
                        f"parked from {since} to {until}"
                    )
                    ops_after_unpark += op.vcpu in vcpus and op.t > until
    # Not vacuous: vCPUs were parked, and ran again afterwards.
    assert intervals >= 150
    assert ops_after_unpark > 0


def test_masterclock_parks_everyone_and_nobody_runs_meanwhile():
    ex = executor(image="modern", host="kvm-masterclock", vcpus=2, reads=2)
    spy = Spy(Pick(lambda label: label == "host"))
    run = ex.run(spy)
    (since, until, _), (since1, until1, _) = sorted(run.parked, key=lambda p: sorted(p[2]))
    assert (since, until) == (since1, until1)
    # While everyone is parked the host is the only agent: no decision is offered.
    assert all(not since < r.start < until for r in run.reads)


# --- task migration ----------------------------------------------------------------------


def test_no_migration_options_without_the_flag():
    spy = Spy(RandomWalk(3))
    executor(image="percpu", host="kvm").run(spy)
    assert spy.offered
    assert not any(">" in label for _, opts in spy.offered for label in opts)


def test_migration_options_offer_every_other_vcpu_and_keep_option_0_default():
    spy = Spy(RandomWalk(3))
    executor(image="percpu", host="kvm", vcpus=3, task_migration=True).run(spy)
    moves = [opts for _, opts in spy.offered if any(">" in o for o in opts)]
    assert moves
    for opts in moves:
        assert opts[0] == "stay"
        for label in opts[1:]:
            task, vcpu = label[1:].split(">v")
            assert 0 <= int(task) < 3 and 0 <= int(vcpu) < 3


def test_a_migrated_task_reads_the_new_vcpus_tsc_and_cpu_number():
    ex = executor(image="percpu", host="kvm", host_params={"updates": 0}, task_migration=True)
    run = ex.run(Pick(lambda label: label == "t0>v1"))
    assert "t0>v1" in [c.label for _, c in run.choices]
    t0 = [r for r in run.reads if r.task == 0]
    ops = [op for r in t0 for op in r.ops]
    assert ops[0].vcpu == 1  # moved at the very first decision
    for op in ops:
        assert op.vcpu == 1
        if op.kind in ("rdtsc", "rdtscp"):
            assert op.arg == run.clock.tsc(1, op.t)
    # percpu picks its page with getcpu (rdtscp's TSC_AUX): now vCPU 1's slot.
    assert {k for r in t0 for k in r.keys if k.startswith("pvti")} == {"pvti1"}


def test_migration_choices_replay_and_both_modes_agree():
    ex = executor(image="percpu", host="unsynced-tsc", task_migration=True)
    seen = 0
    for seed in range(40):
        run = ex.run(RandomWalk(seed, preempt=0.3))
        if not any(">" in c.label for _, c in run.choices):
            continue
        seen += 1
        again = ex.run(Replay(run.choices))
        assert again.outcome() == run.outcome()
        stepped = ex.run(Replay(run.choices), observer=lambda *_: None)
        assert stepped.outcome() == run.outcome()
    assert seen >= 10


def test_percpu_aba_migration_finding_shrinks_to_migrations_and_replays():
    sc = Scenario(image="percpu", host="unsynced-tsc", task_migration=True)
    out = Fuzzer(sc).fuzz(strategy="hypothesis", seed=0, max_schedules=2000)
    assert out.finding is not None
    labels = [c.label for _, c in out.finding.schedule.choices]
    # The ABA: out to the other vCPU and back (percpu's getcpu recheck then passes).
    assert sum(">" in label for label in labels) >= 2
    run = Executor(sc).run(Replay(out.finding.schedule.choices))
    from emu.oracles import judge

    assert out.finding.oracle in {v.oracle for v in judge(run, sc)}


# --- speculative rdtsc -------------------------------------------------------------------


@pytest.mark.parametrize("image", ["modern", "modern-rdtscp", "vcpu0", "percpu"])
def test_fenced_rdtsc_and_rdtscp_are_never_speculative(image):
    ex = executor(image=image, host="kvm", speculative_tsc=True)
    for seed in range(30):
        spy = Spy(RandomWalk(seed, preempt=0.3))
        ex.run(spy)
        assert not any(o.startswith("tsc") for _, opts in spy.offered for o in opts)


def test_unfenced_rdtsc_offers_earlier_tscs_only_with_the_option():
    spy = Spy(RandomWalk(1))
    executor(image="bug-unfenced-rdtsc", host="kvm").run(spy)
    assert not any(o.startswith("tsc") for _, opts in spy.offered for o in opts)
    spy = Spy(RandomWalk(1))
    executor(image="bug-unfenced-rdtsc", host="kvm", speculative_tsc=True).run(spy)
    spec = [opts for _, opts in spy.offered if opts[0] == "tsc"]
    assert spec
    for opts in spec:
        ks = [int(o.removeprefix("tsc-")) for o in opts[1:]]
        assert ks == sorted(ks, reverse=True) and ks[-1] == 1


def test_speculative_tsc_stays_inside_its_read_and_replays():
    ex = executor(image="bug-unfenced-rdtsc", host="kvm", speculative_tsc=True)
    early = 0
    for seed in range(60):
        run = ex.run(RandomWalk(seed, preempt=0.4))
        for r in run.reads:
            for op in r.ops:
                if op.kind != "rdtsc":
                    continue
                # the TSC of some step of this read, at or before the rdtsc itself
                at = [s for s in range(r.start, op.t + 1) if run.clock.tsc(op.vcpu, s) == op.arg]
                assert at, (seed, r.label, op)
                early += at[0] < op.t
        if any(c.label.startswith("tsc-") for _, c in run.choices):
            assert ex.run(Replay(run.choices)).outcome() == run.outcome()
            stepped = ex.run(Replay(run.choices), observer=lambda *_: None)
            assert stepped.outcome() == run.outcome()
    assert early > 0


def test_a_chosen_tsc_k_returns_the_tsc_of_step_t_minus_k():
    ex = executor(image="bug-unfenced-rdtsc", host="kvm", speculative_tsc=True)
    run = ex.run(Pick(lambda label: label == "tsc-1"))
    assert [c.label for _, c in run.choices] == ["tsc-1"]
    op = next(op for r in run.reads for op in r.ops if op.kind == "rdtsc")
    assert op.arg == run.clock.tsc(op.vcpu, op.t - 1)


def test_unfenced_rdtsc_is_a_violation_only_when_speculative():
    base = Scenario(image="bug-unfenced-rdtsc", host="kvm")
    out = Fuzzer(base).fuzz(strategy="random", seed=0, max_schedules=1500)
    assert out.finding is None
    spec = Scenario(image="bug-unfenced-rdtsc", host="kvm", speculative_tsc=True)
    out = Fuzzer(spec).fuzz(strategy="random", seed=0, max_schedules=1500)
    assert out.finding is not None and out.finding.oracle == "consistent"
    assert any(c.label.startswith("tsc-") for _, c in out.finding.schedule.choices)
