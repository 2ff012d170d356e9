"""A host model written outside vdsofuzz: a correct seqlock writer whose clock is off.

Each update republishes vCPU 0's pvclock record with KVM's store protocol (version made
odd, body, version made even), but the new record's system_time carries a fixed error of
`jitter_ns`. A negative error moves the guest's clock back at the update: a read that
starts after an earlier read has ended can return a smaller time.

    vdsofuzz fuzz --host examples/myhost.py:JitterHost --param jitter_ns=-5000
"""

from __future__ import annotations

from collections.abc import Iterator

from host_model.base import HostModel, HostStep, HostView, Param
from host_model.pvti import Pvti
from host_model.writer import initial_writes, republish, snapshot


class JitterHost(HostModel):
    name = "jitter"
    summary = "seqlock updates of vCPU 0's record, its system_time off by jitter_ns"
    params = (
        Param("updates", 1, "how many times vCPU 0's record is republished", low=0, high=100),
        Param("jitter_ns", -5000, "error added to each new system_time (ns)"),
    )

    def setup(self, view: HostView) -> HostStep:
        # Every vCPU's record, correct at boot (version 2: even, nothing in progress).
        self.pvti = [snapshot(view.clock, v, view.t, version=2) for v in range(view.vcpus)]
        return initial_writes(self.pvti)

    def steps(self, view: HostView) -> Iterator[HostStep]:
        def plan() -> Pvti:
            # Called once the odd version is stored: the record as of that moment, then off.
            true = snapshot(view.clock, 0, view.t, self.pvti[0].version)
            return true.with_(system_time=true.system_time + self.jitter_ns)

        for _ in range(self.updates):
            # One HostStep per store; the scheduler may run reader instructions between them.
            yield from republish(self.pvti, 0, view, plan=plan)
