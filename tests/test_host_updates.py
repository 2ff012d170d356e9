"""Every host update publishes a record that really moves the clock, planned when it starts.

The executor asks a host for its next step as soon as it has taken the previous one and
may hold it for many guest steps; a model that computed an update's record at that moment
(boot, for a first update) published the boot record again and only the version moved, so
a reader that never re-checks the version passed. These tests drive every host model the
way the executor does, with guest steps between asking for a step and taking it, over a
grid of every parameter each model documents, and then run the engine: readers that break
the seqlock are caught by every host whose update other vCPUs can watch, and the correct
readers pass against the correct hosts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from emu.engine.scenario import Scenario
from emu.search.fuzz import Fuzzer
from host_model.base import HostStep, HostView
from host_model.clock import DEFAULT_TSC_HZ, Clock
from host_model.hyperv import HvTsc
from host_model.pvti import PVTI_SLOT, Pvti
from host_model.registry import HOSTS, make_host
from host_model.vdso_data import ANCHOR_LAG_NS, VdsoDataSpec, timekeeping

#: Guest steps that pass between the executor asking for a host step and taking it (none
#: while every vCPU is parked: then only the host can run).
GAP = 7

#: Every parameter each model documents, with the values worth crossing.
GRID: dict[str, dict[str, tuple[object, ...]]] = {
    "kvm": {
        "updates": (1, 2),
        "vcpu": (0, 1, -1),
        "tsc_hz": (0, 3_000_000_000),
        "tsc_jump": (0, 50_000),
        "park": (0, 1),
    },
    "kvm-masterclock": {
        "updates": (1, 2),
        "masterclock": (0, 1),
        "boot_masterclock": (0, 1),
        "tsc_hz": (0, 3_000_000_000),
        "tsc_jump": (0, 50_000),
    },
    "kvm-migration": {
        "tsc_jump": (0, DEFAULT_TSC_HZ),
        "tsc_hz": (0, 3_000_000_000),
        "stable": (0, 1),
        "order": ("vcpu0-last", "vcpu0-first"),
    },
    "xen": {
        "updates": (1, 2),
        "interleave": (0, 1),
        "park": (0, 1),
        "skew_ns": (0, 7),
        "stable": (0, 1),
    },
    "unsynced-tsc": {"offset": (0, 25_000), "updates": (0, 1, 2), "stable": (0, 1)},
    "hyperv": {
        "updates": (1, 2),
        "ppm": (0, 100),
        "invalidate": (0, 1),
        "tsc_hz": (0, 3_000_000_000),
        "tsc_jump": (0, 50_000),
        "park": (0, 1),
    },
}
GRID["kvm-legacy-copy"] = GRID["kvm"]
GRID["kvm-migration-parked"] = {k: v for k, v in GRID["kvm-migration"].items() if k != "order"}


def combos(name: str) -> list[dict[str, object]]:
    grid = GRID[name]
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


CASES = [(name, params, vcpus) for name in GRID for params in combos(name) for vcpus in (2, 3)]


@dataclass
class Update:
    """One publication of a clock record, and the host step that opened it."""

    key: str
    old: object
    new: object
    #: Logical time the update's first store into this record ran at.
    opened: int


def drive(name: str, params: dict[str, object], vcpus: int) -> tuple[list[Update], Clock, int]:
    """Run the host as the executor does: ask for the next step right after taking one,
    let GAP guest steps pass (unless every vCPU is parked), then take it. Returns every
    update, the clock, and the number of updates the host made."""
    host = make_host(name, params)
    clock = Clock(vcpus, offsets=host.tsc_offsets(vcpus))
    view = HostView(clock, 0, vcpus)
    current = {p.key: p.snapshot for p in host.setup(view).publish}
    opened: dict[str, int] = {}
    updates: list[Update] = []
    parked: frozenset[int] = frozenset()
    t = 0
    it = host.steps(view)
    step: HostStep | None = next(it, None)
    while step is not None:
        if len(parked) < vcpus:
            t += GAP
        for c in step.tsc:
            clock.retune(c.vcpu, t, hz=c.hz, jump=c.jump)
        for w in step.writes:
            key = f"pvti{w.offset // PVTI_SLOT}" if w.page == "pvclock" else w.page
            opened.setdefault(key, t)
        for p in step.publish:
            if isinstance(p.snapshot, HvTsc) and not p.snapshot.stable:
                continue  # the invalidated page: published, but no reader may use it
            updates.append(Update(p.key, current[p.key], p.snapshot, opened.pop(p.key)))
            current[p.key] = p.snapshot
        parked = (parked | step.park) - step.unpark
        t += 1
        view.t = t
        step = next(it, None)
    return updates, clock, host


def test_the_grid_covers_every_documented_parameter_of_every_model():
    assert set(GRID) == set(HOSTS)
    for name, cls in HOSTS.items():
        assert set(GRID[name]) == {p.name for p in cls.params}, name


@pytest.mark.parametrize(("name", "params", "vcpus"), CASES)
def test_each_update_moves_the_clock_and_is_planned_when_it_starts(name, params, vcpus):
    updates, clock, host = drive(name, params, vcpus)
    assert updates or params.get("updates", 1) == 0
    for k, u in enumerate(updates):
        # Planned just after its first store ran (the executor then asks for the next step).
        at = u.opened + 1
        if isinstance(u.new, Pvti):
            v = int(u.key.removeprefix("pvti"))
            assert u.new.tsc_timestamp == clock.tsc(v, at), (u, at)
            skew = v * params.get("skew_ns", 0)
            assert u.new.system_time == clock.ns(at) + skew, (u, at)
            assert (u.new.system_time, u.new.tsc_timestamp) != (
                u.old.system_time,
                u.old.tsc_timestamp,
            )
            assert u.new.system_time > u.old.system_time
        else:
            assert isinstance(u.new, HvTsc)
            retune = bool(params["tsc_hz"] or params["tsc_jump"])
            tsc = clock.tsc(0, at)
            if retune:
                # A new reference: the true time at the instant it was planned.
                assert abs(u.new.ns_at(tsc) - clock.ns(at)) < 100
            else:
                # Continuous with the old reference at the instant it was planned.
                assert u.new.ns100_at(tsc) == u.old.ns100_at(tsc)
            moved = (u.new.tsc_scale, u.new.tsc_offset) != (u.old.tsc_scale, u.old.tsc_offset)
            # The stated exception (hyperv's docstring): an update that neither corrects
            # the rate (ppm=0) nor changes the TSC (no jump; `tsc_hz` changes it only the
            # first time) leaves the reference as it was; only the sequence moves.
            tsc_changed = bool(params["tsc_jump"]) or (bool(params["tsc_hz"]) and k == 0)
            assert moved == (bool(params["ppm"]) or tsc_changed), u
            assert u.new.tsc_sequence != u.old.tsc_sequence


def test_the_guest_timekeeping_anchor_is_planned_after_seq_is_made_odd():
    spec = VdsoDataSpec(
        page="vvar",
        records=(0, 128),
        fields={"seq": (0, 4, 1, 4), "cycle_last": (8, 8, 1, 8), "basetime": (16, 16, 2, 16)},
        size=128,
    )
    clock = Clock(1)
    view = HostView(clock, 0, 1)
    t, odd_at, anchors = 0, [], []
    for step in timekeeping(spec, view, 2):
        t += GAP
        (w,) = step.writes
        if w.label.endswith(".seq") and w.new % 2 and w.offset == 0:
            odd_at.append(t)
        if w.label.endswith(".cycle_last"):
            anchors.append(w.new)
        t += 1
        view.t = t
    # Both records of one update share the anchor, taken just after its first store.
    assert anchors == [clock.ns(o + 1) - ANCHOR_LAG_NS for o in odd_at for _ in range(2)]


# --- the engine: the same scenarios judged ----------------------------------------------

#: Host settings whose update another vCPU can watch mid-way (the updated page is read by
#: a reader on a vCPU that keeps running).
WATCHED = [
    ("xen", {}),
    ("xen", {"park": 1}),
    ("xen", {"interleave": 0}),
    ("xen", {"updates": 2}),
    ("kvm", {"park": 0}),
    ("kvm", {"park": 1}),
    ("kvm", {"vcpu": -1, "park": 0}),
    ("kvm", {"vcpu": -1}),
    ("kvm", {"updates": 2}),
]
BUDGET = 200


def fuzz(image: str, host: str, params: dict[str, object], schedules: int = BUDGET):
    sc = Scenario(image=image, host=host, host_params=params, vcpus=2, reads=2)
    return Fuzzer(sc).fuzz(strategy="random", seed=0, max_schedules=schedules)


@pytest.mark.parametrize(("host", "params"), WATCHED)
def test_a_reader_that_never_rechecks_the_version_is_caught(host, params):
    out = fuzz("bug-no-retry", host, params)
    assert out.finding is not None and out.finding.oracle == "consistent"


@pytest.mark.parametrize(
    ("image", "host", "params"),
    [
        ("bug-no-odd-check", "xen", {}),
        ("bug-no-odd-check", "kvm", {"park": 0}),
        ("bug-no-barrier", "xen", {}),
        ("bug-no-barrier", "kvm", {"vcpu": -1, "park": 0}),
    ],
)
def test_readers_that_break_the_seqlock_are_caught(image, host, params):
    out = fuzz(image, host, params)
    assert out.finding is not None and out.finding.oracle == "consistent"


@pytest.mark.parametrize(
    ("image", "host", "params"),
    [("modern", h, p) for h, p in WATCHED]
    + [
        ("modern", "kvm-masterclock", {}),
        ("modern", "kvm-masterclock", {"updates": 2}),
        ("hyperv", "hyperv", {}),
        ("hyperv", "hyperv", {"updates": 2}),
    ],
)
def test_the_correct_readers_pass_against_the_correct_hosts(image, host, params):
    out = fuzz(image, host, params)
    assert out.finding is None and out.schedules == BUDGET
