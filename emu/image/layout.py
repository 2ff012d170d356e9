"""Find the clock-page layout of a real x86 vDSO image (kernel build tree, debug package, dump).

Given a `vdso64.so`/`vdso32.so` (path or bytes), say where the clock pages are relative to
the image base and how the structures in them are laid out, from the best source there is:

1. the image's own absolute symbols (`vvar_page`, `vvar__vdso_data`, `pvclock_page`,
   `hvclock_page`, `timens_page`, 6.15+ `vdso_u_data`/`vdso_u_time_data`/...) and its DWARF
   (`struct vdso_data`, its 6.15+ successors `vdso_time_data`/`vdso_clock`,
   `struct pvclock_vcpu_time_info`, `enum vdso_clock_mode`) -- source "dwarf";
2. the mappings recorded by `vdsofuzz dump-vdso` -- source "dump" (see `emu.image.dump`);
3. a built-in `LayoutProfile` for the kernel family, chosen from the kernel version the
   image carries in its `.note` (`Linux` note type 0 = LINUX_VERSION_CODE) -- source "profile".

Everything here is a pure function of the bytes it is given (no clock, no host state).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elftools.elf.elffile import ELFFile

# The pieces live in sibling modules; their public names stay importable from here.
from emu.image.elffacts import ARCHES as ARCHES
from emu.image.elffacts import ENTRY_NAMES as ENTRY_NAMES
from emu.image.elffacts import NEXT_STEP, open_image
from emu.image.elffacts import ElfFacts as ElfFacts
from emu.image.elffacts import VdsoLayoutError as VdsoLayoutError
from emu.image.elffacts import elf_facts as elf_facts
from emu.image.profiles import PROFILE_BY_NAME as PROFILE_BY_NAME
from emu.image.profiles import PROFILES as PROFILES
from emu.image.profiles import LayoutProfile as LayoutProfile
from emu.image.profiles import parse_release as parse_release
from emu.image.profiles import select_profile as select_profile
from emu.image.structs import CLOCK_IDS as CLOCK_IDS
from emu.image.structs import CS_HRES_COARSE as CS_HRES_COARSE
from emu.image.structs import CS_RAW as CS_RAW
from emu.image.structs import DEFAULT_CLOCK_MODES as DEFAULT_CLOCK_MODES
from emu.image.structs import PVTI_STRUCT as PVTI_STRUCT
from emu.image.structs import FieldInfo as FieldInfo
from emu.image.structs import StructLayout as StructLayout
from emu.image.structs import decode_struct as decode_struct
from host_model.abi import PAGE_SIZE as PAGE_SIZE
from host_model.abi import PVTI_SLOT as PVTI_SLOT  # re-exported: dump and tests read it here

#: Absolute page symbols the x86 linker script emits -> our page names.
PAGE_SYMBOLS = {
    "vvar_page": "vvar",
    "vdso_u_data": "vvar",
    "hpet_page": "hpet",
    "pvclock_page": "pvclock",
    "hvclock_page": "hvclock",
    "timens_page": "timens",
    "vclock_pages": "vclock",
}
#: Absolute data symbols -> our data names (first match wins, in this order).
DATA_SYMBOLS = {
    "vdso_data": ("vvar__vdso_data", "vdso_u_time_data", "_vdso_data"),
    "rng_data": ("vvar__vdso_rng_data", "vdso_rng_data", "vdso_u_rng_data"),
    "timens_data": ("timens__vdso_data",),
    "arch_data": ("vdso_u_arch_data",),
}


@dataclass
class VdsoLayout:
    """Where a vDSO image expects its clock pages, and what the structures in them look like."""

    arch: str
    #: Page name ("vvar", "pvclock", "hvclock", "timens", "rng", ...) -> offset from image base.
    pages: dict[str, int]
    #: Data name ("vdso_data", "rng_data", "timens_data") -> offset from image base.
    data: dict[str, int]
    #: Entry/function symbol -> image-relative address.
    entry: dict[str, int]
    #: Clock record (`vdso_data` <= 6.14, `vdso_clock` 6.15+) member layout.
    vdso_data: StructLayout
    #: Distance between clock record CS_HRES_COARSE and CS_RAW.
    clock_stride: int
    pvti: StructLayout
    clock_modes: dict[str, int]
    #: Special mappings the kernel would create, name -> (offset from image base, size).
    mappings: dict[str, tuple[int, int]]
    source: str  # "dwarf" | "profile" | "dump"
    profile: str | None
    reason: str
    kernel_version: tuple[int, int, int] | None = None
    #: The absolute symbols found (name -> offset from image base); empty when stripped.
    symbols: dict[str, int] = field(default_factory=dict)
    #: Other DWARF structures of interest (hvclock page, vdso_time_data, rng data).
    structs: dict[str, StructLayout] = field(default_factory=dict)
    #: x86-64 only: pages below the image that the code addresses RIP-relatively.
    code_data_pages: tuple[int, ...] = ()

    @property
    def clock_mode_pvclock(self) -> int:
        return self.clock_modes["VDSO_CLOCKMODE_PVCLOCK"]

    @property
    def clock_gettime(self) -> tuple[str, int]:
        """The preferred clock_gettime entry: (symbol, image-relative address)."""
        for name in ("__vdso_clock_gettime", "clock_gettime", "__vdso_clock_gettime64"):
            if name in self.entry:
                return name, self.entry[name]
        raise VdsoLayoutError("the image exports no __vdso_clock_gettime; is it a vDSO?")

    def clock_record(self, clock_id: int) -> int:
        """Image-relative address of the clock record (seq, clock_mode, ...) for `clock_id`."""
        cs = CS_RAW if clock_id == CLOCK_IDS["CLOCK_MONOTONIC_RAW"] else CS_HRES_COARSE
        return self.data["vdso_data"] + cs * self.clock_stride

    def basetime(self, clock_id: int) -> int:
        """Image-relative address of `basetime[clock_id]` ({u64 sec; u64 nsec})."""
        bt = self.vdso_data.fields["basetime"]
        if not 0 <= clock_id < bt.count:
            raise ValueError(f"clock id {clock_id} has no basetime entry (0..{bt.count - 1})")
        return self.clock_record(clock_id) + bt.offset + clock_id * bt.stride

    def to_json(self) -> dict[str, Any]:
        def st(s: StructLayout) -> dict[str, Any]:
            return {
                "name": s.name,
                "size": s.size,
                "fields": {k: vars(v) for k, v in s.fields.items()},
            }

        return {
            "arch": self.arch,
            "pages": self.pages,
            "data": self.data,
            "entry": self.entry,
            "vdso_data": st(self.vdso_data),
            "clock_stride": self.clock_stride,
            "pvti": st(self.pvti),
            "clock_modes": self.clock_modes,
            "mappings": {k: list(v) for k, v in self.mappings.items()},
            "source": self.source,
            "profile": self.profile,
            "reason": self.reason,
            "kernel_version": list(self.kernel_version) if self.kernel_version else None,
            "symbols": self.symbols,
            "code_data_pages": list(self.code_data_pages),
        }


def analyze(
    image: bytes | str | Path,
    *,
    kernel_release: str | None = None,
    mappings: dict[str, tuple[int, int]] | None = None,
    elf: ELFFile | None = None,
) -> VdsoLayout:
    """The layout of a real vDSO image, from its symbols and DWARF, a dump's mappings, or a
    built-in profile. `kernel_release` (e.g. from a dump) stands in for a missing version note;
    `mappings` ({"[vvar]": (offset, size), ...} relative to the image base) come from a dump.
    `elf` is the image already parsed by the caller.
    Raises VdsoLayoutError saying what to supply when nothing fits."""
    data, name = open_image(image)
    facts = elf_facts(data, name, elf=elf)
    version = facts.kernel_version
    if version is None and kernel_release:
        version = parse_release(kernel_release)
    profile, why = select_profile(version)
    syms = facts.abs_symbols
    pages = {PAGE_SYMBOLS[s]: v for s, v in syms.items() if s in PAGE_SYMBOLS}
    if "vvar" in pages and ("pvclock" in pages or "hvclock" in pages):
        return _layout_from_symbols(name, facts, pages, profile, why, version, mappings)
    return _layout_without_symbols(name, facts, profile, why, version, mappings)


def _layout_from_symbols(
    name: str,
    facts: ElfFacts,
    pages: dict[str, int],
    profile: LayoutProfile | None,
    why: str,
    version: tuple[int, int, int] | None,
    mappings: dict[str, tuple[int, int]] | None,
) -> VdsoLayout:
    """The layout when the image's absolute symbols say where its pages are: the structures
    from its DWARF, or from the version's profile when it has none."""
    syms = facts.abs_symbols
    clock, stride, extra = _clock_from_dwarf(facts.structs)
    data_offs = _data_offsets(syms, extra)
    if "vdso_data" not in data_offs:
        data_offs["vdso_data"] = pages["vvar"] + extra.get("clock_data_offset", 0)
    if clock is not None:
        src_reason = "pages from the image's symbols, structures from its DWARF"
        source = "dwarf"
    elif profile is None:
        raise VdsoLayoutError(
            f"{name}: has page symbols but no DWARF for struct vdso_data and {why}; {NEXT_STEP}"
        )
    else:
        clock, stride = profile.clock, profile.clock_stride
        src_reason = f"pages from the image's symbols; vdso_data shape from {why}"
        source = "profile"
    if profile is not None and all(profile.pages.get(k, v) == v for k, v in pages.items()):
        # 6.15+ linker scripts name no timens page: take the agreeing profile's.
        for k, v in profile.pages.items():
            pages.setdefault(k, v)
    return VdsoLayout(
        arch=facts.arch,
        pages=pages,
        data=data_offs,
        entry=facts.entry,
        vdso_data=clock,
        clock_stride=stride,
        pvti=facts.structs.get("pvclock_vcpu_time_info", PVTI_STRUCT),
        clock_modes=dict(facts.enums.get("vdso_clock_mode", DEFAULT_CLOCK_MODES)),
        mappings=mappings or _mappings_from_pages(pages, syms, profile),
        source=source,
        profile=profile.name if profile else None,
        reason=src_reason + f" ({why})",
        kernel_version=version,
        symbols=syms,
        structs=facts.structs,
        code_data_pages=facts.code_data_pages,
    )


