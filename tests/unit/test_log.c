/*
 * JSON-lines logger: record shape, escaping, filtering, timestamps.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

static int pipefd[2];

static int setup(void **state)
{
	(void)state;
	if (pipe(pipefd) == -1)
		return -1;
	/* Non-blocking reads: "nothing was logged" reads as EAGAIN. Large
	 * enough records are tested one at a time, under the pipe buffer. */
	fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
	pk_log_set_fd(pipefd[1]);
	pk_log_set_level(PK_LOG_INFO);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	pk_log_set_fd(-1);
	pk_log_reset();
	close(pipefd[0]);
	close(pipefd[1]);
	return 0;
}

/* Everything logged since the last call; the caller frees it. */
static char *captured(void)
{
	size_t cap = 65536, n = 0;
	char *buf = malloc(cap + 1);
	for (;;) {
		ssize_t r = read(pipefd[0], buf + n, cap - n);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	buf[n] = '\0';
	return buf;
}

/* Checks a record is {"level":"<level>","ts":"<any>",<rest> and returns
 * the ts. */
static void expect_record(const char *line, const char *level, const char *rest)
{
	char head[64];
	snprintf(head, sizeof(head), "{\"level\":\"%s\",\"ts\":\"", level);
	if (strncmp(line, head, strlen(head)) != 0)
		fail_msg("record %s does not start with %s", line, head);
	const char *ts = line + strlen(head);
	const char *q = strchr(ts, '"');
	assert_non_null(q);
	/* 2026-11-29T18:00:00Z at the shortest, .123Z at the longest. */
	size_t tslen = (size_t)(q - ts);
	assert_true(tslen >= 20 && tslen <= 24);
	assert_int_equal(ts[4], '-');
	assert_int_equal(ts[10], 'T');
	assert_int_equal(ts[tslen - 1], 'Z');
	if (strcmp(q + 1, rest) != 0)
		fail_msg("record tail %s, want %s", q + 1, rest);
}

static void test_shape(void **state)
{
	(void)state;
	pk_log(PK_LOG_INFO, "proxy", "upstream connected", "endpoint-id", "my-endpoint",
	       "client-ip", "10.0.0.1", NULL);
	char *out = captured();
	expect_record(out, "info",
	              ",\"subsystem\":\"proxy\",\"msg\":\"upstream connected\","
	              "\"endpoint-id\":\"my-endpoint\",\"client-ip\":\"10.0.0.1\"}\n");
	free(out);

	pk_log(PK_LOG_ERROR, NULL, "no subsystem", NULL);
	out = captured();
	expect_record(out, "error", ",\"msg\":\"no subsystem\"}\n");
	free(out);

	pk_log(PK_LOG_WARN, "x", NULL, "k", NULL, NULL);
	out = captured();
	expect_record(out, "warn", ",\"subsystem\":\"x\",\"msg\":\"\",\"k\":\"\"}\n");
	free(out);
}

static void test_escaping(void **state)
{
	(void)state;
	pk_log(PK_LOG_INFO, "s", "q\"b\\n\nr\rt\tc\x01\x1f\x7f", "k\"", "caf\xc3\xa9 \xe2\x82\xac",
	       "bad",
	       "a\xff"
	       "b\xc3",
	       "over", "\xc0\xaf\xed\xa0\x80", NULL);
	char *out = captured();
	expect_record(out, "info",
	              ",\"subsystem\":\"s\",\"msg\":\"q\\\"b\\\\n\\nr\\rt\\tc\\u0001\\u001f\x7f\","
	              "\"k\\\"\":\"caf\xc3\xa9 \xe2\x82\xac\","
	              "\"bad\":\"a\\ufffdb\\ufffd\","
	              "\"over\":\"\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\"}\n");
	free(out);
}

static void test_long_record(void **state)
{
	(void)state;
	size_t n = 20000;
	char *big = malloc(n + 1);
	memset(big, 'x', n);
	big[n] = '\0';
	/* Escapes near the cut must not be split. */
	for (size_t i = 8000; i < 8200; i++)
		big[i] = '\n';
	pk_log(PK_LOG_INFO, "s", "m", "big", big, "after", "dropped", NULL);
	char *out = captured();
	size_t len = strlen(out);
	assert_true(len <= 8192);
	assert_true(len > 8000);
	assert_int_equal(out[len - 1], '\n');
	assert_int_equal(out[len - 2], '}');
	assert_int_equal(out[len - 3], '"');
	/* The cut ends on a whole escape: an even run of backslashes. */
	size_t bs = 0;
	for (size_t i = len - 4; out[i] == '\\'; i--)
		bs++;
	assert_int_equal(bs % 2, 0);
	assert_null(strstr(out, "dropped"));
	assert_ptr_equal(strchr(out, '\n'), out + len - 1);
	free(out);
	free(big);

	/* A key that does not fit drops the whole field. */
	char *bigkey = malloc(n + 1);
	memset(bigkey, 'k', n);
	bigkey[n] = '\0';
	pk_log(PK_LOG_INFO, "s", "m", bigkey, "v", NULL);
	out = captured();
	expect_record(out, "info", ",\"subsystem\":\"s\",\"msg\":\"m\"}\n");
	free(out);
	free(bigkey);
}

static void test_level_filter(void **state)
{
	(void)state;
	pk_log_set_level(PK_LOG_WARN);
	pk_log(PK_LOG_INFO, "proxy", "hidden", NULL);
	pk_log(PK_LOG_DEBUG, "proxy", "hidden", NULL);
	char *out = captured();
	assert_string_equal(out, "");
	free(out);
	assert_false(pk_log_enabled(PK_LOG_INFO, "proxy"));
	assert_true(pk_log_enabled(PK_LOG_WARN, "proxy"));
	assert_true(pk_log_enabled(PK_LOG_ERROR, NULL));
	pk_log(PK_LOG_WARN, "proxy", "shown", NULL);
	pk_log(PK_LOG_ERROR, "proxy", "shown", NULL);
	out = captured();
	assert_non_null(strstr(out, "\"level\":\"warn\""));
	assert_non_null(strstr(out, "\"level\":\"error\""));
	free(out);

	pk_log_set_level(PK_LOG_DEBUG);
	pk_log(PK_LOG_DEBUG, "x", "dbg", NULL);
	out = captured();
	expect_record(out, "debug", ",\"subsystem\":\"x\",\"msg\":\"dbg\"}\n");
	free(out);
}

static void test_subsystems(void **state)
{
	(void)state;
	char *subs[] = {"proxy", "admin"};
	pk_log_set_level(PK_LOG_INFO);
	pk_log_set_subsystems(subs, 2);
	assert_true(pk_log_enabled(PK_LOG_DEBUG, "proxy"));
	assert_true(pk_log_enabled(PK_LOG_DEBUG, "admin"));
	assert_false(pk_log_enabled(PK_LOG_DEBUG, "upstream"));
	assert_false(pk_log_enabled(PK_LOG_DEBUG, NULL));
	pk_log(PK_LOG_DEBUG, "proxy", "p", NULL);
	pk_log(PK_LOG_DEBUG, "upstream", "u", NULL);
	char *out = captured();
	expect_record(out, "debug", ",\"subsystem\":\"proxy\",\"msg\":\"p\"}\n");
	free(out);
	/* Replacing the list drops the old names. */
	char *subs2[] = {"upstream"};
	pk_log_set_subsystems(subs2, 1);
	assert_false(pk_log_enabled(PK_LOG_DEBUG, "proxy"));
	assert_true(pk_log_enabled(PK_LOG_DEBUG, "upstream"));
	pk_log_set_subsystems(NULL, 0);
	assert_false(pk_log_enabled(PK_LOG_DEBUG, "upstream"));
}

static void test_parse_level(void **state)
{
	(void)state;
	assert_int_equal(pk_log_parse_level("debug"), PK_LOG_DEBUG);
	assert_int_equal(pk_log_parse_level("info"), PK_LOG_INFO);
	assert_int_equal(pk_log_parse_level("warn"), PK_LOG_WARN);
	assert_int_equal(pk_log_parse_level("error"), PK_LOG_ERROR);
	assert_int_equal(pk_log_parse_level("INFO"), -1);
	assert_int_equal(pk_log_parse_level("fatal"), -1);
	assert_int_equal(pk_log_parse_level(""), -1);
	assert_int_equal(pk_log_parse_level(NULL), -1);
}

static void test_timestamp(void **state)
{
	(void)state;
	char buf[64];
	const int64_t t = 1795975200LL * 1000; /* 2026-11-29T18:00:00Z */
	pk_log_timestamp_at(t + 123, buf, sizeof(buf));
	assert_string_equal(buf, "2026-11-29T18:00:00.123Z");
	pk_log_timestamp_at(t + 120, buf, sizeof(buf));
	assert_string_equal(buf, "2026-11-29T18:00:00.12Z");
	pk_log_timestamp_at(t + 100, buf, sizeof(buf));
	assert_string_equal(buf, "2026-11-29T18:00:00.1Z");
	pk_log_timestamp_at(t + 5, buf, sizeof(buf));
	assert_string_equal(buf, "2026-11-29T18:00:00.005Z");
	pk_log_timestamp_at(t, buf, sizeof(buf));
	assert_string_equal(buf, "2026-11-29T18:00:00Z");
	pk_log_timestamp_at(0, buf, sizeof(buf));
	assert_string_equal(buf, "1970-01-01T00:00:00Z");
	pk_log_timestamp_at(-1, buf, sizeof(buf));
	assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
	/* A short buffer is truncated, never overrun. */
	char small[8];
	pk_log_timestamp_at(t, small, sizeof(small));
	assert_string_equal(small, "2026-11");
	/* Now: the same layout. */
	pk_log_timestamp(buf, sizeof(buf));
	size_t n = strlen(buf);
	assert_true(n >= 20 && n <= 24);
	assert_int_equal(buf[n - 1], 'Z');
	assert_int_equal(buf[19] == '.' || buf[19] == 'Z', 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_shape, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_escaping, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_long_record, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_level_filter, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_subsystems, setup, teardown),
	    cmocka_unit_test(test_parse_level),
	    cmocka_unit_test(test_timestamp),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
