/*
 * Endpoint registry: Piko's round-robin sequence (protocol reference §2.3,
 * §9 item 15), idempotent removal, counts, iteration, 10k endpoints.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "registry.h"

/* Upstreams are opaque pointers: use the addresses of these. */
static int u[5];

static void expect_next(struct pk_registry *reg, const char *ep, const int *const *want, size_t n)
{
	for (size_t i = 0; i < n; i++)
		assert_ptr_equal(pk_registry_next(reg, ep), want[i]);
}

static void test_round_robin_sequence(void **state)
{
	(void)state;
	struct pk_registry *reg = pk_registry_new();
	const char *ep = "my-endpoint";
	assert_null(pk_registry_next(reg, ep));

	assert_int_equal(pk_registry_add(reg, ep, &u[1]), 0);
	const int *s1[] = {&u[1]};
	expect_next(reg, ep, s1, 1);

	assert_int_equal(pk_registry_add(reg, ep, &u[2]), 0);
	assert_int_equal(pk_registry_add(reg, ep, &u[3]), 0);
	assert_int_equal(pk_registry_add(reg, ep, &u[4]), 0);
	const int *s2[] = {&u[1], &u[2], &u[3], &u[4], &u[1], &u[2], &u[3]};
	expect_next(reg, ep, s2, 7);

	assert_int_equal(pk_registry_remove(reg, ep, &u[2]), 0);
	assert_int_equal(pk_registry_remove(reg, ep, &u[3]), 0);
	const int *s3[] = {&u[1], &u[4], &u[1]};
	expect_next(reg, ep, s3, 3);

	assert_int_equal(pk_registry_remove(reg, ep, &u[1]), 0);
	assert_int_equal(pk_registry_remove(reg, ep, &u[4]), 0);
	assert_null(pk_registry_next(reg, ep));
	assert_int_equal(pk_registry_num_endpoints(reg), 0);
	assert_int_equal(pk_registry_num_upstreams(reg), 0);
	pk_registry_free(reg);
}

static void test_idempotent_remove(void **state)
{
	(void)state;
	struct pk_registry *reg = pk_registry_new();
	assert_int_equal(pk_registry_remove(reg, "nope", &u[1]), -1);
	assert_int_equal(pk_registry_add(reg, "a", &u[1]), 0);
	assert_int_equal(pk_registry_add(reg, "a", &u[2]), 0);
	/* adding the same upstream twice changes nothing */
	assert_int_equal(pk_registry_add(reg, "a", &u[1]), -1);
	assert_int_equal(pk_registry_upstreams(reg, "a"), 2);
	/* a Go Away removal then the session close: the second is a no-op */
	assert_int_equal(pk_registry_remove(reg, "a", &u[1]), 0);
	assert_int_equal(pk_registry_remove(reg, "a", &u[1]), -1);
	assert_int_equal(pk_registry_remove(reg, "b", &u[2]), -1);
	assert_int_equal(pk_registry_upstreams(reg, "a"), 1);
	assert_int_equal(pk_registry_num_upstreams(reg), 1);
	assert_int_equal(pk_registry_num_endpoints(reg), 1);
	assert_ptr_equal(pk_registry_next(reg, "a"), &u[2]);
	assert_int_equal(pk_registry_remove(reg, "a", &u[2]), 0);
	assert_int_equal(pk_registry_remove(reg, "a", &u[2]), -1);
	assert_int_equal(pk_registry_upstreams(reg, "a"), 0);
	assert_int_equal(pk_registry_num_endpoints(reg), 0);
	pk_registry_free(reg);
}

static void test_index_modulo_on_remove(void **state)
{
	(void)state;
	struct pk_registry *reg = pk_registry_new();
	for (int i = 1; i <= 3; i++)
		pk_registry_add(reg, "e", &u[i]);
	/* index at 2 (u3); removing u3 wraps it to 0 */
	pk_registry_next(reg, "e");
	pk_registry_next(reg, "e");
	pk_registry_remove(reg, "e", &u[3]);
	assert_ptr_equal(pk_registry_next(reg, "e"), &u[1]);
	assert_ptr_equal(pk_registry_next(reg, "e"), &u[2]);
	pk_registry_free(reg);
}

struct seen {
	size_t endpoints, upstreams;
	int bad;
};

static void count_cb(void *arg, const char *endpoint, size_t count)
{
	struct seen *s = arg;
	unsigned n;
	if (sscanf(endpoint, "endpoint-%u", &n) != 1 || count != (n % 3) + 1)
		s->bad++;
	s->endpoints++;
	s->upstreams += count;
}

static void test_many_endpoints(void **state)
{
	(void)state;
	enum { N = 10000 };
	struct pk_registry *reg = pk_registry_new();
	static int ups[3];
	char name[32];
	size_t total = 0;
	for (unsigned i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "endpoint-%u", i);
		for (unsigned j = 0; j <= i % 3; j++) {
			assert_int_equal(pk_registry_add(reg, name, &ups[j]), 0);
			total++;
		}
	}
	assert_int_equal(pk_registry_num_endpoints(reg), N);
	assert_int_equal(pk_registry_num_upstreams(reg), total);
	for (unsigned i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "endpoint-%u", i);
		assert_int_equal(pk_registry_upstreams(reg, name), i % 3 + 1);
		assert_ptr_equal(pk_registry_next(reg, name), &ups[0]);
	}
	assert_int_equal(pk_registry_upstreams(reg, "endpoint-10000"), 0);
	struct seen s = {0};
	pk_registry_foreach(reg, count_cb, &s);
	assert_int_equal(s.endpoints, N);
	assert_int_equal(s.upstreams, total);
	assert_int_equal(s.bad, 0);
	/* remove every other endpoint entirely */
	for (unsigned i = 0; i < N; i += 2) {
		snprintf(name, sizeof(name), "endpoint-%u", i);
		for (unsigned j = 0; j <= i % 3; j++)
			assert_int_equal(pk_registry_remove(reg, name, &ups[j]), 0);
		assert_int_equal(pk_registry_upstreams(reg, name), 0);
	}
	assert_int_equal(pk_registry_num_endpoints(reg), N / 2);
	memset(&s, 0, sizeof(s));
	pk_registry_foreach(reg, count_cb, &s);
	assert_int_equal(s.endpoints, N / 2);
	assert_int_equal(s.bad, 0);
	pk_registry_free(reg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_robin_sequence),
	    cmocka_unit_test(test_idempotent_remove),
	    cmocka_unit_test(test_index_modulo_on_remove),
	    cmocka_unit_test(test_many_endpoints),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
