"""Source lines from an image's DWARF `.debug_line`: image address -> `file:line`.

Real kernel vDSOs from a build tree or a debug package carry DWARF; traces and the
disassembly use it to show which C line each instruction came from.
"""

from __future__ import annotations

import bisect
import io
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile


@dataclass(frozen=True)
class Lines:
    """A sorted table of (address, "file:line") rows; empty without DWARF."""

    addrs: tuple[int, ...] = ()
    rows: tuple[str, ...] = ()

    def at(self, addr: int) -> str:
        i = bisect.bisect_right(self.addrs, addr) - 1
        return self.rows[i] if i >= 0 else ""


def _name(lp, entry) -> str:
    files = lp["file_entry"]
    idx = entry.state.file
    # DWARF 5 numbers files from 0, earlier versions from 1.
    f = files[idx] if lp.header["version"] >= 5 else files[idx - 1]
    name = f.name.decode(errors="replace") if isinstance(f.name, bytes) else str(f.name)
    return name


def read_lines(data: bytes | None = None, path: Path | None = None) -> Lines:
    """The line table of an ELF (bytes or path); an empty table when it has no DWARF."""
    if data is None:
        if path is None or not path.is_file():
            return Lines()
        data = path.read_bytes()
    try:
        elf = ELFFile(io.BytesIO(data))
        if not elf.has_dwarf_info():
            return Lines()
        dwarf = elf.get_dwarf_info()
        table: dict[int, str] = {}
        for cu in dwarf.iter_CUs():
            lp = dwarf.line_program_for_CU(cu)
            if lp is None:
                continue
            for entry in lp.get_entries():
                st = entry.state
                if st is None or st.end_sequence:
                    continue
                table[st.address] = f"{Path(_name(lp, entry)).name}:{st.line}"
    except Exception:  # malformed DWARF costs us the source lines, never the trace
        return Lines()
    addrs = tuple(sorted(table))
    return Lines(addrs, tuple(table[a] for a in addrs))
