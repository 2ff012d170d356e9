"""`kvm-legacy-copy`: KVM's pvclock update before the 2016 rework (Linux 2.6.x until ~4.8).

`kvm_guest_time_update` bumped the version by two in the host's copy ("the guest won't see
the intermediate state, so we just increase by 2 at the end", as the old comment put it)
and wrote the whole struct to guest memory with one `kvm_write_guest_cached`: a plain copy
in memory order, version first. The version the guest sees goes from even to even and is
never odd. The updated vCPU is outside guest mode, so its own reader cannot notice; a
reader on another vCPU that reads this vCPU's page (the vCPU-0 readers of Linux 4.5+) can
see the new version, then a mix of old and new fields, then the new version again, and
accept a torn record. The fix (2016) writes an odd version first, then the body, then the
even version, as `kvm` models.
"""

from __future__ import annotations

from host_model.kvm import Kvm
from host_model.writer import LEGACY_COPY


class KvmLegacyCopy(Kvm):
    name = "kvm-legacy-copy"
    summary = "KVM before 2016: version += 2, then the whole struct copied (never odd)"
    protocol = LEGACY_COPY
