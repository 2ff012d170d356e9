/*
 * bug-no-barrier — seeded bug, one idea changed from modern.c: nothing orders
 * the field loads against the two version loads.  The read barriers are gone
 * and the fields are plain loads (as the kernel writes them, relying on the
 * barriers), so the compiler may schedule them before the first version load,
 * after the re-check, or hoist them out of the loop entirely.  Only the two
 * version loads stay READ_ONCE.  Whether the compiled code really leaves the
 * window depends on compiler and level; build_blobs.py inspects the
 * disassembly and records the finding in the manifest's `notes`.
 */
#include "common.h"

ENTRY u64 vdsofuzz_read(void)
{
	const struct pvti *p = pvti_of_vcpu(0);
	u32 version;
	u64 ns;

	do {
		version = READ_ONCE(p->version) & ~1u;
		/* BUG: no smp_rmb() here */
		if (!(p->flags & PVCLOCK_TSC_STABLE_BIT))
			return U64_MAX;
		u64 tsc = rdtsc_ordered();
		ns = pvclock_scale(tsc, p->tsc_timestamp, p->system_time, p->tsc_to_system_mul,
				   p->tsc_shift);
		/* BUG: no smp_rmb() here */
	} while (READ_ONCE(p->version) != version);

	return ns;
}
