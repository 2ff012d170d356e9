"""Real kernel vDSOs as images: this machine's own `[vdso]` (dumped at test time), driven
through `__vdso_clock_gettime` into the pvclock path; the Debian debug-package images that
tools/fetch_vdso_samples.sh fetches (skipped with a reason where they are absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DEBIAN, needs_running_vdso, needs_samples

from emu.cli import main
from emu.engine.executor import Executor
from emu.engine.scenario import Scenario
from emu.engine.scheduler import Default
from emu.image.abi import ClockGettimeAbi, clock_id
from emu.image.dump import dump_running_vdso
from emu.image.layout import PROFILE_BY_NAME
from emu.image.loader import load
from emu.oracles import judge
from emu.search.fuzz import Fuzzer
from emu.search.random import RandomWalk
from host_model.base import HostModel
from host_model.kvm import Kvm
from host_model.registry import HOSTS
from host_model.vdso_data import VdsoDataSpec, expected_ns, identity_values, pack_record
from host_model.writer import legacy_copy, snapshot


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> Path:
    return dump_running_vdso(tmp_path_factory.mktemp("vdso"))


class _LegacyCopy(Kvm):
    """Stand-in for the registry's `kvm-legacy-copy` when it is not there yet."""

    name = "kvm-legacy-copy"

    def update(self, view, vcpu):
        old = self.pvti[vcpu]
        new = snapshot(view.clock, vcpu, view.t, version=old.version)
        for step in legacy_copy(vcpu, old, new):
            yield step
            if step.publish:
                self.pvti[vcpu] = step.publish[0].snapshot


@pytest.fixture
def legacy_host(monkeypatch) -> type[HostModel]:
    if "kvm-legacy-copy" not in HOSTS:
        monkeypatch.setitem(HOSTS, "kvm-legacy-copy", _LegacyCopy)
    return HOSTS["kvm-legacy-copy"]