def _data_offsets(syms: dict[str, int], extra: dict[str, int]) -> dict[str, int]:
    """Data name -> offset from the image's absolute data symbols (first match wins)."""
    data_offs: dict[str, int] = {}
    for key, names in DATA_SYMBOLS.items():
        for n in names:
            if n in syms:
                data_offs[key] = syms[n]
                break
    # 6.15+: `vdso_u_time_data` is the time data; the clock records sit inside it.
    if "vdso_u_time_data" in syms and data_offs.get("vdso_data") == syms["vdso_u_time_data"]:
        data_offs["vdso_data"] += extra.get("clock_data_offset", 0)
    return data_offs


def _layout_without_symbols(
    name: str,
    facts: ElfFacts,
    profile: LayoutProfile | None,
    why: str,
    version: tuple[int, int, int] | None,
    mappings: dict[str, tuple[int, int]] | None,
) -> VdsoLayout:
    """The layout of a stripped image: the version's profile, with the structure shape from
    DWARF if any, checked against a dump's mappings when given."""
    if profile is None:
        raise VdsoLayoutError(f"{name}: stripped vDSO with no page symbols and {why}: {NEXT_STEP}")
    layout = layout_from_profile(profile, facts, version, why)
    clock, stride, _ = _clock_from_dwarf(facts.structs)
    if clock is not None:  # DWARF without symbols: trust the compiled shape
        layout.vdso_data, layout.clock_stride = clock, stride
        layout.reason += "; vdso_data shape from DWARF"
    if mappings:
        _check_mappings(layout, mappings, name)
        layout.mappings = dict(mappings)
        layout.source = "dump"
        layout.reason = "pages from the dump's mappings, checked against " + layout.reason
    return layout


