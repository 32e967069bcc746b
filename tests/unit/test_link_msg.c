/*
 * Node-link control messages (dataplane/link_msg.c): every message type
 * through its encoder and back, a 1000-entry table, split and back-to-back
 * input, and the catalogue of frames decode must refuse. Run under ASan, the
 * decode/clear pairs here also show a decoded message is fully released.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "link_msg.h"

/* Everything queued in q, as one flat buffer (owned by the caller); the
 * queue is cleared. */
static uint8_t *flatten(struct pk_bufq *q, size_t *len)
{
	*len = q->len;
	uint8_t *b = malloc(*len ? *len : 1);
	assert_non_null(b);
	assert_int_equal(pk_bufq_copy(q, b, *len), *len);
	pk_bufq_clear(q);
	return b;
}

/* A frame around raw bytes: the 4-byte big-endian length, then json. */
static uint8_t *frame_raw(const char *json, size_t n, size_t *len)
{
	uint8_t *b = malloc(n + 4);
	assert_non_null(b);
	b[0] = (uint8_t)(n >> 24);
	b[1] = (uint8_t)(n >> 16);
	b[2] = (uint8_t)(n >> 8);
	b[3] = (uint8_t)n;
	memcpy(b + 4, json, n);
	*len = n + 4;
	return b;
}

/* Decode one framed message that must be whole and valid. */
static void decode_ok(const uint8_t *b, size_t len, struct pk_link_msg *m)
{
	char err[128] = "";
	ssize_t n = pk_link_msg_decode(b, len, m, err, sizeof(err));
	if (n < 0)
		fail_msg("decode: %s", err);
	assert_int_equal(n, len);
}

/* json, framed, must be refused with an error. */
static void refused(const char *json)
{
	size_t len;
	uint8_t *b = frame_raw(json, strlen(json), &len);
	struct pk_link_msg m;
	char err[128] = "";
	ssize_t n = pk_link_msg_decode(b, len, &m, err, sizeof(err));
	if (n != -1)
		fail_msg("accepted: %s", json);
	assert_true(err[0] != '\0');
	/* a refused message holds nothing */
	assert_null(m.id);
	assert_null(m.eps);
	assert_int_equal(m.n_eps, 0);
	free(b);
}

static const struct pk_link_ep *find_ep(const struct pk_link_msg *m, const char *name)
{
	for (size_t i = 0; i < m->n_eps; i++)
		if (!strcmp(m->eps[i].endpoint, name))
			return &m->eps[i];
	return NULL;
}

static void test_hello(void **state)
{
	(void)state;
	struct pk_bufq q;
	pk_bufq_init(&q, 1 << 20);
	pk_link_msg_hello(&q, "node-a", "10.0.0.1:8000", "10.0.0.1:8002", "10.0.0.1:8003",
	                  "proof.jwt.sig");
	size_t len;
	uint8_t *b = flatten(&q, &len);
	struct pk_link_msg m;
	decode_ok(b, len, &m);
	assert_int_equal(m.type, PK_LINK_HELLO);
	assert_string_equal(m.id, "node-a");
	assert_string_equal(m.proxy_addr, "10.0.0.1:8000");
	assert_string_equal(m.admin_addr, "10.0.0.1:8002");
	assert_string_equal(m.cluster_addr, "10.0.0.1:8003");
	assert_string_equal(m.proof, "proof.jwt.sig");
	assert_null(m.eps);
	pk_link_msg_clear(&m);
	assert_null(m.id);
	assert_null(m.proof);
	free(b);

	/* no proof (the dialler's hello): absent, not "" */
	pk_link_msg_hello(&q, "node-b", "[::1]:8000", NULL, "[::1]:8003", NULL);
	b = flatten(&q, &len);
	decode_ok(b, len, &m);
	assert_int_equal(m.type, PK_LINK_HELLO);
	assert_string_equal(m.id, "node-b");
	assert_string_equal(m.proxy_addr, "[::1]:8000");
	assert_string_equal(m.admin_addr, ""); /* NULL is sent as "" */
	assert_string_equal(m.cluster_addr, "[::1]:8003");
	assert_null(m.proof);
	pk_link_msg_clear(&m);
	free(b);

	/* a hello with only an id is enough; the addresses are absent */
	const char *only_id = "{\"type\":\"hello\",\"id\":\"x\"}";
	b = frame_raw(only_id, strlen(only_id), &len);
	decode_ok(b, len, &m);
	assert_string_equal(m.id, "x");
	assert_null(m.proxy_addr);
	assert_null(m.cluster_addr);
	pk_link_msg_clear(&m);
	free(b);
}

