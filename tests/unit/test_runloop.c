/*
 * Work at the end of a loop pass (pk_runloop_at_pass_end): runs once per
 * queuing, in order, not when cancelled, may queue itself for the next
 * pass, and work that keeps queuing itself is cut off without holding the
 * loop (the next wait then returns at once).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "runloop.h"

struct job {
	struct pk_pass_work w;
	int runs;
	int requeue; /* queue itself again this many times */
	int *order;  /* where to log its id */
	int *norder;
	int id;
};

static void job_fn(struct pk_pass_work *w)
{
	struct job *j = (struct job *)w;
	j->runs++;
	if (j->order)
		j->order[(*j->norder)++] = j->id;
	if (j->requeue > 0) {
		j->requeue--;
		pk_runloop_at_pass_end(&j->w, job_fn);
	}
}

static struct lws_context *ctx;

static int setup(void **state)
{
	(void)state;
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	lws_set_log_level(0, NULL);
	ctx = lws_create_context(&info);
	return ctx ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	lws_context_destroy(ctx);
	return 0;
}

static void test_runs_once_in_order(void **state)
{
	(void)state;
	int order[8], n = 0;
	struct job a = {.id = 1, .order = order, .norder = &n};
	struct job b = {.id = 2, .order = order, .norder = &n};
	pk_runloop_at_pass_end(&a.w, job_fn);
	pk_runloop_at_pass_end(&b.w, job_fn);
	pk_runloop_at_pass_end(&a.w, job_fn); /* already queued: nothing */
	pk_runloop_pass_end(ctx);
	assert_int_equal(a.runs, 1);
	assert_int_equal(b.runs, 1);
	assert_int_equal(n, 2);
	assert_int_equal(order[0], 1);
	assert_int_equal(order[1], 2);
	/* Nothing queued: a pass's end runs nothing. */
	pk_runloop_pass_end(ctx);
	assert_int_equal(a.runs, 1);
	/* Queued again after it ran: runs again. */
	pk_runloop_at_pass_end(&a.w, job_fn);
	pk_runloop_pass_end(ctx);
	assert_int_equal(a.runs, 2);
}

static void test_cancel(void **state)
{
	(void)state;
	struct job a = {0}, b = {0};
	pk_runloop_at_pass_end(&a.w, job_fn);
	pk_runloop_at_pass_end(&b.w, job_fn);
	pk_runloop_pass_cancel(&a.w);
	pk_runloop_pass_cancel(&a.w); /* not queued: nothing */
	pk_runloop_pass_end(ctx);
	assert_int_equal(a.runs, 0);
	assert_int_equal(b.runs, 1);
	/* A cancelled job can be queued again. */
	pk_runloop_at_pass_end(&a.w, job_fn);
	pk_runloop_pass_end(ctx);
	assert_int_equal(a.runs, 1);
}

static void test_requeue_runs_again(void **state)
{
	(void)state;
	struct job a = {.requeue = 3};
	pk_runloop_at_pass_end(&a.w, job_fn);
	pk_runloop_pass_end(ctx);
	/* Work queued by work runs in the same pass's end, within the bound. */
	assert_int_equal(a.runs, 4);
}

static void test_endless_requeue_is_cut_off(void **state)
{
	(void)state;
	struct job a = {.requeue = 1000000};
	pk_runloop_at_pass_end(&a.w, job_fn);
	pk_runloop_pass_end(ctx);
	/* Bounded: it ran, but far from a million times, and is still queued
	 * for the next pass's end. */
	assert_true(a.runs >= 1 && a.runs < 1000);
	int before = a.runs;
	pk_runloop_pass_end(ctx);
	assert_true(a.runs > before);
	pk_runloop_pass_cancel(&a.w);
	before = a.runs;
	pk_runloop_pass_end(ctx);
	assert_int_equal(a.runs, before);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_runs_once_in_order),
	    cmocka_unit_test(test_cancel),
	    cmocka_unit_test(test_requeue_runs_again),
	    cmocka_unit_test(test_endless_requeue_is_cut_off),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
