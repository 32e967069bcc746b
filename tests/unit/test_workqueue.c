/*
 * Unit tests for controller/workqueue.c. Time is driven by hand: every call
 * gets an explicit now.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "workqueue.h"

/* Get a key and copy it (the queue's string dies at done). */
static const char *get_str(struct pk_wq *q, uint64_t now, char *buf, size_t len)
{
	const char *k = pk_wq_get(q, now);
	if (!k)
		return NULL;
	snprintf(buf, len, "%s", k);
	return buf;
}

/* Drain every key ready at now, processing each at once; returns them as
 * "a,b,c". */
static void drain(struct pk_wq *q, uint64_t now, char *out, size_t len)
{
	size_t n = 0;
	out[0] = '\0';
	const char *k;
	while ((k = pk_wq_get(q, now))) {
		n += (size_t)snprintf(out + n, len - n, "%s%s", n ? "," : "", k);
		assert_true(n < len);
		pk_wq_done(q, k, now);
	}
}

static void test_fifo_and_dedupe(void **state)
{
	(void)state;
	struct pk_wq *q = pk_wq_new(NULL);
	assert_null(pk_wq_get(q, 0));
	assert_int_equal(pk_wq_add(q, "ns/a", 0), 0);
	assert_int_equal(pk_wq_add(q, "ns/b", 0), 0);
	assert_int_equal(pk_wq_add(q, "ns/a", 1), 0); /* already queued: stays once, in place */
	assert_int_equal(pk_wq_add(q, "ns/c", 1), 0);
	assert_int_equal(pk_wq_add(q, "ns/b", 2), 0);
	assert_int_equal(pk_wq_depth(q), 3);
	assert_int_equal(pk_wq_adds(q), 5);
	char out[256];
	drain(q, 2, out, sizeof(out));
	assert_string_equal(out, "ns/a,ns/b,ns/c");
	assert_int_equal(pk_wq_depth(q), 0);
	assert_null(pk_wq_get(q, 100));
	assert_int_equal(pk_wq_next_ms(q, 100), UINT64_MAX);
	pk_wq_free(q);
	pk_wq_free(NULL);
}

static void test_in_flight_dirty(void **state)
{
	(void)state;
	struct pk_wq *q = pk_wq_new(NULL);
	char buf[64], out[256];
	pk_wq_add(q, "a", 0);
	pk_wq_add(q, "b", 0);
	const char *k = pk_wq_get(q, 0);
	assert_string_equal(k, "a");
	assert_int_equal(pk_wq_depth(q), 1); /* in flight does not count */

	/* Re-added while in flight: not handed out again, however often it
	 * is added. */
	pk_wq_add(q, "a", 1);
	pk_wq_add(q, "a", 2);
	assert_int_equal(pk_wq_depth(q), 1);
	assert_string_equal(get_str(q, 3, buf, sizeof(buf)), "b");
	assert_null(pk_wq_get(q, 3));
	/* next_ms ignores the in-flight key. */
	assert_int_equal(pk_wq_next_ms(q, 3), UINT64_MAX);
	pk_wq_add(q, "c", 4);

	/* done: "a" is queued again, once, behind what is already ready. */
	pk_wq_done(q, k, 5);
	assert_int_equal(pk_wq_depth(q), 2);
	drain(q, 5, out, sizeof(out));
	assert_string_equal(out, "c,a");

	/* "b" still in flight (from get_str): done without a re-add does not
	 * requeue it. */
	pk_wq_done(q, "b", 6);
	assert_int_equal(pk_wq_depth(q), 0);
	assert_null(pk_wq_get(q, 6));

	/* done on a key not in flight is ignored. */
	pk_wq_done(q, "b", 7);
	pk_wq_done(q, "nope", 7);
	assert_int_equal(pk_wq_depth(q), 0);
	pk_wq_free(q);
}