static void test_simple(void **state)
{
	(void)state;
	struct pk_bufq q;
	pk_bufq_init(&q, 1 << 20);
	const enum pk_link_msg_type types[] = {PK_LINK_RESYNC, PK_LINK_LEAVING};
	for (size_t i = 0; i < 2; i++) {
		pk_link_msg_simple(&q, types[i]);
		size_t len;
		uint8_t *b = flatten(&q, &len);
		struct pk_link_msg m;
		decode_ok(b, len, &m);
		assert_int_equal(m.type, types[i]);
		assert_null(m.id);
		assert_int_equal(m.n_eps, 0);
		pk_link_msg_clear(&m);
		free(b);
	}
}

static void test_endpoints(void **state)
{
	(void)state;
	struct pk_bufq q;
	pk_bufq_init(&q, 1 << 20);

	/* a snapshot */
	struct pk_link_eps_writer *w = pk_link_eps_begin(1, 7, 0);
	pk_link_eps_add(w, "my-endpoint", 3);
	pk_link_eps_add(w, "other", 1);
	pk_link_eps_add(w, "max", INT32_MAX);
	pk_link_eps_end(w, &q);
	size_t len;
	uint8_t *b = flatten(&q, &len);
	struct pk_link_msg m;
	decode_ok(b, len, &m);
	assert_int_equal(m.type, PK_LINK_ENDPOINTS);
	assert_int_equal(m.full, 1);
	assert_int_equal(m.version, 7);
	assert_int_equal(m.base, 0);
	assert_int_equal(m.n_eps, 3);
	assert_int_equal(find_ep(&m, "my-endpoint")->count, 3);
	assert_int_equal(find_ep(&m, "other")->count, 1);
	assert_int_equal(find_ep(&m, "max")->count, INT32_MAX);
	pk_link_msg_clear(&m);
	assert_null(m.eps);
	assert_int_equal(m.n_eps, 0);
	free(b);

	/* a delta, with a gone endpoint (0) and versions past 2^32 */
	w = pk_link_eps_begin(0, 5000000001ull, 5000000000ull);
	pk_link_eps_add(w, "gone", 0);
	pk_link_eps_end(w, &q);
	b = flatten(&q, &len);
	decode_ok(b, len, &m);
	assert_int_equal(m.type, PK_LINK_ENDPOINTS);
	assert_int_equal(m.full, 0);
	assert_true(m.version == 5000000001ull);
	assert_true(m.base == 5000000000ull);
	assert_int_equal(m.n_eps, 1);
	assert_string_equal(m.eps[0].endpoint, "gone");
	assert_int_equal(m.eps[0].count, 0);
	pk_link_msg_clear(&m);
	free(b);

	/* an empty snapshot (a node with no upstreams) */
	w = pk_link_eps_begin(1, 1, 0);
	pk_link_eps_end(w, &q);
	b = flatten(&q, &len);
	decode_ok(b, len, &m);
	assert_int_equal(m.full, 1);
	assert_int_equal(m.n_eps, 0);
	pk_link_msg_clear(&m);
	free(b);

	/* a writer that is begun and ended at once frees itself; so does
	 * one whose output is never decoded */
	w = pk_link_eps_begin(0, 2, 1);
	pk_link_eps_add(w, "a", 1);
	pk_link_eps_end(w, &q);
	pk_bufq_clear(&q);
}

static void test_thousand_endpoints(void **state)
{
	(void)state;
	struct pk_bufq q;
	pk_bufq_init(&q, 1 << 20);
	struct pk_link_eps_writer *w = pk_link_eps_begin(1, 42, 0);
	char name[32];
	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof(name), "ep-%04d", i);
		pk_link_eps_add(w, name, i + 1);
	}
	pk_link_eps_end(w, &q);
	size_t len;
	uint8_t *b = flatten(&q, &len);
	struct pk_link_msg m;
	decode_ok(b, len, &m);
	assert_int_equal(m.n_eps, 1000);
	assert_int_equal(m.version, 42);
	/* each name once, with its count */
	char seen[1000] = {0};
	for (size_t i = 0; i < m.n_eps; i++) {
		int k;
		assert_int_equal(sscanf(m.eps[i].endpoint, "ep-%d", &k), 1);
		assert_in_range(k, 0, 999);
		assert_int_equal(seen[k], 0);
		seen[k] = 1;
		assert_int_equal(m.eps[i].count, k + 1);
	}
	pk_link_msg_clear(&m);
	free(b);
}

