/*
 * struct pvclock_vcpu_time_info as the readers load it and the host writers
 * store it (one definition for both sides: common.h, writer_common.h).
 *
 * 32 bytes, little endian.  The ABI struct is packed, but every field is
 * naturally aligned, so the plain struct has the same layout (checked below)
 * and READ_ONCE() may take field addresses.
 */
#ifndef VDSOFUZZ_PVTI_H
#define VDSOFUZZ_PVTI_H

typedef unsigned char u8;
typedef signed char s8;
typedef unsigned int u32;
typedef unsigned long long u64;

struct pvti {
	u32 version;		/* @0  */
	u32 pad0;		/* @4  */
	u64 tsc_timestamp;	/* @8  */
	u64 system_time;	/* @16 */
	u32 tsc_to_system_mul;	/* @24 */
	s8 tsc_shift;		/* @28 */
	u8 flags;		/* @29 */
	u8 pad[2];		/* @30 */
};

#define LAYOUT_CHECK(type, field, off) \
	_Static_assert(__builtin_offsetof(type, field) == (off), #type "." #field)
LAYOUT_CHECK(struct pvti, tsc_timestamp, 8);
LAYOUT_CHECK(struct pvti, system_time, 16);
LAYOUT_CHECK(struct pvti, tsc_to_system_mul, 24);
LAYOUT_CHECK(struct pvti, tsc_shift, 28);
LAYOUT_CHECK(struct pvti, flags, 29);
_Static_assert(sizeof(struct pvti) == 32, "sizeof(struct pvti)");

#endif