static void test_never_twice_concurrently(void **state)
{
	(void)state;
	/* Many workers' worth of gets with adds in between: no key is ever
	 * out twice at once, and every add is eventually served. */
	struct pk_wq *q = pk_wq_new(NULL);
	enum { KEYS = 8, OUT = 4, STEPS = 5000 };
	char names[KEYS][16];
	int out_count[KEYS] = {0};
	const char *held[OUT] = {0};
	int held_idx[OUT];
	uint32_t rng = 12345;
	for (int i = 0; i < KEYS; i++)
		snprintf(names[i], sizeof(names[i]), "k%d", i);
	for (uint64_t now = 0; now < STEPS; now++) {
		rng = rng * 1103515245 + 12345;
		unsigned r = (rng >> 16) % 3;
		int slot = (int)((rng >> 8) % OUT);
		if (r == 0) {
			pk_wq_add(q, names[(rng >> 4) % KEYS], now);
		} else if (r == 1 && !held[slot]) {
			const char *k = pk_wq_get(q, now);
			if (k) {
				int idx = k[1] - '0';
				assert_int_equal(out_count[idx], 0);
				out_count[idx]++;
				held[slot] = k;
				held_idx[slot] = idx;
			}
		} else if (r == 2 && held[slot]) {
			out_count[held_idx[slot]]--;
			pk_wq_done(q, held[slot], now);
			held[slot] = NULL;
		}
	}
	pk_wq_free(q);
}

static void test_add_after(void **state)
{
	(void)state;
	struct pk_wq *q = pk_wq_new(NULL);
	char out[256];
	pk_wq_add_after(q, "late", 300, 0);
	pk_wq_add_after(q, "early", 100, 0);
	pk_wq_add_after(q, "mid", 200, 0);
	assert_int_equal(pk_wq_depth(q), 3);
	assert_int_equal(pk_wq_next_ms(q, 0), 100);
	assert_int_equal(pk_wq_next_ms(q, 60), 40);
	assert_null(pk_wq_get(q, 99));
	drain(q, 100, out, sizeof(out));
	assert_string_equal(out, "early");
	assert_int_equal(pk_wq_next_ms(q, 100), 100);

	/* Ready keys come out in the order they became ready, a key added
	 * now after them. */
	pk_wq_add(q, "now", 250);
	drain(q, 400, out, sizeof(out));
	assert_string_equal(out, "mid,now,late");

	/* Earlier deadline wins; a later one does not move it. */
	pk_wq_add_after(q, "x", 500, 1000);
	pk_wq_add_after(q, "x", 100, 1000);
	assert_int_equal(pk_wq_next_ms(q, 1000), 100);
	pk_wq_add_after(q, "x", 900, 1000);
	assert_int_equal(pk_wq_next_ms(q, 1000), 100);
	assert_int_equal(pk_wq_depth(q), 1);
	/* A plain add brings it forward to now. */
	pk_wq_add(q, "x", 1050);
	assert_int_equal(pk_wq_next_ms(q, 1050), 0);
	drain(q, 1050, out, sizeof(out));
	assert_string_equal(out, "x");
	/* The later deadline was dropped (one pending deadline per key). */
	assert_int_equal(pk_wq_next_ms(q, 1050), UINT64_MAX);
	assert_null(pk_wq_get(q, 5000));

	/* delay 0 is an add; a huge delay saturates instead of wrapping. */
	pk_wq_add_after(q, "zero", 0, 6000);
	pk_wq_add_after(q, "never", UINT64_MAX, 6000);
	drain(q, 6000, out, sizeof(out));
	assert_string_equal(out, "zero");
	assert_int_equal(pk_wq_next_ms(q, 6000), UINT64_MAX - 6000);
	pk_wq_free(q);
}

