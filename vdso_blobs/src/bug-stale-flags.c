/*
 * bug-stale-flags — seeded bug, one change from modern.c: the flags are read
 * once before the loop and never again, so a host that clears the stable bit
 * while the reader is retrying is not noticed, and the value is returned
 * although the stable bit (as published with the version that was finally
 * accepted) forbids it.
 */
#include "common.h"

ENTRY u64 vdsofuzz_read(void)
{
	const struct pvti *p = pvti_of_vcpu(0);
	u32 version;
	u64 ns;
	u8 flags = READ_ONCE(p->flags); /* BUG: read outside the seqlock, once */

	do {
		version = READ_ONCE(p->version) & ~1u;
		smp_rmb();
		if (!(flags & PVCLOCK_TSC_STABLE_BIT))
			return U64_MAX;
		u64 tsc = rdtsc_ordered();
		ns = pvclock_scale(tsc, READ_ONCE(p->tsc_timestamp), READ_ONCE(p->system_time),
				   READ_ONCE(p->tsc_to_system_mul), READ_ONCE(p->tsc_shift));
		smp_rmb();
	} while (READ_ONCE(p->version) != version);

	return ns;
}
