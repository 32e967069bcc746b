/*
 * pk_resolver: names from /etc/hosts, IPv4 and bracketed IPv6 literals, a
 * name that cannot resolve, cancel (waiting, done, and from inside another
 * callback), callbacks queueing more lookups, the query cap, and free with
 * queries outstanding (run under ASan for leaks and races on teardown).
 * Results are collected by polling pk_resolver_dispatch in bounded loops.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "resolve.h"

/* Generous: nonexistent.invalid may go to the configured DNS server. */
#define WAIT_MS 20000

static atomic_int wakes;

static void wake_cb(void *arg)
{
	/* Runs on the worker thread. */
	assert_ptr_equal(arg, &wakes);
	atomic_fetch_add(&wakes, 1);
}

struct got {
	int calls;
	int failed;
	char err[160];
	size_t n;
	char addrs[PK_RESOLVE_MAX_ADDRS][64];
};

static void got_cb(void *user, const struct pk_resolve_result *res, const char *err)
{
	struct got *g = user;
	g->calls++;
	if (err) {
		assert_null(res);
		g->failed = 1;
		strncpy(g->err, err, sizeof(g->err) - 1);
		return;
	}
	assert_non_null(res);
	g->n = res->n;
	for (size_t i = 0; i < res->n; i++)
		memcpy(g->addrs[i], res->addrs[i], sizeof(g->addrs[i]));
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Dispatch until *calls reaches want, for at most WAIT_MS. */
static void wait_calls(struct pk_resolver *r, const int *calls, int want)
{
	for (int ms = 0; *calls < want && ms < WAIT_MS; ms++) {
		pk_resolver_dispatch(r);
		if (*calls < want)
			sleep_ms(1);
	}
	assert_int_equal(*calls, want);
}

/* Wait until the worker has queued at least `want` results in total (counted
 * by the wake callback), without dispatching them. */
static void wait_wakes(int want)
{
	for (int ms = 0; atomic_load(&wakes) < want && ms < WAIT_MS; ms++)
		sleep_ms(1);
	assert_true(atomic_load(&wakes) >= want);
}

static int has_addr(const struct got *g, const char *a)
{
	for (size_t i = 0; i < g->n; i++) {
		if (strcmp(g->addrs[i], a) == 0)
			return 1;
	}
	return 0;
}

static void test_localhost_and_literals(void **state)
{
	(void)state;
	atomic_store(&wakes, 0);
	struct pk_resolver *r = pk_resolver_new(wake_cb, &wakes);
	assert_non_null(r);
	struct got g1 = {0}, g2 = {0}, g3 = {0};
	uint64_t id1 = pk_resolver_query(r, "localhost", got_cb, &g1);
	uint64_t id2 = pk_resolver_query(r, "127.0.0.1", got_cb, &g2);
	uint64_t id3 = pk_resolver_query(r, "[::1]", got_cb, &g3);
	assert_true(id1 > 0 && id2 > 0 && id3 > 0);
	assert_true(id1 != id2 && id2 != id3 && id1 != id3);
	wait_calls(r, &g1.calls, 1);
	wait_calls(r, &g2.calls, 1);
	wait_calls(r, &g3.calls, 1);
	assert_true(atomic_load(&wakes) >= 1);

	/* localhost comes from /etc/hosts (maybe also ::1), each once */
	assert_false(g1.failed);
	assert_true(g1.n >= 1);
	assert_true(has_addr(&g1, "127.0.0.1"));
	for (size_t i = 0; i < g1.n; i++) {
		for (size_t j = i + 1; j < g1.n; j++)
			assert_string_not_equal(g1.addrs[i], g1.addrs[j]);
	}
	assert_false(g2.failed);
	assert_int_equal(g2.n, 1);
	assert_string_equal(g2.addrs[0], "127.0.0.1");
	/* brackets stripped, and none in the result */
	assert_false(g3.failed);
	assert_int_equal(g3.n, 1);
	assert_string_equal(g3.addrs[0], "::1");

	/* nothing left, and each callback ran once */
	assert_int_equal(pk_resolver_dispatch(r), 0);
	assert_int_equal(g1.calls + g2.calls + g3.calls, 3);
	pk_resolver_free(r);
}

static void test_unresolvable(void **state)
{
	(void)state;
	/* No wake: the owner polls. */
	struct pk_resolver *r = pk_resolver_new(NULL, NULL);
	assert_non_null(r);
	struct got g = {0}, g2 = {0};
	assert_true(pk_resolver_query(r, "nonexistent.invalid", got_cb, &g) > 0);
	/* not an address either: the literal parser must not accept it */
	assert_true(pk_resolver_query(r, "[not-v6]", got_cb, &g2) > 0);
	wait_calls(r, &g.calls, 1);
	wait_calls(r, &g2.calls, 1);
	assert_true(g.failed);
	assert_true(strlen(g.err) > 0);
	assert_true(g2.failed);
	pk_resolver_free(r);
}

static void test_cancel(void **state)
{
	(void)state;
	atomic_store(&wakes, 0);
	struct pk_resolver *r = pk_resolver_new(wake_cb, &wakes);
	assert_non_null(r);
	struct got a = {0}, b = {0}, c = {0};

	/* cancelled at once (waiting or running): FIFO with one worker, so
	 * once b is back, a would have been too */
	uint64_t ida = pk_resolver_query(r, "127.0.0.1", got_cb, &a);
	pk_resolver_cancel(r, ida);
	pk_resolver_query(r, "127.0.0.1", got_cb, &b);
	wait_calls(r, &b.calls, 1);
	assert_int_equal(a.calls, 0);

	/* cancelled after its result was queued, before dispatch */
	int w = atomic_load(&wakes);
	uint64_t idc = pk_resolver_query(r, "127.0.0.1", got_cb, &c);
	wait_wakes(w + 1);
	assert_int_equal(atomic_load(&wakes), w + 1);
	pk_resolver_cancel(r, idc);
	assert_int_equal(pk_resolver_dispatch(r), 0);
	assert_int_equal(c.calls, 0);

	/* unknown, finished and zero ids are ignored */
	pk_resolver_cancel(r, 0);
	pk_resolver_cancel(r, idc);
	pk_resolver_cancel(r, 123456);
	sleep_ms(20);
	assert_int_equal(pk_resolver_dispatch(r), 0);
	assert_int_equal(a.calls, 0);
	assert_int_equal(c.calls, 0);
	pk_resolver_free(r);
}

struct canceller {
	struct pk_resolver *r;
	uint64_t victim;
	int calls;
};

static void cancel_cb(void *user, const struct pk_resolve_result *res, const char *err)
{
	(void)res;
	(void)err;
	struct canceller *c = user;
	c->calls++;
	pk_resolver_cancel(c->r, c->victim);
}

static void test_cancel_from_callback(void **state)
{
	(void)state;
	atomic_store(&wakes, 0);
	struct pk_resolver *r = pk_resolver_new(wake_cb, &wakes);
	assert_non_null(r);
	struct canceller c = {.r = r};
	struct got victim = {0};
	pk_resolver_query(r, "127.0.0.1", cancel_cb, &c);
	c.victim = pk_resolver_query(r, "127.0.0.1", got_cb, &victim);
	/* both results queued, then one dispatch: the first cancels the
	 * second, which must not run even though it was already done */
	wait_wakes(2);
	assert_int_equal(pk_resolver_dispatch(r), 1);
	assert_int_equal(c.calls, 1);
	assert_int_equal(pk_resolver_dispatch(r), 0);
	assert_int_equal(victim.calls, 0);
	pk_resolver_free(r);
}

struct chain {
	struct pk_resolver *r;
	int calls;
	struct got next;
};

static void chain_cb(void *user, const struct pk_resolve_result *res, const char *err)
{
	struct chain *ch = user;
	assert_null(err);
	assert_int_equal(res->n, 1);
	ch->calls++;
	assert_true(pk_resolver_query(ch->r, "::1", got_cb, &ch->next) > 0);
}

static void test_query_from_callback(void **state)
{
	(void)state;
	struct pk_resolver *r = pk_resolver_new(NULL, NULL);
	assert_non_null(r);
	struct chain ch = {.r = r};
	pk_resolver_query(r, "127.0.0.1", chain_cb, &ch);
	wait_calls(r, &ch.calls, 1);
	wait_calls(r, &ch.next.calls, 1);
	assert_string_equal(ch.next.addrs[0], "::1");
	pk_resolver_free(r);
}

static void count_cb(void *user, const struct pk_resolve_result *res, const char *err)
{
	(void)res;
	(void)err;
	(*(int *)user)++;
}

static void test_cap(void **state)
{
	(void)state;
	atomic_store(&wakes, 0);
	struct pk_resolver *r = pk_resolver_new(wake_cb, &wakes);
	assert_non_null(r);
	int calls = 0;
	/* Undispatched results count: the cap holds while nobody dispatches. */
	for (int i = 0; i < PK_RESOLVE_MAX_QUERIES; i++)
		assert_true(pk_resolver_query(r, "127.0.0.1", count_cb, &calls) > 0);
	assert_int_equal(pk_resolver_query(r, "127.0.0.1", count_cb, &calls), 0);
	wait_wakes(PK_RESOLVE_MAX_QUERIES);
	assert_int_equal(atomic_load(&wakes), PK_RESOLVE_MAX_QUERIES);
	assert_int_equal(pk_resolver_query(r, "127.0.0.1", count_cb, &calls), 0);
	/* dispatching frees the slots */
	assert_int_equal(pk_resolver_dispatch(r), PK_RESOLVE_MAX_QUERIES);
	assert_int_equal(calls, PK_RESOLVE_MAX_QUERIES);
	assert_true(pk_resolver_query(r, "127.0.0.1", count_cb, &calls) > 0);
	wait_calls(r, &calls, PK_RESOLVE_MAX_QUERIES + 1);
	pk_resolver_free(r);
}

static void test_free_with_pending(void **state)
{
	(void)state;
	int calls = 0;
	/* Freed at once: most still waiting, maybe one running. */
	atomic_store(&wakes, 0);
	struct pk_resolver *r = pk_resolver_new(wake_cb, &wakes);
	assert_non_null(r);
	for (int i = 0; i < 100; i++)
		pk_resolver_query(r, i % 2 ? "localhost" : "[::1]", count_cb, &calls);
	pk_resolver_free(r);

	/* Freed with some results done but not dispatched, some waiting. */
	atomic_store(&wakes, 0);
	r = pk_resolver_new(wake_cb, &wakes);
	assert_non_null(r);
	for (int i = 0; i < 200; i++)
		pk_resolver_query(r, "127.0.0.1", count_cb, &calls);
	wait_wakes(1);
	pk_resolver_free(r);

	/* An idle resolver, and NULL. */
	pk_resolver_free(pk_resolver_new(NULL, NULL));
	pk_resolver_free(NULL);
	assert_int_equal(calls, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_localhost_and_literals),
	    cmocka_unit_test(test_unresolvable),
	    cmocka_unit_test(test_cancel),
	    cmocka_unit_test(test_cancel_from_callback),
	    cmocka_unit_test(test_query_from_callback),
	    cmocka_unit_test(test_cap),
	    cmocka_unit_test(test_free_with_pending),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
