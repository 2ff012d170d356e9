/*
 * hyperv — the Hyper-V reference TSC page reader.
 *
 * Page hvclock_page: tsc_sequence u32 @0, tsc_scale u64 @8, tsc_offset s64 @16.
 * loop {
 *     seq = tsc_sequence; seq == 0 -> page invalid -> return U64_MAX;
 *     barrier; scale, offset, rdtsc_ordered(); barrier;
 * } while (tsc_sequence != seq);
 * ns100 = ((tsc * scale) >> 64) + offset   (100 ns units);  return ns100 * 100.
 */
#include "common.h"

ENTRY u64 vdsofuzz_read(void)
{
	const struct hv_tsc_page *pg = (const struct hv_tsc_page *)hvclock_page;
	u32 sequence;
	u64 scale, tsc;
	s64 offset;

	do {
		sequence = READ_ONCE(pg->tsc_sequence);
		if (sequence == 0)
			return U64_MAX;
		smp_rmb();
		scale = READ_ONCE(pg->tsc_scale);
		offset = READ_ONCE(pg->tsc_offset);
		tsc = rdtsc_ordered();
		smp_rmb();
	} while (READ_ONCE(pg->tsc_sequence) != sequence);

	return (mul_u64_u64_hi(tsc, scale) + (u64)offset) * 100;
}
