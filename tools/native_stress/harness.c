/*
 * native_stress: run a vdsofuzz reader's C source natively, on real CPUs, against a writer
 * thread that applies a host protocol to a real shared pvclock page, and report the time
 * to the first bad timestamp.  The reader source (vdso_blobs/src/<reader>.c) is compiled
 * unmodified and linked with this file; the pages it reaches through the absolute symbols
 * of vdso.lds are ordinary page-aligned arrays defined here.
 *
 * Writer protocols (the same store order as host_model/writer.py):
 *   seqlock  version = (version + 1) | 1; wmb; tsc_timestamp, system_time,
 *            tsc_to_system_mul, tsc_shift, flags; wmb; version += 1   (KVM since 2016, Xen)
 *   legacy   version += 2 in the host's copy, then the whole struct copied in memory
 *            order: version, tsc_timestamp, system_time, tsc_to_system_mul, tsc_shift,
 *            flags                                                    (KVM before 2016)
 * Every record the writer publishes lies on one line: mul = 2^31, shift = 1 scale a TSC
 * delta to exactly delta ns, and system_time = BASE + (tsc_timestamp - tsc0).  So a
 * correct read returns BASE + (tsc - tsc0) for a TSC value it read, with no rounding,
 * and any mix of two records is off by the time between them.
 *
 * Oracles (the emulator's, for what a native run can observe):
 *   consistent  the value is some record's formula at a TSC value inside the read
 *               ([rdtsc before the call, rdtsc after it], and not before the record's
 *               tsc_timestamp), for a record published from just before the read started
 *               to the end of the read (a ring of the writer's published records);
 *   monotonic   a read never returns less than a read that finished before it started,
 *               across all reader threads.
 *
 * Usage: native_stress WRITER RATE_HZ TIMEOUT_S READERS SLOTS [UPDATES]
 *   WRITER seqlock|legacy, RATE_HZ 0 = tight loop, SLOTS = pvti slots the writer updates
 *   (1: vCPU 0's only), UPDATES: a fixed amount of work instead of a time: the writer
 *   keeps updating until it has made UPDATES updates and the readers UPDATES reads between
 *   them, so every counted read ran while the writer was writing (0 or absent: run until
 *   TIMEOUT_S, which also bounds a run with UPDATES).  Prints one JSON object.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The shared pages, where the vDSO link would put vvar/pvclock/hvclock/timens. */
#define PAGE 4096
__attribute__((aligned(PAGE), visibility("hidden"))) volatile unsigned char vvar_page[PAGE];
__attribute__((aligned(PAGE), visibility("hidden"))) volatile unsigned char pvclock_page[PAGE];
__attribute__((aligned(PAGE), visibility("hidden"))) volatile unsigned char hvclock_page[PAGE];
__attribute__((aligned(PAGE), visibility("hidden"))) volatile unsigned char timens_page[PAGE];

extern uint64_t vdsofuzz_read(void);

#define SLOT 64
#define STABLE 0x01
#define MUL 0x80000000u
#define SHIFT 1
#define BASE_NS 1000000000000ull
#define RING 65536u

struct pvti {
	volatile uint32_t version;
	volatile uint32_t pad0;
	volatile uint64_t tsc_timestamp;
	volatile uint64_t system_time;
	volatile uint32_t tsc_to_system_mul;
	volatile int8_t tsc_shift;
	volatile uint8_t flags;
	volatile uint8_t pad[2];
};
_Static_assert(sizeof(struct pvti) == 32, "pvti size");

struct record {
	uint64_t tsc_timestamp, system_time;
	uint32_t mul;
	int8_t shift;
};

#define barrier() __asm__ __volatile__("" ::: "memory")

static inline uint64_t rdtsc_fenced(void)
{
	uint32_t lo, hi;
	__asm__ __volatile__("lfence\n\trdtsc\n\tlfence" : "=a"(lo), "=d"(hi)::"memory");
	return ((uint64_t)hi << 32) | lo;
}

