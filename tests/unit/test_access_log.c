/*
 * The access log's pieces (core/access_log.c): Go's Duration.String(),
 * CanonicalMIMEHeaderKey and URL.Path, the header objects with their allow
 * and block lists, the record itself, and the YAML keys of the server and
 * of an agent listener.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "access_log.h"
#include "agent_config.h"
#include "server_config.h"

static void dur(uint64_t ns, const char *want)
{
	char b[40];
	pk_go_duration(ns, b, sizeof(b));
	assert_string_equal(b, want);
}

static void test_go_duration(void **state)
{
	(void)state;
	/* Each value as Go 1.22's time.Duration(n).String() prints it. */
	dur(0, "0s");
	dur(1, "1ns");
	dur(999, "999ns");
	dur(1000, "1µs");
	dur(12500, "12.5µs");
	dur(1234567, "1.234567ms");
	dur(1000000, "1ms");
	dur(999999999, "999.999999ms");
	dur(1000000000, "1s");
	dur(2500000000ull, "2.5s");
	dur(90ull * 1000000000ull, "1m30s");
	dur(3600ull * 1000000000ull, "1h0m0s");
	dur(3723004005006ull, "1h2m3.004005006s");
}

static void canon(const char *in, const char *want)
{
	char b[64];
	pk_access_log_canonical(in, b, sizeof(b));
	assert_string_equal(b, want);
}

static void test_canonical(void **state)
{
	(void)state;
	canon("x-foo", "X-Foo");
	canon("CONTENT-TYPE", "Content-Type");
	canon("x-piko-ENDPOINT", "X-Piko-Endpoint");
	canon("www-authenticate", "Www-Authenticate");
	canon("a--b", "A--B");
	canon("x_y", "X_y");
	/* Not a token: left as it is, as Go does. */
	canon("bad header", "bad header");
	canon("x-\xc3\xa9", "x-\xc3\xa9");
}

static void path(const char *in, const char *want)
{
	char b[64];
	pk_access_log_path(in, b, sizeof(b));
	assert_string_equal(b, want);
}

static void test_path(void **state)
{
	(void)state;
	path("/a?b=c", "/a");
	path("/a%20b/%2Fc", "/a b//c");
	path("/bad%zz%2", "/bad%zz%2");
	path("http://host:80/x/y?q", "/x/y");
	path("http://host", "");
	path("*", "*");
	path("/", "/");
}

static void test_headers_json(void **state)
{
	(void)state;
	struct pk_http1_header hs[] = {
	    {"x-b", "1"}, {"Host", "h"}, {"X-A", "a\"q"}, {"X-B", "2"}, {"accept", "<x>"},
	};
	static const char *const skip[] = {"Host", NULL};
	char *j = pk_access_log_headers_json(NULL, hs, 5, skip);
	/* Sorted names, one array per canonical name in arrival order, no
	 * HTML escaping (zap's encoder). */
	assert_string_equal(j, "{\"Accept\":[\"<x>\"],\"X-A\":[\"a\\\"q\"],\"X-B\":[\"1\",\"2\"]}");
	free(j);

	char *allow[] = {"x-b", "ACCEPT"};
	struct pk_access_log_headers f = {.allow_list = {allow, 2}};
	j = pk_access_log_headers_json(&f, hs, 5, skip);
	assert_string_equal(j, "{\"Accept\":[\"<x>\"],\"X-B\":[\"1\",\"2\"]}");
	free(j);

	char *block[] = {"X-b"};
	struct pk_access_log_headers g = {.block_list = {block, 1}};
	j = pk_access_log_headers_json(&g, hs, 5, NULL);
	assert_string_equal(j, "{\"Accept\":[\"<x>\"],\"Host\":[\"h\"],\"X-A\":[\"a\\\"q\"]}");
	free(j);

	j = pk_access_log_headers_json(NULL, NULL, 0, NULL);
	assert_string_equal(j, "{}");
	free(j);
}

static void test_own_response(void **state)
{
	(void)state;
	size_t len;
	char *resp = pk_http1_error_response(502, "upstream unreachable", 1, &len);
	char *j = pk_access_log_written_json(NULL, resp, len);
	/* The handler's headers, not Content-Length or Connection. */
	assert_string_equal(
	    j,
	    "{\"Content-Type\":[\"application/json\"],\"X-Content-Type-Options\":[\"nosniff\"]}");
	free(j);
	free(resp);
}

static void test_validate(void **state)
{
	(void)state;
	char err[200];
	char *a[] = {"x"};
	struct pk_access_log_config c = {.level = "info"};
	assert_int_equal(pk_access_log_validate(&c, err, sizeof(err)), 0);
	c.response_headers.allow_list = (struct pk_strlist){a, 1};
	c.response_headers.block_list = (struct pk_strlist){a, 1};
	assert_int_equal(pk_access_log_validate(&c, err, sizeof(err)), -1);
	assert_non_null(
	    strstr(err, "response headers: cannot define both allow list and block list"));
	c.disable = 1; /* Piko checks nothing of a disabled log */
	assert_int_equal(pk_access_log_validate(&c, err, sizeof(err)), 0);
	struct pk_access_log_config d = {.level = "loud"};
	assert_int_equal(pk_access_log_validate(&d, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "invalid level: loud"));
	assert_int_equal(pk_access_log_level(&(struct pk_access_log_config){.level = "debug"}, 503),
	                 PK_LOG_WARN);
	assert_int_equal(pk_access_log_level(&(struct pk_access_log_config){.level = "error"}, 503),
	                 PK_LOG_ERROR);
	assert_int_equal(pk_access_log_level(&(struct pk_access_log_config){.level = "debug"}, 404),
	                 PK_LOG_DEBUG);
}

