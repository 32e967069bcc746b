/*
 * Reconnect backoff: first wait, doubling, cap, jitter bounds, reset.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "backoff.h"

/* Jitter is random: check the bounds over many runs. */
#define RUNS 2000

static void test_first_wait(void **state)
{
	(void)state;
	struct pk_backoff b;
	uint64_t lo = UINT64_MAX, hi = 0;
	for (int i = 0; i < RUNS; i++) {
		pk_backoff_init(&b, 100, 15000);
		uint64_t w = pk_backoff_next(&b);
		assert_true(w >= 100 && w < 110);
		assert_int_equal(b.last_ms, w);
		if (w < lo)
			lo = w;
		if (w > hi)
			hi = w;
	}
	/* The jitter is really random, not a constant. */
	assert_true(hi > lo);
}

static void test_doubling_and_cap(void **state)
{
	(void)state;
	struct pk_backoff b;
	for (int run = 0; run < RUNS / 10; run++) {
		pk_backoff_init(&b, 100, 15000);
		uint64_t prev = pk_backoff_next(&b);
		for (int i = 0; i < 20; i++) {
			uint64_t base = prev * 2 > 15000 ? 15000 : prev * 2;
			uint64_t w = pk_backoff_next(&b);
			/* base x [1.0, 1.1), floored. */
			if (w < base || w * 10 >= base * 11)
				fail_msg("wait %llu after %llu, want [%llu, %llu*1.1)",
				         (unsigned long long)w, (unsigned long long)prev,
				         (unsigned long long)base, (unsigned long long)base);
			prev = w;
		}
		/* Long since capped. */
		assert_true(prev >= 15000 && prev < 16500);
	}
}

static void test_sequence_bounds(void **state)
{
	(void)state;
	/* The n-th wait with jitter at its extremes: 100 x 2^n x [1, 1.1^(n+1)). */
	struct pk_backoff b;
	pk_backoff_init(&b, 100, 15000);
	uint64_t w0 = pk_backoff_next(&b), w1 = pk_backoff_next(&b), w2 = pk_backoff_next(&b);
	assert_true(w0 >= 100 && w0 < 110);
	assert_true(w1 >= 200 && w1 < 242);
	assert_true(w2 >= 400 && w2 < 533);
}

static void test_reset(void **state)
{
	(void)state;
	struct pk_backoff b;
	pk_backoff_init(&b, 100, 15000);
	for (int i = 0; i < 30; i++)
		pk_backoff_next(&b);
	assert_true(b.last_ms >= 15000);
	pk_backoff_reset(&b);
	assert_int_equal(b.last_ms, 0);
	uint64_t w = pk_backoff_next(&b);
	assert_true(w >= 100 && w < 110);
}

static void test_edges(void **state)
{
	(void)state;
	struct pk_backoff b;
	/* Small values: no jitter room, no overshoot. */
	pk_backoff_init(&b, 1, 5);
	for (int i = 0; i < 100; i++) {
		uint64_t w = pk_backoff_next(&b);
		assert_true(w >= 1 && w <= 5);
	}
	/* min above max: max wins. */
	pk_backoff_init(&b, 500, 100);
	for (int i = 0; i < 100; i++) {
		uint64_t w = pk_backoff_next(&b);
		assert_true(w >= 100 && w < 110);
	}
	/* Huge values saturate instead of wrapping. */
	pk_backoff_init(&b, UINT64_MAX / 2, UINT64_MAX);
	for (int i = 0; i < 10; i++)
		assert_true(pk_backoff_next(&b) >= UINT64_MAX / 2);
}

static void test_now_ms(void **state)
{
	(void)state;
	uint64_t a = pk_now_ms();
	struct timespec ts = {0, 20 * 1000 * 1000};
	nanosleep(&ts, NULL);
	uint64_t b = pk_now_ms();
	assert_true(b >= a + 19);
	assert_true(b - a < 5000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_first_wait),      cmocka_unit_test(test_doubling_and_cap),
	    cmocka_unit_test(test_sequence_bounds), cmocka_unit_test(test_reset),
	    cmocka_unit_test(test_edges),           cmocka_unit_test(test_now_ms),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
