/*
 * Shared pieces of the vdsofuzz reader sources (written for this project from
 * the public pvclock / Hyper-V TSC page ABI described in shared/BRIEF.md).
 *
 * Build-time knobs (passed with -D by tools/build_blobs.py):
 *   RDTSC_VARIANT = RDTSC_LFENCE (default) | RDTSC_RDTSCP | RDTSC_PLAIN
 *       the instruction sequence rdtsc_ordered() compiles to, as the kernel's
 *       alternatives would patch it at boot;
 *   GETCPU_RDPID  = 1 to read the cpu number with rdpid instead of rdtscp.
 *
 * Rules every reader follows: no writable data (the image has none), no
 * libgcc / libc calls, shared pages only reached through the hidden absolute
 * symbols of vdso.lds, and the single exported entry point vdsofuzz_read().
 */
#ifndef VDSOFUZZ_COMMON_H
#define VDSOFUZZ_COMMON_H

#include "pvti.h"

typedef signed long long s64;

#define U64_MAX (~0ULL)

/* ---- shared pages (absolute symbols from vdso.lds) ---------------------- */

#define HIDDEN __attribute__((visibility("hidden")))
#define ENTRY __attribute__((visibility("default")))

extern const u8 vvar_page[] HIDDEN;
extern const u8 pvclock_page[] HIDDEN;
extern const u8 hvclock_page[] HIDDEN;

/* struct pvti: pvti.h */

#define PVCLOCK_TSC_STABLE_BIT 0x01
#define PVCLOCK_GUEST_STOPPED 0x02

/* Each vCPU's pvti occupies one 64-byte slot of the pvclock page. */
#define PVTI_SLOT_SIZE 64

static inline __attribute__((always_inline)) const struct pvti *pvti_of_vcpu(u32 vcpu)
{
	return (const struct pvti *)(pvclock_page + (unsigned long)vcpu * PVTI_SLOT_SIZE);
}

/* Hyper-V reference TSC page. */
struct hv_tsc_page {
	u32 tsc_sequence;	/* @0  */
	u32 reserved0;		/* @4  */
	u64 tsc_scale;		/* @8  */
	s64 tsc_offset;		/* @16 */
};

LAYOUT_CHECK(struct hv_tsc_page, tsc_scale, 8);
LAYOUT_CHECK(struct hv_tsc_page, tsc_offset, 16);

/* ---- ordering primitives ------------------------------------------------ */

/* smp_rmb() on x86 is only a compiler barrier: loads are not reordered with loads. */
#define barrier() __asm__ __volatile__("" ::: "memory")
#define smp_rmb() barrier()

/* Force exactly one load of a shared field, in program order with other such loads. */
#define READ_ONCE(x) (*(const volatile __typeof__(x) *)&(x))

/* ---- TSC and cpu number -------------------------------------------------- */

#define RDTSC_LFENCE 1
#define RDTSC_RDTSCP 2
#define RDTSC_PLAIN 3

#ifndef RDTSC_VARIANT
#define RDTSC_VARIANT RDTSC_LFENCE
#endif

/*
 * rdtsc_ordered(): like the kernel's, an asm volatile with no "memory"
 * clobber, so it is NOT a compiler barrier; the readers' smp_rmb() calls are
 * what keep field loads inside the seqlock window.
 */
static inline __attribute__((always_inline)) u64 rdtsc_ordered(void)
{
	u32 lo, hi;
#if RDTSC_VARIANT == RDTSC_LFENCE
	__asm__ __volatile__("lfence\n\trdtsc" : "=a"(lo), "=d"(hi));
#elif RDTSC_VARIANT == RDTSC_RDTSCP
	u32 aux;
	__asm__ __volatile__("rdtscp" : "=a"(lo), "=d"(hi), "=c"(aux));
	(void)aux;
#elif RDTSC_VARIANT == RDTSC_PLAIN
	__asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
#else
#error "unknown RDTSC_VARIANT"
#endif
	return ((u64)hi << 32) | lo;
}

