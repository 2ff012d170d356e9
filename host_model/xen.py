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
"""

from __future__ import annotations

from collections.abc import Iterator

from host_model.base import HostModel, HostStep, HostView, Param
from host_model.pvti import Pvti
from host_model.writer import initial_writes, seqlock_update, snapshot


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

    def update(self, view: HostView, vcpu: int) -> list[HostStep]:
        """One vCPU's update as a list of steps (computed from the clock at the round's start)."""
        steps = list(seqlock_update(vcpu, self.pvti[vcpu], self.record(view, vcpu, 0)))
        if self.park:
            me = frozenset({vcpu})
            steps = (
                [HostStep(f"vcpu{vcpu} is descheduled for its update", park=me)]
                + steps
                + [HostStep(f"vcpu{vcpu} runs again", unpark=me)]
            )
        return steps

    def steps(self, view: HostView) -> Iterator[HostStep]:
        for _ in range(self.updates):
            seqs = [self.update(view, v) for v in range(view.vcpus)]
            if not self.interleave:
                order = [s for seq in seqs for s in seq]
            else:
                order = []
                for i in range(max(len(s) for s in seqs)):
                    order += [seq[i] for seq in seqs if i < len(seq)]
            for step in order:
                yield step
                for pub in step.publish:
                    self.pvti[int(pub.key.removeprefix("pvti"))] = pub.snapshot
