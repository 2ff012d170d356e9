"""Real kernel vDSO images (`vdso64.so`/`vdso32.so`, or a `dump-vdso` directory) as Images.

The layout (pages, `vdso_data` shape) comes from `emu.image.layout`; `.altinstructions` are
applied for the chosen `--cpu`; the entry is `__vdso_clock_gettime` (i386:
`__vdso_clock_gettime64` when present) called by `emu.image.abi.ClockGettimeAbi`; the host side
fills `vdso_data` through `host_model.vdso_data` so the pvclock path is taken.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from elftools.elf.elffile import ELFFile

from emu.errors import ImageError
from emu.image.alternatives import apply_alternatives
from emu.image.cpu import CPU_CHOICES, default_cpu
from emu.image.elf import Image, open_elf, read_elf
from emu.image.layout import VdsoLayout, analyze
from emu.image.structs import CS_HRES_COARSE, CS_RAW
from host_model.clock import Seed, hz_of
from host_model.vdso_data import VdsoDataSpec

#: Dynamic symbols that make an ELF a vDSO rather than a project reader.
VDSO_MARKERS = ("__vdso_clock_gettime", "__vdso_clock_gettime64", "__vdso_gettimeofday")


def is_vdso(symbols: dict[str, int]) -> bool:
    return any(m in symbols for m in VDSO_MARKERS)


def entry_of(layout: VdsoLayout) -> tuple[str, int]:
    if layout.arch == "i386" and "__vdso_clock_gettime64" in layout.entry:
        return "__vdso_clock_gettime64", layout.entry["__vdso_clock_gettime64"]
    return layout.clock_gettime


def _page_of(layout: VdsoLayout, addr: int) -> tuple[str, int]:
    best = None
    for name, off in layout.pages.items():
        if off <= addr and (best is None or off > best[1]):
            best = (name, off)
    if best is None:
        raise ImageError(f"vdso_data at {addr:#x} is below every clock page")
    return best


def data_spec(layout: VdsoLayout) -> VdsoDataSpec:
    """The clock records (CS_HRES_COARSE, CS_RAW) as offsets in the page that holds them."""
    first = layout.data["vdso_data"] + CS_HRES_COARSE * layout.clock_stride
    page, off = _page_of(layout, first)
    recs = tuple(
        layout.data["vdso_data"] + cs * layout.clock_stride - off for cs in (CS_HRES_COARSE, CS_RAW)
    )
    fields = {k: (f.offset, f.size, f.count, f.stride) for k, f in layout.vdso_data.fields.items()}
    return VdsoDataSpec(page, recs, fields, layout.vdso_data.size, layout.clock_mode_pvclock)


def load_real(
    data: bytes,
    *,
    name: str,
    path: Path | None,
    cpu: str | None = None,
    layout: VdsoLayout | None = None,
    elf: ELFFile | None = None,
) -> Image:
    """A real vDSO's bytes -> Image, alternatives applied for `cpu` (default: this CPU's).
    `elf` is `data` already parsed (the loader's); it serves every step of the load."""
    if elf is None:
        elf = open_elf(data, name)
    if layout is None:
        # The path, when there is one, only names the file in error messages.
        layout = analyze(path if path is not None and path.is_file() else data, elf=elf)
    cpu = cpu or default_cpu()
    if cpu not in CPU_CHOICES:
        raise ImageError(f"unknown --cpu {cpu!r}: choose one of {', '.join(CPU_CHOICES)}")
    alt = apply_alternatives(data, cpu, kernel_version=layout.kernel_version, elf=elf)
    base = read_elf(alt.data, name, elf)  # patching changes code bytes, not the ELF's shape
    entry_name, entry = entry_of(layout)
    return Image(
        name=name,
        arch=base.arch,
        sha256=hashlib.sha256(data).hexdigest(),
        segments=base.segments,
        entry=entry,
        entry_name=entry_name,
        pages=dict(layout.pages),
        symbols=base.symbols,
        text=base.text,
        path=path,
        call_abi="clock_gettime",
        layout=layout,
        vdso_data=data_spec(layout),
        cpu=cpu,
        alternatives=tuple(alt.patches),
        alt_warnings=tuple(alt.warnings),
    )


def load_dump_dir(directory: Path, *, name: str, cpu: str | None = None) -> Image:
    """A `vdsofuzz dump-vdso` directory -> Image (the running kernel already patched the
    alternatives; re-applying them for `cpu` keeps or refuses the kernel's choice)."""
    from emu.image.dump import dump_image, dump_layout

    data = dump_image(directory)
    elf = open_elf(data, name)
    layout = dump_layout(directory, data, elf)
    image = load_real(data, name=name, path=directory, cpu=cpu, layout=layout, elf=elf)
    return replace(image, clock_seed=clock_seed(directory))


def clock_seed(directory: Path) -> Seed | None:
    """The dump's real vCPU 0 pvti as the model clock's start: its TSC frequency, its
    system_time as boot time and its tsc_timestamp as the TSC at step 0 (None without one)."""
    import json

    meta = json.loads((directory / "dump.json").read_text())
    p = meta.get("pvti")
    if not p or not p.get("stable") or not p.get("tsc_to_system_mul"):
        return None
    return Seed(hz_of(p["tsc_to_system_mul"], p["tsc_shift"]), p["system_time"], p["tsc_timestamp"])
