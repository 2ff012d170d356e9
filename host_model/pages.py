"""Names for the bytes of each shared page, so traces can say `vcpu0.version`, not an offset."""

from __future__ import annotations

from host_model import hyperv
from host_model.abi import PVTI_SIZE, PVTI_SLOT
from host_model.pvti import field_at

#: Page name -> [(offset, size, field name)] for pages with a single fixed record.
RECORDS: dict[str, list[tuple[int, int, str]]] = {
    hyperv.PAGE: list(hyperv.FIELDS),
}


def describe(page: str, offset: int) -> str:
    """`vcpu1.tsc_timestamp+4` for byte `offset` of `page`."""
    if page == "pvclock":
        slot, within = divmod(offset, PVTI_SLOT)
        if within >= PVTI_SIZE:
            return f"vcpu{slot}.slot_pad+{within - PVTI_SIZE}"
        f = field_at(within)
        extra = within - f.offset
        if f.count > 1:  # an array (`pad[2]`): name the element
            index, extra = divmod(extra, f.size // f.count)
            return f"vcpu{slot}.{f.name}[{index}]" + (f"+{extra}" if extra else "")
        return f"vcpu{slot}.{f.name}" + (f"+{extra}" if extra else "")
    for start, size, name in RECORDS.get(page, ()):
        if start <= offset < start + size:
            extra = offset - start
            return f"{page}.{name}" + (f"+{extra}" if extra else "")
    return f"{page}+{offset:#x}"