def _clock_from_dwarf(
    structs: dict[str, StructLayout],
) -> tuple[StructLayout | None, int, dict[str, int]]:
    """(clock record layout, CS stride, extras) from DWARF, if the image has them."""
    if "vdso_clock" in structs:
        clock = structs["vdso_clock"]
        extra = {}
        td = structs.get("vdso_time_data")
        if td is not None and "clock_data" in td.fields:
            extra["clock_data_offset"] = td.fields["clock_data"].offset
            return clock, td.fields["clock_data"].stride or clock.size, extra
        return clock, clock.size, extra
    for name in ("vdso_time_data", "vdso_data"):
        s = structs.get(name)
        if s is not None and "seq" in s.fields:
            return s, s.size, {}
    return None, 0, {}


def _mappings_from_pages(
    pages: dict[str, int], syms: dict[str, int], profile: LayoutProfile | None
) -> dict[str, tuple[int, int]]:
    """The special mappings for pages the symbols name: the profile's, else derived from them."""
    if profile is not None:
        return dict(profile.mappings)
    lo = min(pages.values())
    if "vclock" in pages or "vdso_u_data" in syms:
        vc = pages.get("vclock", min(pages.get("pvclock", 0), pages.get("hvclock", 0)))
        return {"[vvar]": (lo, vc - lo), "[vvar_vclock]": (vc, -vc)}
    return {"[vvar]": (lo, -lo)}


