/*
 * modern — reader generation 3 (lib/vdso era).
 *
 * Reads vCPU 0's pvti from any vCPU.  Seqlock: v = version & ~1, read
 * barrier, check the stable bit INSIDE the loop (return U64_MAX when clear so
 * the caller falls back to the syscall), read the TSC and fields, read
 * barrier, retry while the version differs from v (an odd version therefore
 * always retries).
 */
#include "common.h"

ENTRY u64 vdsofuzz_read(void)
{
	const struct pvti *p = pvti_of_vcpu(0);
	u32 version;
	u64 ns;

	do {
		version = READ_ONCE(p->version) & ~1u;
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
