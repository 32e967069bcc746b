/*
 * Unit tests for controller/watch.c: the watch-stream parser, fed whole,
 * split at every byte position and byte by byte, and fed every kind of bad
 * input it must refuse.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "watch.h"

/* ---- a recording callback ---- */

struct rec {
	char log[4096]; /* "TYPE name rv;" per event */
	size_t log_len;
	int codes[16]; /* pk_watch_status_code of each ERROR event */
	int ncodes;
	int stop_at; /* return -1 on this event (1-based); 0 never */
	int seen;
};

static const char *type_name(enum pk_watch_type t)
{
	switch (t) {
	case PK_WATCH_ADDED:
		return "ADDED";
	case PK_WATCH_MODIFIED:
		return "MODIFIED";
	case PK_WATCH_DELETED:
		return "DELETED";
	case PK_WATCH_BOOKMARK:
		return "BOOKMARK";
	case PK_WATCH_ERROR:
		return "ERROR";
	}
	return "?";
}

static int on_event(void *ud, enum pk_watch_type type, struct json_object *object)
{
	struct rec *r = ud;
	assert_non_null(object);
	assert_true(json_object_is_type(object, json_type_object));
	const char *name = "-";
	struct json_object *meta, *jn;
	if (json_object_object_get_ex(object, "metadata", &meta) &&
	    json_object_object_get_ex(meta, "name", &jn))
		name = json_object_get_string(jn);
	const char *rv = pk_watch_object_rv(object);
	int n = snprintf(r->log + r->log_len, sizeof(r->log) - r->log_len, "%s %s %s;",
	                 type_name(type), name, rv ? rv : "-");
	assert_true(n > 0 && (size_t)n < sizeof(r->log) - r->log_len);
	r->log_len += (size_t)n;
	if (type == PK_WATCH_ERROR && r->ncodes < 16)
		r->codes[r->ncodes++] = pk_watch_status_code(object);
	r->seen++;
	if (r->stop_at && r->seen == r->stop_at)
		return -1;
	return 0;
}

/* Parse s fed as the given pieces (cuts: ascending split offsets), then
 * finish. Returns the result of the first failing call, or 0. */
static int parse_cuts(const char *s, size_t len, const size_t *cuts, int ncuts, size_t max,
                      struct rec *r, char *err, size_t errlen, uint64_t *events)
{
	struct pk_watch_parser *p = pk_watch_parser_new(max, on_event, r);
	int rc = 0;
	size_t pos = 0;
	for (int i = 0; i <= ncuts && rc == 0; i++) {
		size_t end = i < ncuts ? cuts[i] : len;
		/* A separate allocation per piece, so a read past it is caught
		 * by ASan builds. */
		char *piece = malloc(end - pos + 1);
		assert_non_null(piece);
		memcpy(piece, s + pos, end - pos);
		rc = pk_watch_parser_feed(p, piece, end - pos);
		free(piece);
		pos = end;
	}
	if (rc == 0)
		rc = pk_watch_parser_finish(p);
	if (err)
		snprintf(err, errlen, "%s", pk_watch_parser_error(p));
	if (events)
		*events = pk_watch_parser_events(p);
	if (rc == 0)
		assert_string_equal(pk_watch_parser_error(p), "");
	pk_watch_parser_free(p);
	return rc;
}

static int parse_whole(const char *s, size_t max, struct rec *r, char *err, size_t errlen)
{
	return parse_cuts(s, strlen(s), NULL, 0, max, r, err, errlen, NULL);
}

#define EV(type, name, rv)                                                                         \
	"{\"type\":\"" type                                                                        \
	"\",\"object\":{\"kind\":\"PikoCluster\",\"metadata\":{\"name\":\"" name                   \
	"\",\"namespace\":\"ns\",\"resourceVersion\":\"" rv "\"},\"spec\":{\"replicas\":3}}}\n"

static const char STREAM[] = EV("ADDED", "a", "10") EV(
    "MODIFIED", "a",
    "11") "\r\n"
          "\n" EV("DELETED", "a",
                  "12") "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"PikoCluster\",\"metadata\":"
                        "{\"resourceVersion\":\"13\"}}}\r\n"
                        "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\","
                        "\"status\":"
                        "\"Failure\",\"message\":\"too old resource version: 1 "
                        "(13)\",\"reason\":\"Expired\","
                        "\"code\":410}}\n";