static void test_add_after_in_flight(void **state)
{
	(void)state;
	struct pk_wq *q = pk_wq_new(NULL);
	char out[256];
	pk_wq_add(q, "a", 0);
	const char *k = pk_wq_get(q, 0);
	assert_string_equal(k, "a");
	/* RequeueAfter while processing: not handed out even once due. */
	pk_wq_add_after(q, "a", 50, 10);
	assert_null(pk_wq_get(q, 100));
	/* done before the deadline: waits for it. */
	pk_wq_done(q, k, 30);
	assert_int_equal(pk_wq_next_ms(q, 30), 30);
	assert_null(pk_wq_get(q, 59));
	drain(q, 60, out, sizeof(out));
	assert_string_equal(out, "a");

	/* The earliest of several adds while in flight wins. */
	pk_wq_add(q, "b", 100);
	k = pk_wq_get(q, 100);
	pk_wq_add_after(q, "b", 500, 100);
	pk_wq_add_after(q, "b", 200, 100);
	pk_wq_done(q, k, 150);
	assert_int_equal(pk_wq_next_ms(q, 150), 150);
	pk_wq_free(q);
}

static void test_backoff(void **state)
{
	(void)state;
	/* A bucket that never limits, to see the per-key part alone. */
	struct pk_wq_opts o = {
	    .base_delay_ms = 5, .max_delay_ms = 1000, .qps = 1e9, .burst = 1000000};
	struct pk_wq *q = pk_wq_new(&o);
	static const uint64_t want[] = {5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000};
	uint64_t now = 0;
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		assert_int_equal(pk_wq_failures(q, "k"), i);
		assert_int_equal(pk_wq_add_rate_limited(q, "k", now), 0);
		if (pk_wq_next_ms(q, now) != want[i])
			fail_msg("retry %zu: delay %llu, want %llu", i,
			         (unsigned long long)pk_wq_next_ms(q, now),
			         (unsigned long long)want[i]);
		assert_null(pk_wq_get(q, now + want[i] - 1));
		now += want[i];
		const char *k = pk_wq_get(q, now);
		assert_non_null(k);
		pk_wq_done(q, k, now);
	}
	assert_int_equal(pk_wq_retries(q), 11);

	/* Far past 64 doublings: still capped, no overflow. */
	for (int i = 0; i < 100; i++)
		pk_wq_add_rate_limited(q, "k", now);
	assert_int_equal(pk_wq_next_ms(q, now), 1000);

	/* Per key: another key starts at base. */
	pk_wq_add_rate_limited(q, "other", now);
	assert_int_equal(pk_wq_failures(q, "other"), 1);
	assert_int_equal(pk_wq_next_ms(q, now), 5);
	pk_wq_free(q);

	/* The defaults: 5 ms doubling, capped at 1000 s. */
	q = pk_wq_new(NULL);
	pk_wq_add_rate_limited(q, "d", 0);
	assert_int_equal(pk_wq_next_ms(q, 0), 5);
	pk_wq_add_rate_limited(q, "d", 0); /* pending 5 wins over 10 */
	assert_int_equal(pk_wq_next_ms(q, 0), 5);
	for (int i = 0; i < 40; i++)
		pk_wq_add_rate_limited(q, "e", 0);
	assert_int_equal(pk_wq_failures(q, "e"), 40);
	const char *k;
	while ((k = pk_wq_get(q, UINT64_MAX)))
		pk_wq_done(q, k, 0);
	pk_wq_add_rate_limited(q, "e", 0);
	assert_int_equal(pk_wq_next_ms(q, 0), 1000000);
	pk_wq_free(q);
}

static void test_forget(void **state)
{
	(void)state;
	struct pk_wq *q = pk_wq_new(NULL);
	for (int i = 0; i < 4; i++)
		pk_wq_add_rate_limited(q, "k", 0);
	assert_int_equal(pk_wq_failures(q, "k"), 4);
	const char *k = pk_wq_get(q, 1000);
	assert_non_null(k);
	/* Forget while in flight (the reconcile succeeded), then done. */
	pk_wq_forget(q, k);
	assert_int_equal(pk_wq_failures(q, "k"), 0);
	pk_wq_done(q, k, 1000);
	pk_wq_add_rate_limited(q, "k", 2000);
	assert_int_equal(pk_wq_next_ms(q, 2000), 5);
	assert_int_equal(pk_wq_failures(q, "k"), 1);
	pk_wq_forget(q, "unknown");
	assert_int_equal(pk_wq_failures(q, "unknown"), 0);
	pk_wq_free(q);
}

