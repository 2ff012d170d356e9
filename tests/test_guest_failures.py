"""A guest that faults or never finishes is a finding, never a crash of the tool."""

from __future__ import annotations

import pytest
from conftest import build_reader

from emu.engine.executor import Executor
from emu.engine.scenario import Scenario
from emu.engine.scheduler import Default
from emu.oracles import judge

READERS = {
    "null-deref": "unsigned long long vdsofuzz_read(void) "
    "{ return *(volatile unsigned long long *)8; }",
    "spin": 'unsigned long long vdsofuzz_read(void) { for (;;) __asm__ volatile(""); }',
    "spin-on-page": """
        extern volatile unsigned int pvclock_page[] __attribute__((visibility("hidden")));
        unsigned long long vdsofuzz_read(void) { while (pvclock_page[0] != 12345) ; return 0; }""",
    "bad-opcode": 'unsigned long long vdsofuzz_read(void) { __asm__ volatile("ud2"); return 0; }',
}


@pytest.mark.parametrize(
    ("name", "oracle"),
    [
        ("null-deref", "no-fault"),
        ("bad-opcode", "no-fault"),
        ("spin", "terminates"),
        ("spin-on-page", "terminates"),
    ],
)
def test_guest_failure_is_a_violation(tmp_path, name, oracle):
    path = build_reader(tmp_path, name, READERS[name])
    sc = Scenario(image=str(path), host_params={"updates": 0})
    run = Executor(sc).run(Default())
    violations = judge(run, sc)
    assert violations and violations[0].oracle == oracle
    assert run.stopped in ("fault", "hang")


def test_a_hang_is_a_stretch_without_visible_operations(make_executor):
    """The instruction limit counts from the last visible operation, not from the engine
    call: a run that needs more instructions in total than the limit is not a hang."""
    from emu.search.random import RandomWalk

    ex = make_executor("modern", host_params={"updates": 2})
    normal = [ex.run(RandomWalk(seed, preempt=0.2)) for seed in range(20)]
    # far fewer than one run executes, more than any stretch between visible operations
    ex = make_executor("modern", host_params={"updates": 2}, max_insns=60)
    for seed, want in enumerate(normal):
        assert ex.run(RandomWalk(seed, preempt=0.2)).outcome() == want.outcome()
        stepped = ex.run(RandomWalk(seed, preempt=0.2), observer=lambda kind, data: None)
        assert stepped.outcome() == want.outcome()


def test_a_small_limit_still_catches_a_hang(tmp_path):
    path = build_reader(tmp_path, "spin", READERS["spin"])
    sc = Scenario(image=str(path), host_params={"updates": 0}, max_insns=60)
    for observer in (None, lambda kind, data: None):
        run = Executor(sc).run(Default(), observer=observer)
        assert run.stopped == "hang"
        assert "60 instructions without a visible operation" in run.reads[0].detail