static void test_record(void **state)
{
	(void)state;
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pk_log_set_fd(fds[1]);
	struct pk_access_log_config c = {.level = "info"};
	struct pk_http1_header hs[] = {
	    {"Host", "ep.example.com"}, {"transfer-encoding", "chunked"}, {"user-agent", "t"}};
	struct pk_access_record r = {
	    .http_minor = 0,
	    .method = "POST",
	    .host = "ep.example.com",
	    .target = "/p%41th?x=1",
	    .req_hdrs = hs,
	    .n_req_hdrs = 3,
	    .resp_hdr = "{\"X\":[\"y\"]}",
	    .status = 0,
	    .duration_ns = 1500,
	};
	pk_access_log_write(&c, "proxy.access", &r);
	r.target = "/_piko/v1/x"; /* never logged */
	pk_access_log_write(&c, "proxy.access", &r);
	pk_log_set_fd(-1);
	close(fds[1]);
	char buf[2048];
	ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
	close(fds[0]);
	assert_true(n > 0);
	buf[n] = '\0';
	const char *rec =
	    strstr(buf, "\"subsystem\":\"proxy.access\",\"msg\":\"request\",\"request\":");
	assert_non_null(rec);
	/* A client gone before any response is Go's 502, at warn. */
	assert_non_null(strstr(buf, "{\"level\":\"warn\""));
	assert_non_null(strstr(
	    rec,
	    "\"request\":{\"proto\":\"HTTP/1.0\",\"method\":\"POST\",\"host\":\"ep.example.com\","
	    "\"path\":\"/pAth\",\"request_headers\":{\"User-Agent\":[\"t\"]},"
	    "\"response_headers\":{\"X\":[\"y\"]},\"status\":502,\"duration\":\"1.5µs\"}}\n"));
	assert_null(strchr(strchr(buf, '\n') + 1, '{')); /* one record only */
}

static void test_server_yaml(void **state)
{
	(void)state;
	struct pk_server_config c;
	char err[256];
	assert_int_equal(pk_config_defaults(pk_server_opts, &c, err, sizeof(err)), 0);
	const char *y = "proxy:\n"
	                "  access_log:\n"
	                "    level: warn\n"
	                "    request_headers:\n"
	                "      allow_list: [a, b]\n"
	                "    response_headers:\n"
	                "      block_list: [c]\n";
	assert_int_equal(
	    pk_config_load_yaml_buf(pk_server_opts, &c, y, strlen(y), 0, err, sizeof(err)), 0);
	assert_string_equal(c.proxy.access_log.level, "warn");
	assert_int_equal(c.proxy.access_log.request_headers.allow_list.n, 2);
	assert_string_equal(c.proxy.access_log.request_headers.allow_list.v[1], "b");
	assert_int_equal(c.proxy.access_log.response_headers.block_list.n, 1);
	assert_int_equal(pk_server_config_validate(&c, err, sizeof(err)), 0);
	pk_config_free(pk_server_opts, &c);
}

static void test_agent_listener_yaml(void **state)
{
	(void)state;
	struct pk_agent_config c;
	char err[256];
	assert_int_equal(pk_config_defaults(pk_agent_opts, &c, err, sizeof(err)), 0);
	const char *y = "listeners:\n"
	                "  - endpoint_id: e\n"
	                "    addr: 127.0.0.1:9\n"
	                "    timeout: 5s\n"
	                "    access_log:\n"
	                "      request_headers:\n"
	                "        allow_list: [x]\n"
	                "        block_list: [y]\n";
	assert_int_equal(
	    pk_config_load_yaml_buf(pk_agent_opts, &c, y, strlen(y), 0, err, sizeof(err)), 0);
	const struct pk_listener_config *l = c.listeners.v;
	assert_int_equal(c.listeners.n, 1);
	assert_string_equal(l->access_log.request_headers.allow_list.v[0], "x");
	assert_int_equal(pk_agent_config_validate(&c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "listener 0: access log: request headers: cannot define both"));
	pk_config_free(pk_agent_opts, &c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_go_duration),
	    cmocka_unit_test(test_canonical),
	    cmocka_unit_test(test_path),
	    cmocka_unit_test(test_headers_json),
	    cmocka_unit_test(test_own_response),
	    cmocka_unit_test(test_validate),
	    cmocka_unit_test(test_record),
	    cmocka_unit_test(test_server_yaml),
	    cmocka_unit_test(test_agent_listener_yaml),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
