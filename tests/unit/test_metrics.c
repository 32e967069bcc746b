/*
 * Prometheus text rendering: exact output for counters, gauges and
 * histograms with and without labels, label escaping, number formatting as
 * the Go client does it.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

static void check_render(const struct pk_metrics *m, const char *want)
{
	size_t len = 0;
	char *got = pk_metrics_render(m, &len);
	assert_non_null(got);
	assert_int_equal(len, strlen(got));
	assert_string_equal(got, want);
	free(got);
}

static void test_untouched(void **state)
{
	(void)state;
	struct pk_metrics *m = pk_metrics_new();
	check_render(m, "");
	static const char *const labels[] = {"status", "method"};
	pk_metrics_register(m, PK_METRIC_GAUGE, "piko_proxy_requests_in_flight",
	                    "Number of requests currently handled by this server.", NULL, 0, NULL,
	                    0);
	pk_metrics_register(m, PK_METRIC_COUNTER, "piko_proxy_requests_total", "Proxied requests.",
	                    labels, 2, NULL, 0);
	pk_metrics_register(m, PK_METRIC_HISTOGRAM, "piko_proxy_response_size_bytes",
	                    "Response size.", NULL, 0, pk_metrics_size_buckets, 8);
	/* a vec without children is not exposed at all; plain metrics are */
	check_render(m, "# HELP piko_proxy_requests_in_flight Number of requests currently "
	                "handled by this server.\n"
	                "# TYPE piko_proxy_requests_in_flight gauge\n"
	                "piko_proxy_requests_in_flight 0\n"
	                "# HELP piko_proxy_response_size_bytes Response size.\n"
	                "# TYPE piko_proxy_response_size_bytes histogram\n"
	                "piko_proxy_response_size_bytes_bucket{le=\"256\"} 0\n"
	                "piko_proxy_response_size_bytes_bucket{le=\"1024\"} 0\n"
	                "piko_proxy_response_size_bytes_bucket{le=\"4096\"} 0\n"
	                "piko_proxy_response_size_bytes_bucket{le=\"16384\"} 0\n"
	                "piko_proxy_response_size_bytes_bucket{le=\"65536\"} 0\n"
	                "piko_proxy_response_size_bytes_bucket{le=\"262144\"} 0\n"
	                "piko_proxy_response_size_bytes_bucket{le=\"1.048576e+06\"} 0\n"
	                "piko_proxy_response_size_bytes_bucket{le=\"4.194304e+06\"} 0\n"
	                "piko_proxy_response_size_bytes_bucket{le=\"+Inf\"} 0\n"
	                "piko_proxy_response_size_bytes_sum 0\n"
	                "piko_proxy_response_size_bytes_count 0\n");
	pk_metrics_free(m);
}

static void test_counter_gauge(void **state)
{
	(void)state;
	struct pk_metrics *m = pk_metrics_new();
	static const char *const labels[] = {"status", "method"};
	struct pk_metric *c = pk_metrics_register(m, PK_METRIC_COUNTER, "reqs_total", "Requests.",
	                                          labels, 2, NULL, 0);
	struct pk_metric *g =
	    pk_metrics_register(m, PK_METRIC_GAUGE, "up", "Up.", NULL, 0, NULL, 0);
	static const char *const a[] = {"200", "get"};
	static const char *const b[] = {"502", "post"};
	static const char *const d[] = {"200", "delete"};
	pk_metric_add(c, b, 1);
	pk_metric_add(c, a, 1);
	pk_metric_add(c, a, 2);
	pk_metric_add(c, d, 1);
	pk_metric_add(c, d, -5); /* ignored: counters only go up */
	pk_metric_set(g, NULL, 3);
	pk_metric_add(g, NULL, -1.5);
	assert_true(pk_metric_value(c, a) == 3);
	assert_true(pk_metric_value(c, d) == 1);
	assert_true(pk_metric_value(g, NULL) == 1.5);
	static const char *const none[] = {"404", "get"};
	assert_true(pk_metric_value(c, none) == 0);
	/* series sorted by label values, like the Go client */
	check_render(m, "# HELP reqs_total Requests.\n"
	                "# TYPE reqs_total counter\n"
	                "reqs_total{status=\"200\",method=\"delete\"} 1\n"
	                "reqs_total{status=\"200\",method=\"get\"} 3\n"
	                "reqs_total{status=\"502\",method=\"post\"} 1\n"
	                "# HELP up Up.\n"
	                "# TYPE up gauge\n"
	                "up 1.5\n");
	pk_metrics_free(m);
}

