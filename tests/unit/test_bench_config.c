/*
 * `piko bench http` configuration: defaults, the two tables (flags say
 * connect.*, YAML says server.*), validation texts, and Piko's split of the
 * requests among the clients.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bench_config.h"

static void load_defaults(struct pk_bench_config *c)
{
	char err[256];
	memset(c, 0, sizeof(*c));
	assert_int_equal(pk_config_defaults(pk_bench_flag_opts, c, err, sizeof(err)), 0);
}

static void test_defaults_are_pikos(void **state)
{
	(void)state;
	struct pk_bench_config c;
	char err[256];
	load_defaults(&c);
	assert_int_equal(c.requests, 100000);
	assert_int_equal(c.clients, 100);
	assert_int_equal(c.endpoints, 100);
	assert_int_equal(c.upstreams, 100);
	assert_int_equal(c.size, 1024);
	assert_string_equal(c.connect.proxy_url, "http://localhost:8000");
	assert_string_equal(c.connect.upstream_url, "http://localhost:8001");
	assert_int_equal(c.connect.timeout_ms, 5000);
	assert_string_equal(c.log.level, "info");
	assert_int_equal(pk_bench_config_validate(&c, err, sizeof(err)), 0);
	pk_config_free(pk_bench_flag_opts, &c);
}

static void test_flags_and_yaml_keys(void **state)
{
	(void)state;
	struct pk_bench_config c;
	char err[256];
	load_defaults(&c);
	char *argv[] = {"--connect.proxy-url", "http://p:1", "--requests=7", "--connect.timeout",
	                "2s"};
	char *pos[8];
	size_t npos = 0;
	assert_int_equal(pk_config_parse_flags(pk_bench_flag_opts, &c, 5, argv, pos, 8, &npos, NULL,
	                                       NULL, err, sizeof(err)),
	                 0);
	assert_string_equal(c.connect.proxy_url, "http://p:1");
	assert_int_equal(c.requests, 7);
	assert_int_equal(c.connect.timeout_ms, 2000);
	/* The file's section is server, not connect. */
	const char *y = "server:\n  upstream_url: http://u:2\n  timeout: 1s\nsize: 9\n";
	assert_int_equal(
	    pk_config_load_yaml_buf(pk_bench_yaml_opts, &c, y, strlen(y), 0, err, sizeof(err)), 0);
	assert_string_equal(c.connect.upstream_url, "http://u:2");
	assert_int_equal(c.connect.timeout_ms, 1000);
	assert_int_equal(c.size, 9);
	const char *bad = "connect:\n  proxy_url: http://x\n";
	assert_int_equal(
	    pk_config_load_yaml_buf(pk_bench_yaml_opts, &c, bad, strlen(bad), 0, err, sizeof(err)),
	    -1);
	assert_non_null(strstr(err, "unknown key: connect"));
	/* And no --server.* flag. */
	char *argv2[] = {"--server.proxy-url", "http://x"};
	assert_int_equal(pk_config_parse_flags(pk_bench_flag_opts, &c, 2, argv2, pos, 8, &npos,
	                                       NULL, NULL, err, sizeof(err)),
	                 -1);
	pk_config_free(pk_bench_flag_opts, &c);
}

static void expect_invalid(struct pk_bench_config *c, const char *want)
{
	char err[256];
	assert_int_equal(pk_bench_config_validate(c, err, sizeof(err)), -1);
	assert_string_equal(err, want);
}

static void test_validation(void **state)
{
	(void)state;
	struct pk_bench_config c;
	load_defaults(&c);
	c.requests = 0;
	expect_invalid(&c, "missing requests");
	c.requests = 10;
	c.clients = -1;
	expect_invalid(&c, "invalid clients: -1 (want 1 to 10000)");
	c.clients = 10001;
	expect_invalid(&c, "invalid clients: 10001 (want 1 to 10000)");
	c.clients = 1;
	c.size = PK_BENCH_MAX_SIZE + 1;
	expect_invalid(&c, "invalid size: 67108865 (want 1 to 67108864)");
	c.size = 1;
	c.endpoints = 101;
	expect_invalid(&c, "endpoints (101) exceed upstreams (100): an endpoint without an "
	                   "upstream fails every request sent to it");
	c.endpoints = 100;
	c.connect.timeout_ms = 0;
	expect_invalid(&c, "server: missing timeout");
	c.connect.timeout_ms = 1;
	char *keep = c.connect.proxy_url;
	c.connect.proxy_url = "gopher://x";
	expect_invalid(&c, "server: invalid proxy url: gopher://x");
	c.connect.proxy_url = "";
	expect_invalid(&c, "server: missing proxy url");
	c.connect.proxy_url = keep;
	char err[256];
	assert_int_equal(pk_bench_config_validate(&c, err, sizeof(err)), 0);
	pk_config_free(pk_bench_flag_opts, &c);
}

static void test_requests_split(void **state)
{
	(void)state;
	/* Piko's requestsPerClient: 10 over 4 is 3, 3, 2, 2. */
	const int64_t want[] = {3, 3, 2, 2};
	int64_t sum = 0;
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pk_bench_requests_for_client(10, 4, i), want[i]);
		sum += pk_bench_requests_for_client(10, 4, i);
	}
	assert_int_equal(sum, 10);
	/* More clients than requests: the rest get none. */
	assert_int_equal(pk_bench_requests_for_client(2, 5, 1), 1);
	assert_int_equal(pk_bench_requests_for_client(2, 5, 2), 0);
	/* Any split adds up. */
	for (int64_t r = 1; r < 200; r += 7)
		for (int64_t n = 1; n < 40; n += 3) {
			int64_t s = 0;
			for (int64_t i = 0; i < n; i++)
				s += pk_bench_requests_for_client(r, n, i);
			assert_int_equal(s, r);
		}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults_are_pikos),
	    cmocka_unit_test(test_flags_and_yaml_keys),
	    cmocka_unit_test(test_validation),
	    cmocka_unit_test(test_requests_split),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
