"""A guest that faults or never finishes is a finding, never a crash of the tool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from emu.executor import Executor
from emu.image import BLOBS_DIR
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


def _build(tmp_path: Path, name: str) -> Path:
    cc = shutil.which("gcc")
    assert cc, "gcc is needed to build the failing readers (.ci/run installs it)"
    src = tmp_path / f"{name}.c"
    src.write_text(READERS[name])
    out = tmp_path / f"{name}.so"
    subprocess.run(
        [
            cc,
            "-O2",
            "-fPIC",
            "-shared",
            "-nostdlib",
            "-fno-asynchronous-unwind-tables",
            "-fcf-protection=none",
            "-Wl,--build-id=none",
            "-Wl,--hash-style=both",
            f"-Wl,-T,{BLOBS_DIR / 'vdso.lds'}",
            "-o",
            str(out),
            str(src),
        ],
        check=True,
    )
    return out


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
    path = _build(tmp_path, name)
    sc = Scenario(image=str(path), host_params={"updates": 0})
    run = Executor(sc).run(Default())
    violations = judge(run, sc)
    assert violations and violations[0].oracle == oracle
    assert run.stopped in ("fault", "hang")
