"""The guest kernel's `vdso_data` (time page) as the host model presents it to a real vDSO.

A real `__vdso_clock_gettime` computes, inside its `seq` loop over the clock record
(lib/vdso/gettimeofday.c `do_hres` / `vdso_calc_ns`):

    cycles = vread_pvclock()                       # clock_mode == PVCLOCK: pvclock ns
    ns     = ((cycles - cycle_last) * mult + basetime[clk].nsec) >> shift
    ts     = basetime[clk].sec + ns

We publish an identity transform anchored at boot -- mult = 1, shift = 0, cycle_last = the
model's boot time (a whole number of seconds), basetime = {boot seconds, 0}, mask =
max_cycles = U64_MAX (so the 6.10+ overflow guard never fires) -- so the timespec the vDSO
returns is exactly the pvclock time, and the consistent oracle can judge it against the
published pvti records. Anchoring at boot keeps `ns` small, so the kernel's
`__iter_div_u64_rem` loop runs a few times, not once per second of uptime.

Pure: the record layout comes in as a plain dict of field offsets (from DWARF or a profile).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from host_model.base import HostStep, HostView, PageWrite
from host_model.clock import BOOT_NS, NS_PER_S

U64_MAX = (1 << 64) - 1
#: `enum vdso_clock_mode` value of VDSO_CLOCKMODE_PVCLOCK (x86).
CLOCK_MODE_PVCLOCK = 2


@dataclass(frozen=True)
class VdsoDataSpec:
    """Where the clock records are and what they look like.

    `records` are the byte offsets, within page `page`, of the clock records to fill
    (CS_HRES_COARSE and CS_RAW); `fields` maps a member name to (offset, size, count, stride)
    within one record; `size` is the record size.
    """

    page: str
    records: tuple[int, ...]
    fields: dict[str, tuple[int, int, int, int]]
    size: int
    clock_mode: int = CLOCK_MODE_PVCLOCK


def identity_values(clock_mode: int = CLOCK_MODE_PVCLOCK, boot_ns: int = BOOT_NS) -> dict[str, int]:
    """Scalar member values of the identity transform anchored at `boot_ns`'s whole second."""
    return {
        "seq": 0,
        "clock_mode": clock_mode,
        "cycle_last": boot_ns - boot_ns % NS_PER_S,
        "max_cycles": U64_MAX,
        "mask": U64_MAX,
        "mult": 1,
        "shift": 0,
    }


