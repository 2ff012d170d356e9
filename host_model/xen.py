"""`xen`: Xen's vcpu_time_info updates, each vCPU's record on its own (all Xen versions).

Xen refreshes a vCPU's `vcpu_time_info` from the pCPU the vCPU runs on: when the vCPU is
scheduled there and at the per-pCPU time calibration (about once a second). Each update
uses the version protocol (version made odd, wmb, body, wmb, version made even), but the
records of different vCPUs are written independently, from different pCPUs, at
overlapping times: there is no cross-vCPU atomicity, and nothing stops a reader on one
vCPU from reading another vCPU's record mid-update. Each pCPU's calibration also carries
its own small error, so records of different vCPUs may disagree by a few ns (`skew_ns`).
The stable bit (XEN_PVCLOCK_TSC_STABLE_BIT, Xen 4.8+) is set when Xen deems the TSC
reliable.

A round is one lazy update per vCPU, merged one step each in turn (`interleave=1`) or one
after the other; each vCPU's record is computed just after its own version is made odd,
from the clock at that instant, never at the round's start (so no update republishes the
record it replaces).
"""

from __future__ import annotations

from collections.abc import Iterator

from host_model.base import HostModel, HostStep, HostView, Param
from host_model.pvti import Pvti
from host_model.writer import initial_writes, republish, round_robin, snapshot


class Xen(HostModel):
    name = "xen"
    summary = "Xen: each vCPU's record updated independently, updates overlap across vCPUs"
    params = (
        Param(
            "updates",
            1,
            "how many rounds of updates (every vCPU's record once per round)",
            low=0,
            high=100,
        ),
        Param(
            "interleave",
            1,
            "1: the vCPUs' updates overlap (stores alternate between vCPUs)",
            low=0,
            high=1,
        ),
        Param(
            "park",
            0,
            "1: the vCPU whose record is updated is out of guest mode meanwhile",
            low=0,
            high=1,
        ),
        Param(
            "skew_ns",
            0,
            "vCPU v's records are v*skew_ns ahead (per-pCPU calibration error)",
            low=-(10**9),
            high=10**9,
        ),
        Param("stable", 1, "XEN_PVCLOCK_TSC_STABLE_BIT in every record", low=0, high=1),
    )

    def record(self, view: HostView, vcpu: int, version: int) -> Pvti:
        p = snapshot(view.clock, vcpu, view.t, version, stable=bool(self.stable))
        return p.with_(system_time=p.system_time + vcpu * self.skew_ns)

    def setup(self, view: HostView) -> HostStep:
        self.pvti = [self.record(view, v, 2) for v in range(view.vcpus)]
        return initial_writes(self.pvti)

    def update(self, view: HostView, vcpu: int) -> Iterator[HostStep]:
        """One vCPU's update; its record is planned once its opening store has been taken."""
        me = frozenset({vcpu})
        if self.park:
            yield HostStep(f"vcpu{vcpu} is descheduled for its update", park=me)
        yield from republish(
            self.pvti, vcpu, view, plan=lambda: self.record(view, vcpu, self.pvti[vcpu].version)
        )
        if self.park:
            yield HostStep(f"vcpu{vcpu} runs again", unpark=me)

    def steps(self, view: HostView) -> Iterator[HostStep]:
        for _ in range(self.updates):
            updates = [self.update(view, v) for v in range(view.vcpus)]
            if self.interleave:
                yield from round_robin(updates)
            else:
                for update in updates:
                    yield from update
