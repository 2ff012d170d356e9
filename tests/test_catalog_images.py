"""Every bundled image reads correct time when quiescent; i386 twins match x86-64 verdicts."""

from __future__ import annotations

import pytest

from emu.engine.executor import Executor
from emu.engine.scenario import Scenario
from emu.engine.scheduler import Default
from emu.image.loader import load, manifest
from emu.report.disasm import listing
from emu.search.fuzz import Fuzzer

ENTRIES = manifest()["images"]
PV_READERS = [e["name"] for e in ENTRIES if e["generation"] != "hyperv"]


@pytest.mark.parametrize("name", PV_READERS)
def test_quiescent_read_is_the_true_time(name):
    sc = Scenario(image=name, host_params={"updates": 0}, vcpus=2, reads=1)
    run = Executor(sc).run(Default())
    for r in run.reads:
        assert r.outcome == "value", (r.outcome, r.detail)
        tscs = [op for op in r.ops if op.kind in ("rdtsc", "rdtscp")]
        # the pvclock scale rounds down by at most 1 ns; one of the TSC reads is the one used
        assert any(0 <= run.clock.ns(op.t) - r.value <= 1 for op in tscs), r.value


@pytest.mark.parametrize("name", [e["name"] for e in ENTRIES if e["generation"] == "hyperv"])
def test_hyperv_quiescent_read_is_the_true_time(name):
    sc = Scenario(image=name, host="hyperv", host_params={"updates": 0}, vcpus=1, reads=1)
    run = Executor(sc).run(Default())
    (r,) = run.reads
    assert r.outcome == "value"
    assert abs(r.value - run.clock.ns(r.end)) <= 1_000


TWINS = ["bug-no-retry", "bug-no-odd-check", "modern", "vcpu0", "percpu"]


@pytest.mark.parametrize("reader", TWINS)
def test_i386_twin_has_the_same_verdict(reader):
    verdicts = []
    for arch in ("x86_64", "i386"):
        c = Fuzzer(Scenario(image=f"{reader}-{arch}", reads=2))
        out = c.fuzz(strategy="random", seed=1, max_schedules=1500)
        verdicts.append(out.finding.oracle if out.finding else "pass")
    assert verdicts[0] == verdicts[1]
    assert (verdicts[0] == "pass") == (not reader.startswith("bug-"))


def test_disasm_names_the_fields_each_load_reads():
    text = listing(load("modern-i386"))
    for field in (
        "vcpu0.version",
        "vcpu0.tsc_timestamp",
        "vcpu0.system_time",
        "vcpu0.tsc_to_system_mul",
        "vcpu0.tsc_shift",
        "vcpu0.flags",
    ):
        assert field in text
    assert "rdtsc" in text
