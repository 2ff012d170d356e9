"""The native lane: visible operations the executor has already decided, run in C.

Most visible operations of a run are plain continuations: the scheduler keeps the default
(the running task goes on) and nothing else happens there. Calling Python for each costs
about 3 us; `lane.c` handles them inside the engine instead, logging each (t, kind, pc,
arg) and emulating rdtsc/rdtscp/rdpid from the model's clock, and calls Python for the
rest. The executor grants it a budget of such operations and settles its log into the run
whenever Python runs again, so a run is the same with or without the lane (a test checks).

The C source is compiled once per source version with the system compiler (`$CC`, else
`cc`) into the user's cache directory. Without a compiler every visible operation runs in
Python: the same results, about half the speed. `VDSOFUZZ_LANE=0` turns the lane off.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from emu.engine.decode import FENCE, LOAD, RDPID, TSC, TSCP, Site

if TYPE_CHECKING:
    from emu.engine.machine import Machine

SOURCE = Path(__file__).with_name("lane.c")
#: Site kinds as lane.c numbers them; anything else (syscalls) always goes to Python.
KIND_CODES = {LOAD: 0, TSC: 1, TSCP: 2, RDPID: 3, FENCE: 4}
PYTHON = 5
#: Kind names by code, for the log.
KIND_NAMES = (LOAD, TSC, TSCP, RDPID)
#: Set in a logged kind when the operation was decided before the lane ran it.
FREE = 8
#: Operations the log holds; a budget never exceeds it.
CAPACITY = 4096

PYTHON_FN = ctypes.CFUNCTYPE(None, ctypes.c_uint64)


class LaneState(ctypes.Structure):
    _fields_ = [
        ("reg_read", ctypes.c_void_p),
        ("reg_write", ctypes.c_void_p),
        ("python", ctypes.c_void_p),
        ("lo", ctypes.c_uint64),
        ("hi", ctypes.c_uint64),
        ("mask", ctypes.c_uint64),
        ("pc", ctypes.c_int32),
        ("ax", ctypes.c_int32),
        ("dx", ctypes.c_int32),
        ("cx", ctypes.c_int32),
        ("budget", ctypes.c_int64),
        ("free", ctypes.c_int64),
        ("t", ctypes.c_uint64),
        ("vcpu", ctypes.c_int64),
        ("seg_start", ctypes.c_uint64),
        ("seg_tsc", ctypes.c_uint64),
        ("seg_hz", ctypes.c_uint64),
        ("ns_per_step", ctypes.c_uint64),
        ("n", ctypes.c_uint64),
        ("cap", ctypes.c_uint64),
        ("log", ctypes.POINTER(ctypes.c_uint64)),
    ]


#: Word index of each field, for `words` (ctypes field access costs ~0.2 us, a memoryview
#: item a tenth of that, and the executor sets several fields per call into Python).
WORD = {f[0]: getattr(LaneState, f[0]).offset // 8 for f in LaneState._fields_}


def words(state: LaneState) -> memoryview:
    """`state` as 64-bit words (see WORD)."""
    return memoryview(state).cast("B").cast("Q")


class SiteState(ctypes.Structure):
    _fields_ = [
        ("lane", ctypes.POINTER(LaneState)),
        ("kind", ctypes.c_int64),
        ("base", ctypes.c_int64),
        ("index", ctypes.c_int64),
        ("scale", ctypes.c_int64),
        ("disp", ctypes.c_int64),
        ("fixed", ctypes.c_uint64),
        ("size", ctypes.c_int64),
        ("reg", ctypes.c_int64),
    ]


class Table(ctypes.Structure):
    """lane.c's `table_t`: the site record for each address of a range (NULL for none)."""

    _fields_ = [
        ("lo", ctypes.c_uint64),
        ("n", ctypes.c_uint64),
        ("sites", ctypes.POINTER(ctypes.POINTER(SiteState))),
    ]


#: Why the lane is not available, once `library()` has failed ("" while it has not).
unavailable = ""


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "vdsofuzz"


def turned_off() -> bool:
    """Has the user turned the lane off (`VDSOFUZZ_LANE=0`)?"""
    return os.environ.get("VDSOFUZZ_LANE", "1") == "0"


@cache
def library() -> ctypes.CDLL | None:
    """The compiled lane, building it on first use; None when it cannot be had."""
    global unavailable
    if turned_off():
        unavailable = "turned off by VDSOFUZZ_LANE=0"
        return None
    cc = os.environ.get("CC") or "cc"
    source = SOURCE.read_bytes()
    tag = hashlib.sha256(source + platform.machine().encode() + cc.encode()).hexdigest()[:16]
    path = cache_dir() / f"lane-{tag}.so"
    try:
        if not path.exists():
            _build(cc, path)
        return ctypes.CDLL(str(path))
    except (OSError, subprocess.CalledProcessError) as e:
        unavailable = f"cannot build {SOURCE.name} with {cc!r}: {e}"
        return None


def _build(cc: str, path: Path) -> None:
    if shutil.which(cc) is None:
        raise OSError(f"no C compiler {cc!r} on PATH")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: concurrent first uses never see half a library.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        subprocess.run(
            [cc, "-O2", "-shared", "-fPIC", "-o", tmp, str(SOURCE)],
            check=True,
            capture_output=True,
        )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def site_state(
    lane: ctypes._Pointer[LaneState], site: Site, how: tuple[int, int, int, int, int] | int
) -> SiteState:
    """The C record of one hooked site; `how` is the executor's decoding of a load's address
    (the address itself when fixed, else base reg, index reg, scale, disp, mask)."""
    s = SiteState(lane=lane, kind=KIND_CODES.get(site.kind, PYTHON), size=site.size)
    if site.kind == LOAD:
        if isinstance(how, int):
            s.fixed = how
        else:
            s.base, s.index, s.scale, s.disp, _ = how
    elif site.kind == RDPID:
        s.reg = site.reg
    return s


def hook_sites(
    machine: Machine,
    lib: ctypes.CDLL,
    lane: ctypes._Pointer[LaneState],
    sites: dict[int, tuple[Site, tuple[int, int, int, int, int] | int]],
) -> None:
    """Hook every site (address -> (site, how), as for `site_state`) with the lane.

    One engine hook spans all the sites and finds each site's record in a table: Unicorn
    walks its list of code hooks at every hooked instruction, and the executor's instruction
    limit hooks every instruction, so one hook per site (a real i386 vDSO has ~450) cost
    ~450 checks per instruction executed, the larger part of a run's time.
    """
    if not sites:
        return
    lo, hi = min(sites), max(sites)
    slots = (ctypes.POINTER(SiteState) * (hi - lo + 1))()
    for addr, (site, how) in sites.items():
        rec = site_state(lane, site, how)
        machine.keep(rec)
        slots[addr - lo] = ctypes.pointer(rec)
    table = Table(lo=lo, n=hi - lo + 1, sites=slots)
    for obj in (slots, table):
        machine.keep(obj)
    hook = ctypes.cast(lib.lane_table_hook, ctypes.c_void_p).value
    assert hook is not None
    machine.hook_native(lo, hook, ctypes.addressof(table), end=hi)
