"""A guest that faults or never finishes is a finding, never a crash of the tool."""

from __future__ import annotations

import pytest
from conftest import build_reader

from emu.executor import Executor
from emu.oracles import judge
from emu.scenario import Scenario
from emu.search.base import Default

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
