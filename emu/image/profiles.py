"""Built-in per-kernel-version layouts of the x86 vDSO clock pages, and choosing one.

Used when an image is stripped (no page symbols, no DWARF): the kernel version in its `.note`
picks the `LayoutProfile` whose page offsets and `vdso_data` shape that kernel family uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from emu.image.structs import StructLayout, vdso_data_struct
from host_model.abi import PAGE_SIZE


@dataclass(frozen=True)
class LayoutProfile:
    """The page layout and `vdso_data` shape of one kernel family (x86_64 and i386 alike)."""

    name: str
    #: (major, minor) inclusive bounds; `last=None` means "and later, until known otherwise".
    first: tuple[int, int]
    last: tuple[int, int] | None
    #: Page name -> offset from the image base.
    pages: dict[str, int]
    #: Special mappings, name -> (offset from the image base, size).
    mappings: dict[str, tuple[int, int]]
    #: Where clock record CS_HRES_COARSE starts, relative to the image base.
    vdso_data_offset: int
    #: The clock record; the CS_RAW record follows at `vdso_data_offset + clock_stride`.
    clock: StructLayout
    clock_stride: int
    rng_data_offset: int | None
    #: Which real images this profile was checked against ("" = from kernel sources only).
    checked_on: str = ""

    def covers(self, version: tuple[int, int]) -> bool:
        return self.first <= version and (self.last is None or version <= self.last)


def _four_page() -> dict[str, int]:
    """5.6-6.12: vvar, pvclock, hvclock, timens below the image, one `[vvar]` mapping."""
    return {
        "vvar": -4 * PAGE_SIZE,
        "pvclock": -3 * PAGE_SIZE,
        "hvclock": -2 * PAGE_SIZE,
        "timens": -PAGE_SIZE,
    }


PROFILES: tuple[LayoutProfile, ...] = (
    # 5.6 added the time-namespace page: vvar, pvclock, hvclock, timens (vdso-layout.lds.S);
    # `_vdso_data[CS_BASES]` sits at vvar+128 (asm/vvar.h DECLARE_VVAR(128, ...)).
    LayoutProfile(
        name="linux-5.6-6.9",
        first=(5, 6),
        last=(6, 9),
        pages=_four_page(),
        mappings={"[vvar]": (-4 * PAGE_SIZE, 4 * PAGE_SIZE)},
        vdso_data_offset=-4 * PAGE_SIZE + 0x80,
        clock=vdso_data_struct("vdso_data", max_cycles=False, size=240),
        clock_stride=240,
        rng_data_offset=None,
        checked_on="Debian linux-image-6.1.0-56-cloud-amd64-dbg (6.1.192) vdso64.so, vdso32.so",
    ),
    # 6.10: GENERIC_VDSO_OVERFLOW_PROTECT adds max_cycles after cycle_last; 6.11 adds
    # vdso_rng_data at vvar+640 (getrandom vDSO).
    LayoutProfile(
        name="linux-6.10-6.12",
        first=(6, 10),
        last=(6, 12),
        pages=_four_page(),
        mappings={"[vvar]": (-4 * PAGE_SIZE, 4 * PAGE_SIZE)},
        vdso_data_offset=-4 * PAGE_SIZE + 0x80,
        clock=vdso_data_struct("vdso_data", max_cycles=True, size=248),
        clock_stride=248,
        rng_data_offset=-4 * PAGE_SIZE + 640,
        checked_on="Debian linux-image-6.12.117+deb12-cloud-amd64-dbg vdso64.so, vdso32.so",
    ),
    # 6.13: pvclock/hvclock move to their own `[vvar_vclock]` mapping; vdso_data moves to the
    # start of the vvar page ("x86/vdso: Access vdso data without vvar.h").
    LayoutProfile(
        name="linux-6.13-6.14",
        first=(6, 13),
        last=(6, 14),
        pages={
            "vvar": -4 * PAGE_SIZE,
            "timens": -3 * PAGE_SIZE,
            "pvclock": -2 * PAGE_SIZE,
            "hvclock": -PAGE_SIZE,
        },
        mappings={
            "[vvar]": (-4 * PAGE_SIZE, 2 * PAGE_SIZE),
            "[vvar_vclock]": (-2 * PAGE_SIZE, 2 * PAGE_SIZE),
        },
        vdso_data_offset=-4 * PAGE_SIZE,
        clock=vdso_data_struct("vdso_data", max_cycles=True, size=248),
        clock_stride=248,
        rng_data_offset=-4 * PAGE_SIZE + 640,
    ),
    # 6.15: generic vDSO data store (__VDSO_PAGES = 6: time, timens, rng, arch, then the two
    # vclock pages) and `struct vdso_clock` split out of `vdso_time_data` (232 bytes each).
    LayoutProfile(
        name="linux-6.15+",
        first=(6, 15),
        last=None,
        pages={
            "vvar": -6 * PAGE_SIZE,
            "timens": -5 * PAGE_SIZE,
            "rng": -4 * PAGE_SIZE,
            "arch": -3 * PAGE_SIZE,
            "pvclock": -2 * PAGE_SIZE,
            "hvclock": -PAGE_SIZE,
        },
        mappings={
            "[vvar]": (-6 * PAGE_SIZE, 4 * PAGE_SIZE),
            "[vvar_vclock]": (-2 * PAGE_SIZE, 2 * PAGE_SIZE),
        },
        vdso_data_offset=-6 * PAGE_SIZE,
        clock=vdso_data_struct("vdso_clock", max_cycles=True, size=232),
        clock_stride=232,
        rng_data_offset=-4 * PAGE_SIZE,
        checked_on="running 6.18.44 kernel's [vdso] (code refs and live [vvar] contents)",
    ),
)
PROFILE_BY_NAME = {p.name: p for p in PROFILES}


def select_profile(version: tuple[int, ...] | None) -> tuple[LayoutProfile | None, str]:
    """The built-in profile for a kernel version, and why (or why none)."""
    if version is None:
        return None, "the image carries no Linux version note"
    mm = (version[0], version[1])
    for p in PROFILES:
        if p.covers(mm):
            checked = f"; checked on {p.checked_on}" if p.checked_on else "; from kernel sources"
            return p, f"kernel {'.'.join(map(str, version))} is in profile {p.name}{checked}"
    return None, (
        f"kernel {'.'.join(map(str, version))} predates the oldest built-in profile "
        f"({PROFILES[0].name})"
    )


def parse_release(release: str) -> tuple[int, int, int] | None:
    """'6.18.44-fc-v657' -> (6, 18, 44); None when it does not start with a version."""
    nums: list[int] = []
    for part in release.split("-", 1)[0].split(".")[:3]:
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        nums.append(int(digits.group()))
        if digits.end() != len(part):  # "117+deb12": the rest is a suffix
            break
    if len(nums) < 2:
        return None
    while len(nums) < 3:
        nums.append(0)
    return (nums[0], nums[1], nums[2])
