/*
 * bug-hyperv-no-retry — seeded bug, one change from hyperv.c: the sequence is
 * read (and 0 still declines) but never re-checked after the fields, so a read
 * that overlaps a host update of the TSC page pairs the scale of one update
 * with the offset (or TSC) of another.
 */
#include "common.h"

ENTRY u64 vdsofuzz_read(void)
{
	const struct hv_tsc_page *pg = (const struct hv_tsc_page *)hvclock_page;
	u32 sequence;
	u64 scale, tsc;
	s64 offset;

	sequence = READ_ONCE(pg->tsc_sequence);
	if (sequence == 0)
		return U64_MAX;
	smp_rmb();
	scale = READ_ONCE(pg->tsc_scale);
	offset = READ_ONCE(pg->tsc_offset);
	tsc = rdtsc_ordered();
	smp_rmb();
	/* BUG: no `while (READ_ONCE(pg->tsc_sequence) != sequence)` retry */

	return (mul_u64_u64_hi(tsc, scale) + (u64)offset) * 100;
}