static const char STREAM_LOG[] = "ADDED a 10;MODIFIED a 11;DELETED a 12;BOOKMARK - 13;ERROR - -;";

/* ---- tests ---- */

static void test_whole_stream(void **state)
{
	(void)state;
	struct rec r = {0};
	uint64_t events;
	assert_int_equal(parse_cuts(STREAM, strlen(STREAM), NULL, 0, 0, &r, NULL, 0, &events), 0);
	assert_string_equal(r.log, STREAM_LOG);
	assert_int_equal(events, 5);
	assert_int_equal(r.ncodes, 1);
	assert_int_equal(r.codes[0], 410);
}

static void test_split_every_position(void **state)
{
	(void)state;
	size_t len = strlen(STREAM);
	for (size_t cut = 0; cut <= len; cut++) {
		struct rec r = {0};
		uint64_t events;
		assert_int_equal(parse_cuts(STREAM, len, &cut, 1, 0, &r, NULL, 0, &events), 0);
		if (strcmp(r.log, STREAM_LOG) != 0)
			fail_msg("cut at %zu: got %s", cut, r.log);
		assert_int_equal(events, 5);
	}
	/* Two cuts at every pair of positions in the first two events. */
	size_t two = strlen(EV("ADDED", "a", "10") EV("MODIFIED", "a", "11"));
	for (size_t a = 0; a <= two; a += 3) {
		for (size_t b = a; b <= two; b += 5) {
			struct rec r = {0};
			size_t cuts[2] = {a, b};
			assert_int_equal(parse_cuts(STREAM, len, cuts, 2, 0, &r, NULL, 0, NULL), 0);
			assert_string_equal(r.log, STREAM_LOG);
		}
	}
}

static void test_byte_by_byte(void **state)
{
	(void)state;
	size_t len = strlen(STREAM);
	size_t *cuts = malloc(len * sizeof(*cuts));
	assert_non_null(cuts);
	for (size_t i = 0; i < len; i++)
		cuts[i] = i + 1;
	struct rec r = {0};
	assert_int_equal(parse_cuts(STREAM, len, cuts, (int)len, 0, &r, NULL, 0, NULL), 0);
	assert_string_equal(r.log, STREAM_LOG);
	free(cuts);
}

/* Checks that events arrive in order: object i has metadata.name "o<i>". */
static int on_event_seq(void *ud, enum pk_watch_type type, struct json_object *object)
{
	int *next = ud;
	char want[32];
	snprintf(want, sizeof(want), "o%d", *next);
	struct json_object *meta, *jn;
	assert_int_equal(type, PK_WATCH_ADDED);
	assert_true(json_object_object_get_ex(object, "metadata", &meta));
	assert_true(json_object_object_get_ex(meta, "name", &jn));
	assert_string_equal(json_object_get_string(jn), want);
	(*next)++;
	return 0;
}

static void test_many_in_one_feed(void **state)
{
	(void)state;
	/* 500 events in one buffer, fed in one call. */
	size_t cap = 500 * 100;
	char *s = malloc(cap);
	assert_non_null(s);
	size_t n = 0;
	for (int i = 0; i < 500; i++)
		n += (size_t)snprintf(
		    s + n, cap - n,
		    "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"o%d\","
		    "\"resourceVersion\":\"%d\"}}}\n",
		    i, i + 1);
	assert_true(n < cap);
	int next = 0;
	struct pk_watch_parser *p = pk_watch_parser_new(0, on_event_seq, &next);
	assert_int_equal(pk_watch_parser_feed(p, s, n), 0);
	assert_int_equal(next, 500);
	assert_int_equal(pk_watch_parser_events(p), 500);
	assert_int_equal(pk_watch_parser_finish(p), 0);
	pk_watch_parser_free(p);
	free(s);
}

