/*
 * Endpoint ID derivation (protocol reference §2.1, §9 item 12) and the
 * upstream-port path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "route.h"

static void expect_id(const char *hdr, const char *host, const char *want)
{
	char out[64];
	memset(out, 'x', sizeof(out));
	int rc = pk_route_endpoint_id(hdr, host, out, sizeof(out));
	if (!want) {
		if (rc != -1)
			fail_msg("(%s, %s): got %s, want none", hdr ? hdr : "NULL",
			         host ? host : "NULL", out);
		return;
	}
	if (rc != 0)
		fail_msg("(%s, %s): got none, want %s", hdr ? hdr : "NULL", host ? host : "NULL",
		         want);
	assert_string_equal(out, want);
}

static void test_endpoint_id(void **state)
{
	(void)state;
	expect_id(NULL, "my-endpoint.piko.com:9000", "my-endpoint");
	expect_id("", "my-endpoint.piko.com:9000", "my-endpoint");
	expect_id("header-ep", "my-endpoint.piko.com:9000", "header-ep");
	expect_id("Weird.ID:1", NULL, "Weird.ID:1"); /* verbatim */
	expect_id(NULL, "Foo.example.com", "Foo");
	expect_id(NULL, "a.b", "a");
	expect_id(NULL, "localhost:9000", NULL);
	expect_id(NULL, "localhost", NULL);
	expect_id(NULL, "", NULL);
	expect_id(NULL, NULL, NULL);
	expect_id("", "", NULL);
	expect_id(NULL, ".example.com", NULL);
	expect_id(NULL, ":9000", NULL);
	/* IP literals */
	expect_id(NULL, "10.26.104.56", NULL);
	expect_id(NULL, "10.26.104.56:8000", NULL);
	expect_id(NULL, "::1", NULL);
	expect_id(NULL, "2001:db8::1", NULL);
	expect_id(NULL, "[::1]:8000", NULL);
	expect_id(NULL, "[2001:db8::ffff:1.2.3.4]:80", NULL);
	expect_id(NULL, "::ffff:1.2.3.4", NULL);
	/* not IPs by Go's rules: a dotted name */
	expect_id(NULL, "01.2.3.4", "01");
	expect_id(NULL, "1.2.3.4.5", "1");
	expect_id(NULL, "256.1.1.1:80", "256");
	/* SplitHostPort fails: the raw value is used (Go quirk) */
	expect_id(NULL, "[::ffff:1.2.3.4]", "[::ffff:1");
	expect_id(NULL, "a.b:1:2", "a");
	/* does not fit */
	char small[4];
	assert_int_equal(pk_route_endpoint_id("abc", NULL, small, sizeof(small)), 0);
	assert_string_equal(small, "abc");
	assert_int_equal(pk_route_endpoint_id("abcd", NULL, small, sizeof(small)), -1);
	assert_int_equal(pk_route_endpoint_id(NULL, "abcd.x", small, sizeof(small)), -1);
	assert_int_equal(pk_route_endpoint_id("a", NULL, small, 0), -1);
}

static void expect_path(const char *url, const char *want)
{
	char out[64];
	int rc = pk_route_upstream_path(url, out, sizeof(out));
	if (!want) {
		if (rc != -1)
			fail_msg("%s: got %s, want none", url ? url : "NULL", out);
		return;
	}
	if (rc != 0)
		fail_msg("%s: got none, want %s", url ? url : "NULL", want);
	assert_string_equal(out, want);
}

static void test_upstream_path(void **state)
{
	(void)state;
	expect_path("/piko/v1/upstream/my-endpoint", "my-endpoint");
	expect_path("/piko/v1/upstream/my-endpoint?x=1&y", "my-endpoint");
	expect_path("/piko/v1/upstream/a%20b", "a b");
	expect_path("/piko/v1/upstream/%41", "A");
	expect_path("/piko/v1/upstream/a+b", "a+b");
	expect_path("/piko/v1/%75pstream/x", "x"); /* Go decodes before routing */
	expect_path("http://host:8001/piko/v1/upstream/abs", "abs");
	expect_path("/piko/v1/upstream/", NULL);
	expect_path("/piko/v1/upstream", NULL);
	expect_path("/piko/v1/upstream/?x", NULL);
	expect_path("/piko/v1/upstream/a/b", NULL);
	expect_path("/piko/v1/upstream/a/", NULL);
	expect_path("/piko/v1/upstream/a%2Fb", NULL); /* decoded: two segments */
	expect_path("/piko/v1/upstream/a%2", NULL);
	expect_path("/piko/v1/upstream/a%zz", NULL);
	expect_path("/piko/v1/upstream/a%00", NULL);
	expect_path("/piko/v2/upstream/a", NULL);
	expect_path("/PIKO/v1/upstream/a", NULL);
	expect_path("//piko/v1/upstream/a", NULL);
	expect_path("", NULL);
	expect_path("*", NULL);
	expect_path(NULL, NULL);
	char small[3];
	assert_int_equal(pk_route_upstream_path("/piko/v1/upstream/ab", small, sizeof(small)), 0);
	assert_int_equal(pk_route_upstream_path("/piko/v1/upstream/abc", small, sizeof(small)), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_endpoint_id),
	    cmocka_unit_test(test_upstream_path),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
