"""Source lines from DWARF appear in traces of images built with -g."""

from __future__ import annotations

from pathlib import Path

from conftest import build_reader

from emu.engine.executor import Executor
from emu.engine.scenario import Scenario
from emu.image.lines import read_lines
from emu.image.loader import load
from emu.report.trace import trace
from emu.search.schedule import Schedule

SRC = """
extern volatile unsigned int pvclock_page[] __attribute__((visibility("hidden")));
unsigned long long vdsofuzz_read(void)
{
    unsigned int v = pvclock_page[0];
    return v;
}
"""


def _build(tmp_path: Path) -> Path:
    return build_reader(tmp_path, "reader", SRC, "-g")


def test_line_table_maps_the_load_to_its_c_line(tmp_path):
    path = _build(tmp_path)
    image = load(path)
    lines = read_lines(path=path)
    assert lines.at(image.entry).startswith("reader.c:")
    # the load of pvclock_page[0] is line 5 of SRC
    assert any(row == "reader.c:5" for row in lines.rows)


def test_trace_shows_source_lines(tmp_path):
    path = _build(tmp_path)
    sc = Scenario(image=str(path), host_params={"updates": 0}, vcpus=1, reads=1)
    ex = Executor(sc)
    text = trace(Schedule(sc, ex.image.sha256), ex).text()
    assert "; reader.c:5" in text


def test_blob_without_dwarf_has_no_lines():
    assert read_lines(path=load("modern").path).rows == ()
