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


def vdso_field(spec: VdsoDataSpec | None, page: str, offset: int) -> str:
    """`vdso_data[0].seq` for a byte of a real vDSO's clock record, else ''."""
    if spec is None or page != spec.page:
        return ""
    for i, start in enumerate(spec.records):
        rel = offset - start
        if 0 <= rel < spec.size:
            for name, (off, size, count, stride) in spec.fields.items():
                span = size if count == 1 else count * stride
                if off <= rel < off + max(span, 1):
                    sub = f"[{(rel - off) // stride}]" if count > 1 and stride else ""
                    return f"vdso_data[{i}].{name}{sub}"
    return ""


def field_name(layout: Layout, spec: VdsoDataSpec | None, addr: int) -> str:
    """The name of the shared byte at absolute address `addr`."""
    hit = layout.locate(addr)
    if hit is None:
        return f"{addr:#x}"
    page, off = hit
    return vdso_field(spec, page, off) or describe(page, off)