/* Plain, unordered rdtsc (the kernel's rdtsc()): may execute before earlier loads. */
static inline __attribute__((always_inline)) u64 rdtsc_unordered(void)
{
	u32 lo, hi;
	__asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}

/* getcpu(): TSC_AUX (or rdpid) holds (node << 12) | cpu; the emulator puts the vCPU index. */
#define GETCPU_CPU_MASK 0xfffu

static inline __attribute__((always_inline)) u32 getcpu(void)
{
	unsigned long p;
#if defined(GETCPU_RDPID) && GETCPU_RDPID
	__asm__ __volatile__("rdpid %0" : "=r"(p));
#else
	u32 lo, hi, aux;
	__asm__ __volatile__("rdtscp" : "=a"(lo), "=d"(hi), "=c"(aux));
	(void)lo;
	(void)hi;
	p = aux;
#endif
	return (u32)p & GETCPU_CPU_MASK;
}

/* ---- arithmetic ----------------------------------------------------------- */

/* (a * mul) >> 32 with the full 96-bit product, truncated to 64 bits. */
static inline __attribute__((always_inline)) u64 mul_u64_u32_shr32(u64 a, u32 mul)
{
#ifdef __x86_64__
	return (u64)(((unsigned __int128)a * mul) >> 32);
#else
	/* a = ah:al; a*mul = ah*mul*2^32 + al*mul, so >>32 = ah*mul + (al*mul >> 32). */
	u32 al = (u32)a;
	u32 ah = (u32)(a >> 32);
	return (u64)ah * mul + (((u64)al * mul) >> 32);
#endif
}

/* (a * b) >> 64: the high half of the 128-bit product. */
static inline __attribute__((always_inline)) u64 mul_u64_u64_hi(u64 a, u64 b)
{
#ifdef __x86_64__
	return (u64)(((unsigned __int128)a * b) >> 64);
#else
	u32 a0 = (u32)a, a1 = (u32)(a >> 32);
	u32 b0 = (u32)b, b1 = (u32)(b >> 32);
	u64 p00 = (u64)a0 * b0;
	u64 p01 = (u64)a0 * b1;
	u64 p10 = (u64)a1 * b0;
	u64 p11 = (u64)a1 * b1;
	/* Sum of the three terms at bit 32: at most 3 * (2^32 - 1), no overflow. */
	u64 mid = (p00 >> 32) + (u32)p01 + (u32)p10;
	return p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
#endif
}

/* The pvclock formula applied to already-loaded fields. */
static inline __attribute__((always_inline)) u64 pvclock_scale(u64 tsc, u64 tsc_timestamp,
							       u64 system_time, u32 mul, s8 shift)
{
	u64 delta = tsc - tsc_timestamp;

	if (shift < 0)
		delta >>= -shift;
	else
		delta <<= shift;
	return system_time + mul_u64_u32_shr32(delta, mul);
}

/* ---- syscall fallback ------------------------------------------------------ */

#define CLOCK_MONOTONIC 1
#define NSEC_PER_SEC 1000000000ULL

/*
 * clock_gettime(CLOCK_MONOTONIC) through the kernel: `syscall` with nr 228 on
 * x86-64, `int $0x80` with nr 265 on i386.  The emulator stops the read at the
 * trapping instruction and records "fallback"; the rest is ordinary code.
 */
static __attribute__((noinline, unused)) u64 fallback_clock_gettime(void)
{
	long ts[2] = {0, 0}; /* struct timespec: tv_sec, tv_nsec (native long) */
	long ret;
#ifdef __x86_64__
	__asm__ __volatile__("syscall"
			     : "=a"(ret)
			     : "0"(228L), "D"((long)CLOCK_MONOTONIC), "S"(ts)
			     : "rcx", "r11", "memory");
#else
	__asm__ __volatile__("int $0x80"
			     : "=a"(ret)
			     : "0"(265L), "b"((long)CLOCK_MONOTONIC), "c"(ts)
			     : "memory");
#endif
	if (ret != 0)
		return U64_MAX;
	return (u64)ts[0] * NSEC_PER_SEC + (u64)ts[1];
}

#endif /* VDSOFUZZ_COMMON_H */