static struct record ring[RING];
static uint64_t gen;		/* ring[gen % RING] is the current record */
static uint64_t tsc0;
static int stop;
static int writer_done;
static int nreaders;
/* Reads made so far by each reader, on its own cache line (the writer sums them). */
static struct {
	uint64_t n;
	char pad[56];
} live_reads[64];
static uint64_t max_done;	/* the largest value of a finished read */
static uint64_t total_reads, unchecked;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static const char *verdict;
static char detail[512];
static double found_at = -1;
static struct timespec t_start;

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t_start.tv_sec) + (double)(t.tv_nsec - t_start.tv_nsec) * 1e-9;
}

static uint64_t formula(const struct record *r, uint64_t tsc)
{
	uint64_t delta = tsc - r->tsc_timestamp;
	if (r->shift < 0)
		delta >>= -r->shift;
	else
		delta <<= r->shift;
	return r->system_time + (uint64_t)(((unsigned __int128)delta * r->mul) >> 32);
}

static struct pvti *slot(int v)
{
	return (struct pvti *)(pvclock_page + (size_t)v * SLOT);
}

static void write_seqlock(struct pvti *p, const struct record *r)
{
	uint32_t odd = (p->version + 1) | 1;
	p->version = odd;
	barrier();
	p->tsc_timestamp = r->tsc_timestamp;
	p->system_time = r->system_time;
	p->tsc_to_system_mul = r->mul;
	p->tsc_shift = r->shift;
	p->flags = STABLE;
	barrier();
	p->version = odd + 1;
}

static void write_legacy(struct pvti *p, const struct record *r)
{
	uint32_t v = p->version + 2;
	p->version = v;
	p->tsc_timestamp = r->tsc_timestamp;
	p->system_time = r->system_time;
	p->tsc_to_system_mul = r->mul;
	p->tsc_shift = r->shift;
	p->flags = STABLE;
}

