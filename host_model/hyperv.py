"""The Hyper-V reference TSC page (the `hvclock` page) and the host that maintains it.

ABI (Hyper-V TLFS, "partition reference TSC page"; Linux `struct ms_hyperv_tsc_page`):
`tsc_sequence u32 @0`, `reserved u32 @4`, `tsc_scale u64 @8`, `tsc_offset s64 @16`.
Time in 100 ns units is `((tsc * tsc_scale) >> 64) + tsc_offset` (full 128-bit product);
the Linux reader returns that times 100, in ns. A sequence of 0 marks the page invalid (the
reader must fall back); any change of the sequence during a read makes it retry.

The host (`hyperv`) models both Hyper-V and KVM's emulation of the page
(`kvm_hv_setup_tsc_page`, since 2017): one page for the whole partition, recomputed when
the reference changes (a new TSC frequency or offset after migration, or the host's clock
correction, `ppm`). The update protocol invalidates first: sequence = 0, then scale and
offset, then the next sequence (never 0 or 0xFFFFFFFF). With `invalidate=0` it writes the
fields under the old sequence and bumps it only at the end, so a reader can pair an old
scale with a new offset under an unchanged sequence.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace

from host_model.abi import HV_FIELDS, HV_FORMAT
from host_model.base import HostModel, HostStep, HostView, PageWrite, Param, Publish, TscChange
from host_model.clock import Clock
from host_model.pvti import MASK64

PAGE = "hvclock"
#: (offset, size, name) of the page's fields, in memory order (layout: `host_model.abi`).
FIELDS: tuple[tuple[int, int, str], ...] = tuple((f.offset, f.size, f.name) for f in HV_FIELDS)
HV_UNITS_PER_S = 10_000_000
INVALID_SEQUENCE = 0


@dataclass(frozen=True)
class HvTsc:
    """One reference TSC page as the guest sees it."""

    tsc_sequence: int = 0
    tsc_scale: int = 0
    tsc_offset: int = 0

    @property
    def stable(self) -> bool:
        """May a reader use this record? (False while the page is invalid.)"""
        return self.tsc_sequence != INVALID_SEQUENCE

    def ns100_at(self, tsc: int) -> int:
        return ((((tsc & MASK64) * self.tsc_scale) >> 64) + self.tsc_offset) & MASK64

    def ns_at(self, tsc: int) -> int:
        """The reader's return value: 100 ns units times 100, mod 2^64 like the guest."""
        return (self.ns100_at(tsc) * 100) & MASK64

    def pack(self) -> bytes:
        return struct.pack(
            HV_FORMAT, self.tsc_sequence & 0xFFFFFFFF, 0, self.tsc_scale & MASK64, self.tsc_offset
        )

    def field_bytes(self, name: str) -> bytes:
        for off, size, n in FIELDS:
            if n == name:
                return self.pack()[off : off + size]
        raise KeyError(name)


def scale_for(tsc_hz: int) -> int:
    """`tsc_scale` for a TSC of `tsc_hz`: 100 ns units per cycle as a 0.64 fixed-point."""
    return (HV_UNITS_PER_S << 64) // tsc_hz


def next_sequence(seq: int) -> int:
    seq = (seq + 1) & 0xFFFFFFFF
    return 1 if seq in (0, 0xFFFFFFFF) else seq


def store(name: str, old: HvTsc, new: HvTsc) -> PageWrite:
    off = next(o for o, _, n in FIELDS if n == name)
    return PageWrite(
        PAGE, off, new.field_bytes(name), f"{PAGE}.{name}", getattr(old, name), getattr(new, name)
    )