static void test_token_bucket(void **state)
{
	(void)state;
	struct pk_wq *q = pk_wq_new(NULL); /* 10 qps, burst 100 */
	char key[32];
	/* The first 100 distinct keys at one instant get the per-key 5 ms
	 * only. */
	for (int i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_int_equal(pk_wq_add_rate_limited(q, key, 0), 0);
	}
	assert_int_equal(pk_wq_next_ms(q, 0), 5);
	/* Beyond the burst each waits a further 1/qps: 100 ms, 200 ms. */
	pk_wq_add_rate_limited(q, "x1", 0);
	pk_wq_add_rate_limited(q, "x2", 0);
	assert_int_equal(pk_wq_depth(q), 102);
	const char *k;
	int n = 0;
	while ((k = pk_wq_get(q, 5))) {
		n++;
		pk_wq_done(q, k, 5);
	}
	assert_int_equal(n, 100);
	assert_int_equal(pk_wq_next_ms(q, 5), 95);
	assert_null(pk_wq_get(q, 99));
	k = pk_wq_get(q, 100);
	assert_string_equal(k, "x1");
	pk_wq_done(q, k, 100);
	assert_null(pk_wq_get(q, 199));
	k = pk_wq_get(q, 200);
	assert_string_equal(k, "x2");
	pk_wq_done(q, k, 200);
	/* The bucket refills at qps: 1.3 s later the debt of 2 tokens is
	 * repaid with 11 to spare, so no delay beyond the per-key one. */
	pk_wq_add_rate_limited(q, "y", 1300);
	assert_int_equal(pk_wq_next_ms(q, 1300), 5);
	assert_int_equal(pk_wq_retries(q), 103);

	/* A small bucket: burst 2, 1 qps. */
	pk_wq_free(q);
	struct pk_wq_opts o = {.qps = 1, .burst = 2};
	q = pk_wq_new(&o);
	pk_wq_add_rate_limited(q, "a", 0);
	pk_wq_add_rate_limited(q, "b", 0);
	pk_wq_add_rate_limited(q, "c", 0);
	pk_wq_add_rate_limited(q, "d", 500);
	char out[64];
	drain(q, 5, out, sizeof(out));
	assert_string_equal(out, "a,b");
	assert_int_equal(pk_wq_next_ms(q, 5), 995);
	drain(q, 1000, out, sizeof(out));
	assert_string_equal(out, "c");
	/* d at 500: debt of 1.5 tokens -> 1.5 s later. */
	assert_int_equal(pk_wq_next_ms(q, 1000), 1000);
	drain(q, 2000, out, sizeof(out));
	assert_string_equal(out, "d");
	pk_wq_free(q);
}

