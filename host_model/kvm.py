"""`kvm`: KVM's correct pvclock update (since 2016), one vCPU's page at a time.

KVM recomputes a vCPU's pvti in `kvm_guest_time_update` on that vCPU's next entry, so the
vCPU being updated is out of guest mode for the update while every other vCPU keeps running
guest code — including readers that use vCPU 0's page from vCPU 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from host_model.base import HostModel, HostStep, HostView, Param, TscChange
from host_model.writer import SEQLOCK, StoreProtocol, initial_writes, republish, snapshot


class Kvm(HostModel):
    name = "kvm"
    summary = "KVM, correct seqlock protocol; other vCPUs run during an update"
    params = (
        Param("updates", 1, "how many pvti updates the host makes", low=0, high=100),
        Param("vcpu", 0, "whose page is updated (-1: every vCPU's, in turn)", low=-1, high=63),
        Param(
            "tsc_hz",
            0,
            "new TSC frequency of the updated vCPU at each update (0: unchanged)",
            low=0,
            high=10**11,
        ),
        Param("tsc_jump", 0, "TSC offset jump (cycles) of the updated vCPU at each update"),
        Param(
            "park", 1, "1: the updated vCPU is out of guest mode during its update", low=0, high=1
        ),
    )
    #: The stores that publish a new record over the old one (subclasses change this).
    protocol: ClassVar[StoreProtocol] = SEQLOCK

    def setup(self, view: HostView) -> HostStep:
        self.pvti = [snapshot(view.clock, v, view.t, version=2) for v in range(view.vcpus)]
        return initial_writes(self.pvti)

    def targets(self, view: HostView) -> list[int]:
        return list(range(view.vcpus)) if self.vcpu < 0 else [self.vcpu % view.vcpus]

    def update(self, view: HostView, vcpu: int) -> Iterator[HostStep]:
        """One `kvm_guest_time_update` of `vcpu`'s page."""
        parked = frozenset({vcpu}) if self.park else frozenset()
        if parked:
            yield HostStep(f"vcpu{vcpu} exits to the host", park=parked)
        if self.tsc_hz or self.tsc_jump:
            yield HostStep(
                f"vcpu{vcpu} TSC retuned",
                tsc=(TscChange(vcpu, self.tsc_hz or None, self.tsc_jump),),
            )
        yield from republish(self.pvti, vcpu, view, protocol=self.protocol)
        if parked:
            yield HostStep(f"vcpu{vcpu} re-enters the guest", unpark=parked)

    def steps(self, view: HostView) -> Iterator[HostStep]:
        for _ in range(self.updates):
            for v in self.targets(view):
                yield from self.update(view, v)