static void test_histogram(void **state)
{
	(void)state;
	struct pk_metrics *m = pk_metrics_new();
	static const char *const labels[] = {"endpoint"};
	static const double buckets[] = {0.1, 1, 10};
	struct pk_metric *h = pk_metrics_register(m, PK_METRIC_HISTOGRAM, "lat_seconds", "Latency.",
	                                          labels, 1, buckets, 3);
	static const char *const e1[] = {"b"};
	static const char *const e2[] = {"a"};
	pk_metric_observe(h, e1, 0.05);
	pk_metric_observe(h, e1, 0.1); /* upper bounds are inclusive */
	pk_metric_observe(h, e1, 5);
	pk_metric_observe(h, e1, 100);
	pk_metric_observe(h, e2, 1);
	assert_true(pk_metric_value(h, e1) == 4);
	check_render(m, "# HELP lat_seconds Latency.\n"
	                "# TYPE lat_seconds histogram\n"
	                "lat_seconds_bucket{endpoint=\"a\",le=\"0.1\"} 0\n"
	                "lat_seconds_bucket{endpoint=\"a\",le=\"1\"} 1\n"
	                "lat_seconds_bucket{endpoint=\"a\",le=\"10\"} 1\n"
	                "lat_seconds_bucket{endpoint=\"a\",le=\"+Inf\"} 1\n"
	                "lat_seconds_sum{endpoint=\"a\"} 1\n"
	                "lat_seconds_count{endpoint=\"a\"} 1\n"
	                "lat_seconds_bucket{endpoint=\"b\",le=\"0.1\"} 2\n"
	                "lat_seconds_bucket{endpoint=\"b\",le=\"1\"} 2\n"
	                "lat_seconds_bucket{endpoint=\"b\",le=\"10\"} 3\n"
	                "lat_seconds_bucket{endpoint=\"b\",le=\"+Inf\"} 4\n"
	                "lat_seconds_sum{endpoint=\"b\"} 105.15\n"
	                "lat_seconds_count{endpoint=\"b\"} 4\n");
	pk_metrics_free(m);
}

static void test_default_buckets(void **state)
{
	(void)state;
	struct pk_metrics *m = pk_metrics_new();
	struct pk_metric *h = pk_metrics_register(m, PK_METRIC_HISTOGRAM, "x", "", NULL, 0,
	                                          pk_metrics_default_buckets, 11);
	pk_metric_observe(h, NULL, 0.003);
	pk_metric_observe(h, NULL, 0.7);
	/* an empty help still gets its HELP line, as in Go */
	check_render(m, "# HELP x \n"
	                "# TYPE x histogram\n"
	                "x_bucket{le=\"0.005\"} 1\n"
	                "x_bucket{le=\"0.01\"} 1\n"
	                "x_bucket{le=\"0.025\"} 1\n"
	                "x_bucket{le=\"0.05\"} 1\n"
	                "x_bucket{le=\"0.1\"} 1\n"
	                "x_bucket{le=\"0.25\"} 1\n"
	                "x_bucket{le=\"0.5\"} 1\n"
	                "x_bucket{le=\"1\"} 2\n"
	                "x_bucket{le=\"2.5\"} 2\n"
	                "x_bucket{le=\"5\"} 2\n"
	                "x_bucket{le=\"10\"} 2\n"
	                "x_bucket{le=\"+Inf\"} 2\n"
	                "x_sum 0.703\n"
	                "x_count 2\n");
	pk_metrics_free(m);
}

