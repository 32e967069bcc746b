/*
 * pk_strmap: set/get/add, removal at 0, counts and the running sum, growth to
 * tens of thousands of keys, foreach visiting each key once, clear, and long
 * and empty keys.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "strmap.h"

static void test_set_get(void **state)
{
	(void)state;
	struct pk_strmap *m = pk_strmap_new();
	assert_int_equal(pk_strmap_get(m, "a"), 0);
	assert_int_equal(pk_strmap_count(m), 0);
	assert_int_equal(pk_strmap_set(m, "a", 5), 0);
	assert_int_equal(pk_strmap_get(m, "a"), 5);
	assert_int_equal(pk_strmap_set(m, "a", -7), 5);
	assert_int_equal(pk_strmap_get(m, "a"), -7);
	assert_int_equal(pk_strmap_set(m, "b", 3), 0);
	assert_int_equal(pk_strmap_count(m), 2);
	assert_int_equal(pk_strmap_sum(m), -4);
	/* the key is copied: changing the caller's buffer changes nothing */
	char buf[8] = "ckey";
	pk_strmap_set(m, buf, 9);
	buf[0] = 'x';
	assert_int_equal(pk_strmap_get(m, "ckey"), 9);
	assert_int_equal(pk_strmap_get(m, "xkey"), 0);
	/* prefixes and extensions are different keys */
	assert_int_equal(pk_strmap_get(m, ""), 0);
	assert_int_equal(pk_strmap_get(m, "ck"), 0);
	assert_int_equal(pk_strmap_get(m, "ckeyy"), 0);
	pk_strmap_free(m);
	pk_strmap_free(NULL);
}

static void test_remove_at_zero(void **state)
{
	(void)state;
	struct pk_strmap *m = pk_strmap_new();
	pk_strmap_set(m, "a", 2);
	pk_strmap_set(m, "b", 4);
	/* set to 0 removes and returns the old value; again is a no-op */
	assert_int_equal(pk_strmap_set(m, "a", 0), 2);
	assert_int_equal(pk_strmap_count(m), 1);
	assert_int_equal(pk_strmap_set(m, "a", 0), 0);
	assert_int_equal(pk_strmap_count(m), 1);
	assert_int_equal(pk_strmap_sum(m), 4);
	/* add down to 0 removes */
	assert_int_equal(pk_strmap_add(m, "b", -1), 3);
	assert_int_equal(pk_strmap_add(m, "b", -3), 0);
	assert_int_equal(pk_strmap_count(m), 0);
	assert_int_equal(pk_strmap_sum(m), 0);
	/* add of 0 to an absent key does not create it */
	assert_int_equal(pk_strmap_add(m, "c", 0), 0);
	assert_int_equal(pk_strmap_count(m), 0);
	/* add creates, and may go negative */
	assert_int_equal(pk_strmap_add(m, "d", -2), -2);
	assert_int_equal(pk_strmap_add(m, "d", 1), -1);
	assert_int_equal(pk_strmap_count(m), 1);
	assert_int_equal(pk_strmap_sum(m), -1);
	/* a removed key can come back */
	assert_int_equal(pk_strmap_add(m, "b", 1), 1);
	assert_int_equal(pk_strmap_count(m), 2);
	pk_strmap_free(m);
}

static void test_overflow_wraps(void **state)
{
	(void)state;
	struct pk_strmap *m = pk_strmap_new();
	/* Defined behaviour (checked under UBSan): wraps modulo 2^64. */
	pk_strmap_set(m, "a", INT64_MAX);
	assert_int_equal(pk_strmap_add(m, "a", 1), INT64_MIN);
	pk_strmap_set(m, "b", INT64_MAX);
	assert_int_equal(pk_strmap_sum(m), (int64_t)((uint64_t)INT64_MIN + (uint64_t)INT64_MAX));
	pk_strmap_free(m);
}

struct visit {
	unsigned char *seen; /* per key index */
	size_t n, calls;
	int64_t sum;
	int bad;
};

static void visit_cb(void *arg, const char *key, int64_t value)
{
	struct visit *v = arg;
	unsigned i;
	v->calls++;
	v->sum += value;
	if (sscanf(key, "key-%u", &i) != 1 || i >= v->n || value != (int64_t)i + 1) {
		v->bad++;
		return;
	}
	v->seen[i]++;
}

