/*
 * bug-percpu-no-recheck — seeded bug, one change from percpu.c: the cpu
 * number is not read a second time after the fields.  A task that migrates
 * to another vCPU after getcpu() combines vCPU A's pvti with vCPU B's TSC,
 * which is wrong whenever the vCPUs' TSCs or pvtis differ.  Everything else
 * (fallback, clamp against vvar_page + 8) is as in percpu.c.
 */
#include "common.h"

#define VVAR_CYCLE_LAST_OFFSET 8

ENTRY u64 vdsofuzz_read(void)
{
	const struct pvti *p;
	u32 cpu, version;
	u8 flags;
	u64 ns, last;

	do {
		cpu = getcpu();
		p = pvti_of_vcpu(cpu);
		version = READ_ONCE(p->version);
		smp_rmb();
		u64 tsc = rdtsc_ordered();
		ns = pvclock_scale(tsc, READ_ONCE(p->tsc_timestamp), READ_ONCE(p->system_time),
				   READ_ONCE(p->tsc_to_system_mul), READ_ONCE(p->tsc_shift));
		flags = READ_ONCE(p->flags);
		smp_rmb();
		/* BUG: no `cpu1 = getcpu()` and no `cpu != cpu1` retry */
	} while ((version & 1) || READ_ONCE(p->version) != version);

	if (!(flags & PVCLOCK_TSC_STABLE_BIT))
		return fallback_clock_gettime();

	last = READ_ONCE(*(const u64 *)(vvar_page + VVAR_CYCLE_LAST_OFFSET));
	return ns >= last ? ns : last;
}
