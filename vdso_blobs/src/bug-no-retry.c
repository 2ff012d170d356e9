/*
 * bug-no-retry — seeded bug, one change from modern.c: the version is read
 * but never re-checked, so the body runs exactly once and a read that
 * overlaps a host update returns whatever mix of old and new fields it saw.
 */
#include "common.h"

ENTRY u64 vdsofuzz_read(void)
{
	const struct pvti *p = pvti_of_vcpu(0);
	u32 version;
	u64 ns;

	version = READ_ONCE(p->version) & ~1u;
	(void)version; /* BUG: the retry check on it is gone */
	smp_rmb();
	if (!(READ_ONCE(p->flags) & PVCLOCK_TSC_STABLE_BIT))
		return U64_MAX;
	u64 tsc = rdtsc_ordered();
	ns = pvclock_scale(tsc, READ_ONCE(p->tsc_timestamp), READ_ONCE(p->system_time),
			   READ_ONCE(p->tsc_to_system_mul), READ_ONCE(p->tsc_shift));
	smp_rmb();

	return ns;
}