static void test_bookmark(void **state)
{
	(void)state;
	struct rec r = {0};
	assert_int_equal(parse_whole("{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\","
	                             "\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":"
	                             "\"12746\",\"annotations\":{\"k8s.io/initial-events-end\":"
	                             "\"true\"}}}}\n",
	                             0, &r, NULL, 0),
	                 0);
	assert_string_equal(r.log, "BOOKMARK - 12746;");
}

static void test_error_410(void **state)
{
	(void)state;
	struct rec r = {0};
	assert_int_equal(
	    parse_whole("{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\","
	                "\"metadata\":{},\"status\":\"Failure\",\"message\":\"too old resource "
	                "version: 5 (100)\",\"reason\":\"Expired\",\"code\":410}}\n"
	                "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":500}}\n"
	                "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\"}}\n"
	                "{\"type\":\"ERROR\",\"object\":{\"code\":\"410\"}}\n",
	                0, &r, NULL, 0),
	    0);
	assert_int_equal(r.ncodes, 4);
	assert_int_equal(r.codes[0], 410);
	assert_int_equal(r.codes[1], 500);
	assert_int_equal(r.codes[2], 0); /* absent */
	assert_int_equal(r.codes[3], 0); /* not an integer */
	assert_int_equal(pk_watch_status_code(NULL), 0);
}

static void test_helpers(void **state)
{
	(void)state;
	struct json_object *o = json_tokener_parse("{\"metadata\":{\"resourceVersion\":\"7\"}}");
	assert_string_equal(pk_watch_object_rv(o), "7");
	json_object_put(o);
	o = json_tokener_parse("{\"metadata\":{\"resourceVersion\":7}}");
	assert_null(pk_watch_object_rv(o));
	json_object_put(o);
	o = json_tokener_parse("{\"metadata\":[]}");
	assert_null(pk_watch_object_rv(o));
	json_object_put(o);
	assert_null(pk_watch_object_rv(NULL));
	o = json_tokener_parse("{\"code\":99999999999}");
	assert_int_equal(pk_watch_status_code(o), 0);
	json_object_put(o);
}

static void test_oversized(void **state)
{
	(void)state;
	char err[200];
	struct rec r = {0};
	/* Exactly at the cap is fine (the '\n' does not count). */
	const char *ev = "{\"type\":\"ADDED\",\"object\":{}}";
	size_t evlen = strlen(ev);
	char line[64];
	snprintf(line, sizeof(line), "%s\n", ev);
	assert_int_equal(parse_whole(line, evlen, &r, err, sizeof(err)), 0);
	assert_int_equal(r.seen, 1);

	/* One byte over, complete in one feed. */
	memset(&r, 0, sizeof(r));
	assert_int_equal(parse_whole(line, evlen - 1, &r, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "event larger than"));
	assert_int_equal(r.seen, 0);

	/* Buffered bytes without a newline count: refused at feed time, long
	 * before any '\n' arrives. */
	struct pk_watch_parser *p = pk_watch_parser_new(100, on_event, &r);
	char junk[60];
	memset(junk, 'x', sizeof(junk));
	assert_int_equal(pk_watch_parser_feed(p, junk, sizeof(junk)), 0);
	assert_int_equal(pk_watch_parser_feed(p, junk, sizeof(junk)), -1);
	assert_non_null(strstr(pk_watch_parser_error(p), "event larger than 100 bytes"));
	/* Sticky. */
	assert_int_equal(pk_watch_parser_feed(p, "\n", 1), -1);
	assert_int_equal(pk_watch_parser_finish(p), -1);
	pk_watch_parser_free(p);

	/* The same cap whatever the split: earlier events are delivered, the
	 * big one is refused. */
	char s[400];
	snprintf(s, sizeof(s), "%s\n{\"type\":\"ADDED\",\"object\":{\"pad\":\"%0150d\"}}\n", ev, 0);
	size_t len = strlen(s);
	for (size_t cut = 0; cut <= len; cut++) {
		memset(&r, 0, sizeof(r));
		assert_int_equal(parse_cuts(s, len, &cut, 1, 100, &r, err, sizeof(err), NULL), -1);
		assert_string_equal(err, "event larger than 100 bytes");
		assert_int_equal(r.seen, 1);
	}
}

