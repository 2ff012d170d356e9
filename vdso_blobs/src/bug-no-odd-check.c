/*
 * bug-no-odd-check — seeded bug, one change from modern.c: the version is
 * taken as read instead of `version & ~1`, so an odd version (host update in
 * progress) that is still the same at the end is accepted, together with a
 * half-written body.
 */
#include "common.h"

ENTRY u64 vdsofuzz_read(void)
{
	const struct pvti *p = pvti_of_vcpu(0);
	u32 version;
	u64 ns;

	do {
		version = READ_ONCE(p->version); /* BUG: no `& ~1` */
		smp_rmb();
		if (!(READ_ONCE(p->flags) & PVCLOCK_TSC_STABLE_BIT))
			return U64_MAX;
		u64 tsc = rdtsc_ordered();
		ns = pvclock_scale(tsc, READ_ONCE(p->tsc_timestamp), READ_ONCE(p->system_time),
				   READ_ONCE(p->tsc_to_system_mul), READ_ONCE(p->tsc_shift));
		smp_rmb();
	} while (READ_ONCE(p->version) != version);

	return ns;
}