static void test_split_input(void **state)
{
	(void)state;
	struct pk_bufq q;
	pk_bufq_init(&q, 1 << 20);
	pk_link_msg_hello(&q, "node-a", "p:1", "a:2", "c:3", "tok");
	size_t len;
	uint8_t *b = flatten(&q, &len);
	struct pk_link_msg m;
	char err[128];
	/* every prefix (on its own buffer, so ASan sees any over-read) */
	for (size_t i = 0; i < len; i++) {
		uint8_t *p = malloc(i ? i : 1);
		memcpy(p, b, i);
		assert_int_equal(pk_link_msg_decode(p, i, &m, err, sizeof(err)), 0);
		assert_null(m.id);
		free(p);
	}
	decode_ok(b, len, &m);
	assert_string_equal(m.id, "node-a");
	pk_link_msg_clear(&m);
	free(b);
}

static void test_back_to_back(void **state)
{
	(void)state;
	struct pk_bufq q;
	pk_bufq_init(&q, 1 << 20);
	pk_link_msg_hello(&q, "node-a", "p:1", "a:2", "c:3", NULL);
	struct pk_link_eps_writer *w = pk_link_eps_begin(1, 1, 0);
	pk_link_eps_add(w, "e", 2);
	pk_link_eps_end(w, &q);
	pk_link_msg_simple(&q, PK_LINK_LEAVING);
	size_t len;
	uint8_t *b = flatten(&q, &len);

	struct pk_link_msg m;
	char err[128];
	size_t off = 0;
	ssize_t n = pk_link_msg_decode(b, len, &m, err, sizeof(err));
	assert_true(n > 0 && (size_t)n < len);
	assert_int_equal(m.type, PK_LINK_HELLO);
	assert_string_equal(m.id, "node-a");
	pk_link_msg_clear(&m);
	off += (size_t)n;

	n = pk_link_msg_decode(b + off, len - off, &m, err, sizeof(err));
	assert_true(n > 0 && off + (size_t)n < len);
	assert_int_equal(m.type, PK_LINK_ENDPOINTS);
	assert_int_equal(m.n_eps, 1);
	assert_string_equal(m.eps[0].endpoint, "e");
	assert_int_equal(m.eps[0].count, 2);
	pk_link_msg_clear(&m);
	off += (size_t)n;

	n = pk_link_msg_decode(b + off, len - off, &m, err, sizeof(err));
	assert_int_equal(off + (size_t)n, len);
	assert_int_equal(m.type, PK_LINK_LEAVING);
	pk_link_msg_clear(&m);
	off += (size_t)n;

	assert_int_equal(pk_link_msg_decode(b + off, 0, &m, err, sizeof(err)), 0);
	free(b);
}

static void test_bad_length(void **state)
{
	(void)state;
	struct pk_link_msg m;
	char err[128];

	/* length 0: refused at once, not "need more" */
	const uint8_t zero[4] = {0, 0, 0, 0};
	err[0] = '\0';
	assert_int_equal(pk_link_msg_decode(zero, sizeof(zero), &m, err, sizeof(err)), -1);
	assert_true(err[0] != '\0');

	/* one past the cap: refused on the 4 header bytes alone */
	uint32_t big = PK_LINK_MSG_MAX + 1;
	const uint8_t over[4] = {(uint8_t)(big >> 24), (uint8_t)(big >> 16), (uint8_t)(big >> 8),
	                         (uint8_t)big};
	err[0] = '\0';
	assert_int_equal(pk_link_msg_decode(over, sizeof(over), &m, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "length"));
	const uint8_t huge[4] = {0xff, 0xff, 0xff, 0xff};
	assert_int_equal(pk_link_msg_decode(huge, sizeof(huge), &m, err, sizeof(err)), -1);

	/* exactly the cap: a valid length, so it waits for the body */
	uint32_t cap = PK_LINK_MSG_MAX;
	const uint8_t at_cap[5] = {(uint8_t)(cap >> 24), (uint8_t)(cap >> 16), (uint8_t)(cap >> 8),
	                           (uint8_t)cap, '{'};
	assert_int_equal(pk_link_msg_decode(at_cap, sizeof(at_cap), &m, err, sizeof(err)), 0);
}

