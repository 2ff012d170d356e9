"""The executor: correct time when quiescent, one instruction per step, fast == stepping."""

from __future__ import annotations

import pytest
from conftest import needs_running_vdso

from emu.engine.decode import capstone_for
from emu.engine.executor import Executor
from emu.engine.scenario import Scenario
from emu.engine.scheduler import Default
from emu.image.dump import dump_running_vdso
from emu.image.loader import manifest
from emu.search.random import RandomWalk
from emu.search.replay import Replay
from host_model.pvti import pvclock_ns

IMAGES = [
    "modern",
    "modern-i386",
    "bug-no-retry",
    "bug-no-odd-check",
    "vcpu0",
    "percpu",
    "percpu-rdpid-i386",
]


@pytest.mark.parametrize("image", IMAGES)
def test_quiescent_reads_give_the_formula_at_the_tsc_read(make_executor, image):
    ex = make_executor(image, host_params={"updates": 0})
    run = ex.run(Default())
    assert len(run.reads) == 4
    for r in run.reads:
        tsc_ops = [op for op in r.ops if op.kind in ("rdtsc", "rdtscp")]
        assert tsc_ops, "every reader reads the TSC"
        pvti = (
            run.current(f"pvti{r.vcpu}", r.end)
            if "percpu" in image
            else run.current("pvti0", r.end)
        )
        assert r.outcome == "value"
        # percpu also reads the TSC (rdtscp) for its cpu number: one of the reads is used
        used = [op for op in tsc_ops if pvclock_ns(pvti, op.arg) == r.value]
        assert used, f"{r.value} matches no TSC read of {r.label}"
        # the model's true time at that TSC read, less the pvclock scale's rounding
        assert 0 <= run.clock.ns(used[0].t) - r.value <= 1


def _families() -> list[str]:
    """Every bundled reader family (x86-64 gcc -O2 build), from the manifest."""
    return sorted({img["reader"] for img in manifest()["images"]})


#: What each family's run needs beyond the common host: its own page (Hyper-V), task
#: migration (the per-CPU readers' window), an unfenced rdtsc that may run early.
_NEEDS: dict[str, dict[str, object]] = {
    "hyperv": {"host": "hyperv", "host_params": {"updates": 2}},
    "bug-hyperv-no-retry": {"host": "hyperv", "host_params": {"updates": 2}},
    "percpu": {"task_migration": True},
    "percpu-rdpid": {"task_migration": True},
    "bug-percpu-no-recheck": {"task_migration": True},
    "bug-unfenced-rdtsc": {"speculative_tsc": True},
}
#: Every family, plus i386 builds of a vCPU-0 reader and a per-CPU reader.
EQUIVALENCE = _families() + ["modern-i386", "percpu-rdpid-i386"]


def _fast_and_stepping_agree(ex, seeds: range) -> None:
    for seed in seeds:
        fast = ex.run(RandomWalk(seed, preempt=0.3))
        stepped = ex.run(RandomWalk(seed, preempt=0.3), observer=lambda kind, data: None)
        assert fast.outcome() == stepped.outcome(), f"seed {seed}"


def test_the_equivalence_test_covers_every_reader_family():
    families = _families()
    assert len(families) >= 14 and set(families) <= set(EQUIVALENCE)
    # A Hyper-V reader reads no pvti: it is compared against the host that writes its page.
    assert all(_NEEDS.get(f, {}).get("host") == "hyperv" for f in families if "hyperv" in f)


@pytest.mark.parametrize("image", EQUIVALENCE)
def test_fast_and_stepping_modes_agree_on_random_schedules(make_executor, image):
    family = image.removesuffix("-i386")
    kw: dict[str, object] = {"host_params": {"updates": 2, "vcpu": -1, "park": 0}}
    kw.update(_NEEDS.get(family, {}))
    ex = make_executor(image, **kw)
    # 15 images x 100 seeds: 1,500 schedules, each run both ways
    _fast_and_stepping_agree(ex, range(100))


@needs_running_vdso
def test_fast_and_stepping_modes_agree_on_the_running_kernels_vdso(tmp_path):
    dump = dump_running_vdso(tmp_path)
    sc = Scenario(image=str(dump), host="kvm", host_params={"updates": 2, "park": 0})
    _fast_and_stepping_agree(Executor(sc), range(40))