def _quiescent(spec: str, image, clock: str = "CLOCK_MONOTONIC", cpu: str = "") -> None:
    sc = Scenario(
        image=spec, host="kvm", host_params={"updates": 0}, vcpus=1, reads=3, cpu=cpu, clock=clock
    )
    run = Executor(sc, image).run(Default())
    assert judge(run, sc) == []
    assert [r.outcome for r in run.reads] == ["value"] * 3
    pvti = run.history["pvti0"][-1][1]
    for r in run.reads:
        assert "pvti0" in r.keys
        # The value is the pvclock formula at one instant of the read, through the identity
        # vdso_data transform.
        boot = run.clock.boot_ns
        anchor = (identity_values(boot_ns=boot), (boot // 10**9, 0))
        ok = {
            expected_ns(pvti.ns_at(run.clock.tsc(0, t)), *anchor) for t in range(r.start, r.end + 1)
        }
        assert r.value in ok
        assert run.clock.ns(r.start) - 1 <= r.value <= run.clock.ns(r.end)


# --- pure parts -------------------------------------------------------------------------


def test_clock_ids():
    assert clock_id("CLOCK_MONOTONIC") == 1
    assert clock_id("monotonic_raw") == 4
    assert clock_id("REALTIME") == 0
    with pytest.raises(ValueError, match="unknown clock"):
        clock_id("CLOCK_BOGUS")


def test_vdso_data_record_packs_identity_transform():
    prof = PROFILE_BY_NAME["linux-6.10-6.12"]
    fields = {k: (f.offset, f.size, f.count, f.stride) for k, f in prof.clock.fields.items()}
    spec = VdsoDataSpec("vvar", (0x80, 0x80 + prof.clock_stride), fields, prof.clock.size)
    rec = pack_record(spec)
    assert len(rec) == prof.clock.size
    assert int.from_bytes(rec[0:4], "little") == 0  # seq even
    assert int.from_bytes(rec[4:8], "little") == 2  # VDSO_CLOCKMODE_PVCLOCK
    assert int.from_bytes(rec[16:24], "little") == (1 << 64) - 1  # max_cycles
    assert int.from_bytes(rec[32:36], "little") == 1  # mult
    assert expected_ns(1_234_567_890_123) == 1_234_567_890_123
    v = dict(identity_values(), mult=4, shift=2, cycle_last=100)
    assert expected_ns(1100, v, base=(1, 0)) == 1_000_000_000 + 1000


def test_timespec_abi_reads_64_and_32_bit():
    assert ClockGettimeAbi(64, 0, "CLOCK_MONOTONIC", True).frame(0, 0x1000) == [0]
    abi32 = ClockGettimeAbi(32, 7, "CLOCK_REALTIME", False)
    assert abi32.frame(0, 0x1000) == [7, 0, 0x1000 + ClockGettimeAbi.TS_OFFSET]


# --- this machine's vDSO ----------------------------------------------------------------


@needs_running_vdso
def test_dump_vdso_cli(tmp_path, capsys):
    assert main(["dump-vdso", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "__vdso_clock_gettime" in out and "pvclock@" in out


@needs_running_vdso
@pytest.mark.parametrize("clock", ["CLOCK_MONOTONIC", "CLOCK_MONOTONIC_RAW", "CLOCK_REALTIME"])
def test_running_vdso_quiescent_reads_match_formula(dump, clock):
    image = load(dump)
    assert image.call_abi == "clock_gettime"
    assert "vvar" in image.pages and "pvclock" in image.pages
    _quiescent(str(dump), image, clock)


@needs_running_vdso
def test_running_vdso_kvm_has_no_violation(dump):
    sc = Scenario(image=str(dump), host="kvm", host_params={"updates": 2}, vcpus=2, reads=2)
    camp = Fuzzer(sc)
    outcomes = set()
    for i in range(300):
        run, violations = camp.run(RandomWalk(i, 0.3))
        assert violations == [], (i, violations[0].message)
        outcomes |= {r.outcome for r in run.reads}
    assert outcomes == {"value"}


@needs_running_vdso
def test_running_vdso_legacy_copy_is_caught(dump, legacy_host):
    params = {"updates": 2}
    if any(p.name == "park" for p in legacy_host.params):
        params["park"] = 0
    sc = Scenario(image=str(dump), host="kvm-legacy-copy", host_params=params, vcpus=2, reads=2)
    out = Fuzzer(sc).fuzz(strategy="random", seed=0, max_schedules=3000)
    assert out.finding is not None
    assert out.finding.oracle in ("consistent", "monotonic")


@needs_running_vdso
def test_stripped_vdso_without_profile_exits_2(dump, tmp_path, capsys):
    data = (dump / "vdso.so").read_bytes()
    bad = tmp_path / "noversion.so"
    bad.write_bytes(data.replace(b"Linux\0", b"Xinux\0"))  # no version note, no symbols
    assert main(["disasm", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "stripped vDSO" in err and "dump-vdso" in err


# --- distribution images (tools/fetch_vdso_samples.sh; CI fetches them) -----------------


@needs_samples
@pytest.mark.parametrize("path", DEBIAN, ids=lambda p: f"{p.parent.name}/{p.name}")
@pytest.mark.parametrize("cpu", ["rdtscp", "lfence", "plain"])
def test_debian_images_quiescent(path, cpu):
    image = load(str(path), cpu=cpu)
    assert image.layout is not None and image.layout.source == "dwarf"
    _quiescent(str(path), image, cpu=cpu)


def test_dump_with_a_real_pvti_seeds_the_model_clock(dump):
    import json

    from emu.engine.executor import Executor
    from emu.engine.scenario import Scenario
    from emu.engine.scheduler import Default
    from emu.image.loader import load as load_image
    from host_model.clock import BOOT_NS, hz_of

    image = load_image(dump)
    real = json.loads((dump / "dump.json").read_text()).get("pvti")
    seed = image.clock_seed
    sc = Scenario(image=str(dump), host_params={"updates": 0}, vcpus=1, reads=1)
    run = Executor(sc, image).run(Default())
    (read,) = run.reads
    if real and real["stable"]:
        assert seed.tsc_hz == hz_of(real["tsc_to_system_mul"], real["tsc_shift"])
        assert run.clock.ns(0) == real["system_time"]
        assert run.clock.tsc(0, 0) == real["tsc_timestamp"]
        # the read returns the real guest's time, a few logical steps after the dump's record
        assert 0 < read.value - real["system_time"] < 10_000
    else:
        assert seed is None
        assert run.clock.ns(0) == BOOT_NS


def test_running_vdso_falls_back_to_the_syscall_without_the_stable_bit(dump):
    from emu.engine.executor import Executor
    from emu.engine.scenario import Scenario
    from emu.engine.scheduler import Default

    params = {"masterclock": 0, "boot_masterclock": 0}  # no master clock, ever: not stable
    sc = Scenario(image=str(dump), host="kvm-masterclock", host_params=params, vcpus=1, reads=2)
    run = Executor(sc).run(Default())
    assert [r.outcome for r in run.reads] == ["fallback", "fallback"]
    for r in run.reads:
        assert r.ops[-1].kind == "syscall"
        assert r.value == run.clock.ns(r.end)  # the syscall returns the model's true time
    assert judge(run, sc) == []


def test_guest_timekeeping_updates_pass_and_a_seqless_writer_is_caught(dump, monkeypatch):
    from functools import partial

    import emu.engine.host_side
    from emu.engine.executor import Executor
    from emu.engine.scenario import Scenario
    from emu.search.fuzz import Fuzzer
    from emu.search.random import RandomWalk
    from host_model import vdso_data

    sc = Scenario(image=str(dump), host="kvm", timekeeping=2, reads=2)
    ex = Executor(sc)
    moved = 0
    for seed in range(150):
        run = ex.run(RandomWalk(seed, preempt=0.3))
        assert judge(run, sc) == [], seed
        moved += any("cycle_last" in e.step.label for e in run.host)
    assert moved > 100, "the timekeeping updates happen in most runs"
    # The same writer without its seqlock: a reader can mix two anchors.
    monkeypatch.setattr(
        emu.engine.host_side, "timekeeping", partial(vdso_data.timekeeping, bump_seq=False)
    )
    out = Fuzzer(sc).fuzz(strategy="random", seed=0, max_schedules=3000)
    assert out.finding is not None and out.finding.oracle == "consistent"


def test_timekeeping_needs_a_real_vdso():
    from emu.engine.executor import Executor
    from emu.engine.scenario import Scenario
    from emu.errors import UsageError

    with pytest.raises(UsageError, match="needs a real vDSO"):
        Executor(Scenario(image="modern", timekeeping=1))


@needs_samples
@pytest.mark.parametrize("path", DEBIAN, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_debian_images_run_alike_in_the_lane_in_python_stepping_and_replay(path):
    """Every way of running a real image gives the same run: the native lane (whose sites
    hang off one range hook), every operation in Python, one instruction per engine call,
    and a replay of the recorded choices; with a host that tears and guest timekeeping."""
    from emu.search.replay import Replay

    sc = Scenario(image=str(path), host="kvm-legacy-copy", timekeeping=1, reads=2)
    lane, python = Executor(sc), Executor(sc, native=False)
    assert lane.native
    for seed in range(40):
        a = lane.run(RandomWalk(seed, preempt=0.25))
        assert a.outcome() == python.run(RandomWalk(seed, preempt=0.25)).outcome(), seed
        if seed % 4 == 0:
            stepped = lane.run(RandomWalk(seed, preempt=0.25), observer=lambda k, d: None)
            assert stepped.outcome() == a.outcome(), seed
        assert lane.run(Replay(a.choices)).outcome() == a.outcome(), seed
