/*
 * Shared pieces of the vdsofuzz host writers (written for this project from the
 * pvclock protocol described in the vdso_blobs README and the domain brief).
 *
 * A writer is host code: it stores the host's planned record `next` into one
 * vCPU's slot of the shared pvclock page, the way a hypervisor does.  vdsofuzz
 * runs it as the host agent: each store it makes to `slot` is one host step the
 * scheduler places between the readers' instructions.  Entry point:
 *
 *   void vdsofuzz_host_write(volatile struct pvclock_vcpu_time_info *slot,
 *                            const struct pvclock_vcpu_time_info *next);
 *
 * `next` carries the record's fields (its version is the slot's current one);
 * the writer decides the version protocol, the order and the widths of its stores.
 */
#ifndef VDSOFUZZ_WRITER_H
#define VDSOFUZZ_WRITER_H

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

_Static_assert(sizeof(struct pvti) == 32, "sizeof(struct pvti)");
_Static_assert(__builtin_offsetof(struct pvti, tsc_to_system_mul) == 24, "mul @24");

#define WRITER_ENTRY __attribute__((visibility("default")))

/* x86 is TSO: the kernel's smp_wmb() is a compiler barrier. */
#define wmb() __asm__ __volatile__("" ::: "memory")

void vdsofuzz_host_write(volatile struct pvti *slot, const struct pvti *next) WRITER_ENTRY;

#endif
