"""The host models: the store sequences they yield, what is parked when, what they publish."""

from __future__ import annotations

import importlib
import re

import pytest

from emu.engine.executor import Executor
from emu.engine.scenario import Scenario
from emu.engine.scheduler import Default
from emu.oracles import judge
from host_model import hyperv
from host_model.base import HostStep, HostView
from host_model.clock import Clock
from host_model.pages import describe
from host_model.pvti import PVCLOCK_TSC_STABLE_BIT, PVTI_SLOT, Pvti
from host_model.registry import HOSTS, make_host

ALL = (
    "kvm",
    "kvm-legacy-copy",
    "kvm-masterclock",
    "kvm-migration",
    "kvm-migration-parked",
    "xen",
    "unsynced-tsc",
    "hyperv",
)


def drive(name: str, vcpus: int = 2, **params) -> tuple[HostStep, list[HostStep], Clock]:
    """Run a host model on its own: setup, then every step in order, applying TSC changes."""
    host = make_host(name, params)
    clock = Clock(vcpus, offsets=host.tsc_offsets(vcpus))
    view = HostView(clock, 0, vcpus)
    setup = host.setup(view)
    steps = []
    for step in host.steps(view):
        for c in step.tsc:
            clock.retune(c.vcpu, view.t, hz=c.hz, jump=c.jump)
        steps.append(step)
        view.t += 1
    return setup, steps, clock


def parked_at_each_step(steps: list[HostStep]) -> list[frozenset[int]]:
    """The parked set in force while each step runs (a park step counts from itself)."""
    parked: frozenset[int] = frozenset()
    out = []
    for s in steps:
        parked = (parked | s.park) - s.unpark
        out.append(parked | s.unpark)
    return out


