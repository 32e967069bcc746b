/*
 * The workers' Prometheus texts as one (core/metrics_merge.c): series
 * labelled by worker, or added by name and labels; families kept whole with
 * one HELP and TYPE, series only one worker has placed in their family,
 * odd lines dropped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"
#include "metrics_merge.h"

static void check_merge(const char *const *texts, size_t n, const char *label, const char *want)
{
	size_t lens[4];
	for (size_t i = 0; i < n; i++)
		lens[i] = strlen(texts[i]);
	size_t len = 0;
	char *got = pk_metrics_merge(texts, lens, n, label, &len);
	assert_int_equal(len, strlen(got));
	assert_string_equal(got, want);
	free(got);
}

/* Two registries as two workers render them. */
static void test_two_workers(void **state)
{
	(void)state;
	static const char *const labels[] = {"status"};
	static const double bounds[] = {0.1, 1};
	char *text[2];
	for (int w = 0; w < 2; w++) {
		struct pk_metrics *m = pk_metrics_new();
		struct pk_metric *req = pk_metrics_register(m, PK_METRIC_COUNTER, "req_total",
		                                            "Requests.", labels, 1, NULL, 0);
		struct pk_metric *lat = pk_metrics_register(m, PK_METRIC_HISTOGRAM, "lat_seconds",
		                                            "Latency.", NULL, 0, bounds, 2);
		struct pk_metric *up = pk_metrics_register(m, PK_METRIC_GAUGE, "upstreams",
		                                           "Upstreams.", NULL, 0, NULL, 0);
		const char *ok[] = {"200"}, *bad[] = {"502"};
		pk_metric_add(req, ok, w ? 3 : 2);
		if (w) /* a status only worker 1 has seen */
			pk_metric_add(req, bad, 1);
		pk_metric_observe(lat, NULL, w ? 0.5 : 0.05);
		pk_metric_set(up, NULL, w);
		size_t len;
		text[w] = pk_metrics_render(m, &len);
		pk_metrics_free(m);
	}
	const char *texts[2] = {text[0], text[1]};
	check_merge(texts, 2, NULL,
	            "# HELP req_total Requests.\n"
	            "# TYPE req_total counter\n"
	            "req_total{status=\"200\"} 5\n"
	            "req_total{status=\"502\"} 1\n"
	            "# HELP lat_seconds Latency.\n"
	            "# TYPE lat_seconds histogram\n"
	            "lat_seconds_bucket{le=\"0.1\"} 1\n"
	            "lat_seconds_bucket{le=\"1\"} 2\n"
	            "lat_seconds_bucket{le=\"+Inf\"} 2\n"
	            "lat_seconds_sum 0.55\n"
	            "lat_seconds_count 2\n"
	            "# HELP upstreams Upstreams.\n"
	            "# TYPE upstreams gauge\n"
	            "upstreams 1\n");
	/* Labelled by worker: each keeps its own series, in its family. */
	check_merge(texts, 2, "worker",
	            "# HELP req_total Requests.\n"
	            "# TYPE req_total counter\n"
	            "req_total{worker=\"0\",status=\"200\"} 2\n"
	            "req_total{worker=\"1\",status=\"200\"} 3\n"
	            "req_total{worker=\"1\",status=\"502\"} 1\n"
	            "# HELP lat_seconds Latency.\n"
	            "# TYPE lat_seconds histogram\n"
	            "lat_seconds_bucket{worker=\"0\",le=\"0.1\"} 1\n"
	            "lat_seconds_bucket{worker=\"0\",le=\"1\"} 1\n"
	            "lat_seconds_bucket{worker=\"0\",le=\"+Inf\"} 1\n"
	            "lat_seconds_sum{worker=\"0\"} 0.05\n"
	            "lat_seconds_count{worker=\"0\"} 1\n"
	            "lat_seconds_bucket{worker=\"1\",le=\"0.1\"} 0\n"
	            "lat_seconds_bucket{worker=\"1\",le=\"1\"} 1\n"
	            "lat_seconds_bucket{worker=\"1\",le=\"+Inf\"} 1\n"
	            "lat_seconds_sum{worker=\"1\"} 0.5\n"
	            "lat_seconds_count{worker=\"1\"} 1\n"
	            "# HELP upstreams Upstreams.\n"
	            "# TYPE upstreams gauge\n"
	            "upstreams{worker=\"0\"} 0\n"
	            "upstreams{worker=\"1\"} 1\n");
	free(text[0]);
	free(text[1]);
}

static void test_odd_lines(void **state)
{
	(void)state;
	const char *texts[3] = {
	    "# HELP a A.\n# TYPE a gauge\na{x=\"1 2\"} 1.5\nnot a sample\n# other comment\n\n",
	    "a{x=\"1 2\"} 2\nb NaN\nc +Inf\nd 1e+06",
	    "",
	};
	check_merge(texts, 3, NULL,
	            "# HELP a A.\n# TYPE a gauge\na{x=\"1 2\"} 3.5\n"
	            "b NaN\nc +Inf\nd 1e+06\n");
}

static void test_labels_of_any_shape(void **state)
{
	(void)state;
	const char *texts[2] = {"a 1\nb{} 2\nc{x=\"y\"} 3\n", "a 4\n"};
	check_merge(texts, 2, "w",
	            "a{w=\"0\"} 1\na{w=\"1\"} 4\nb{w=\"0\"} 2\nc{w=\"0\",x=\"y\"} 3\n");
}

static void test_nothing(void **state)
{
	(void)state;
	check_merge(NULL, 0, NULL, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_two_workers),
	    cmocka_unit_test(test_odd_lines),
	    cmocka_unit_test(test_labels_of_any_shape),
	    cmocka_unit_test(test_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