static void expect_malformed(const char *s, const char *why)
{
	char err[200];
	struct rec r = {0};
	if (parse_whole(s, 0, &r, err, sizeof(err)) != -1)
		fail_msg("accepted: %s", s);
	if (!strstr(err, why))
		fail_msg("%s: error \"%s\", want \"%s\"", s, err, why);
	/* Nothing after the bad line is delivered. */
	assert_int_equal(r.seen, 0);
}

static void test_malformed(void **state)
{
	(void)state;
	expect_malformed("not json\n{\"type\":\"ADDED\",\"object\":{}}\n", "malformed event");
	expect_malformed("{\"type\":\"ADDED\",\"object\":{}\n", "incomplete JSON");
	/* Trailing data (json-c's strict mode already reports it). */
	expect_malformed("{\"type\":\"ADDED\",\"object\":{}}}\n", "malformed event");
	expect_malformed("{\"type\":\"ADDED\",\"object\":{}} {}\n", "malformed event");
	expect_malformed("[1,2]\n", "not a JSON object");
	expect_malformed("\"ADDED\"\n", "not a JSON object");
	expect_malformed("42 \n", "not a JSON object");
	expect_malformed("{'type':'ADDED','object':{}}\n", "malformed event");
	expect_malformed("{\"object\":{}}\n", "no \"type\"");
	expect_malformed("{\"type\":1,\"object\":{}}\n", "no \"type\"");
	expect_malformed("{\"type\":\"ADDED\"}\n", "\"object\" is not an object");
	expect_malformed("{\"type\":\"ADDED\",\"object\":null}\n", "\"object\" is not an object");
	expect_malformed("{\"type\":\"ADDED\",\"object\":[]}\n", "\"object\" is not an object");
	/* A NUL inside a line. */
	static const char nul[] = "{\"type\":\"ADDED\",\"object\":{}}\0garbage\n";
	struct rec r = {0};
	char err[200];
	assert_int_equal(parse_cuts(nul, sizeof(nul) - 1, NULL, 0, 0, &r, err, sizeof(err), NULL),
	                 -1);
	assert_string_equal(err, "malformed event: NUL byte");
	assert_int_equal(r.seen, 0);

	/* Good events before the bad line are delivered; the failure is
	 * sticky. */
	memset(&r, 0, sizeof(r));
	struct pk_watch_parser *p = pk_watch_parser_new(0, on_event, &r);
	const char *s = "{\"type\":\"ADDED\",\"object\":{}}\n{oops}\n";
	assert_int_equal(pk_watch_parser_feed(p, s, strlen(s)), -1);
	assert_int_equal(r.seen, 1);
	const char *good = "{\"type\":\"ADDED\",\"object\":{}}\n";
	assert_int_equal(pk_watch_parser_feed(p, good, strlen(good)), -1);
	assert_int_equal(r.seen, 1);
	assert_int_equal(pk_watch_parser_events(p), 1);
	assert_non_null(strstr(pk_watch_parser_error(p), "malformed event"));
	pk_watch_parser_free(p);
}

static void test_unknown_type(void **state)
{
	(void)state;
	expect_malformed("{\"type\":\"RENAMED\",\"object\":{}}\n",
	                 "unknown event type \"RENAMED\"");
	expect_malformed("{\"type\":\"added\",\"object\":{}}\n", "unknown event type");
	expect_malformed("{\"type\":\"\",\"object\":{}}\n", "unknown event type");
}

