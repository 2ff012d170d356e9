/*
 * The seqlock writer with its barriers left out and the slot not volatile: the
 * source stores the version odd, the body, then the version even, but nothing
 * stops the compiler from reordering the plain stores or dropping the first
 * version store as dead (it is overwritten before anything reads it).  Whether
 * a build really moved or dropped a store is recorded in the manifest from
 * what the compiled writer stores (`store_order`).
 */
#include "writer_common.h"

void vdsofuzz_host_write(volatile struct pvti *slot, const struct pvti *next)
{
	struct pvti *s = (struct pvti *)slot;
	u32 version = (s->version + 1) | 1;

	s->version = version;
	s->tsc_timestamp = next->tsc_timestamp;
	s->system_time = next->system_time;
	s->tsc_to_system_mul = next->tsc_to_system_mul;
	s->tsc_shift = next->tsc_shift;
	s->flags = next->flags;
	s->version = version + 1;
}
