"""Disassembly view: an image's code, with each shared-page load named by the field it reads.

Loads with a fixed address are named statically; loads through a register are named from
one quiescent stepping run, which records the field each instruction actually read. Both
name a byte by `emu.engine.fields.field_name`, as the trace does.
"""

from __future__ import annotations

from typing import Any

from emu.engine.decode import LOAD, capstone_for, scan
from emu.engine.executor import Executor
from emu.engine.fields import field_name
from emu.engine.machine import Layout
from emu.engine.scenario import Scenario
from emu.engine.scheduler import Default
from emu.errors import ImageError
from emu.image.elf import PAGE, Image


def _field(image: Image, rel: int) -> str:
    """The name of the shared byte at image-relative `rel`, as a trace names it."""
    lo, hi = min(image.pages.values()), max(image.pages.values()) + PAGE
    return field_name(Layout(0, dict(image.pages), (lo, hi)), image.vdso_data, rel)


def observed_fields(image: Image, host: str = "kvm") -> dict[int, set[str]]:
    """Image-relative pc -> fields it read, from one quiescent run on one vCPU."""
    from host_model.registry import host_class

    # Quiescent where the host lets us say so: a user's host may have no `updates`.
    cls, _ = host_class(host)
    params = {"updates": 0} if any(p.name == "updates" for p in cls.params) else {}
    ex = Executor(
        Scenario(image=image.name, host=host, host_params=params, vcpus=1, reads=1), image
    )
    layout = ex.machine.layout
    spec = image.vdso_data
    seen: dict[int, set[str]] = {}

    def observe(kind: str, data: Any) -> None:
        if kind != "insn":
            return
        pc, reads = data[3], data[6]
        for addr, _size, _raw in reads:
            if layout.locate(addr) is not None:
                seen.setdefault(pc - layout.base, set()).add(field_name(layout, spec, addr))

    ex.run(Default(), observer=observe)
    return seen


def listing(image: Image, host: str = "kvm") -> str:
    """The image's code as text, loads annotated, symbols as labels."""
    cs = capstone_for(image.bits)
    if not image.pages:
        raise ImageError(f"{image.name}: no clock pages to name loads against")
    lo, hi = min(image.pages.values()), max(image.pages.values()) + PAGE
    sites = {s.addr: s for s in scan(image, (lo, hi))}
    try:
        dynamic = observed_fields(image, host)
    except Exception:  # a reader that cannot run still deserves a listing
        dynamic = {}
    labels: dict[int, list[str]] = {}
    for name, value in image.symbols.items():
        if value >= 0 and not name.startswith("$"):
            labels.setdefault(value, []).append(name)
    out = [
        f"{image.name} ({image.arch}), entry {image.entry_name} at {image.entry:#x}",
        "pages: " + ", ".join(f"{n}_page={off:#x}" for n, off in sorted(image.pages.items())),
    ]
    for start, end in image.text:
        for i in cs.disasm(image.read(start, end - start), start):
            for label in sorted(labels.get(i.address, [])):
                out.append(f"\n{label}:")
            text = f"{i.mnemonic} {i.op_str}".strip()
            note = ""
            site = sites.get(i.address)
            mem = site.mem if site is not None and site.kind == LOAD else None
            if mem is not None and mem.fixed is not None:
                note = _field(image, mem.fixed)
            elif i.address in dynamic:
                note = ", ".join(sorted(dynamic[i.address]))
            elif site is not None and site.kind != LOAD:
                note = site.kind
            line = f"  {i.address:8x}:  {i.bytes.hex():<22} {text}"
            out.append(f"{line:<72} ; {note}" if note else line)
    return "\n".join(out) + "\n"
