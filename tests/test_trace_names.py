"""One name per shared byte: `disasm` and `trace` name each load the same way
(emu/engine/fields.py), every element and half of a field by its own name."""

from __future__ import annotations

import re

import pytest
from conftest import DEBIAN, needs_samples

from emu.engine.executor import Executor
from emu.engine.fields import vdso_field
from emu.engine.scenario import Scenario
from emu.image.loader import load
from emu.report.disasm import listing
from emu.report.trace import trace
from emu.search.schedule import Schedule
from host_model.pages import describe
from host_model.vdso_data import VdsoDataSpec

_LINE = re.compile(r"^\s+([0-9a-f]+):\s+[0-9a-f]+\s+.*?(?:\s; (.*))?$")

#: The 6.10+ `vdso_data` prefix (max_cycles after cycle_last), two records.
SPEC = VdsoDataSpec(
    "vvar",
    (128, 376),
    {
        "seq": (0, 4, 1, 0),
        "cycle_last": (8, 8, 1, 0),
        "max_cycles": (16, 8, 1, 0),
        "basetime": (40, 192, 12, 16),
    },
    248,
)


def test_each_half_and_element_has_its_own_name() -> None:
    rec = 128
    assert vdso_field(SPEC, "vvar", rec + 8) == "vdso_data[0].cycle_last"
    assert vdso_field(SPEC, "vvar", rec + 12) == "vdso_data[0].cycle_last+4"
    assert vdso_field(SPEC, "vvar", rec + 16) == "vdso_data[0].max_cycles"
    b1 = rec + 40 + 16
    assert vdso_field(SPEC, "vvar", b1) == "vdso_data[0].basetime[1].sec"
    assert vdso_field(SPEC, "vvar", b1 + 4) == "vdso_data[0].basetime[1].sec+4"
    assert vdso_field(SPEC, "vvar", b1 + 8) == "vdso_data[0].basetime[1].nsec"
    assert vdso_field(SPEC, "vvar", 376 + 0) == "vdso_data[1].seq"
    assert vdso_field(SPEC, "pvclock", 8) == ""
    assert describe("pvclock", 64 + 12) == "vcpu1.tsc_timestamp+4"
    assert describe("pvclock", 31) == "vcpu0.pad[1]"


def _annotations(image) -> dict[str, set[str]]:
    """`symbol+off` -> the names `disasm` gives the loads of that instruction."""
    out: dict[str, set[str]] = {}
    for line in listing(image).splitlines():
        m = _LINE.match(line)
        if m and m.group(2):
            names = {n.strip() for n in m.group(2).split(",")}
            out[image.symbolize(int(m.group(1), 16))] = names
    return out


def _same_names(image_name: str, cpu: str | None = None) -> int:
    image = load(image_name, cpu=cpu)
    sc = Scenario(
        image=image_name, host="kvm", host_params={"updates": 0}, vcpus=1, reads=1, cpu=cpu or ""
    )
    tr = trace(Schedule(sc, image.sha256, ()), Executor(sc, image))
    notes = _annotations(image)
    checked = 0
    for s in tr.steps:
        for name, _value in s.mem:
            assert name in notes.get(s.where, set()), (s.where, name, notes.get(s.where))
            checked += 1
    return checked


@pytest.mark.parametrize(
    "image",
    ["modern-x86_64-gcc-O2", "modern-i386-gcc-O2", "percpu-i386-gcc-O2", "hyperv-i386-gcc-O2"],
)
def test_disasm_and_trace_name_every_load_alike(image: str) -> None:
    assert _same_names(image) > 0


@needs_samples
@pytest.mark.parametrize("path", DEBIAN, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_disasm_and_trace_agree_on_distribution_vdsos(path) -> None:
    image = load(str(path), cpu="rdtscp")
    assert _same_names(str(path), cpu="rdtscp") > 0
    text = listing(image)
    assert "vvar+0x" not in text  # every record byte is named by its field
    if image.bits == 32:
        assert "vdso_data[0].cycle_last+4" in text
        halves = {"vdso_data[0].basetime[1].sec", "vdso_data[0].basetime[1].nsec"}
        assert halves <= set(re.findall(r"vdso_data\[0\]\.basetime\[1\]\.n?sec", text))
