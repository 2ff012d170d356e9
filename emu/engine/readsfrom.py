"""Reads-from: which host store each shared-page load of a run read.

A load of `width` bytes at logical time `t` reads, for each of its bytes, the last host
step before `t` whose `PageWrite` covered that byte, or the boot image when none did. A
load whose bytes came from several host steps is *torn* at the byte level. Explanations,
signatures, coverage and DPOR's outcome sets all use this one definition.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emu.engine.decode import LOAD
from emu.engine.fields import field_name
from emu.engine.run import Run

if TYPE_CHECKING:
    from emu.engine.machine import Layout
    from host_model.vdso_data import VdsoDataSpec

#: The store index of bytes nobody wrote since boot.
BOOT = -1


@dataclass(frozen=True)
class LoadSource:
    """One shared-page load and the host steps its bytes came from."""

    #: The read it belongs to (`t0.r1`) and its position among that read's operations.
    read: str
    op: int
    t: int
    task: int
    vcpu: int
    pc: int
    addr: int
    width: int
    #: Name of the loaded field (`vcpu0.system_time`, `vdso_data[0].seq`).
    field: str
    #: For each byte, in address order: the index into `run.host` of the step that stored
    #: it last, or BOOT.
    stores: tuple[int, ...]

    @property
    def torn(self) -> bool:
        """Did the bytes of this single load come from more than one store?"""
        return len(set(self.stores)) > 1

    @property
    def source(self) -> int:
        """The latest store any byte came from (the load's store when it is not torn)."""
        return max(self.stores)


def reads_from(
    run: Run,
    layout: Layout,
    widths: Mapping[int, int],
    spec: VdsoDataSpec | None = None,
) -> list[LoadSource]:
    """Every shared-page load of `run`, in execution order, with the stores it read.

    `widths` maps a load instruction's address to its width (`Executor.sites.widths`);
    `spec` names real vDSO record bytes (`Image.vdso_data`)."""
    loads = sorted(
        (op.t, r.label, i, op) for r in run.reads for i, op in enumerate(r.ops) if op.kind == LOAD
    )
    last: dict[int, int] = {}
    out: list[LoadSource] = []
    host = run.host
    h = 0
    pages = layout.pages
    for t, label, i, op in loads:
        while h < len(host) and host[h].t < t:
            for w in host[h].step.writes:
                start = pages[w.page] + w.offset
                for a in range(start, start + len(w.data)):
                    last[a] = h
            h += 1
        width = widths.get(op.pc, 1)
        stores = tuple(last.get(a, BOOT) for a in range(op.arg, op.arg + width))
        name = field_name(layout, spec, op.arg)
        out.append(LoadSource(label, i, t, op.task, op.vcpu, op.pc, op.arg, width, name, stores))
    return out


def pattern(sources: Iterable[LoadSource]) -> tuple[tuple[str, int, tuple[int, ...]], ...]:
    """A hashable summary of who read what (read, load instruction, stores): two runs with
    the same pattern had every load read the same host steps. Coverage counts these."""
    return tuple((s.read, s.pc, s.stores) for s in sources)