def test_replay_of_recorded_choices_is_identical(make_executor):
    ex = make_executor("bug-no-odd-check")
    for seed in range(30):
        first = ex.run(RandomWalk(seed, preempt=0.3))
        again = ex.run(Replay(first.choices))
        assert again.outcome() == first.outcome()


@pytest.mark.parametrize("image", ["modern", "modern-i386", "modern-rdtscp", "percpu-rdpid"])
def test_each_step_executes_exactly_one_instruction(make_executor, image):
    ex = make_executor(image)
    cs = capstone_for(ex.image.bits)
    steps = []
    ex.run(
        RandomWalk(3, preempt=0.3), observer=lambda k, d: steps.append(d) if k == "insn" else None
    )
    by_task: dict[int, list] = {}
    for task, _vcpu, _t, pc, before, after, _reads, _op in steps:
        by_task.setdefault(task, []).append((pc, before, after))
    checked = 0
    for seq in by_task.values():
        for (pc, _b, _a), (nxt, _b2, _a2) in zip(seq, seq[1:], strict=False):
            insn = next(cs.disasm(bytes(ex.uc.mem_read(pc, 16)), pc))
            if insn.group(1) or insn.group(2) or insn.group(3) or insn.mnemonic.startswith("j"):
                continue  # jumps, calls, returns go elsewhere
            assert nxt == pc + insn.size, f"{insn.mnemonic} at {pc:#x} then {nxt:#x}"
            checked += 1
    assert checked > 50


def test_rdtsc_step_shows_the_models_tsc_not_the_hosts(make_executor):
    ex = make_executor("modern")
    seen = []

    def observe(kind, data):
        if kind == "insn" and data[7] is not None and data[7].kind == "rdtsc":
            seen.append((data[7].arg, data[5]))

    ex.run(Default(), observer=observe)
    assert seen
    for tsc, after in seen:
        assert after["rax"] == tsc & 0xFFFFFFFF
        assert after["rdx"] == tsc >> 32


def test_same_seed_same_run(make_executor):
    ex = make_executor("bug-no-retry")
    a = [ex.run(RandomWalk(s)).outcome() for s in range(5)]
    b = [ex.run(RandomWalk(s)).outcome() for s in range(5)]
    assert a == b
    assert len({repr(x) for x in a}) > 1, "different seeds explore different schedules"


@pytest.mark.parametrize(
    ("host", "openings"),
    [
        ("kvm", ["vcpu0.version 0x2 -> 0x3"]),
        ("kvm-legacy-copy", ["vcpu0.version 0x2 -> 0x4"]),
        ("xen", ["vcpu0.version 0x2 -> 0x3", "vcpu1.version 0x2 -> 0x3"]),
    ],
)
def test_a_host_event_plans_exactly_where_the_model_read_the_time(host, openings):
    """Each update plans its record right after its opening store (host_model/base.py);
    the engine sees that only by the model reading `view.t`, and `dpor` orders TSC reads
    against exactly these steps and the publications."""
    params = {"updates": 1} if host == "kvm" else {}
    ex = Executor(Scenario(image="modern", host=host, host_params=params, reads=1))
    for run in (ex.run(Default()), ex.run(RandomWalk(3))):
        assert [e.step.label for e in run.host if e.plans] == openings


def test_a_store_of_the_bytes_already_there_is_marked_unchanged():
    """A compiled writer stores every field, the unchanged ones too; `dpor` takes those
    stores for what they are to a load, no store at all (the models make none)."""
    sc = Scenario(image="modern", host="kvm", reads=1, writer="writer-seqlock-x86_64-gcc-O2")
    run = Executor(sc).run(Default())
    stores = [e for e in run.host if e.step.writes]
    assert len(stores) == 7
    for e in stores:
        old, new = e.step.label.split()[1], e.step.label.split()[3]
        assert e.unchanged == (frozenset({0}) if old == new else frozenset()), e.step.label
    assert any(e.unchanged for e in stores) and not all(e.unchanged for e in stores)