def pack_record(
    spec: VdsoDataSpec, values: dict[str, int] | None = None, boot_ns: int = BOOT_NS
) -> bytes:
    """One clock record as bytes: `values` (default: the identity) at the spec's offsets."""
    vals = identity_values(spec.clock_mode, boot_ns) if values is None else values
    buf = bytearray(spec.size)
    for name, value in vals.items():
        f = spec.fields.get(name)
        if f is None:
            continue
        off, size, count, _stride = f
        if count != 1 or size not in (1, 2, 4, 8):
            continue
        buf[off : off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    base = spec.fields.get("basetime")
    if base is not None and values is None:
        off, _size, count, stride = base
        sec = (boot_ns // NS_PER_S).to_bytes(8, "little")
        for i in range(count):
            buf[off + i * stride : off + i * stride + 8] = sec
    return bytes(buf)


def expected_ns(
    pvclock_ns: int,
    values: dict[str, int] | None = None,
    base: tuple[int, int] = (BOOT_NS // NS_PER_S, 0),
) -> int:
    """What the vDSO returns (as ns) for a pvclock value, by the kernel's formula."""
    v = identity_values() if values is None else values
    delta = (pvclock_ns - v["cycle_last"]) & v["mask"]
    sec, nsec_shifted = base
    ns = (delta * v["mult"] + nsec_shifted) >> v["shift"]
    return sec * 1_000_000_000 + ns


def setup_writes(spec: VdsoDataSpec, boot_ns: int = BOOT_NS) -> tuple[PageWrite, ...]:
    """The stores that put every clock record in place before the guest runs."""
    rec = pack_record(spec, boot_ns=boot_ns)
    return tuple(
        PageWrite(spec.page, off, rec, f"vdso_data[{i}]", 0, spec.clock_mode)
        for i, off in enumerate(spec.records)
    )


#: Recent `with_vdso_data` results: (id(step), id(spec), boot_ns) -> (step, spec, result).
_WITH: dict[tuple[int, int, int], tuple[HostStep, VdsoDataSpec, HostStep]] = {}


def with_vdso_data(step: HostStep, spec: VdsoDataSpec | None, boot_ns: int = BOOT_NS) -> HostStep:
    """`step` (a host's setup) with the vdso_data records written first.

    The same `step` and `spec` give the same (identical) step back: hosts return one step
    object for every run that boots alike, and the executor keys its cached page image on
    that identity, so a fresh step per run would rebuild the pages (and the records) each
    run. The inputs are kept alive beside the result, so their ids stay theirs.
    """
    if spec is None:
        return step
    key = (id(step), id(spec), boot_ns)
    hit = _WITH.get(key)
    if hit is not None and hit[0] is step and hit[1] is spec:
        return hit[2]
    out = HostStep(
        step.label,
        writes=setup_writes(spec, boot_ns) + step.writes,
        publish=step.publish,
        park=step.park,
        unpark=step.unpark,
        tsc=step.tsc,
    )
    if len(_WITH) >= 64:  # hosts whose boot differs per run: keep it bounded
        _WITH.clear()
    _WITH[key] = (step, spec, out)
    return out


#: How far before the update instant the guest kernel's new anchor lies: its clocksource
#: read (pvclock) rounds down, so an anchor at the update instant itself could be a few ns
#: ahead of a later pvclock value, which x86's `vdso_calc_delta` clamps to zero.
ANCHOR_LAG_NS = 1_000


def timekeeping_update(
    spec: VdsoDataSpec, anchor: Callable[[], int], seq: int, *, bump_seq: bool = True
) -> Iterator[HostStep]:
    """The guest kernel's timekeeping update of every clock record (`update_vsyscall`):
    seq made odd, `cycle_last` and every `basetime` moved to the anchor, seq made even —
    each store a separate step. The transform stays the identity, so a read that takes
    one consistent record returns the pvclock time; a read that mixes two does not.

    `anchor()` gives the new anchor (ns); it is called once, after the first store (seq
    made odd) has been taken, so the anchor is the time the update started, not the time
    the step was first asked for. `bump_seq=False` models a writer that forgets the
    seqlock: its first store is `cycle_last` itself, so the anchor is taken when that
    store is asked for (the anchor only has to lie before later reads; any value in the
    past gives the same times through the identity transform)."""
    anchor_ns: int | None = None
    for i, rec in enumerate(spec.records):
        label = f"vdso_data[{i}]"
        fields = spec.fields
        if bump_seq and "seq" in fields:
            yield _store(spec, rec, "seq", seq + 1, label)
        if anchor_ns is None:
            anchor_ns = anchor()
        sec, nsec = divmod(anchor_ns, NS_PER_S)
        entry = sec.to_bytes(8, "little") + nsec.to_bytes(8, "little")
        yield _store(spec, rec, "cycle_last", anchor_ns, label)
        base = fields.get("basetime")
        if base is not None:
            off, _size, count, stride = base
            data = b"".join(entry.ljust(stride, b"\0") for _ in range(count))
            write = PageWrite(spec.page, rec + off, data, f"{label}.basetime", 0, sec)
            yield HostStep(f"{label}.basetime[*] -> {{{sec}, {nsec}}}", writes=(write,))
        if bump_seq and "seq" in fields:
            yield _store(spec, rec, "seq", seq + 2, label)


def _store(spec: VdsoDataSpec, rec: int, name: str, value: int, label: str) -> HostStep:
    off, size, _count, _stride = spec.fields[name]
    data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    write = PageWrite(spec.page, rec + off, data, f"{label}.{name}", 0, value)
    return HostStep(f"{label}.{name} -> {value:#x}", writes=(write,))


def timekeeping(
    spec: VdsoDataSpec, view: HostView, updates: int, *, bump_seq: bool = True
) -> Iterator[HostStep]:
    """`updates` timekeeping updates, each anchored at the time its first store ran."""

    def anchor() -> int:
        return view.clock.ns(view.t) - ANCHOR_LAG_NS

    for k in range(updates):
        yield from timekeeping_update(spec, anchor, 2 * k, bump_seq=bump_seq)
