/*
 * percpu — reader generation 1 (Linux ~3.8-3.19).
 *
 * loop {
 *     cpu = getcpu();                 rdtscp: TSC_AUX & 0xfff (or rdpid)
 *     p = &pvti array[cpu];           64-byte slot per vCPU
 *     version, barrier, rdtsc_ordered(), fields + flags, barrier
 *     cpu1 = getcpu();
 * } while (cpu != cpu1 || version odd || version changed);
 * stable bit clear -> clock_gettime syscall fallback;
 * clamp the result to the last cycle value.
 *
 * The clamp: the kernel kept `cycle_last` in the vvar page (written by the
 * guest kernel, never by the reader).  The image has no writable data, so a
 * static "last value" variable is impossible; instead the reader clamps
 * against the read-only u64 at vvar_page + 8, which is where struct
 * vdso_data keeps cycle_last on 5.x/6.x kernels.  An all-zero vvar page makes
 * the clamp a no-op, so the emulator only has to map that page.  The clamp
 * can hide a small backwards step but never makes a read wrong on its own.
 */
#include "common.h"

#define VVAR_CYCLE_LAST_OFFSET 8

ENTRY u64 vdsofuzz_read(void)
{
	const struct pvti *p;
	u32 cpu, cpu1, version;
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
		cpu1 = getcpu();
	} while (cpu != cpu1 || (version & 1) || READ_ONCE(p->version) != version);

	if (!(flags & PVCLOCK_TSC_STABLE_BIT))
		return fallback_clock_gettime();

	last = READ_ONCE(*(const u64 *)(vvar_page + VVAR_CYCLE_LAST_OFFSET));
	return ns >= last ? ns : last;
}