static void test_refused(void **state)
{
	(void)state;
	/* not JSON, or not an object */
	refused("hello");
	refused("{");
	refused("{\"type\":\"resync\"");
	refused("[\"type\",\"hello\"]");
	refused("\"resync\"");
	refused("17");
	refused("null");
	/* type missing, not a string, or unknown */
	refused("{}");
	refused("{\"id\":\"a\"}");
	refused("{\"type\":1}");
	refused("{\"type\":null}");
	refused("{\"type\":\"bye\"}");
	refused("{\"type\":\"\"}");
	refused("{\"type\":\"HELLO\",\"id\":\"a\"}");
	/* hello: id required, non-empty, every field a string of bounded size */
	refused("{\"type\":\"hello\"}");
	refused("{\"type\":\"hello\",\"id\":\"\"}");
	refused("{\"type\":\"hello\",\"id\":7}");
	refused("{\"type\":\"hello\",\"id\":null}");
	refused("{\"type\":\"hello\",\"id\":\"a\",\"proxy_addr\":1}");
	refused("{\"type\":\"hello\",\"id\":\"a\",\"proof\":{}}");
	char long_id[PK_LINK_MAX_ID + 64];
	char id[PK_LINK_MAX_ID + 2];
	memset(id, 'i', PK_LINK_MAX_ID + 1);
	id[PK_LINK_MAX_ID + 1] = '\0';
	snprintf(long_id, sizeof(long_id), "{\"type\":\"hello\",\"id\":\"%s\"}", id);
	refused(long_id);
	/* endpoints: the table is an object of non-negative int32 counts */
	refused("{\"type\":\"endpoints\"}");
	refused("{\"type\":\"endpoints\",\"endpoints\":[]}");
	refused("{\"type\":\"endpoints\",\"endpoints\":null}");
	refused("{\"type\":\"endpoints\",\"endpoints\":{\"a\":-1}}");
	refused("{\"type\":\"endpoints\",\"endpoints\":{\"a\":1.5}}");
	refused("{\"type\":\"endpoints\",\"endpoints\":{\"a\":1.0}}");
	refused("{\"type\":\"endpoints\",\"endpoints\":{\"a\":\"2\"}}");
	refused("{\"type\":\"endpoints\",\"endpoints\":{\"a\":true}}");
	refused("{\"type\":\"endpoints\",\"endpoints\":{\"a\":null}}");
	refused("{\"type\":\"endpoints\",\"endpoints\":{\"a\":2147483648}}");
	refused("{\"type\":\"endpoints\",\"endpoints\":{\"a\":18446744073709551615}}");
	refused("{\"type\":\"endpoints\",\"endpoints\":{\"\":1}}");
	/* a bad entry after good ones: what was taken is released */
	refused("{\"type\":\"endpoints\",\"endpoints\":{\"a\":1,\"b\":2,\"c\":-3}}");
	refused("{\"type\":\"endpoints\",\"full\":1,\"endpoints\":{}}");
	refused("{\"type\":\"endpoints\",\"version\":-1,\"endpoints\":{}}");
	refused("{\"type\":\"endpoints\",\"base\":\"1\",\"endpoints\":{}}");
	refused("{\"type\":\"endpoints\",\"version\":1.5,\"endpoints\":{}}");
	/* nesting deeper than any of ours */
	refused("{\"type\":\"resync\",\"x\":{\"y\":{\"z\":{\"w\":{}}}}}");
	/* trailing bytes inside the length */
	refused("{\"type\":\"resync\"}x");
	refused("{\"type\":\"resync\"}{\"type\":\"resync\"}");
	size_t len;
	uint8_t *b = frame_raw("{\"type\":\"resync\"}\0", 18, &len);
	struct pk_link_msg m;
	char err[128];
	assert_int_equal(pk_link_msg_decode(b, len, &m, err, sizeof(err)), -1);
	free(b);
	/* whitespace around the object is JSON, not garbage */
	const char *ws = " {\"type\":\"resync\"}\n";
	b = frame_raw(ws, strlen(ws), &len);
	decode_ok(b, len, &m);
	assert_int_equal(m.type, PK_LINK_RESYNC);
	pk_link_msg_clear(&m);
	free(b);
}

