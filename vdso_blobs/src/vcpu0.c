/*
 * vcpu0 — reader generation 2 (the 2015 proposal, Linux 4.5 era).
 *
 * Every vCPU reads vCPU 0's pvti.  The stable bit is checked ONCE, before the
 * seqlock loop: if it is clear the reader falls back to the clock_gettime
 * syscall.  Inside the loop: version, read barrier, rdtsc_ordered() and the
 * fields, read barrier, retry while the version is odd or has changed.  The
 * flags are not looked at again, which is exactly what the seed thread argues
 * about (a host that clears the stable bit mid-read is not noticed).
 */
#include "common.h"

ENTRY u64 vdsofuzz_read(void)
{
	const struct pvti *p = pvti_of_vcpu(0);
	u32 version;
	u64 ns;

	if (!(READ_ONCE(p->flags) & PVCLOCK_TSC_STABLE_BIT))
		return fallback_clock_gettime();

	do {
		version = READ_ONCE(p->version);
		smp_rmb();
		u64 tsc = rdtsc_ordered();
		ns = pvclock_scale(tsc, READ_ONCE(p->tsc_timestamp), READ_ONCE(p->system_time),
				   READ_ONCE(p->tsc_to_system_mul), READ_ONCE(p->tsc_shift));
		smp_rmb();
	} while ((version & 1) || READ_ONCE(p->version) != version);

	return ns;
}
