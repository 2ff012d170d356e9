/*
 * The seed-era KVM writer (before the 2016 rework): the version is bumped by
 * two in the host's own copy of the record ("the guest won't see the
 * intermediate state"), then the whole struct is copied into guest memory in
 * one memcpy, version first.  The version the guest sees goes from even to
 * even, never odd: a reader on another vCPU can read the new version, then a
 * mix of old and new fields, then the new version again, and accept a torn
 * record.  How the copy is stored (eight-byte moves, 16-byte SSE moves, a
 * `rep movs`) is the compiler's choice.
 */
#include "writer_common.h"

void vdsofuzz_host_write(volatile struct pvti *slot, const struct pvti *next)
{
	struct pvti copy = *next;

	copy.version = slot->version + 2;
	__builtin_memcpy((void *)slot, &copy, sizeof(copy));
}