static void test_growth_sum_foreach(void **state)
{
	(void)state;
	enum { N = 20000 };
	struct pk_strmap *m = pk_strmap_new();
	char key[32];
	int64_t sum = 0;
	for (unsigned i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "key-%u", i);
		assert_int_equal(pk_strmap_add(m, key, (int64_t)i + 1), (int64_t)i + 1);
		sum += (int64_t)i + 1;
	}
	assert_int_equal(pk_strmap_count(m), N);
	assert_int_equal(pk_strmap_sum(m), sum);
	for (unsigned i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "key-%u", i);
		assert_int_equal(pk_strmap_get(m, key), (int64_t)i + 1);
	}
	assert_int_equal(pk_strmap_get(m, "key-20000"), 0);

	struct visit v = {.seen = calloc(N, 1), .n = N};
	assert_non_null(v.seen);
	pk_strmap_foreach(m, visit_cb, &v);
	assert_int_equal(v.calls, N);
	assert_int_equal(v.bad, 0);
	assert_int_equal(v.sum, sum);
	for (unsigned i = 0; i < N; i++)
		assert_int_equal(v.seen[i], 1);

	/* remove the even keys, through both set and add */
	for (unsigned i = 0; i < N; i += 2) {
		snprintf(key, sizeof(key), "key-%u", i);
		if (i % 4)
			assert_int_equal(pk_strmap_set(m, key, 0), (int64_t)i + 1);
		else
			assert_int_equal(pk_strmap_add(m, key, -((int64_t)i + 1)), 0);
		sum -= (int64_t)i + 1;
	}
	assert_int_equal(pk_strmap_count(m), N / 2);
	assert_int_equal(pk_strmap_sum(m), sum);
	memset(v.seen, 0, N);
	v.calls = 0;
	v.sum = 0;
	pk_strmap_foreach(m, visit_cb, &v);
	assert_int_equal(v.calls, N / 2);
	assert_int_equal(v.bad, 0);
	for (unsigned i = 0; i < N; i++)
		assert_int_equal(v.seen[i], i % 2);
	free(v.seen);
	pk_strmap_free(m);
}

static void count_calls(void *arg, const char *key, int64_t value)
{
	(void)key;
	(void)value;
	(*(size_t *)arg)++;
}

static void test_clear(void **state)
{
	(void)state;
	struct pk_strmap *m = pk_strmap_new();
	char key[32];
	for (unsigned i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "k%u", i);
		pk_strmap_set(m, key, 1);
	}
	pk_strmap_clear(m);
	assert_int_equal(pk_strmap_count(m), 0);
	assert_int_equal(pk_strmap_sum(m), 0);
	assert_int_equal(pk_strmap_get(m, "k1"), 0);
	size_t calls = 0;
	pk_strmap_foreach(m, count_calls, &calls);
	assert_int_equal(calls, 0);
	/* still usable */
	pk_strmap_set(m, "k1", 3);
	assert_int_equal(pk_strmap_get(m, "k1"), 3);
	assert_int_equal(pk_strmap_sum(m), 3);
	pk_strmap_clear(m);
	pk_strmap_clear(m);
	pk_strmap_free(m);
}

static void test_odd_keys(void **state)
{
	(void)state;
	struct pk_strmap *m = pk_strmap_new();
	/* the empty key is a key like any other */
	pk_strmap_set(m, "", 1);
	assert_int_equal(pk_strmap_get(m, ""), 1);
	/* a long key */
	char *big = malloc(100001);
	assert_non_null(big);
	memset(big, 'x', 100000);
	big[100000] = '\0';
	pk_strmap_set(m, big, 2);
	assert_int_equal(pk_strmap_get(m, big), 2);
	big[99999] = 'y';
	assert_int_equal(pk_strmap_get(m, big), 0);
	free(big);
	assert_int_equal(pk_strmap_count(m), 2);
	pk_strmap_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_set_get),        cmocka_unit_test(test_remove_at_zero),
	    cmocka_unit_test(test_overflow_wraps), cmocka_unit_test(test_growth_sum_foreach),
	    cmocka_unit_test(test_clear),          cmocka_unit_test(test_odd_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