static void test_finish(void **state)
{
	(void)state;
	char err[200];
	struct rec r = {0};
	/* A final event without its newline is delivered at finish. */
	assert_int_equal(parse_whole("{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":"
	                             "\"x\"}}}\n{\"type\":\"DELETED\",\"object\":{\"metadata\":{"
	                             "\"name\":\"x\"}}}",
	                             0, &r, err, sizeof(err)),
	                 0);
	assert_string_equal(r.log, "ADDED x -;DELETED x -;");

	/* A partial one is an error. */
	memset(&r, 0, sizeof(r));
	assert_int_equal(parse_whole("{\"type\":\"ADDED\",\"object\":{}}\n{\"type\":\"DEL", 0, &r,
	                             err, sizeof(err)),
	                 -1);
	assert_string_equal(err, "truncated event at end of stream");
	assert_int_equal(r.seen, 1);

	/* Trailing blanks are not an event. */
	memset(&r, 0, sizeof(r));
	assert_int_equal(
	    parse_whole("{\"type\":\"ADDED\",\"object\":{}}\r\n\r\n  \r", 0, &r, err, sizeof(err)),
	    0);
	assert_int_equal(r.seen, 1);

	/* An empty stream, and finish twice. */
	struct pk_watch_parser *p = pk_watch_parser_new(0, on_event, &r);
	assert_int_equal(pk_watch_parser_finish(p), 0);
	assert_int_equal(pk_watch_parser_feed(p, NULL, 0), 0);
	assert_int_equal(pk_watch_parser_finish(p), 0);
	assert_int_equal(pk_watch_parser_events(p), 0);
	pk_watch_parser_free(p);
	pk_watch_parser_free(NULL);
}

static void test_stop(void **state)
{
	(void)state;
	struct rec r = {.stop_at = 2};
	struct pk_watch_parser *p = pk_watch_parser_new(0, on_event, &r);
	assert_int_equal(pk_watch_parser_feed(p, STREAM, strlen(STREAM)), -1);
	assert_string_equal(pk_watch_parser_error(p), "stopped");
	assert_int_equal(r.seen, 2);
	assert_int_equal(pk_watch_parser_events(p), 2);
	assert_string_equal(r.log, "ADDED a 10;MODIFIED a 11;");
	/* Stays stopped. */
	assert_int_equal(pk_watch_parser_feed(p, STREAM, strlen(STREAM)), -1);
	assert_int_equal(pk_watch_parser_finish(p), -1);
	assert_int_equal(r.seen, 2);
	pk_watch_parser_free(p);

	/* A stop on the unterminated last event makes finish fail. */
	memset(&r, 0, sizeof(r));
	r.stop_at = 1;
	p = pk_watch_parser_new(0, on_event, &r);
	const char *s = "{\"type\":\"ADDED\",\"object\":{}}";
	assert_int_equal(pk_watch_parser_feed(p, s, strlen(s)), 0);
	assert_int_equal(r.seen, 0);
	assert_int_equal(pk_watch_parser_finish(p), -1);
	assert_string_equal(pk_watch_parser_error(p), "stopped");
	pk_watch_parser_free(p);
}

static void test_large_event_split(void **state)
{
	(void)state;
	/* A 1 MiB event in 1000-byte pieces: the buffer grows, and the work
	 * stays linear (this would be slow if each feed re-scanned). */
	size_t pad = 1 << 20;
	size_t cap = pad + 200;
	char *s = malloc(cap);
	assert_non_null(s);
	size_t n = (size_t)snprintf(s, cap,
	                            "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{"
	                            "\"name\":\"big\",\"resourceVersion\":\"9\"},\"data\":\"");
	memset(s + n, 'a', pad);
	n += pad;
	n += (size_t)snprintf(s + n, cap - n, "\"}}\n");
	size_t ncuts = n / 1000;
	size_t *cuts = malloc(ncuts * sizeof(*cuts));
	assert_non_null(cuts);
	for (size_t i = 0; i < ncuts; i++)
		cuts[i] = (i + 1) * 1000;
	struct rec r = {0};
	assert_int_equal(parse_cuts(s, n, cuts, (int)ncuts, 2u << 20, &r, NULL, 0, NULL), 0);
	assert_string_equal(r.log, "MODIFIED big 9;");
	free(cuts);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_whole_stream),
	    cmocka_unit_test(test_split_every_position),
	    cmocka_unit_test(test_byte_by_byte),
	    cmocka_unit_test(test_many_in_one_feed),
	    cmocka_unit_test(test_bookmark),
	    cmocka_unit_test(test_error_410),
	    cmocka_unit_test(test_helpers),
	    cmocka_unit_test(test_oversized),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_unknown_type),
	    cmocka_unit_test(test_finish),
	    cmocka_unit_test(test_stop),
	    cmocka_unit_test(test_large_event_split),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
