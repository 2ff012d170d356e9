"""The compiled writers against the Python host models that claim the same protocol: on
every bundled reader family (x86-64, gcc -O2) the compiled correct seqlock writer and `kvm`
reach the same verdict under the same bounded exhaustive search, and both the seed-era
compiled writers and `kvm-legacy-copy` tear the modern reader."""

from __future__ import annotations

import pytest

from emu.engine.executor import Executor
from emu.engine.scenario import Scenario
from emu.engine.scheduler import Default
from emu.image.loader import manifest
from emu.search.fuzz import Fuzzer

READERS = sorted(
    {
        e["reader"]
        for e in manifest()["images"]
        if (e["arch"], e["compiler"], e["opt"]) == ("x86_64", "gcc", "O2")
    }
)


def verdict(image: str, host: str, writer: str = "") -> tuple[str, str | None]:
    """The bounded exhaustive search's verdict (every interleaving with at most two
    preemptions, one read per task)."""
    sc = Scenario(image=image, host=host, writer=writer, vcpus=2, reads=1)
    out = Fuzzer(sc).fuzz(strategy="exhaustive", preemptions=2)
    return out.verdict, out.finding.oracle if out.finding else None


def test_every_reader_family_is_covered():
    assert {"modern", "vcpu0", "percpu", "hyperv", "bug-no-retry", "bug-no-odd-check"} <= set(
        READERS
    )


@pytest.mark.parametrize("reader", READERS)
def test_the_compiled_seqlock_writer_and_kvm_agree(reader):
    assert verdict(reader, "kvm", "writer-seqlock") == verdict(reader, "kvm")


def test_the_compiled_seqlock_writer_makes_kvms_changes_in_kvms_order():
    """The same shape: the compiled writer's stores that change a byte are, field by field,
    the Python protocol's stores (the compiled one also rewrites unchanged fields)."""
    sc = Scenario(image="modern", host="kvm", vcpus=1, reads=1)
    python = Executor(sc).run(Default())
    compiled = Executor(
        Scenario(image="modern", host="kvm", writer="writer-seqlock", vcpus=1, reads=1)
    ).run(Default())

    def changes(run):
        return [
            (w.label, w.new) for e in run.host for w in e.step.writes if w.old != w.new and e.t >= 0
        ]

    assert changes(compiled) == changes(python)
    assert [k for k in python.history] == [k for k in compiled.history]
    assert python.history["pvti0"][-1][1] == compiled.history["pvti0"][-1][1]


@pytest.mark.parametrize(
    ("host", "writer"),
    [
        ("kvm-legacy-copy", ""),
        ("kvm", "writer-seed-memcpy"),
        ("kvm", "writer-seed-repmovs"),
        ("kvm", "writer-seed-memcpy-x86_64-clang-Os"),
    ],
)
def test_the_seed_era_writers_tear_modern(host, writer):
    assert verdict("modern", host, writer) == ("violation", "consistent")
