"""`kvm-migration` and `kvm-migration-parked`: a live migration's TSC jump as KVM handles it.

After a live migration (and after a host suspend/resume) the guest's TSC jumps: the
destination's TSC offset and/or frequency differ from the source's. Every vCPU starts out
of guest mode; KVM rewrites a vCPU's pvti in `kvm_guest_time_update` on that vCPU's first
entry, so the pages are rewritten one vCPU at a time and a vCPU that is resumed early runs
guest code while other vCPUs' pages still describe the old TSC. The stable bit in each
rewritten page says whether the destination uses a master clock.

`kvm-migration` resumes vCPU 0 last: the seed thread's "clear the stable bit for vCPU 1,
resume vCPU 1, and only later vCPU 0". A reader on vCPU 1 that uses vCPU 0's page sees a
stable record whose `tsc_timestamp` belongs to the old TSC. This is a host that updates
pages per vCPU on entry without parking the others (KVM without a master clock, or any
host that resumes vCPUs as soon as their own page is done); the vCPU-0 readers of Linux
4.5+ rely on hosts not doing it.

`kvm-migration-parked` is the same host with the fix the maintainer proposes in the seed
thread: every vCPU stays parked until vCPU 0's page is current, and each vCPU's own page is
rewritten before it re-enters (what KVM's master-clock path provides, Linux 3.8+).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from host_model.base import HostModel, HostStep, HostView, Param, TscChange
from host_model.clock import DEFAULT_TSC_HZ
from host_model.writer import initial_writes, republish, snapshot

ORDERS = ("vcpu0-last", "vcpu0-first")


class KvmMigration(HostModel):
    name = "kvm-migration"
    summary = "live migration: TSC jump, pages rewritten one vCPU at a time, vCPU 0 last"
    params: ClassVar[tuple[Param, ...]] = (
        Param("tsc_jump", DEFAULT_TSC_HZ, "TSC jump (cycles) of every vCPU at the migration"),
        Param("tsc_hz", 0, "the destination's TSC frequency (0: unchanged)", low=0, high=10**11),
        Param(
            "stable",
            0,
            "stable bit in the rewritten pages (1: destination has a master clock)",
            low=0,
            high=1,
        ),
        Param(
            "order",
            "vcpu0-last",
            "which vCPU re-enters first: vcpu0-last or vcpu0-first",
            str,
            choices=ORDERS,
        ),
    )

    def __init__(self, **values: object) -> None:
        super().__init__(**values)
        if self.order not in ORDERS:
            raise ValueError(f"host {self.name!r}: order must be one of {', '.join(ORDERS)}")

    def setup(self, view: HostView) -> HostStep:
        self.pvti = [snapshot(view.clock, v, view.t, version=2) for v in range(view.vcpus)]
        return initial_writes(self.pvti)

    def resume_order(self, vcpus: int) -> list[int]:
        if self.order == "vcpu0-first":
            return list(range(vcpus))
        return list(range(1, vcpus)) + [0]

    def steps(self, view: HostView) -> Iterator[HostStep]:
        everyone = frozenset(range(view.vcpus))
        yield HostStep("migration: the VM stops, every vCPU is out of guest mode", park=everyone)
        if self.tsc_hz or self.tsc_jump:
            yield HostStep(
                "migration: the destination's TSC differs (every vCPU)",
                tsc=tuple(TscChange(v, self.tsc_hz or None, self.tsc_jump) for v in everyone),
            )
        for v in self.resume_order(view.vcpus):
            yield from republish(self.pvti, v, view, stable=bool(self.stable))
            yield HostStep(f"vcpu{v} re-enters the guest on the destination", unpark=frozenset({v}))


class KvmMigrationParked(KvmMigration):
    name = "kvm-migration-parked"
    summary = "live migration with every vCPU parked until vCPU 0's page is current"
    params = tuple(p for p in KvmMigration.params if p.name != "order")

    def __init__(self, **values: object) -> None:
        HostModel.__init__(self, **values)
        self.values["order"] = "vcpu0-first"
