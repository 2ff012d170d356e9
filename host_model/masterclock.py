"""`kvm-masterclock`: KVM's master-clock update (`kvm_gen_update_masterclock`, Linux 3.8+).

When the host's clocksource changes, after a TSC write, or when the TSCs of the vCPUs
become (un)matched, KVM raises KVM_REQ_MCLOCK_INPROGRESS on every vCPU: each one exits and
none may re-enter while `pvclock_update_vm_gtod_copy` recomputes the master clock, and
every vCPU's pvti is rewritten from that one copy before guest entries are allowed again.
PVCLOCK_TSC_STABLE_BIT is set in the rewritten pages exactly when the master clock is in
use (host clocksource is the TSC and the vCPUs' TSCs match). Because no guest instruction
runs during the update, a reader on any vCPU sees either every page old or every page new;
this is the maintainer's answer in the seed thread ("park every vCPU in host while
updating vCPU-0's timestamp").
"""

from __future__ import annotations

from collections.abc import Iterator

from host_model.base import HostModel, HostStep, HostView, Param, TscChange
from host_model.writer import initial_writes, republish, snapshot


class KvmMasterclock(HostModel):
    name = "kvm-masterclock"
    summary = "KVM master-clock update: every vCPU parked while all pages are rewritten"
    params = (
        Param("updates", 1, "how many master-clock updates the host makes", low=0, high=100),
        Param(
            "masterclock",
            1,
            "1: master clock in use after the update (stable bit set)",
            low=0,
            high=1,
        ),
        Param(
            "boot_masterclock", 1, "1: master clock in use at boot (stable bit set)", low=0, high=1
        ),
        Param(
            "tsc_hz",
            0,
            "new TSC frequency of every vCPU at each update (0: unchanged)",
            low=0,
            high=10**11,
        ),
        Param("tsc_jump", 0, "TSC jump (cycles) of every vCPU at each update"),
    )

    def setup(self, view: HostView) -> HostStep:
        stable = bool(self.boot_masterclock)
        self.pvti = [
            snapshot(view.clock, v, view.t, version=2, stable=stable) for v in range(view.vcpus)
        ]
        return initial_writes(self.pvti)

    def steps(self, view: HostView) -> Iterator[HostStep]:
        everyone = frozenset(range(view.vcpus))
        for _ in range(self.updates):
            yield HostStep("KVM_REQ_MCLOCK_INPROGRESS: every vCPU exits", park=everyone)
            if self.tsc_hz or self.tsc_jump:
                yield HostStep(
                    "every vCPU's TSC retuned",
                    tsc=tuple(TscChange(v, self.tsc_hz or None, self.tsc_jump) for v in everyone),
                )
            for v in range(view.vcpus):
                yield from republish(self.pvti, v, view, stable=bool(self.masterclock))
            yield HostStep("master clock updated: guest entries allowed", unpark=everyone)
