/*
 * pk_hist.h: a log-linear latency histogram for the bench tools (header only).
 *
 * Values are nanoseconds. Below 2 * PK_HIST_SUB every value has its own bucket; above, each
 * power of two is split into PK_HIST_SUB equal buckets, so a reported value is at most
 * 1 / PK_HIST_SUB (1.6 %) above the true one (HdrHistogram's scheme with two significant
 * digits). Reported percentiles are the upper bound of their bucket, never flattering.
 */
#ifndef PK_HIST_H
#define PK_HIST_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define PK_HIST_SUB_BITS 6
#define PK_HIST_SUB (1u << PK_HIST_SUB_BITS)
/* 2^40 ns is about 18 minutes: far beyond any bounded run. */
#define PK_HIST_MAX_BITS 40
#define PK_HIST_BUCKETS ((PK_HIST_MAX_BITS - PK_HIST_SUB_BITS + 1) * PK_HIST_SUB)

struct pk_hist {
	uint64_t count;
	uint64_t max;
	uint64_t buckets[PK_HIST_BUCKETS];
};

static inline uint64_t pk_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline unsigned pk_hist_index(uint64_t v)
{
	unsigned msb, shift, idx;

	if (v < 2 * PK_HIST_SUB)
		return (unsigned)v;
	msb = 63u - (unsigned)__builtin_clzll(v);
	shift = msb - PK_HIST_SUB_BITS;
	idx = (shift + 1) * PK_HIST_SUB + (unsigned)(v >> shift) - PK_HIST_SUB;
	return idx < PK_HIST_BUCKETS ? idx : PK_HIST_BUCKETS - 1;
}

/* The largest value that lands in bucket idx. */
static inline uint64_t pk_hist_upper(unsigned idx)
{
	unsigned shift, sub;

	if (idx < 2 * PK_HIST_SUB)
		return idx;
	shift = idx / PK_HIST_SUB - 1;
	sub = idx % PK_HIST_SUB + PK_HIST_SUB;
	return (((uint64_t)sub + 1) << shift) - 1;
}

static inline void pk_hist_record(struct pk_hist *h, uint64_t v)
{
	h->buckets[pk_hist_index(v)]++;
	h->count++;
	if (v > h->max)
		h->max = v;
}

/* The value at quantile q (0..1); 0 when the histogram is empty. */
static inline uint64_t pk_hist_quantile(const struct pk_hist *h, double q)
{
	uint64_t rank, seen = 0;
	unsigned i;

	if (h->count == 0)
		return 0;
	rank = (uint64_t)(q * (double)h->count + 0.5);
	if (rank < 1)
		rank = 1;
	for (i = 0; i < PK_HIST_BUCKETS; i++) {
		seen += h->buckets[i];
		if (seen >= rank) {
			uint64_t up = pk_hist_upper(i);
			return up < h->max ? up : h->max;
		}
	}
	return h->max;
}

/* Prints p50/p90/p99/p99.9/max in microseconds as key=value pairs. */
static inline void pk_hist_print(const struct pk_hist *h, FILE *out)
{
	fprintf(out, "p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f",
	        (double)pk_hist_quantile(h, 0.50) / 1e3, (double)pk_hist_quantile(h, 0.90) / 1e3,
	        (double)pk_hist_quantile(h, 0.99) / 1e3, (double)pk_hist_quantile(h, 0.999) / 1e3,
	        (double)h->max / 1e3);
}

#endif /* PK_HIST_H */