def layout_from_profile(
    profile: LayoutProfile, facts: ElfFacts, version: tuple[int, int, int] | None, why: str
) -> VdsoLayout:
    """A layout from a built-in profile, cross-checked against the code's data references."""
    data = {"vdso_data": profile.vdso_data_offset}
    if profile.rng_data_offset is not None:
        data["rng_data"] = profile.rng_data_offset
    reason = why
    if facts.code_data_pages:
        vd_page = profile.vdso_data_offset & ~(PAGE_SIZE - 1)
        if vd_page not in facts.code_data_pages:
            raise VdsoLayoutError(
                f"profile {profile.name} puts vdso_data at {profile.vdso_data_offset:#x} but "
                f"the code addresses pages {[hex(p) for p in facts.code_data_pages]}: the "
                f"version note is misleading or the profile is wrong; {NEXT_STEP}"
            )
        reason += "; the code's RIP-relative data references agree"
    return VdsoLayout(
        arch=facts.arch,
        pages=dict(profile.pages),
        data=data,
        entry=facts.entry,
        vdso_data=profile.clock,
        clock_stride=profile.clock_stride,
        pvti=PVTI_STRUCT,
        clock_modes=dict(DEFAULT_CLOCK_MODES),
        mappings=dict(profile.mappings),
        source="profile",
        profile=profile.name,
        reason=reason,
        kernel_version=version,
        symbols={},
        structs=facts.structs,
        code_data_pages=facts.code_data_pages,
    )


def _check_mappings(layout: VdsoLayout, mappings: dict[str, tuple[int, int]], name: str) -> None:
    """Raise unless a dump's mappings are the ones the chosen profile predicts."""
    for mname, (off, size) in layout.mappings.items():
        got = mappings.get(mname)
        if got is None or got[0] != off or got[1] != size:
            raise VdsoLayoutError(
                f"{name}: the dump's {mname} mapping {got} does not match profile "
                f"{layout.profile} ({off:#x}, {size:#x}); pass the unstripped vdso64.so of "
                "this kernel so the layout comes from its symbols"
            )


def explain(layout: VdsoLayout) -> str:
    """One paragraph saying which source and profile were used and why."""
    prof = f", profile {layout.profile}" if layout.profile else ""
    return f"{layout.arch} vDSO layout from {layout.source}{prof}: {layout.reason}"
