/*
 * The seed-era KVM writer with the copy done as the kernel's memcpy does it on
 * CPUs with fast string moves: `rep movsq`, one eight-byte element at a time.
 * Like writer_seed_memcpy.c, the version is bumped by two in the host's copy
 * and never made odd; each element of the `rep movs` reaches the slot as its
 * own store, so a reader can see the new version before the rest of the body.
 */
#include "writer_common.h"

void vdsofuzz_host_write(volatile struct pvti *slot, const struct pvti *next)
{
	struct pvti copy = *next;
	void *dst = (void *)slot;
	const void *src = &copy;
	unsigned long words = sizeof(copy) / 8;

	copy.version = slot->version + 2;
	__asm__ __volatile__("rep movsq"
			     : "+D"(dst), "+S"(src), "+c"(words)
			     : "m"(copy)
			     : "memory");
}
