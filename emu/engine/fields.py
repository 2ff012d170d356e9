"""Names of shared-page bytes: one name for each byte, wherever the tool shows it.

A byte of a real vDSO's clock record is `vdso_data[i].field` (with `[k]` for arrays); any
other byte of the clock pages is named by `host_model.pages.describe` (`vcpu1.version`,
`hvclock.tsc_scale+4`); an address outside the pages is shown as hex.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from host_model.pages import describe

if TYPE_CHECKING:
    from emu.engine.machine import Layout
    from host_model.vdso_data import VdsoDataSpec


#: The members of one element of a `vdso_data` array, by the element's size: `basetime[]`
#: (struct vdso_timestamp) and its timens alias `offset[]` are {u64 sec; u64 nsec}.
ELEMENT_MEMBERS: dict[int, tuple[tuple[str, int, int], ...]] = {
    16: (("sec", 0, 8), ("nsec", 8, 8)),
}


def _member(name: str, off: int, size: int, count: int, stride: int, rel: int) -> str:
    """The name of byte `rel` (relative to the record) of member `name`: `cycle_last+4`,
    `basetime[1].nsec`, `basetime[1].nsec+4`."""
    at = rel - off
    if count == 1 or not stride:
        return name + (f"+{at}" if at else "")
    index, within = divmod(at, stride)
    for part, start, length in ELEMENT_MEMBERS.get(stride, ()):
        if start <= within < start + length:
            extra = within - start
            return f"{name}[{index}].{part}" + (f"+{extra}" if extra else "")
    return f"{name}[{index}]" + (f"+{within}" if within else "")


def vdso_field(spec: VdsoDataSpec | None, page: str, offset: int) -> str:
    """`vdso_data[0].seq` for a byte of a real vDSO's clock record, else ''. A byte after
    a member's first carries its distance (`vdso_data[0].cycle_last+4`, the upper half an
    i386 reader loads on its own), as pvti bytes do (`vcpu0.tsc_timestamp+4`)."""
    if spec is None or page != spec.page:
        return ""
    for i, start in enumerate(spec.records):
        rel = offset - start
        if 0 <= rel < spec.size:
            for name, (off, size, count, stride) in spec.fields.items():
                span = size if count == 1 else count * stride
                if off <= rel < off + max(span, 1):
                    return f"vdso_data[{i}]." + _member(name, off, size, count, stride, rel)
    return ""


def field_name(layout: Layout, spec: VdsoDataSpec | None, addr: int) -> str:
    """The name of the shared byte at absolute address `addr`."""
    hit = layout.locate(addr)
    if hit is None:
        return f"{addr:#x}"
    page, off = hit
    return vdso_field(spec, page, off) or describe(page, off)
