"""A folded trace runs what the fast mode runs: the engine runs folded loops unreported,
which must not change a single decision, value or step of the run."""

from __future__ import annotations

import pytest

from emu.engine.executor import Executor
from emu.engine.scenario import Scenario
from emu.report.trace import trace
from emu.search.random import RandomWalk
from emu.search.schedule import Schedule


@pytest.mark.parametrize(
    ("image", "host"),
    [
        ("modern", "kvm"),
        ("modern-i386-gcc-O2", "kvm-legacy-copy"),
        ("vcpu0", "kvm"),
        ("percpu-i386-gcc-O2", "kvm"),
        ("hyperv-x86_64-gcc-O2", "hyperv"),
    ],
)
def test_folded_trace_equals_the_fast_run(image: str, host: str) -> None:
    sc = Scenario(image=image, host=host, host_params={"updates": 2})
    ex = Executor(sc)
    for seed in range(4):
        fast = ex.run(RandomWalk(seed, preempt=0.3))
        sched = Schedule(sc, ex.image.sha256, tuple(fast.choices))
        folded = trace(sched, ex, fold=True)
        assert folded.run.outcome() == fast.outcome()
        plain = trace(sched, ex)
        # Folding only merges instruction lines: host steps and reads are all there.
        kinds = [(s.kind, s.text) for s in plain.steps if s.kind in ("host", "read")]
        assert kinds == [(s.kind, s.text) for s in folded.steps if s.kind in ("host", "read")]