static void test_escaping(void **state)
{
	(void)state;
	struct pk_metrics *m = pk_metrics_new();
	static const char *const labels[] = {"v"};
	struct pk_metric *c =
	    pk_metrics_register(m, PK_METRIC_COUNTER, "esc_total",
	                        "Help with \\ and\nnewline and \"quotes\".", labels, 1, NULL, 0);
	static const char *const v[] = {"a\\b\"c\nd"};
	pk_metric_add(c, v, 1);
	check_render(m, "# HELP esc_total Help with \\\\ and\\nnewline and \"quotes\".\n"
	                "# TYPE esc_total counter\n"
	                "esc_total{v=\"a\\\\b\\\"c\\nd\"} 1\n");
	pk_metrics_free(m);
}

static void test_number_format(void **state)
{
	(void)state;
	/* strconv.FormatFloat(v, 'g', -1, 64), as expfmt writes values */
	static const struct {
		double v;
		const char *want;
	} cases[] = {
	    {0, "0"},
	    {1, "1"},
	    {-1, "-1"},
	    {42, "42"},
	    {123456, "123456"},
	    {1e6, "1e+06"},
	    {1234567, "1.234567e+06"},
	    {0.1, "0.1"},
	    {0.0001, "0.0001"},
	    {0.00001, "1e-05"},
	    {1.5e-7, "1.5e-07"},
	    {2.5, "2.5"},
	    {1.0 / 3, "0.3333333333333333"},
	    {1e21, "1e+21"},
	    {9007199254740993.0, "9.007199254740992e+15"},
	    {-0.0, "0"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct pk_metrics *m = pk_metrics_new();
		struct pk_metric *g =
		    pk_metrics_register(m, PK_METRIC_GAUGE, "g", NULL, NULL, 0, NULL, 0);
		pk_metric_set(g, NULL, cases[i].v);
		char want[128];
		snprintf(want, sizeof(want), "# TYPE g gauge\ng %s\n", cases[i].want);
		check_render(m, want);
		pk_metrics_free(m);
	}
	struct pk_metrics *m = pk_metrics_new();
	struct pk_metric *g = pk_metrics_register(m, PK_METRIC_GAUGE, "g", NULL, NULL, 0, NULL, 0);
	pk_metric_set(g, NULL, INFINITY);
	check_render(m, "# TYPE g gauge\ng +Inf\n");
	pk_metric_set(g, NULL, -INFINITY);
	check_render(m, "# TYPE g gauge\ng -Inf\n");
	pk_metric_set(g, NULL, NAN);
	check_render(m, "# TYPE g gauge\ng NaN\n");
	pk_metrics_free(m);
}

static void test_many_children(void **state)
{
	(void)state;
	struct pk_metrics *m = pk_metrics_new();
	static const char *const labels[] = {"endpoint", "method"};
	struct pk_metric *c =
	    pk_metrics_register(m, PK_METRIC_COUNTER, "n_total", "N.", labels, 2, NULL, 0);
	char ep[32];
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 1000; i++) {
			snprintf(ep, sizeof(ep), "ep-%04d", i);
			const char *v[] = {ep, i % 2 ? "get" : "post"};
			pk_metric_add(c, v, 1);
		}
	}
	for (int i = 0; i < 1000; i++) {
		snprintf(ep, sizeof(ep), "ep-%04d", i);
		const char *v[] = {ep, i % 2 ? "get" : "post"};
		assert_true(pk_metric_value(c, v) == 3);
		const char *w[] = {ep, i % 2 ? "post" : "get"};
		assert_true(pk_metric_value(c, w) == 0);
	}
	/* ("ab","c") and ("a","bc") are different series */
	const char *x[] = {"ab", "c"};
	const char *y[] = {"a", "bc"};
	pk_metric_add(c, x, 1);
	assert_true(pk_metric_value(c, y) == 0);
	size_t len;
	char *text = pk_metrics_render(m, &len);
	assert_non_null(strstr(text, "n_total{endpoint=\"ep-0000\",method=\"post\"} 3\n"
	                             "n_total{endpoint=\"ep-0001\",method=\"get\"} 3\n"));
	free(text);
	pk_metrics_free(m);
}