static void fail(const char *oracle, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(const char *oracle, const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&lock);
	if (!verdict) {
		verdict = oracle;
		found_at = now_s();
		va_start(ap, fmt);
		vsnprintf(detail, sizeof detail, fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&lock);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
}

struct writer_args {
	int legacy;
	long rate;
	int slots;
	uint64_t updates;	/* 0: until stopped; else updates and reads to make */
};

static void *writer(void *arg)
{
	const struct writer_args *w = arg;
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	uint64_t g = 0;
	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
		struct record r;
		r.tsc_timestamp = rdtsc_fenced();
		r.system_time = BASE_NS + (r.tsc_timestamp - tsc0);
		r.mul = MUL;
		r.shift = SHIFT;
		ring[(g + 1) % RING] = r;
		barrier();
		for (int v = 0; v < w->slots; v++) {
			if (w->legacy)
				write_legacy(slot(v), &r);
			else
				write_seqlock(slot(v), &r);
		}
		g++;
		__atomic_store_n(&gen, g, __ATOMIC_RELEASE);
		if (w->updates && g >= w->updates) {
			uint64_t reads = 0;
			for (int i = 0; i < nreaders; i++)
				reads += __atomic_load_n(&live_reads[i].n, __ATOMIC_RELAXED);
			if (reads >= w->updates)
				break;
		}
		if (w->rate > 0) {
			next.tv_nsec += 1000000000L / w->rate;
			while (next.tv_nsec >= 1000000000L) {
				next.tv_nsec -= 1000000000L;
				next.tv_sec++;
			}
			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
				;
		}
	}
	__atomic_store_n(&writer_done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static int consistent(uint64_t value, uint64_t t0, uint64_t t1, uint64_t g0, uint64_t g1)
{
	for (uint64_t g = g0; g <= g1 + 1; g++) {
		const struct record *r = &ring[g % RING];
		uint64_t lo_tsc = t0 > r->tsc_timestamp ? t0 : r->tsc_timestamp;
		if (t1 < r->tsc_timestamp)
			continue;
		if (formula(r, lo_tsc) <= value && value <= formula(r, t1))
			return 1;
	}
	return 0;
}

static void *reader(void *arg)
{
	int me = (int)(intptr_t)arg;
	uint64_t reads = 0, skipped = 0;
	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
		uint64_t before = __atomic_load_n(&max_done, __ATOMIC_ACQUIRE);
		uint64_t g0 = __atomic_load_n(&gen, __ATOMIC_ACQUIRE);
		uint64_t t0 = rdtsc_fenced();
		uint64_t value = vdsofuzz_read();
		uint64_t t1 = rdtsc_fenced();
		uint64_t g1 = __atomic_load_n(&gen, __ATOMIC_ACQUIRE);
		reads++;
		__atomic_store_n(&live_reads[me].n, reads, __ATOMIC_RELAXED);
		if (g1 + 1 - g0 >= RING - 2) {
			skipped++; /* the ring no longer holds every candidate record */
		} else if (!consistent(value, t0, t1, g0, g1)) {
			if (__atomic_load_n(&gen, __ATOMIC_ACQUIRE) + 1 - g0 >= RING - 2) {
				skipped++; /* the writer lapped the ring while we checked */
				continue;
			}
			fail("consistent",
			     "returned %llu; the records current during the read give %llu..%llu "
			     "(records %llu..%llu, off by %lld ns)",
			     (unsigned long long)value,
			     (unsigned long long)formula(&ring[g0 % RING], t0),
			     (unsigned long long)formula(&ring[g0 % RING], t1),
			     (unsigned long long)g0, (unsigned long long)g1 + 1,
			     (long long)(value - formula(&ring[g0 % RING], t1)));
			break;
		}
		if (value < before) {
			fail("monotonic", "returned %llu, %llu ns less than a read that finished earlier",
			     (unsigned long long)value, (unsigned long long)(before - value));
			break;
		}
		uint64_t cur = __atomic_load_n(&max_done, __ATOMIC_RELAXED);
		while (value > cur && !__atomic_compare_exchange_n(&max_done, &cur, value, 0,
								   __ATOMIC_RELEASE, __ATOMIC_RELAXED))
			;
	}
	__atomic_add_fetch(&total_reads, reads, __ATOMIC_RELAXED);
	__atomic_add_fetch(&unchecked, skipped, __ATOMIC_RELAXED);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 6 && argc != 7) {
		fprintf(stderr, "usage: %s seqlock|legacy RATE_HZ TIMEOUT_S READERS SLOTS [UPDATES]\n",
			argv[0]);
		return 2;
	}
	struct writer_args w = {strcmp(argv[1], "legacy") == 0, atol(argv[2]), atoi(argv[5]),
				argc == 7 ? strtoull(argv[6], NULL, 10) : 0};
	double timeout = atof(argv[3]);
	int readers = atoi(argv[4]);
	nreaders = readers;
	if ((!w.legacy && strcmp(argv[1], "seqlock") != 0) || readers < 1 || readers > 64 ||
	    w.slots < 1 || w.slots > PAGE / SLOT) {
		fprintf(stderr, "native_stress: bad arguments\n");
		return 2;
	}

	/* Boot record, published before any thread starts. */
	tsc0 = rdtsc_fenced();
	struct record boot = {tsc0, BASE_NS, MUL, SHIFT};
	ring[0] = boot;
	for (int v = 0; v < w.slots; v++) {
		slot(v)->version = 0;
		write_seqlock(slot(v), &boot);
	}
	clock_gettime(CLOCK_MONOTONIC, &t_start);

	pthread_t wt, rt[64];
	pthread_create(&wt, NULL, writer, &w);
	for (int i = 0; i < readers; i++)
		pthread_create(&rt[i], NULL, reader, (void *)(intptr_t)i);
	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE) &&
	       !__atomic_load_n(&writer_done, __ATOMIC_ACQUIRE) && now_s() < timeout) {
		struct timespec d = {0, 1000000};
		nanosleep(&d, NULL);
	}
	double elapsed = now_s();
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < readers; i++)
		pthread_join(rt[i], NULL);
	pthread_join(wt, NULL);

	printf("{\"writer\": \"%s\", \"rate_hz\": %ld, \"readers\": %d, \"slots\": %d, "
	       "\"timeout_s\": %g, \"violation\": %s%s%s, \"seconds\": %.6f, \"reads\": %llu, "
	       "\"updates\": %llu, \"unchecked\": %llu, \"detail\": \"%s\"}\n",
	       argv[1], w.rate, readers, w.slots, timeout, verdict ? "\"" : "",
	       verdict ? verdict : "null", verdict ? "\"" : "", verdict ? found_at : elapsed,
	       (unsigned long long)total_reads, (unsigned long long)gen,
	       (unsigned long long)unchecked, detail);
	return verdict ? 1 : 0;
}
