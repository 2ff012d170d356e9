/*
 * The correct pvclock writer (KVM since 2016, Xen's protocol): the version is
 * made odd, wmb, the body is stored field by field, wmb, the version is made
 * even.  A reader that sees the same even version before and after its field
 * loads read one whole record.
 */
#include "writer_common.h"

void vdsofuzz_host_write(volatile struct pvti *slot, const struct pvti *next)
{
	u32 version = (slot->version + 1) | 1;

	slot->version = version;
	wmb();
	slot->tsc_timestamp = next->tsc_timestamp;
	slot->system_time = next->system_time;
	slot->tsc_to_system_mul = next->tsc_to_system_mul;
	slot->tsc_shift = next->tsc_shift;
	slot->flags = next->flags;
	wmb();
	slot->version = version + 1;
}