/* A removed series is gone from the output and from lookups; the others stay
 * in order and in the hash table; a removed one can come back. */
static void test_remove(void **state)
{
	(void)state;
	struct pk_metrics *m = pk_metrics_new();
	static const char *const labels[] = {"cluster"};
	struct pk_metric *g =
	    pk_metrics_register(m, PK_METRIC_GAUGE, "members", "M.", labels, 1, NULL, 0);
	char name[32];
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "c%02d", i);
		const char *v[] = {name};
		pk_metric_set(g, v, i);
	}
	for (int i = 0; i < 20; i += 2) {
		snprintf(name, sizeof(name), "c%02d", i);
		const char *v[] = {name};
		pk_metric_remove(g, v);
	}
	const char *missing[] = {"nope"};
	pk_metric_remove(g, missing); /* no-op */
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "c%02d", i);
		const char *v[] = {name};
		assert_true(pk_metric_value(g, v) == (i % 2 ? i : 0));
	}
	size_t len;
	char *text = pk_metrics_render(m, &len);
	assert_null(strstr(text, "c00"));
	assert_null(strstr(text, "c18"));
	assert_non_null(strstr(text, "members{cluster=\"c17\"} 17\nmembers{cluster=\"c19\"} 19\n"));
	free(text);
	const char *back[] = {"c04"};
	pk_metric_set(g, back, 4);
	assert_true(pk_metric_value(g, back) == 4);
	pk_metrics_free(m);
}

static void test_clear(void **state)
{
	(void)state;
	struct pk_metrics *m = pk_metrics_new();
	static const char *const peer[] = {"node_id"};
	struct pk_metric *g = pk_metrics_register(m, PK_METRIC_GAUGE, "up", NULL, peer, 1, NULL, 0);
	struct pk_metric *plain =
	    pk_metrics_register(m, PK_METRIC_GAUGE, "plain", NULL, NULL, 0, NULL, 0);
	char name[16];
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "n%02d", i);
		const char *v[] = {name};
		pk_metric_set(g, v, 1);
	}
	pk_metric_set(plain, NULL, 7);
	pk_metric_clear(g);
	pk_metric_clear(plain); /* no-op: its one series stays */
	const char *n3[] = {"n03"};
	assert_true(pk_metric_value(g, n3) == 0);
	size_t len;
	char *text = pk_metrics_render(m, &len);
	assert_string_equal(text, "# TYPE plain gauge\nplain 7\n");
	free(text);
	/* Usable again after a clear, lookups included. */
	const char *n9[] = {"n09"};
	pk_metric_set(g, n9, 2);
	pk_metric_set(g, n3, 3);
	assert_true(pk_metric_value(g, n9) == 2);
	assert_true(pk_metric_value(g, n3) == 3);
	text = pk_metrics_render(m, &len);
	assert_string_equal(text, "# TYPE up gauge\nup{node_id=\"n03\"} 3\nup{node_id=\"n09\"} "
	                          "2\n# TYPE plain gauge\nplain 7\n");
	free(text);
	pk_metrics_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_untouched),       cmocka_unit_test(test_counter_gauge),
	    cmocka_unit_test(test_remove),          cmocka_unit_test(test_histogram),
	    cmocka_unit_test(test_default_buckets), cmocka_unit_test(test_escaping),
	    cmocka_unit_test(test_number_format),   cmocka_unit_test(test_many_children),
	    cmocka_unit_test(test_clear),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
