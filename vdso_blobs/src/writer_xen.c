/*
 * Xen's per-vCPU update of a vcpu_time_info (update_vcpu_system_time): the
 * version is made odd in the guest's record and in the hypervisor's copy, wmb,
 * the whole copy (odd version included) is assigned over the guest's record,
 * wmb, the version is made even.  Each vCPU's record is updated on its own:
 * nothing orders the updates of different vCPUs' records.
 */
#include "writer_common.h"

void vdsofuzz_host_write(volatile struct pvti *slot, const struct pvti *next)
{
	struct pvti *u = (struct pvti *)slot;
	struct pvti copy = *next;

	copy.version = u->version = (u->version + 1) | 1;
	wmb();
	*u = copy;
	wmb();
	u->version = copy.version + 1;
}
