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

#include "pvti.h"

#define WRITER_ENTRY __attribute__((visibility("default")))

/* x86 is TSO: the kernel's smp_wmb() is a compiler barrier. */
#define wmb() __asm__ __volatile__("" ::: "memory")

void vdsofuzz_host_write(volatile struct pvti *slot, const struct pvti *next) WRITER_ENTRY;

#endif