def pvti_writes(steps, vcpu=None):
    return [
        (i, w)
        for i, s in enumerate(steps)
        for w in s.writes
        if w.page == "pvclock" and (vcpu is None or w.offset // PVTI_SLOT == vcpu)
    ]


def test_registry_has_every_model_with_a_docstring_and_summary():
    assert set(ALL) <= set(HOSTS)
    for name in ALL:
        cls = HOSTS[name]
        assert cls.name == name
        assert cls.summary
        # The docstring says which real host behaviour it models and since/until when.
        doc = (cls.__doc__ or "") + (importlib.import_module(cls.__module__).__doc__ or "")
        assert len(doc) > 200, name
        assert re.search(r"\b(19|20)\d\d\b|Linux \d|Xen \d", doc), name


@pytest.mark.parametrize("name", ALL)
def test_every_park_is_undone_and_every_step_is_labelled(name):
    _, steps, _ = drive(name, 3)
    parked: set[int] = set()
    for s in steps:
        assert s.label
        parked |= s.park
        parked -= s.unpark
    assert not parked, f"{name} leaves vCPUs {sorted(parked)} parked"


def test_unknown_parameter_and_bad_order_are_rejected():
    with pytest.raises(ValueError, match="no parameter"):
        make_host("xen", {"nope": 1})
    with pytest.raises(ValueError, match="order"):
        make_host("kvm-migration", {"order": "sideways"})
    with pytest.raises(ValueError, match="no parameter 'order'"):
        make_host("kvm-migration-parked", {"order": "vcpu0-last"})


def test_legacy_copy_never_shows_an_odd_version_and_writes_the_version_first():
    _, steps, _ = drive("kvm-legacy-copy", 2, updates=2)
    writes = pvti_writes(steps, 0)
    versions = [w for _, w in writes if w.label.endswith(".version")]
    assert [v.new for v in versions] == [4, 6]
    assert all(v.new % 2 == 0 for v in versions)
    # Each copy starts with the version, then the body in memory order.
    first = writes[0][1]
    assert first.label == "vcpu0.version"
    offsets = [w.offset for _, w in writes[: len(writes) // 2]]
    assert offsets == sorted(offsets)


def test_kvm_makes_the_version_odd_before_the_body():
    _, steps, _ = drive("kvm", 2)
    writes = [w for _, w in pvti_writes(steps, 0)]
    assert writes[0].label == "vcpu0.version" and writes[0].new % 2 == 1
    assert writes[-1].label == "vcpu0.version" and writes[-1].new % 2 == 0


@pytest.mark.parametrize("masterclock", [0, 1])
def test_masterclock_writes_every_page_with_every_vcpu_parked(masterclock):
    _, steps, _ = drive("kvm-masterclock", 3, masterclock=masterclock, tsc_jump=1000)
    parked = parked_at_each_step(steps)
    everyone = frozenset(range(3))
    writes = pvti_writes(steps)
    assert {w.offset // PVTI_SLOT for _, w in writes} == set(everyone)
    for i, _ in writes:
        assert parked[i] == everyone
    for i, s in enumerate(steps):
        if s.tsc:
            assert parked[i] == everyone
    finals = [p.snapshot for s in steps for p in s.publish]
    assert len(finals) == 3
    assert all(f.stable == bool(masterclock) for f in finals)


def test_migration_resumes_vcpu1_before_vcpu0s_page_is_current():
    _, steps, _ = drive("kvm-migration", 2)
    labels = [s.label for s in steps]
    unpark1 = next(i for i, s in enumerate(steps) if 1 in s.unpark)
    v0_writes = [i for i, _ in pvti_writes(steps, 0)]
    assert unpark1 < v0_writes[0], labels
    # The TSC jumps for every vCPU while all are parked, before any page is rewritten.
    jump = next(i for i, s in enumerate(steps) if s.tsc)
    assert {c.vcpu for c in steps[jump].tsc} == {0, 1}
    assert jump < min(i for i, _ in pvti_writes(steps))
    # Default: the destination clears the stable bit, per vCPU.
    flags = [w for _, w in pvti_writes(steps) if w.label.endswith(".flags")]
    assert [(w.label, w.new) for w in flags] == [("vcpu1.flags", 0), ("vcpu0.flags", 0)]


def test_migration_parked_keeps_everyone_out_until_vcpu0_is_current():
    _, steps, _ = drive("kvm-migration-parked", 3, stable=1)
    parked = parked_at_each_step(steps)
    v0_done = max(i for i, _ in pvti_writes(steps, 0))
    for i in range(v0_done + 1):
        assert parked[i] == frozenset({0, 1, 2})
    # Each other vCPU's own page is current before it re-enters.
    for v in (1, 2):
        back = next(i for i, s in enumerate(steps) if v in s.unpark)
        assert max(i for i, _ in pvti_writes(steps, v)) < back
    assert all(p.snapshot.stable for s in steps for p in s.publish)


def test_xen_updates_overlap_and_each_uses_the_version_protocol():
    _, steps, _ = drive("xen", 2)
    slots = [w.offset // PVTI_SLOT for _, w in pvti_writes(steps)]
    # interleaved: vCPU 0's and vCPU 1's stores alternate
    assert slots[:4] == [0, 1, 0, 1]
    for v in (0, 1):
        vers = [w.new for _, w in pvti_writes(steps, v) if w.label.endswith(".version")]
        assert vers == [3, 4]
    assert all(not s.park for s in steps)  # park=0: the vCPUs keep running
    _, seq, _ = drive("xen", 2, interleave=0)
    slots = [w.offset // PVTI_SLOT for _, w in pvti_writes(seq)]
    assert slots == sorted(slots)


def test_xen_skew_puts_each_vcpus_record_ahead():
    setup, _, clock = drive("xen", 3, skew_ns=7, updates=0)
    recs = [p.snapshot for p in setup.publish]
    for v, rec in enumerate(recs):
        assert rec.ns_at(clock.tsc(v, 0)) - clock.ns(0) == 7 * v


def test_unsynced_pages_fit_only_their_own_vcpus_tsc():
    setup, _, clock = drive("unsynced-tsc", 2, offset=25_000, updates=0)
    p0, p1 = (p.snapshot for p in setup.publish)
    t = 50
    assert abs(p0.ns_at(clock.tsc(0, t)) - clock.ns(t)) <= 1
    assert abs(p1.ns_at(clock.tsc(1, t)) - clock.ns(t)) <= 1
    # vCPU 1's TSC against vCPU 0's page: 25,000 cycles at 2.5 GHz = 10 us ahead.
    assert abs(p0.ns_at(clock.tsc(1, t)) - clock.ns(t) - 10_000) <= 1
    assert p0.stable and p1.stable


def test_hyperv_formula_and_layout():
    pg = hyperv.HvTsc(tsc_sequence=5, tsc_scale=1 << 63, tsc_offset=-3)
    # ((tsc * 2^63) >> 64) = tsc / 2, plus the offset, times 100
    assert pg.ns100_at(1000) == 497
    assert pg.ns_at(1000) == 49_700
    raw = pg.pack()
    assert len(raw) == 24
    assert int.from_bytes(raw[0:4], "little") == 5
    assert int.from_bytes(raw[8:16], "little") == 1 << 63
    assert int.from_bytes(raw[16:24], "little", signed=True) == -3
    assert not hyperv.HvTsc(0, 1, 1).stable and pg.stable
    assert hyperv.next_sequence(0xFFFFFFFE) == 1
    assert hyperv.next_sequence(7) == 8
    assert describe("hvclock", 0) == "hvclock.tsc_sequence"
    assert describe("hvclock", 8) == "hvclock.tsc_scale"
    assert describe("hvclock", 19) == "hvclock.tsc_offset+3"


@pytest.mark.parametrize("invalidate", [1, 0])
def test_hyperv_update_protocol(invalidate):
    setup, steps, clock = drive("hyperv", 2, invalidate=invalidate)
    first = setup.publish[0].snapshot
    assert first.tsc_sequence == 1
    assert abs(first.ns_at(clock.tsc(0, 0)) - clock.ns(0)) < 100
    seqs = [w.new for s in steps for w in s.writes if w.label == "hvclock.tsc_sequence"]
    names = [w.label for s in steps for w in s.writes]
    if invalidate:
        assert seqs == [0, 2] and names[0] == "hvclock.tsc_sequence"
        assert not steps[0].publish[0].snapshot.stable
    else:
        assert seqs == [2] and names[-1] == "hvclock.tsc_sequence"
    assert {"hvclock.tsc_scale", "hvclock.tsc_offset"} <= set(names)
    new = steps[-1].publish[0].snapshot
    # continuous with the old reference where it was computed
    assert abs(new.ns_at(clock.tsc(0, 0)) - first.ns_at(clock.tsc(0, 0))) <= 100


def test_hyperv_blob_computes_exactly_the_models_formula():
    """The compiled reader and `HvTsc.ns_at` agree bit for bit (the consistent oracle)."""
    sc = Scenario(image="hyperv", host="hyperv", host_params={"updates": 2}, vcpus=2, reads=3)
    run = Executor(sc).run(Default())
    assert [r.outcome for r in run.reads].count("value") == 6
    assert judge(run, sc) == []


@pytest.mark.parametrize("name", [n for n in ALL if n != "hyperv"])
def test_modern_reader_quiescent_under_every_pvclock_host(name):
    """With no preemption, every host's records give the right time to a correct reader
    (for the hosts whose records are right for vCPU 0's TSC)."""
    sc = Scenario(image="modern", host=name, vcpus=1, reads=2)
    run = Executor(sc).run(Default())
    assert judge(run, sc) == []


def test_snapshot_stable_bit_follows_flags():
    assert Pvti(flags=PVCLOCK_TSC_STABLE_BIT).stable
    assert not Pvti(flags=0).stable
