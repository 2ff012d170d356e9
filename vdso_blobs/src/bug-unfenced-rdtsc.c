/*
 * bug-unfenced-rdtsc — seeded bug, one change from modern.c: the TSC is read
 * with a plain `rdtsc` (the kernel's rdtsc(), not rdtsc_ordered()), whatever
 * RDTSC_VARIANT says.  On hardware the unfenced rdtsc may execute before the
 * earlier version/flags loads complete, pairing a TSC with fields of a
 * different generation.  An in-order emulator only sees this bug if it
 * models early rdtsc execution; the instruction stream itself differs from
 * modern-rdtsc only in that the compiler is free to schedule this asm.
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
		u64 tsc = rdtsc_unordered(); /* BUG: no lfence / rdtscp */
		ns = pvclock_scale(tsc, READ_ONCE(p->tsc_timestamp), READ_ONCE(p->system_time),
				   READ_ONCE(p->tsc_to_system_mul), READ_ONCE(p->tsc_shift));
		smp_rmb();
	} while (READ_ONCE(p->version) != version);

	return ns;
}