def reference(clock: Clock, t: int, sequence: int, scale: int) -> HvTsc:
    """The page that gives the true time at step `t` with `scale` (vCPU 0's TSC)."""
    tsc = clock.tsc(0, t)
    return HvTsc(sequence, scale, clock.ns(t) // 100 - ((tsc * scale) >> 64))


class HyperV(HostModel):
    name = "hyperv"
    summary = "Hyper-V reference TSC page: sequence 0 while updating, then the next sequence"
    pages = (PAGE,)
    params = (
        Param("updates", 1, "how many times the host recomputes the page", low=0, high=100),
        Param(
            "ppm",
            100,
            "rate correction of the reference at each update (parts per million)",
            low=-500,
            high=500,
        ),
        Param(
            "invalidate",
            1,
            "1: sequence = 0 before the fields change (0: bump only after)",
            low=0,
            high=1,
        ),
        Param(
            "tsc_hz",
            0,
            "new TSC frequency at each update, partition paused (0: unchanged)",
            low=0,
            high=10**11,
        ),
        Param("tsc_jump", 0, "TSC jump (cycles) at each update, partition paused"),
        Param("park", 0, "1: every vCPU is out of guest mode during each update", low=0, high=1),
    )

    def setup(self, view: HostView) -> HostStep:
        self.page = reference(view.clock, view.t, 1, scale_for(view.clock.hz(0, view.t)))
        blank = HvTsc()
        return HostStep(
            "boot: reference TSC page enabled",
            writes=tuple(store(n, blank, self.page) for _, _, n in FIELDS if n != "reserved0"),
            publish=(Publish(PAGE, self.page),),
        )

    def steps(self, view: HostView) -> Iterator[HostStep]:
        everyone = frozenset(range(view.vcpus))
        retune = bool(self.tsc_hz or self.tsc_jump)
        parked = everyone if (self.park or retune) else frozenset()
        for k in range(1, self.updates + 1):
            if parked:
                yield HostStep("every vCPU exits: the partition is paused", park=parked)
            if retune:
                yield HostStep(
                    "every vCPU's TSC retuned",
                    tsc=tuple(TscChange(v, self.tsc_hz or None, self.tsc_jump) for v in everyone),
                )
            yield from self.update(view, k, retune)
            if parked:
                yield HostStep("the partition resumes", unpark=parked)

    def update(self, view: HostView, k: int, retune: bool) -> Iterator[HostStep]:
        """The `k`th recomputation of the page, its fields planned after its first store.

        The invalidating store (sequence = 0) depends on nothing new; the new scale depends
        only on the TSC frequency, which cannot change while vCPUs run (a retune parks the
        partition first); the offset, which depends on the instant, is planned after the
        first store has been taken. An update that neither corrects the rate (`ppm=0`) nor
        changes the TSC (no `tsc_jump`, and `tsc_hz` equal to the frequency already in
        force, as in every update after the first) leaves the reference as it was: scale
        and offset stay the same and only the sequence moves.
        """
        old = cur = self.page
        if self.invalidate:
            cur = replace(old, tsc_sequence=INVALID_SEQUENCE)
            yield self._step(store("tsc_sequence", old, cur), cur)
        base = scale_for(view.clock.hz(0, view.t))
        scale = base + base * self.ppm * k // 1_000_000
        if scale != cur.tsc_scale:
            nxt = replace(cur, tsc_scale=scale)
            yield self._step(store("tsc_scale", cur, nxt))
            cur = nxt
        # Planned now: just after this update's first store (or the park/retune before it).
        tsc = view.clock.tsc(0, view.t)
        if retune:
            offset = reference(view.clock, view.t, 0, scale).tsc_offset
        else:
            # Continuous with the old reference at this instant, at the corrected rate.
            offset = old.ns100_at(tsc) - ((tsc * scale) >> 64)
        if offset != cur.tsc_offset:
            nxt = replace(cur, tsc_offset=offset)
            yield self._step(store("tsc_offset", cur, nxt))
            cur = nxt
        new = replace(cur, tsc_sequence=next_sequence(old.tsc_sequence))
        yield self._step(store("tsc_sequence", cur, new), new)
        self.page = new

    @staticmethod
    def _step(w: PageWrite, publish: HvTsc | None = None) -> HostStep:
        return HostStep(
            f"{w.label} {w.old:#x} -> {w.new:#x}",
            writes=(w,),
            publish=(Publish(PAGE, publish),) if publish is not None else (),
        )