static void test_endpoint_limits(void **state)
{
	(void)state;
	struct pk_bufq q;
	pk_bufq_init(&q, 64u << 20);
	char name[32];
	/* exactly the cap is accepted, one more is refused */
	for (int extra = 0; extra < 2; extra++) {
		struct pk_link_eps_writer *w = pk_link_eps_begin(1, 1, 0);
		for (int i = 0; i < PK_LINK_MAX_ENDPOINTS + extra; i++) {
			snprintf(name, sizeof(name), "%d", i);
			pk_link_eps_add(w, name, 1);
		}
		pk_link_eps_end(w, &q);
		size_t len;
		uint8_t *b = flatten(&q, &len);
		assert_true(len <= PK_LINK_MSG_MAX + 4);
		struct pk_link_msg m;
		char err[128] = "";
		ssize_t n = pk_link_msg_decode(b, len, &m, err, sizeof(err));
		if (extra == 0) {
			assert_int_equal(n, len);
			assert_int_equal(m.n_eps, PK_LINK_MAX_ENDPOINTS);
			pk_link_msg_clear(&m);
		} else {
			assert_int_equal(n, -1);
			assert_non_null(strstr(err, "endpoints"));
			assert_null(m.eps);
		}
		free(b);
	}

	/* an endpoint name at the ID cap is taken, one byte more is not */
	char json[PK_LINK_MAX_ID + 128];
	char ep[PK_LINK_MAX_ID + 2];
	memset(ep, 'e', PK_LINK_MAX_ID);
	ep[PK_LINK_MAX_ID] = '\0';
	snprintf(json, sizeof(json), "{\"type\":\"endpoints\",\"endpoints\":{\"%s\":1}}", ep);
	size_t len;
	uint8_t *b = frame_raw(json, strlen(json), &len);
	struct pk_link_msg m;
	decode_ok(b, len, &m);
	assert_int_equal(strlen(m.eps[0].endpoint), PK_LINK_MAX_ID);
	pk_link_msg_clear(&m);
	free(b);
	ep[PK_LINK_MAX_ID] = 'e';
	ep[PK_LINK_MAX_ID + 1] = '\0';
	snprintf(json, sizeof(json), "{\"type\":\"endpoints\",\"endpoints\":{\"%s\":1}}", ep);
	refused(json);
}

/* decode, clear and decode again into the same struct, over and over: under
 * ASan any field clear misses is a leak, any double free a crash. */
static void test_clear_releases(void **state)
{
	(void)state;
	struct pk_bufq q;
	pk_bufq_init(&q, 1 << 20);
	pk_link_msg_hello(&q, "n", "p:1", "a:2", "c:3", "proof");
	struct pk_link_eps_writer *w = pk_link_eps_begin(1, 3, 2);
	pk_link_eps_add(w, "x", 1);
	pk_link_eps_add(w, "y", 2);
	pk_link_eps_end(w, &q);
	pk_link_msg_simple(&q, PK_LINK_RESYNC);
	size_t len;
	uint8_t *b = flatten(&q, &len);
	struct pk_link_msg m;
	char err[128];
	for (int round = 0; round < 3; round++) {
		size_t off = 0;
		ssize_t n;
		while ((n = pk_link_msg_decode(b + off, len - off, &m, err, sizeof(err))) > 0) {
			off += (size_t)n;
			pk_link_msg_clear(&m);
			/* cleared twice is harmless: clear leaves an empty message */
			pk_link_msg_clear(&m);
		}
		assert_int_equal(n, 0);
		assert_int_equal(off, len);
	}
	free(b);
}

static int teardown(void **state)
{
	(void)state;
	pk_buf_freelist_release();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hello),           cmocka_unit_test(test_simple),
	    cmocka_unit_test(test_endpoints),       cmocka_unit_test(test_thousand_endpoints),
	    cmocka_unit_test(test_split_input),     cmocka_unit_test(test_back_to_back),
	    cmocka_unit_test(test_bad_length),      cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_endpoint_limits), cmocka_unit_test(test_clear_releases),
	};
	return cmocka_run_group_tests(tests, NULL, teardown);
}
