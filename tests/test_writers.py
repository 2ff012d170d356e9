"""Compiled host writers (`--writer`): what the writer agent records, how its stores become
host steps, the `writer` oracle, traces, the catalog key, and bad writer files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

import vdso_blobs
from emu.cli import main
from emu.engine.executor import Executor
from emu.engine.scenario import Scenario
from emu.engine.scheduler import Default
from emu.engine.writer_agent import WriterEngine
from emu.engine.writer_steps import WriterStep
from emu.errors import ScheduleError
from emu.image.writer import WRITER_ENTRY, load_writer
from emu.oracles import judge
from emu.report.trace import trace
from emu.search import catalog_file
from emu.search.fuzz import Fuzzer
from emu.search.schedule import Schedule
from host_model.pvti import Pvti

SHARED = (0x3000_0000, 0x3000_4000)
SLOT = 0x3000_1000
OLD = Pvti(2, 1000, 2000, 0x8000_0000, -1, 1)
NEW = Pvti(2, 5000, 9000, 0x9000_0000, 0, 1)


def bundled(name: str) -> Path:
    aliases = vdso_blobs.manifest()["writer_aliases"]
    entry = next(e for e in vdso_blobs.manifest()["writers"] if e["name"] == aliases[name])
    return vdso_blobs.path(entry["path"])


def execute(spec: str, old: Pvti = OLD, new: Pvti = NEW):
    return WriterEngine(load_writer(spec), SHARED).execute(SLOT, old.pack(), new.pack())


def patched(tmp_path: Path, code: bytes, name: str) -> Path:
    """The bundled seqlock writer with `code` written over its entry: a writer that does
    what a test needs, without a compiler."""
    data = bytearray(bundled("writer-seqlock").read_bytes())
    elf = ELFFile(io.BytesIO(bytes(data)))
    entry = load_writer("writer-seqlock").entry
    seg = next(
        s
        for s in elf.iter_segments()
        if s["p_type"] == "PT_LOAD" and s["p_vaddr"] <= entry < s["p_vaddr"] + s["p_filesz"]
    )
    at = seg["p_offset"] + entry - seg["p_vaddr"]
    data[at : at + len(code)] = code
    out = tmp_path / name
    out.write_bytes(bytes(data))
    return out


# --- what the writer agent records --------------------------------------------------------


def test_the_seqlock_writer_stores_odd_version_body_even_version_and_loads_next_after_one():
    ex = execute("writer-seqlock")
    assert not ex.error
    assert ex.before_next == 1  # the odd version is stored before `next` is looked at
    first, last = ex.stores[0], ex.stores[-1]
    assert (first.offset, first.data) == (SLOT - SHARED[0], (3).to_bytes(4, "little"))
    assert (last.offset, last.data) == (SLOT - SHARED[0], (4).to_bytes(4, "little"))
    assert Pvti.unpack(ex.final) == NEW._replace(version=4)
    assert last.insns[-1].startswith(f"{WRITER_ENTRY}+") and "mov" in last.insns[-1]


def test_a_16_byte_store_is_one_store_and_rep_movs_one_per_element():
    sse = execute("writer-seed-memcpy")
    assert [len(s.data) for s in sse.stores] == [16, 16]
    assert all("movups" in s.insn for s in sse.stores)
    rep = execute("writer-seed-repmovs")
    assert [len(s.data) for s in rep.stores] == [8, 8, 8, 8]
    assert len({s.pc for s in rep.stores}) == 1 and "rep movsq" in rep.stores[0].insn
    assert [s.offset for s in rep.stores] == [SLOT - SHARED[0] + 8 * i for i in range(4)]


def test_executions_are_deterministic_and_kept():
    engine = WriterEngine(load_writer("writer-xen"), SHARED)
    a = engine.execute(SLOT, OLD.pack(), NEW.pack())
    assert engine.execute(SLOT, OLD.pack(), NEW.pack()) is a
    fresh = WriterEngine(load_writer("writer-xen"), SHARED).execute(SLOT, OLD.pack(), NEW.pack())
    assert fresh == a


# --- as the host agent ----------------------------------------------------------------------


def test_each_store_is_one_host_step_named_by_field_and_published_with_the_last():
    sc = Scenario(image="modern", host="kvm", writer="writer-seqlock", vcpus=1, reads=1)
    run = Executor(sc).run(Default())
    mine = [e.step for e in run.host if isinstance(e.step, WriterStep)]
    assert [s.writes[0].label for s in mine] == [
        "vcpu0.version",
        "vcpu0.tsc_timestamp",
        "vcpu0.system_time",
        "vcpu0.tsc_to_system_mul",
        "vcpu0.tsc_shift",
        "vcpu0.flags",
        "vcpu0.version",
    ]
    assert [bool(s.publish) for s in mine] == [False] * 6 + [True]
    assert mine[0].writes[0].old == 2 and mine[0].writes[0].new == 3
    assert "by vdsofuzz_host_write+" in mine[0].label
    assert run.history["pvti0"][-1][1].version == 4
    assert judge(run, sc) == []


def test_a_writer_that_loads_next_first_is_called_at_a_step_of_its_own():
    sc = Scenario(image="modern", host="kvm", writer="writer-seed-memcpy", vcpus=1, reads=1)
    run = Executor(sc).run(Default())
    labels = [e.step.label for e in run.host]
    called = labels.index("vcpu0 host calls the writer")
    assert "vcpu0.version..tsc_timestamp" in labels[called + 1]


def test_the_seed_writer_tears_modern_and_the_trace_shows_its_instructions():
    sc = Scenario(image="modern", host="kvm", writer="writer-seed-memcpy")
    out = Fuzzer(sc).fuzz(strategy="random", seed=0, max_schedules=500)
    assert out.finding is not None and out.finding.oracle == "consistent"
    ex = Executor(sc)
    tr = trace(Schedule(sc, ex.image.sha256, out.finding.schedule.choices), ex)
    text = tr.text()
    assert "movups xmmword ptr [rdi], xmm2" in text
    assert "vcpu0.version..tsc_timestamp 0x" in text
    kinds = [s.kind for s in tr.steps]
    first_writer = kinds.index("writer")
    # the reader's loads come between the writer's two 16-byte stores
    last_writer = len(kinds) - 1 - kinds[::-1].index("writer")
    assert "insn" in kinds[first_writer:last_writer]


# --- the writer oracle -----------------------------------------------------------------------

#: mov dword ptr [rdi+0x40], eax ; ret   -- a store into the next vCPU's slot
STRAY = bytes.fromhex("894740c3")
#: jmp $   -- never returns
LOOP = bytes.fromhex("ebfe")
#: mov eax, dword ptr [0] ; ret  -- a load from an unmapped page
FAULT = bytes.fromhex("8b042500000000c3")


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (STRAY, ["outside its 32-byte slot", "slot+0x40"]),
        (LOOP, ["did not return within"]),
        (FAULT, ["faulted"]),
    ],
)
def test_a_broken_writer_is_a_finding_against_the_writer(tmp_path, code, words):
    path = patched(tmp_path, code, "broken.so")
    sc = Scenario(image="modern", host="kvm", writer=str(path), vcpus=2, reads=1)
    run = Executor(sc).run(Default())
    violations = judge(run, sc)
    assert violations and violations[0].oracle == "writer"
    for w in words:
        assert w in violations[0].message
    # the host made no store after the failure, and the run still ended
    failed = next(i for i, e in enumerate(run.host) if getattr(e.step, "error", ""))
    assert not any(e.step.writes for e in run.host[failed:])
    assert all(r.outcome for r in run.reads)


# --- bad input -------------------------------------------------------------------------------


def _fuzz(tmp_path: Path, writer: str) -> int:
    return main(
        ["fuzz", "--out", str(tmp_path), "--no-trace", "--no-db", "--host", "kvm"]
        + ["--writer", writer]
    )


def test_bad_writer_files_are_one_line_naming_the_file_and_the_fix(tmp_path, capsys):
    text = tmp_path / "writer.txt"
    text.write_text("not a writer\n")
    reader = vdso_blobs.path("vdso_blobs/images/modern-x86_64-gcc-O2.so")
    i386 = vdso_blobs.path("vdso_blobs/images/modern-i386-gcc-O2.so")
    cases = [
        (str(text), [str(text), "not an ELF", WRITER_ENTRY]),
        (str(reader), [str(reader), f"no `{WRITER_ENTRY}` symbol", "void vdsofuzz_host_write("]),
        (str(i386), [str(i386), "i386", "-m64"]),
        (str(tmp_path / "missing.so"), ["missing.so", "no writer", "writer-seqlock"]),
    ]
    for writer, words in cases:
        assert _fuzz(tmp_path, writer) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        for w in words:
            assert w in err, (w, err)


def test_a_writer_needs_a_host_that_writes_pvti_records():
    with pytest.raises(ScheduleError, match="writes no pvclock page"):
        Scenario(image="hyperv", host="hyperv", writer="writer-seqlock")


def test_the_catalog_takes_a_writer_and_refuses_a_bad_one():
    row = {"name": "w", "image": "modern", "host": "kvm", "expect": "violation"}

    def doc(**extra: str) -> dict[str, object]:
        return {"format": catalog_file.FORMAT, "scenarios": [{**row, **extra}]}

    (entry,) = catalog_file.parse(doc(writer="writer-seed-memcpy"))
    assert entry.scenario.writer == "writer-seed-memcpy"
    with pytest.raises(catalog_file.CatalogError, match="no writer 'nope'"):
        catalog_file.parse(doc(writer="nope"))


def test_schedule_files_keep_the_writer_and_omit_it_when_there_is_none():
    with_writer = Scenario(image="modern", writer="writer-seqlock")
    assert Scenario.from_json(with_writer.to_json()) == with_writer
    assert "writer" not in Scenario(image="modern").to_json()


def test_a_finding_with_a_writer_file_is_refused_once_the_writer_changed(tmp_path, capsys):
    """A writer given by path is code like the image: replay runs only the same bytes."""
    writer = tmp_path / "w.so"
    writer.write_bytes(vdso_blobs.path("images/writer-seqlock-x86_64-gcc-O2.so").read_bytes())
    sc = Scenario(image="modern", host="kvm", writer=str(writer))
    sched = Schedule(sc, Executor(sc).image.sha256, ())
    saved = tmp_path / "s.json"
    saved.write_text(json.dumps(sched.to_json()))
    assert main(["replay", str(saved)]) == 0
    capsys.readouterr()
    writer.write_bytes(vdso_blobs.path("images/writer-seed-memcpy-x86_64-gcc-O2.so").read_bytes())
    assert main(["replay", str(saved)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "changed since this file was saved" in err[0]


def test_check_writer_takes_the_reference_scenarios_of_seqlock_hosts():
    from emu.search import catalog
    from emu.search.catalog_writer import for_writer

    entries = catalog.load()
    chosen = for_writer(entries, "writer-seqlock")
    hosts = {e.scenario.host for e in chosen}
    assert "kvm" in hosts and "xen" in hosts
    assert not hosts & {"kvm-legacy-copy", "hyperv"}
    assert all(e.scenario.writer == "writer-seqlock" and e.name.endswith("+writer") for e in chosen)
    reference = {e.name for e in entries if e.reference and e.scenario.host in hosts}
    assert {e.name.removesuffix("+writer") for e in chosen} == reference


def test_images_lists_every_bundled_writer_with_its_alias(capsys):
    assert main(["images"]) == 0
    out = capsys.readouterr().out
    man = vdso_blobs.manifest()
    for w in man["writers"]:
        assert w["name"] in out
    for alias, name in man["writer_aliases"].items():
        assert any(line.startswith(name) and alias in line for line in out.splitlines())
