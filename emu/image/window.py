"""Where a reader's pvti loads sit relative to its version window, from its machine code.

For a project reader that reads vCPU 0's pvti under the version seqlock, say per field
whether the last load that feeds the returned time stays inside the version window (between
the final iteration's version load and its re-check), or how the compiled code leaves it:
`before-window`, `stale-on-retry`, `after-recheck`, `not-read`; and whether the re-check is
there at all. The blob build records the verdict in the manifest (`window`).

How: decode the entry function with capstone and resolve every memory operand to a
`pvclock_page` offset (`emu.image.addrtrack`, i386 GOT-relative addressing included); then
enumerate the paths through the function (each backward branch taken at most twice) and
classify, on every path that returns a computed time, where each field's last load sits.
"""

from __future__ import annotations

from collections.abc import Iterator

from emu.errors import ImageError
from emu.image.addrtrack import (
    Insn,
    State,
    decode_function,
    mem_address,
    successors,
    to_signed,
    transfer,
)
from host_model.abi import BLOB_ENTRY, BLOB_PAGES, pvti_field_at


class WindowError(ImageError):
    """The window analysis cannot run on this image (no entry, no successful path, ...)."""


FORMULA_FIELDS = ("tsc_timestamp", "system_time", "tsc_to_system_mul", "tsc_shift")
WINDOW_ITEMS = ("flags", *FORMULA_FIELDS, "tsc")
TSC_MNEMONICS = {"rdtsc", "rdtscp"}
#: Verdicts from best to worst; a field's verdict is its worst over all paths.
SEVERITY = [
    "inside",
    "present",
    "not-read",
    "stale-on-retry",
    "before-window",
    "after-recheck",
    "missing",
]
#: Paths explored before giving up (the bundled readers need a few hundred).
PATH_BUDGET = 500_000

# ------------------------------------------------------------------------ path analysis

_PVTI0 = BLOB_PAGES["pvclock"]  # vCPU 0's record starts the page


def events_of(insn: Insn, state: State, bits: int) -> list[str]:
    """The vCPU 0 pvti fields an instruction loads, and "tsc" for a TSC read."""
    found = ["tsc"] if insn.mnemonic in TSC_MNEMONICS else []
    if insn.mnemonic in ("lea", "call", "jmp"):  # address arithmetic, branch targets
        return found
    for operand in insn.operands:
        value = mem_address(operand, state, bits)
        if value is None or value[1] != 1:
            continue
        field = pvti_field_at(to_signed(value[0], bits) - _PVTI0)
        if field is not None:
            found.append(field.name)
    return found


def returns_u64_max(state: State, bits: int) -> bool:
    """Whether the return registers hold the constant U64_MAX at a `ret`."""
    if bits == 64:
        return state.get("ax") == (-1, 0)
    return state.get("ax") == (-1, 0) and state.get("dx") == (-1, 0)


PathItem = tuple[int, tuple[str, ...], tuple[tuple[int, int], ...], State]


def enumerate_paths(insns: list[Insn], bits: int) -> Iterator[tuple[tuple[str, ...], bool]]:
    """(events, returns U64_MAX) of every entry-to-`ret` path, backward branches taken <= 2x.

    The abstract state is carried along each path, so addresses and return values are
    exact for that path.  Paths leaving the function (tail call to the syscall fallback)
    are not returned.
    """
    index = {insn.addr: i for i, insn in enumerate(insns)}
    seen: set[tuple[tuple[str, ...], bool]] = set()
    stack: list[PathItem] = [(insns[0].addr, (), (), {})]
    budget = PATH_BUDGET
    while stack:
        budget -= 1
        if budget == 0:
            raise WindowError("window analysis: too many paths")
        addr, trail, back, state = stack.pop()
        insn = insns[index[addr]]
        trail = trail + tuple(events_of(insn, state, bits))
        if insn.mnemonic.startswith("ret"):
            key = (trail, returns_u64_max(state, bits))
            if key not in seen:
                seen.add(key)
                yield key
            continue
        out = transfer(insn, state, bits)
        for succ in successors(insn, index):
            edge = (addr, succ)
            if succ <= addr and back.count(edge) >= 2:
                continue
            stack.append((succ, trail, back + (edge,) if succ <= addr else back, out))


def classify_path(trail: tuple[str, ...]) -> dict[str, str]:
    """Where each window item's last load sits on one path that returns a time."""
    versions = [i for i, ev in enumerate(trail) if ev == "version"]
    iterations = len(versions) // 2 if len(versions) >= 2 else 1
    if len(versions) >= 2:
        opening, closing = versions[-2], versions[-1]
    else:
        opening, closing = (versions[-1] if versions else -1), len(trail)
    result = {}
    for item in WINDOW_ITEMS:
        positions = [i for i, ev in enumerate(trail) if ev == item]
        if not positions:
            result[item] = "not-read"
            continue
        last = positions[-1]
        if last > closing:
            result[item] = "after-recheck"
        elif last < opening:
            result[item] = "before-window" if iterations == 1 else "stale-on-retry"
        else:
            result[item] = "inside"
    result["recheck"] = "present" if len(versions) >= 2 else "missing"
    return result


def analyse_window(data: bytes, name: str = "image") -> dict[str, str]:
    """Per field: 'inside' the version window, or how the compiled code leaves it."""
    insns = decode_function(data, BLOB_ENTRY, name)
    if not insns:
        raise WindowError(f"{name}: {BLOB_ENTRY} decodes to no instructions")
    bits = 64 if data[4] == 2 else 32  # EI_CLASS
    verdict: dict[str, str] = {}
    for trail, gives_up in enumerate_paths(insns, bits):
        if gives_up or "version" not in trail:
            continue  # U64_MAX, or a path that never entered the seqlock
        for item, where in classify_path(trail).items():
            old = verdict.get(item, "inside")
            verdict[item] = max(old, where, key=SEVERITY.index)
    if not verdict:
        raise WindowError(f"{name}: window analysis found no successful path")
    return dict(sorted(verdict.items()))


def window_summary(window: dict[str, str] | None) -> str:
    """One sentence for the manifest notes from the window analysis."""
    if window is None:
        return ""
    out = {k: v for k, v in window.items() if v not in ("inside", "present")}
    recheck = "" if window.get("recheck") == "present" else " No version re-check."
    out.pop("recheck", None)
    # The wording predates the capstone decoder; kept so committed manifests stay valid.
    if not out:
        return f"objdump: every field load and the TSC read sit inside the version window.{recheck}"
    moved = ", ".join(f"{k} {v}" for k, v in sorted(out.items()))
    return f"objdump: outside the version window: {moved}.{recheck}"
