/*
 * Process metrics: read from /proc, plausible values, open descriptors that
 * follow what the process opens.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "metrics.h"
#include "process_metrics.h"

static void test_values(void **state)
{
	(void)state;
	struct pk_metrics *reg = pk_metrics_new();
	struct pk_process_metrics pm;
	memset(&pm, 0, sizeof(pm));
	pk_process_metrics_update(&pm); /* unregistered: a no-op */
	pk_process_metrics_register(&pm, reg);
	pk_process_metrics_update(&pm);
	assert_true(pk_metric_value(pm.cpu, NULL) >= 0);
	assert_true(pk_metric_value(pm.rss, NULL) > 100 * 1024);
	assert_true(pk_metric_value(pm.vsize, NULL) >= pk_metric_value(pm.rss, NULL));
	double now = (double)time(NULL);
	double start = pk_metric_value(pm.start, NULL);
	assert_true(start > now - 3600 && start <= now + 1);
	struct rlimit rl;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur != RLIM_INFINITY)
		assert_true(pk_metric_value(pm.max_fds, NULL) == (double)rl.rlim_cur);
	double fds = pk_metric_value(pm.open_fds, NULL);
	assert_true(fds >= 3);
	int p[2];
	assert_int_equal(pipe(p), 0);
	pk_process_metrics_update(&pm);
	assert_true(pk_metric_value(pm.open_fds, NULL) == fds + 2);
	close(p[0]);
	close(p[1]);
	/* Burn some CPU: the counter moves (10 ms ticks). */
	double cpu0 = pk_metric_value(pm.cpu, NULL);
	volatile uint64_t x = 0;
	clock_t c0 = clock();
	while (clock() - c0 < CLOCKS_PER_SEC / 10)
		x++;
	pk_process_metrics_update(&pm);
	assert_true(pk_metric_value(pm.cpu, NULL) > cpu0);
	size_t len;
	char *text = pk_metrics_render(reg, &len);
	assert_non_null(strstr(text, "# TYPE process_cpu_seconds_total counter\n"));
	assert_non_null(strstr(text, "# TYPE process_resident_memory_bytes gauge\n"));
	assert_null(strstr(text, "go_"));
	free(text);
	pk_metrics_free(reg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_values),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