static void test_cap(void **state)
{
	(void)state;
	struct pk_wq_opts o = {.cap = 3};
	struct pk_wq *q = pk_wq_new(&o);
	assert_int_equal(pk_wq_add(q, "a", 0), 0);
	assert_int_equal(pk_wq_add(q, "b", 0), 0);
	assert_int_equal(pk_wq_add_after(q, "c", 10, 0), 0);
	assert_int_equal(pk_wq_add(q, "d", 0), -1);
	assert_int_equal(pk_wq_add_after(q, "d", 5, 0), -1);
	assert_int_equal(pk_wq_add_rate_limited(q, "d", 0), -1);
	assert_int_equal(pk_wq_retries(q), 1); /* counted even when refused */
	assert_int_equal(pk_wq_adds(q), 3);
	/* Tracked keys are still accepted. */
	assert_int_equal(pk_wq_add(q, "a", 0), 0);
	assert_int_equal(pk_wq_depth(q), 3);

	/* In flight still counts; done frees the slot. */
	const char *k = pk_wq_get(q, 0);
	assert_string_equal(k, "a");
	assert_int_equal(pk_wq_add(q, "d", 0), -1);
	pk_wq_done(q, k, 0);
	assert_int_equal(pk_wq_add(q, "d", 0), 0);

	/* A key with failures to remember counts until forgotten. */
	k = pk_wq_get(q, 0);
	assert_string_equal(k, "b");
	assert_int_equal(pk_wq_add_rate_limited(q, "b", 0), 0);
	pk_wq_done(q, "b", 0);
	k = pk_wq_get(q, 100);
	assert_string_equal(k, "d"); /* ready at 0, before b at 5 */
	pk_wq_done(q, k, 100);
	/* b and c served too; only b stays tracked, for its failure. */
	while ((k = pk_wq_get(q, 1000)))
		pk_wq_done(q, k, 1000);
	assert_int_equal(pk_wq_depth(q), 0);
	assert_int_equal(pk_wq_add(q, "e", 1000), 0);
	assert_int_equal(pk_wq_add(q, "f", 1000), 0);
	assert_int_equal(pk_wq_add(q, "g", 1000), -1);
	pk_wq_forget(q, "b");
	assert_int_equal(pk_wq_add(q, "g", 1000), 0);
	pk_wq_free(q);
}

static void test_next_ms(void **state)
{
	(void)state;
	struct pk_wq *q = pk_wq_new(NULL);
	assert_int_equal(pk_wq_next_ms(q, 0), UINT64_MAX);
	pk_wq_add_after(q, "a", 250, 1000);
	assert_int_equal(pk_wq_next_ms(q, 1000), 250);
	assert_int_equal(pk_wq_next_ms(q, 1200), 50);
	assert_int_equal(pk_wq_next_ms(q, 1250), 0);
	assert_int_equal(pk_wq_next_ms(q, 9999), 0);
	pk_wq_add(q, "b", 1100);
	assert_int_equal(pk_wq_next_ms(q, 1100), 0);
	pk_wq_free(q);
}

static void test_many_keys(void **state)
{
	(void)state;
	/* Enough keys to grow the table and the heap several times; random
	 * deadlines come out sorted. */
	struct pk_wq *q = pk_wq_new(NULL);
	char key[32];
	uint32_t rng = 7;
	for (int i = 0; i < 20000; i++) {
		rng = rng * 1103515245 + 12345;
		snprintf(key, sizeof(key), "ns/obj-%d", i);
		assert_int_equal(pk_wq_add_after(q, key, (rng >> 8) % 100000, 0), 0);
	}
	assert_int_equal(pk_wq_depth(q), 20000);
	uint64_t last = 0;
	int n = 0;
	for (uint64_t now = 0; now <= 100000; now += 1000) {
		const char *k;
		while ((k = pk_wq_get(q, now))) {
			n++;
			pk_wq_done(q, k, now);
		}
		uint64_t next = pk_wq_next_ms(q, now);
		if (next != UINT64_MAX) {
			assert_true(now + next >= last);
			last = now + next;
		}
	}
	assert_int_equal(n, 20000);
	assert_int_equal(pk_wq_depth(q), 0);
	pk_wq_free(q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fifo_and_dedupe),
	    cmocka_unit_test(test_in_flight_dirty),
	    cmocka_unit_test(test_never_twice_concurrently),
	    cmocka_unit_test(test_add_after),
	    cmocka_unit_test(test_add_after_in_flight),
	    cmocka_unit_test(test_backoff),
	    cmocka_unit_test(test_forget),
	    cmocka_unit_test(test_token_bucket),
	    cmocka_unit_test(test_cap),
	    cmocka_unit_test(test_next_ms),
	    cmocka_unit_test(test_many_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
