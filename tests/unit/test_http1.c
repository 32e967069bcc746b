/*
 * HTTP/1.1 reader and builders: heads, pipelining, raw body accounting at
 * every input split, upgrades, bodiless responses, limits, errors, and the
 * exact bytes of the heads and error responses the proxy writes.
 */
#include <assert.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http1.h"

/* A canonical record of what a reader reported, independent of how the
 * input was split: "H:<summary>|" per head, "D:<body bytes>|" per message
 * end, "E:<status>|" on error, "R:<raw bytes>|" for what follows an
 * upgrade. */
struct trace {
	char log[8192];
	size_t loglen;
	char body[4096];
	size_t bodylen;
	int upgraded;
	char raw[1024];
	size_t rawlen;
};

static void tlog(struct trace *t, const char *s, size_t n)
{
	assert_true(t->loglen + n < sizeof(t->log));
	/* cmocka's assert_true() does not return when it fails (it jumps out of
	 * the test) but is not declared noreturn: assert() says it to the
	 * analyzer, which otherwise goes on to copy past the end. */
	assert(t->loglen + n < sizeof(t->log));
	memcpy(t->log + t->loglen, s, n);
	t->loglen += n;
	t->log[t->loglen] = '\0';
}

static void tbody(struct trace *t, const char *s, size_t n)
{
	assert_true(t->bodylen + n <= sizeof(t->body));
	assert(t->bodylen + n <= sizeof(t->body)); /* as in tlog() */
	memcpy(t->body + t->bodylen, s, n);
	t->bodylen += n;
}

static void log_head(struct trace *t, const struct pk_http1_head *h)
{
	char s[512];
	if (h->method)
		snprintf(s, sizeof(s), "H:%s %s", h->method, h->url);
	else
		snprintf(s, sizeof(s), "H:%d", h->status);
	tlog(t, s, strlen(s));
	if (h->upgrade)
		tlog(t, " upgrade", 8);
	tlog(t, "|", 1);
}

/* Feed one piece of input, handling every event until it is used up. */
static void drive(struct pk_http1_reader *r, const char *d, size_t len, struct trace *t)
{
	size_t off = 0;
	if (t->upgraded) {
		memcpy(t->raw + t->rawlen, d, len);
		t->rawlen += len;
		return;
	}
	for (;;) {
		size_t used = 12345;
		enum pk_http1_event ev = pk_http1_reader_feed(r, d + off, len - off, &used);
		assert_true(used <= len - off);
		assert(used <= len - off); /* as in tlog() */
		switch (ev) {
		case PK_HTTP1_NEED_MORE:
			assert_int_equal(used, len - off);
			return;
		case PK_HTTP1_HEAD:
			off += used;
			log_head(t, pk_http1_reader_head(r));
			continue; /* always call again, even with nothing left */
		case PK_HTTP1_BODY:
			tbody(t, d + off, used);
			off += used;
			if (off == len)
				return;
			assert_true(used > 0);
			continue;
		case PK_HTTP1_DONE: {
			tbody(t, d + off, used);
			off += used;
			tlog(t, "D:", 2);
			tlog(t, t->body, t->bodylen);
			tlog(t, "|", 1);
			t->bodylen = 0;
			if (pk_http1_reader_head(r)->upgrade) {
				t->upgraded = 1;
				memcpy(t->raw + t->rawlen, d + off, len - off);
				t->rawlen += len - off;
				return;
			}
			if (off == len)
				return;
			continue;
		}
		case PK_HTTP1_ERROR: {
			int status = 0;
			assert_non_null(pk_http1_reader_error(r, &status));
			char s[32];
			snprintf(s, sizeof(s), "E:%d|", status);
			tlog(t, s, strlen(s));
			return;
		}
		}
	}
}

static void finish(struct pk_http1_reader *r, struct trace *t, int eof)
{
	if (eof && pk_http1_reader_eof(r)) {
		tlog(t, "EOF:", 4);
		tlog(t, t->body, t->bodylen);
		tlog(t, "|", 1);
		t->bodylen = 0;
	}
	if (t->rawlen) {
		tlog(t, "R:", 2);
		tlog(t, t->raw, t->rawlen);
		tlog(t, "|", 1);
	}
}

/* The trace for input split in two at every byte boundary, and fed one byte
 * at a time, must always be `expect`. */
static void check_splits(enum pk_http1_kind kind, int head_req, size_t max_head, const char *in,
                         int eof, const char *expect)
{
	size_t len = strlen(in);
	for (size_t k = 0; k <= len + 1; k++) {
		struct pk_http1_reader r;
		struct trace t;
		memset(&t, 0, sizeof(t));
		pk_http1_reader_init(&r, kind, max_head);
		pk_http1_reader_set_head_request(&r, head_req);
		if (k <= len) {
			/* heap copies so ASan sees any read past a piece */
			char *a = malloc(k + 1), *b = malloc(len - k + 1);
			memcpy(a, in, k);
			memcpy(b, in + k, len - k);
			drive(&r, a, k, &t);
			if (!strstr(t.log, "E:"))
				drive(&r, b, len - k, &t);
			free(a);
			free(b);
		} else {
			for (size_t i = 0; i < len && !strstr(t.log, "E:"); i++) {
				char *c = malloc(1);
				*c = in[i];
				drive(&r, c, 1, &t);
				free(c);
			}
		}
		finish(&r, &t, eof);
		if (strcmp(t.log, expect) != 0)
			fail_msg("split at %zu: got\n%s\nwant\n%s", k, t.log, expect);
		pk_http1_reader_free(&r);
	}
}

static void test_request_head(void **state)
{
	(void)state;
	static const char in[] = "POST /a/b?x=1&y=%20 HTTP/1.1\r\n"
	                         "Host: example.com:8000\r\n"
	                         "X-Piko-Endpoint: my-ep\r\n"
	                         "content-length: 3\r\n"
	                         "X-Empty:\r\n"
	                         "X-Multi: 1\r\n"
	                         "x-multi: 2\r\n"
	                         "\r\n"
	                         "abc";
	struct pk_http1_reader r;
	pk_http1_reader_init(&r, PK_HTTP1_REQUEST, 4096);
	assert_false(pk_http1_reader_in_message(&r));
	size_t used;
	assert_int_equal(pk_http1_reader_feed(&r, in, 10, &used), PK_HTTP1_NEED_MORE);
	assert_int_equal(used, 10);
	assert_true(pk_http1_reader_in_message(&r));
	assert_int_equal(pk_http1_reader_feed(&r, in + 10, sizeof(in) - 1 - 10, &used),
	                 PK_HTTP1_HEAD);
	assert_int_equal(10 + used, sizeof(in) - 1 - 3);
	const struct pk_http1_head *h = pk_http1_reader_head(&r);
	assert_string_equal(h->method, "POST");
	assert_string_equal(h->url, "/a/b?x=1&y=%20");
	assert_int_equal(h->http_major, 1);
	assert_int_equal(h->http_minor, 1);
	assert_int_equal(h->nheaders, 6);
	assert_string_equal(h->headers[0].name, "Host");
	assert_string_equal(h->headers[0].value, "example.com:8000");
	assert_string_equal(h->headers[2].name, "content-length");
	assert_string_equal(h->headers[1].value, "my-ep"); /* trailing OWS trimmed */
	assert_string_equal(h->headers[3].name, "X-Empty");
	assert_string_equal(h->headers[3].value, "");
	assert_string_equal(pk_http1_header_get(h, "x-piko-endpoint"), "my-ep");
	assert_string_equal(pk_http1_header_get(h, "X-MULTI"), "1");
	assert_null(pk_http1_header_get(h, "Nope"));
	assert_int_equal(h->content_length, 3);
	assert_false(h->chunked);
	assert_false(h->upgrade);
	assert_true(h->keep_alive);
	assert_true(pk_http1_reader_in_message(&r));
	size_t off = 10 + used;
	assert_int_equal(pk_http1_reader_feed(&r, in + off, 2, &used), PK_HTTP1_BODY);
	assert_int_equal(used, 2);
	assert_int_equal(pk_http1_reader_feed(&r, in + off + 2, 1, &used), PK_HTTP1_DONE);
	assert_int_equal(used, 1);
	assert_false(pk_http1_reader_in_message(&r));
	/* the head stays readable until the next feed */
	assert_string_equal(pk_http1_reader_head(&r)->url, "/a/b?x=1&y=%20");
	pk_http1_reader_free(&r);
}

static void test_keep_alive_flags(void **state)
{
	(void)state;
	struct pk_http1_reader r;
	size_t used;
	pk_http1_reader_init(&r, PK_HTTP1_REQUEST, 4096);
	const char *in = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
	assert_int_equal(pk_http1_reader_feed(&r, in, strlen(in), &used), PK_HTTP1_HEAD);
	assert_false(pk_http1_reader_head(&r)->keep_alive);
	assert_int_equal(pk_http1_reader_feed(&r, in + used, 0, &used), PK_HTTP1_DONE);
	assert_int_equal(used, 0);
	in = "GET / HTTP/1.0\r\n\r\n";
	assert_int_equal(pk_http1_reader_feed(&r, in, strlen(in), &used), PK_HTTP1_HEAD);
	assert_false(pk_http1_reader_head(&r)->keep_alive);
	assert_int_equal(pk_http1_reader_head(&r)->http_minor, 0);
	assert_int_equal(pk_http1_reader_feed(&r, in + used, 0, &used), PK_HTTP1_DONE);
	in = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
	assert_int_equal(pk_http1_reader_feed(&r, in, strlen(in), &used), PK_HTTP1_HEAD);
	assert_true(pk_http1_reader_head(&r)->keep_alive);
	pk_http1_reader_free(&r);
}

static void test_pipelined(void **state)
{
	(void)state;
	check_splits(PK_HTTP1_REQUEST, 0, 4096,
	             "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
	             "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
	             "GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"
	             "\r\nDELETE /4 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
	             0, "H:GET /1|D:|H:POST /2|D:hello|H:GET /3|D:|H:DELETE /4|D:|");
}

static void test_content_length_body(void **state)
{
	(void)state;
	/* the body is exactly the CL bytes; what follows is the next message */
	check_splits(PK_HTTP1_REQUEST, 0, 4096,
	             "PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n0123456789\n"
	             "GET /y HTTP/1.1\r\nHost: a\r\n\r\n",
	             0, "H:PUT /x|D:0123456789\n|H:GET /y|D:|");
	/* responses too */
	check_splits(PK_HTTP1_RESPONSE, 0, 4096,
	             "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd"
	             "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
	             0, "H:200|D:abcd|H:404|D:|");
}

static void test_chunked_body(void **state)
{
	(void)state;
	/* the raw framing is the body: chunk sizes, extensions, trailers */
	check_splits(PK_HTTP1_REQUEST, 0, 4096,
	             "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	             "3\r\nabc\r\nA;ext=1\r\n0123456789\r\n0\r\n\r\n"
	             "GET /n HTTP/1.1\r\nHost: a\r\n\r\n",
	             0, "H:POST /c|D:3\r\nabc\r\nA;ext=1\r\n0123456789\r\n0\r\n\r\n|H:GET /n|D:|");
	check_splits(PK_HTTP1_RESPONSE, 0, 4096,
	             "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n"
	             "2\r\nhi\r\n0\r\nX-T: v\r\n\r\n",
	             0, "H:200|D:2\r\nhi\r\n0\r\nX-T: v\r\n\r\n|");
	struct pk_http1_reader r;
	size_t used;
	pk_http1_reader_init(&r, PK_HTTP1_REQUEST, 4096);
	const char *in = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
	assert_int_equal(pk_http1_reader_feed(&r, in, strlen(in), &used), PK_HTTP1_HEAD);
	assert_true(pk_http1_reader_head(&r)->chunked);
	assert_int_equal(pk_http1_reader_head(&r)->content_length, -1);
	/* len 0 inside a body: BODY with nothing used */
	assert_int_equal(pk_http1_reader_feed(&r, in, 0, &used), PK_HTTP1_BODY);
	assert_int_equal(used, 0);
	pk_http1_reader_free(&r);
}

static void test_upgrade_request(void **state)
{
	(void)state;
	check_splits(PK_HTTP1_REQUEST, 0, 4096,
	             "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
	             "Upgrade: websocket\r\n\r\n\x81\x05hello GET / HTTP/1.1\r\n\r\n",
	             0, "H:GET /ws upgrade|D:|R:\x81\x05hello GET / HTTP/1.1\r\n\r\n|");
	/* a body announced on an upgrade request is not read as HTTP either */
	check_splits(PK_HTTP1_REQUEST, 0, 4096,
	             "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
	             "Upgrade: foo\r\nContent-Length: 3\r\n\r\nraw",
	             0, "H:GET /ws upgrade|D:|R:raw|");
	/* Upgrade without Connection: upgrade is an ordinary request */
	check_splits(PK_HTTP1_REQUEST, 0, 4096,
	             "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", 0,
	             "H:GET /ws|D:|");
	/* exact positions without splitting */
	struct pk_http1_reader r;
	size_t used;
	const char *in = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
	                 "Upgrade: websocket\r\n\r\nXYZ";
	pk_http1_reader_init(&r, PK_HTTP1_REQUEST, 4096);
	assert_int_equal(pk_http1_reader_feed(&r, in, strlen(in), &used), PK_HTTP1_HEAD);
	assert_int_equal(used, strlen(in) - 3);
	assert_int_equal(pk_http1_reader_feed(&r, in + used, 3, &used), PK_HTTP1_DONE);
	assert_int_equal(used, 0);
	pk_http1_reader_free(&r);
}

static void test_response_101(void **state)
{
	(void)state;
	check_splits(PK_HTTP1_RESPONSE, 0, 4096,
	             "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
	             "Upgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n\x82\x01z",
	             0, "H:101 upgrade|D:|R:\x82\x01z|");
	/* even without Connection: upgrade, a 101 ends HTTP on the stream */
	check_splits(PK_HTTP1_RESPONSE, 0, 4096, "HTTP/1.1 101 Switching Protocols\r\n\r\nbytes", 0,
	             "H:101 upgrade|D:|R:bytes|");
}

static void test_response_no_body(void **state)
{
	(void)state;
	/* HEAD: Content-Length describes the GET body that is not sent */
	check_splits(PK_HTTP1_RESPONSE, 1, 4096,
	             "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
	             "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
	             0, "H:200|D:|H:200|D:|");
	check_splits(PK_HTTP1_RESPONSE, 0, 4096,
	             "HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n"
	             "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\nETag: x\r\n\r\n"
	             "HTTP/1.1 100 Continue\r\n\r\n"
	             "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	             0, "H:204|D:|H:304|D:|H:100|D:|H:200|D:ok|");
	/* a bodiless response without Content-Length keeps the connection */
	struct pk_http1_reader r;
	size_t used;
	const char *in = "HTTP/1.1 304 Not Modified\r\n\r\n";
	pk_http1_reader_init(&r, PK_HTTP1_RESPONSE, 4096);
	assert_int_equal(pk_http1_reader_feed(&r, in, strlen(in), &used), PK_HTTP1_HEAD);
	assert_true(pk_http1_reader_head(&r)->keep_alive);
	assert_true(pk_http1_reader_in_message(&r));
	assert_int_equal(pk_http1_reader_feed(&r, in, 0, &used), PK_HTTP1_DONE);
	assert_false(pk_http1_reader_in_message(&r));
	pk_http1_reader_set_head_request(&r, 1);
	in = "HTTP/1.1 200 OK\r\n\r\n";
	assert_int_equal(pk_http1_reader_feed(&r, in, strlen(in), &used), PK_HTTP1_HEAD);
	assert_true(pk_http1_reader_head(&r)->keep_alive);
	pk_http1_reader_free(&r);
}

static void test_response_close_delimited(void **state)
{
	(void)state;
	check_splits(PK_HTTP1_RESPONSE, 0, 4096, "HTTP/1.1 200 OK\r\nX: y\r\n\r\nhello world", 1,
	             "H:200|EOF:hello world|");
	check_splits(PK_HTTP1_RESPONSE, 0, 4096, "HTTP/1.0 200 OK\r\n\r\n", 1, "H:200|EOF:|");
	struct pk_http1_reader r;
	size_t used;
	pk_http1_reader_init(&r, PK_HTTP1_RESPONSE, 4096);
	assert_int_equal(pk_http1_reader_eof(&r), 0); /* nothing in progress */
	const char *in = "HTTP/1.1 200 OK\r\n\r\nab";
	assert_int_equal(pk_http1_reader_feed(&r, in, strlen(in), &used), PK_HTTP1_HEAD);
	assert_false(pk_http1_reader_head(&r)->keep_alive);
	assert_int_equal(pk_http1_reader_feed(&r, in + used, 2, &used), PK_HTTP1_BODY);
	assert_int_equal(used, 2);
	assert_int_equal(pk_http1_reader_eof(&r), 1);
	assert_false(pk_http1_reader_in_message(&r));
	assert_int_equal(pk_http1_reader_eof(&r), 0);
	/* a Content-Length body cut short is not complete */
	in = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab";
	assert_int_equal(pk_http1_reader_feed(&r, in, strlen(in), &used), PK_HTTP1_HEAD);
	assert_int_equal(pk_http1_reader_feed(&r, in + used, 2, &used), PK_HTTP1_BODY);
	assert_int_equal(pk_http1_reader_eof(&r), 0);
	assert_true(pk_http1_reader_in_message(&r));
	pk_http1_reader_free(&r);
	/* a head cut short */
	pk_http1_reader_init(&r, PK_HTTP1_RESPONSE, 4096);
	assert_int_equal(pk_http1_reader_feed(&r, "HTTP/1.1 2", 10, &used), PK_HTTP1_NEED_MORE);
	assert_int_equal(pk_http1_reader_eof(&r), 0);
	pk_http1_reader_free(&r);
}

static char *make_head(size_t total)
{
	/* "GET / HTTP/1.1\r\nHost: a\r\nX: <pad>\r\n\r\n" of exactly total bytes */
	static const char pre[] = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
	size_t fixed = strlen(pre) + 4;
	assert_true(total > fixed);
	char *s = malloc(total + 1);
	memcpy(s, pre, strlen(pre));
	memset(s + strlen(pre), 'p', total - fixed);
	memcpy(s + total - 4, "\r\n\r\n", 5);
	return s;
}

static void test_head_limit(void **state)
{
	(void)state;
	char *at = make_head(200);
	check_splits(PK_HTTP1_REQUEST, 0, 200, at, 0, "H:GET /|D:|");
	check_splits(PK_HTTP1_REQUEST, 0, 199, at, 0, "E:431|");
	check_splits(PK_HTTP1_RESPONSE, 0, 10, "HTTP/1.1 200 OK\r\n\r\n", 0, "E:502|");
	free(at);
	/* far over http-parser's 80 KiB default: max_head is what counts */
	size_t big = 200 * 1024;
	char *s = make_head(big);
	struct pk_http1_reader r;
	size_t used;
	pk_http1_reader_init(&r, PK_HTTP1_REQUEST, big);
	assert_int_equal(pk_http1_reader_feed(&r, s, big, &used), PK_HTTP1_HEAD);
	assert_int_equal(used, big);
	assert_int_equal(strlen(pk_http1_header_get(pk_http1_reader_head(&r), "X")), big - 32);
	pk_http1_reader_free(&r);
	/* the error comes as soon as the limit is passed, without the rest */
	pk_http1_reader_init(&r, PK_HTTP1_REQUEST, 1000);
	assert_int_equal(pk_http1_reader_feed(&r, s, big, &used), PK_HTTP1_ERROR);
	int status;
	assert_non_null(pk_http1_reader_error(&r, &status));
	assert_int_equal(status, 431);
	/* sticky */
	assert_int_equal(pk_http1_reader_feed(&r, s, 1, &used), PK_HTTP1_ERROR);
	pk_http1_reader_free(&r);
	free(s);
	/* trailers are bounded by max_head as well */
	check_splits(
	    PK_HTTP1_REQUEST, 0, 80,
	    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "0\r\nX-Trailer: 0123456789012345678901234567890123456789012345678901234567890123"
	    "456789012345678901234567890123456789\r\n\r\n",
	    0, "H:POST /|E:431|");
}

static void test_too_many_headers(void **state)
{
	(void)state;
	size_t cap = 64 + (PK_HTTP1_MAX_HEADERS + 1) * 10;
	char *s = malloc(cap);
	size_t n = (size_t)snprintf(s, cap, "GET / HTTP/1.1\r\n");
	for (int i = 0; i < PK_HTTP1_MAX_HEADERS; i++)
		n += (size_t)snprintf(s + n, cap - n, "Host: a\r\n");
	snprintf(s + n, cap - n, "\r\n");
	/* 256 Host headers: too many Hosts (400), not too many headers */
	check_splits(PK_HTTP1_REQUEST, 0, 65536, s, 0, "E:400|");
	n = (size_t)snprintf(s, cap, "GET / HTTP/1.1\r\n");
	for (int i = 0; i <= PK_HTTP1_MAX_HEADERS; i++)
		n += (size_t)snprintf(s + n, cap - n, "A: b\r\n");
	snprintf(s + n, cap - n, "\r\n");
	struct pk_http1_reader r;
	size_t used;
	int status;
	pk_http1_reader_init(&r, PK_HTTP1_REQUEST, 65536);
	assert_int_equal(pk_http1_reader_feed(&r, s, strlen(s), &used), PK_HTTP1_ERROR);
	pk_http1_reader_error(&r, &status);
	assert_int_equal(status, 431);
	pk_http1_reader_free(&r);
	free(s);
}

static void test_malformed(void **state)
{
	(void)state;
	static const char *const bad_requests[] = {
	    "GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
	    "GET / HTTP/9.x\r\n\r\n",
	    "GE\x01T / HTTP/1.1\r\n\r\n",
	    "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
	    "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
	    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
	    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
	    "GET / HTTP/1.1\r\n\r\n",                         /* no Host */
	    "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",   /* two Hosts */
	    "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01z\r\n\r\n", /* control char */
	    "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
	    "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(bad_requests) / sizeof(bad_requests[0]); i++)
		check_splits(PK_HTTP1_REQUEST, 0, 4096, bad_requests[i], 0, "E:400|");
	/* what http-parser built without HTTP_PARSER_STRICT lets through */
	static const char *const lax[] = {
	    "GET / HTTP/1.1\r\nHo st: a\r\n\r\n",   "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
	    "GET / HTTP/1.1\r\nHost: a\r\n\rX",     "GET / HXYZ/1.1\r\nHost: a\r\n\r\n",
	    "\r\nGET / HTTP/1.1\rXHost: a\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(lax) / sizeof(lax[0]); i++)
		check_splits(PK_HTTP1_REQUEST, 0, 4096, lax[i], 0, "E:400|");
	/* obs-fold is rejected (RFC 7230 3.2.4) */
	check_splits(PK_HTTP1_REQUEST, 0, 4096, "GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n",
	             0, "E:400|");
	check_splits(PK_HTTP1_REQUEST, 0, 4096, "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 0, "E:400|");
	check_splits(PK_HTTP1_RESPONSE, 0, 4096, "HTTP/1.1 200 OK\nContent-Length: 2\n\t\n\nok", 0,
	             "E:502|");
	check_splits(PK_HTTP1_REQUEST, 0, 4096, "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 0, "E:505|");
	check_splits(PK_HTTP1_RESPONSE, 0, 4096, "HTTP/1.1 200 OK\rXA: b\r\n\r\n", 0, "E:502|");
	check_splits(PK_HTTP1_REQUEST, 0, 4096,
	             "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	             "3\r\nabcXY0\r\n\r\n",
	             0, "H:POST /|E:400|");
	check_splits(PK_HTTP1_REQUEST, 0, 4096,
	             "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	             "3\rXabc\r\n0\r\n\r\n",
	             0, "H:POST /|E:400|");
	check_splits(PK_HTTP1_REQUEST, 0, 4096,
	             "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	             "3\r\nabc\n0\r\n\r\n",
	             0, "H:POST /|E:400|");
	check_splits(PK_HTTP1_REQUEST, 0, 4096,
	             "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
	             "3\r\nabc\r\n0\r\nT r: x\r\n\r\n",
	             0, "H:POST /|E:400|");
	/* LF-only line endings in a head are fine, as in Go (http-parser wants
	 * CRLF in chunk-size lines, which is stricter than Go) */
	check_splits(PK_HTTP1_REQUEST, 0, 4096,
	             "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n"
	             "3\r\nabc\r\n0\r\n\r\n",
	             0, "H:POST /|D:3\r\nabc\r\n0\r\n\r\n|");
	/* a bad chunk after a good head */
	check_splits(PK_HTTP1_REQUEST, 0, 4096,
	             "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0,
	             "H:POST /|E:400|");
	check_splits(PK_HTTP1_RESPONSE, 0, 4096, "HTTX/1.1 200 OK\r\n\r\n", 0, "E:502|");
	/* a NUL in the reason phrase (http-parser lets it through) */
	struct pk_http1_reader r;
	size_t used;
	int status;
	static const char nul[] = "HTTP/1.1 200 O\0K\r\n\r\n";
	pk_http1_reader_init(&r, PK_HTTP1_RESPONSE, 4096);
	assert_int_equal(pk_http1_reader_feed(&r, nul, sizeof(nul) - 1, &used), PK_HTTP1_ERROR);
	pk_http1_reader_error(&r, &status);
	assert_int_equal(status, 502);
	pk_http1_reader_free(&r);
	/* HTTP/1.0 needs no Host */
	check_splits(PK_HTTP1_REQUEST, 0, 4096, "GET / HTTP/1.0\r\n\r\n", 0, "H:GET /|D:|");
	/* Content-Length at the 63-bit limit is fine */
	const char *in = "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n";
	pk_http1_reader_init(&r, PK_HTTP1_REQUEST, 4096);
	assert_int_equal(pk_http1_reader_feed(&r, in, strlen(in), &used), PK_HTTP1_HEAD);
	assert_int_equal(pk_http1_reader_head(&r)->content_length, INT64_MAX);
	pk_http1_reader_free(&r);
}

static struct pk_http1_reader *parse(enum pk_http1_kind kind, const char *in)
{
	struct pk_http1_reader *r = malloc(sizeof(*r));
	size_t used;
	pk_http1_reader_init(r, kind, 8192);
	assert_int_equal(pk_http1_reader_feed(r, in, strlen(in), &used), PK_HTTP1_HEAD);
	return r;
}

static void release(struct pk_http1_reader *r)
{
	pk_http1_reader_free(r);
	free(r);
}

/* The length builders report, for check_built(). */
static size_t blen;

static void check_built(char *got, const char *want)
{
	assert_non_null(got);
	assert_int_equal(blen, strlen(got));
	assert_string_equal(got, want);
	free(got);
}

static void test_hop_by_hop(void **state)
{
	(void)state;
	struct pk_http1_reader *r = parse(PK_HTTP1_REQUEST, "GET / HTTP/1.1\r\nHost: a\r\n"
	                                                    "Connection: X-Secret , keep-alive\r\n"
	                                                    "connection: other\r\n\r\n");
	const struct pk_http1_head *h = pk_http1_reader_head(r);
	assert_true(pk_http1_is_hop_by_hop(h, "x-secret"));
	assert_true(pk_http1_is_hop_by_hop(h, "Keep-Alive"));
	assert_true(pk_http1_is_hop_by_hop(h, "OTHER"));
	assert_true(pk_http1_is_hop_by_hop(h, "te"));
	assert_true(pk_http1_is_hop_by_hop(h, "Proxy-Connection"));
	assert_true(pk_http1_is_hop_by_hop(NULL, "Transfer-Encoding"));
	assert_false(pk_http1_is_hop_by_hop(h, "X-Secre"));
	assert_false(pk_http1_is_hop_by_hop(h, "Host"));
	assert_false(pk_http1_is_hop_by_hop(NULL, "X-Secret"));
	release(r);
}

static void test_build_request(void **state)
{
	(void)state;
	struct pk_http1_reader *r =
	    parse(PK_HTTP1_REQUEST, "POST /api/v1?q=a%20b HTTP/1.1\r\n"
	                            "Host: my-endpoint.piko.com:9000\r\n"
	                            "User-Agent: curl/8\r\n"
	                            "Connection: keep-alive, X-Drop\r\n"
	                            "X-Drop: secret\r\n"
	                            "Keep-Alive: timeout=5\r\n"
	                            "Proxy-Connection: keep-alive\r\n"
	                            "Proxy-Authorization: Basic x\r\n"
	                            "Proxy-Authenticate: y\r\n"
	                            "TE: trailers, deflate\r\n"
	                            "Trailer: X-Sum\r\n"
	                            "Transfer-Encoding: chunked\r\n"
	                            "x-forwarded-for: 10.0.0.1\r\n"
	                            "Authorization: Bearer t\r\n"
	                            "X-Forwarded-For: 10.0.0.2, 10.0.0.3\r\n"
	                            "x-piko-endpoint: ep\r\n"
	                            "x-piko-forward: false\r\n"
	                            "\r\n");
	const struct pk_http1_head *h = pk_http1_reader_head(r);
	check_built(pk_http1_build_request(h, NULL, "192.0.2.7", PK_HTTP1_PIKO_FORWARD, &blen),
	            "POST /api/v1?q=a%20b HTTP/1.1\r\n"
	            "Host: my-endpoint.piko.com:9000\r\n"
	            "User-Agent: curl/8\r\n"
	            "TE: trailers\r\n"
	            "Authorization: Bearer t\r\n"
	            "x-piko-endpoint: ep\r\n"
	            "Transfer-Encoding: chunked\r\n"
	            "Trailer: X-Sum\r\n"
	            "Connection: close\r\n"
	            "X-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7\r\n"
	            "X-Piko-Forward: true\r\n"
	            "\r\n");
	/* no client IP: X-Forwarded-For passes through untouched; no
	 * forward flag: x-piko-forward too; a path prefix */
	check_built(pk_http1_build_request(h, "/base", NULL, 0, &blen),
	            "POST /base/api/v1?q=a%20b HTTP/1.1\r\n"
	            "Host: my-endpoint.piko.com:9000\r\n"
	            "User-Agent: curl/8\r\n"
	            "TE: trailers\r\n"
	            "x-forwarded-for: 10.0.0.1\r\n"
	            "Authorization: Bearer t\r\n"
	            "X-Forwarded-For: 10.0.0.2, 10.0.0.3\r\n"
	            "x-piko-endpoint: ep\r\n"
	            "x-piko-forward: false\r\n"
	            "Transfer-Encoding: chunked\r\n"
	            "Trailer: X-Sum\r\n"
	            "Connection: close\r\n"
	            "\r\n");
	release(r);

	/* plain GET; TE without trailers is dropped; absolute-form target */
	r = parse(PK_HTTP1_REQUEST, "GET http://h.example/p?x HTTP/1.1\r\nHost: h.example\r\n"
	                            "TE: gzip\r\nContent-Length: 0\r\n\r\n");
	check_built(pk_http1_build_request(pk_http1_reader_head(r), NULL, "::1",
	                                   PK_HTTP1_PIKO_FORWARD, &blen),
	            "GET /p?x HTTP/1.1\r\nHost: h.example\r\nContent-Length: 0\r\n"
	            "Connection: close\r\nX-Forwarded-For: ::1\r\nX-Piko-Forward: true\r\n\r\n");
	release(r);

	/* X-Forwarded-For listed in Connection is dropped before appending */
	r = parse(PK_HTTP1_REQUEST, "GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Forwarded-For\r\n"
	                            "X-Forwarded-For: 1.1.1.1\r\n\r\n");
	check_built(pk_http1_build_request(pk_http1_reader_head(r), NULL, "2.2.2.2", 0, &blen),
	            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
	            "X-Forwarded-For: 2.2.2.2\r\n\r\n");
	release(r);

	/* the agent's hop to a local service keeps the connection alive */
	r = parse(PK_HTTP1_REQUEST, "GET /k HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
	check_built(pk_http1_build_request(pk_http1_reader_head(r), "/svc", "10.1.1.1",
	                                   PK_HTTP1_KEEP_ALIVE, &blen),
	            "GET /svc/k HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.1.1.1\r\n\r\n");
	check_built(pk_http1_build_request(pk_http1_reader_head(r), NULL, NULL,
	                                   PK_HTTP1_KEEP_ALIVE | PK_HTTP1_PIKO_FORWARD, &blen),
	            "GET /k HTTP/1.1\r\nHost: a\r\nX-Piko-Forward: true\r\n\r\n");
	release(r);

	/* a Connection list cannot remove Host or the body's Content-Length */
	r = parse(PK_HTTP1_REQUEST,
	          "PUT / HTTP/1.1\r\nHost: a\r\nConnection: host, content-length\r\n"
	          "Content-Length: 2\r\n\r\n");
	check_built(pk_http1_build_request(pk_http1_reader_head(r), NULL, NULL, 0, &blen),
	            "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\n");
	release(r);
}

static void test_build_request_upgrade(void **state)
{
	(void)state;
	struct pk_http1_reader *r = parse(PK_HTTP1_REQUEST, "GET /ws HTTP/1.1\r\n"
	                                                    "Host: ep.example.com\r\n"
	                                                    "Connection: Upgrade\r\n"
	                                                    "Upgrade: websocket\r\n"
	                                                    "Sec-WebSocket-Key: abc==\r\n"
	                                                    "Sec-WebSocket-Version: 13\r\n"
	                                                    "\r\n");
	check_built(pk_http1_build_request(pk_http1_reader_head(r), NULL, "127.0.0.1",
	                                   PK_HTTP1_PIKO_FORWARD, &blen),
	            "GET /ws HTTP/1.1\r\n"
	            "Host: ep.example.com\r\n"
	            "Sec-WebSocket-Key: abc==\r\n"
	            "Sec-WebSocket-Version: 13\r\n"
	            "Connection: Upgrade\r\n"
	            "Upgrade: websocket\r\n"
	            "X-Forwarded-For: 127.0.0.1\r\n"
	            "X-Piko-Forward: true\r\n"
	            "\r\n");
	release(r);
}

static void test_build_response(void **state)
{
	(void)state;
	struct pk_http1_reader *r = parse(PK_HTTP1_RESPONSE, "HTTP/1.1 200 Fine\r\n"
	                                                     "Content-Type: text/plain\r\n"
	                                                     "Connection: keep-alive, X-Hop\r\n"
	                                                     "X-Hop: 1\r\n"
	                                                     "Keep-Alive: timeout=5\r\n"
	                                                     "Transfer-Encoding: chunked\r\n"
	                                                     "Set-Cookie: a=1\r\n"
	                                                     "Set-Cookie: b=2\r\n"
	                                                     "\r\n");
	const struct pk_http1_head *h = pk_http1_reader_head(r);
	assert_string_equal(h->reason, "Fine");
	check_built(pk_http1_build_response(h, 0, &blen),
	            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\n"
	            "Set-Cookie: b=2\r\nTransfer-Encoding: chunked\r\n\r\n");
	check_built(pk_http1_build_response(h, 1, &blen),
	            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\n"
	            "Set-Cookie: b=2\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
	release(r);

	r = parse(PK_HTTP1_RESPONSE, "HTTP/1.1 101 Switching Protocols\r\n"
	                             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	                             "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n");
	check_built(pk_http1_build_response(pk_http1_reader_head(r), 1, &blen),
	            "HTTP/1.1 101 Switching Protocols\r\n"
	            "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
	            "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
	release(r);

	/* empty and missing reason phrases */
	r = parse(PK_HTTP1_RESPONSE, "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n");
	assert_string_equal(pk_http1_reader_head(r)->reason, "");
	assert_string_equal(pk_http1_reader_head(r)->headers[0].name, "Content-Length");
	release(r);
	r = parse(PK_HTTP1_RESPONSE, "HTTP/1.1 404\r\nA: b\r\n\r\n");
	assert_string_equal(pk_http1_reader_head(r)->reason, "");
	assert_string_equal(pk_http1_reader_head(r)->headers[0].value, "b");
	release(r);

	/* a code Go has no text for */
	r = parse(PK_HTTP1_RESPONSE, "HTTP/1.1 599 Odd\r\nContent-Length: 0\r\n\r\n");
	check_built(pk_http1_build_response(pk_http1_reader_head(r), 0, &blen),
	            "HTTP/1.1 599 status code 599\r\nContent-Length: 0\r\n\r\n");
	release(r);
}

static void test_error_response(void **state)
{
	(void)state;
	check_built(pk_http1_error_response(502, "no available upstreams", 0, &blen),
	            "HTTP/1.1 502 Bad Gateway\r\n"
	            "Content-Type: application/json\r\n"
	            "X-Content-Type-Options: nosniff\r\n"
	            "Content-Length: 35\r\n"
	            "\r\n"
	            "{\"error\":\"no available upstreams\"}\n");
	check_built(pk_http1_error_response(502, "no available upstreams", 1, &blen),
	            "HTTP/1.1 502 Bad Gateway\r\n"
	            "Content-Type: application/json\r\n"
	            "X-Content-Type-Options: nosniff\r\n"
	            "Content-Length: 35\r\n"
	            "Connection: close\r\n"
	            "\r\n"
	            "{\"error\":\"no available upstreams\"}\n");
	check_built(pk_http1_error_response(400, "missing endpoint id", 0, &blen),
	            "HTTP/1.1 400 Bad Request\r\n"
	            "Content-Type: application/json\r\n"
	            "X-Content-Type-Options: nosniff\r\n"
	            "Content-Length: 32\r\n"
	            "\r\n"
	            "{\"error\":\"missing endpoint id\"}\n");
	check_built(pk_http1_error_response(504, "upstream timeout", 0, &blen),
	            "HTTP/1.1 504 Gateway Timeout\r\n"
	            "Content-Type: application/json\r\n"
	            "X-Content-Type-Options: nosniff\r\n"
	            "Content-Length: 29\r\n"
	            "\r\n"
	            "{\"error\":\"upstream timeout\"}\n");
	/* JSON escaping as Go's encoder does it (HTML-safe, bad UTF-8 -> U+FFFD) */
	char *s =
	    pk_http1_error_response(401, "a\"b\\c\n<&>\x01\xff\xc3\xa9\xe2\x80\xa8", 0, &blen);
	const char *body = strstr(s, "\r\n\r\n") + 4;
	assert_string_equal(body, "{\"error\":\"a\\\"b\\\\c\\n\\u003c\\u0026\\u003e\\u0001\\ufffd"
	                          "\xc3\xa9\\u2028\"}\n");
	assert_non_null(strstr(s, "HTTP/1.1 401 Unauthorized\r\n"));
	free(s);
}

static void test_simple_response(void **state)
{
	(void)state;
	check_built(pk_http1_simple_response(200, "text/plain; charset=utf-8", "OK\n", 3, 0, &blen),
	            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
	            "Content-Length: 3\r\n\r\nOK\n");
	check_built(pk_http1_simple_response(404, NULL, NULL, 0, 1, &blen),
	            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
	assert_string_equal(pk_http1_status_text(503), "Service Unavailable");
	assert_string_equal(pk_http1_status_text(431), "Request Header Fields Too Large");
	assert_string_equal(pk_http1_status_text(299), "Unknown");
}

/* HTTP/1.0 clients (PK_HTTP1_RESP_HTTP10): Go's server's framing. */
static void test_build_http10(void **state)
{
	(void)state;
	struct pk_http1_reader *r = parse(PK_HTTP1_RESPONSE, "HTTP/1.1 200 OK\r\n"
	                                                     "Content-Type: text/plain\r\n"
	                                                     "Trailer: X-Sum\r\n"
	                                                     "Transfer-Encoding: chunked\r\n\r\n");
	const struct pk_http1_head *h = pk_http1_reader_head(r);
	/* never chunked nor a Trailer announcement; closing is the default */
	check_built(pk_http1_build_response(h, PK_HTTP1_RESP_HTTP10 | PK_HTTP1_RESP_CLOSE, &blen),
	            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n");
	release(r);
	r = parse(PK_HTTP1_RESPONSE, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n");
	check_built(pk_http1_build_response(pk_http1_reader_head(r), PK_HTTP1_RESP_HTTP10, &blen),
	            "HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n");
	release(r);
	check_built(pk_http1_error_response(502, "no available upstreams",
	                                    PK_HTTP1_RESP_HTTP10 | PK_HTTP1_RESP_CLOSE, &blen),
	            "HTTP/1.0 502 Bad Gateway\r\n"
	            "Content-Type: application/json\r\n"
	            "X-Content-Type-Options: nosniff\r\n"
	            "Content-Length: 35\r\n"
	            "\r\n"
	            "{\"error\":\"no available upstreams\"}\n");
	check_built(pk_http1_simple_response(200, NULL, "", 0, PK_HTTP1_RESP_HTTP10, &blen),
	            "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n");
	check_built(pk_http1_simple_response(599, NULL, "", 0,
	                                     PK_HTTP1_RESP_HTTP10 | PK_HTTP1_RESP_CLOSE, &blen),
	            "HTTP/1.0 599 status code 599\r\nContent-Length: 0\r\n\r\n");
}

/* A request without Host (HTTP/1.0) gets the default one, first. */
static void test_build_request_default_host(void **state)
{
	(void)state;
	struct pk_http1_reader *r = parse(PK_HTTP1_REQUEST, "GET /a HTTP/1.0\r\nX-A: 1\r\n\r\n");
	check_built(
	    pk_http1_build_request_host(pk_http1_reader_head(r), NULL, NULL, 0, "ep", &blen),
	    "GET /a HTTP/1.1\r\nHost: ep\r\nX-A: 1\r\nConnection: close\r\n\r\n");
	release(r);
	r = parse(PK_HTTP1_REQUEST, "GET /a HTTP/1.0\r\nHost: h\r\n\r\n");
	check_built(
	    pk_http1_build_request_host(pk_http1_reader_head(r), NULL, NULL, 0, "ep", &blen),
	    "GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
	release(r);
}

struct sunk {
	char buf[256];
	size_t len;
};

static void sink(void *arg, const char *data, size_t len)
{
	struct sunk *k = arg;
	assert_true(k->len + len <= sizeof(k->buf));
	memcpy(k->buf + k->len, data, len);
	k->len += len;
}

/* The body sink gets the payload alone, at every split of the input, while
 * feed() still reports every raw byte. */
static void test_body_sink(void **state)
{
	(void)state;
	static const char in[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	                         "6\r\nhello \r\n5;ext=1\r\nworld\r\n0\r\nX-Sum: 42\r\n\r\n"
	                         "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd";
	size_t len = sizeof(in) - 1;
	for (size_t k = 0; k <= len; k++) {
		struct pk_http1_reader r;
		struct sunk got = {{0}, 0};
		pk_http1_reader_init(&r, PK_HTTP1_RESPONSE, 4096);
		pk_http1_reader_set_body_sink(&r, sink, &got);
		struct trace t;
		memset(&t, 0, sizeof(t));
		drive(&r, in, k, &t);
		drive(&r, in + k, len - k, &t);
		assert_string_equal(t.log, "H:200|D:6\r\nhello \r\n5;ext=1\r\nworld\r\n0\r\n"
		                           "X-Sum: 42\r\n\r\n|H:200|D:abcd|");
		assert_int_equal(got.len, 15);
		assert_memory_equal(got.buf, "hello worldabcd", 15);
		pk_http1_reader_free(&r);
	}
	/* bad framing after a chunk: the payload so far, then ERROR */
	struct pk_http1_reader r;
	struct sunk got = {{0}, 0};
	pk_http1_reader_init(&r, PK_HTTP1_RESPONSE, 4096);
	pk_http1_reader_set_body_sink(&r, sink, &got);
	struct trace t;
	memset(&t, 0, sizeof(t));
	static const char bad[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	                          "2\r\nok\r\nzz\r\n";
	drive(&r, bad, sizeof(bad) - 1, &t);
	assert_string_equal(t.log, "H:200|E:502|");
	assert_int_equal(got.len, 2);
	pk_http1_reader_set_body_sink(&r, NULL, &got);
	assert_null(r.sink_arg);
	pk_http1_reader_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_request_head),
	    cmocka_unit_test(test_keep_alive_flags),
	    cmocka_unit_test(test_pipelined),
	    cmocka_unit_test(test_content_length_body),
	    cmocka_unit_test(test_chunked_body),
	    cmocka_unit_test(test_upgrade_request),
	    cmocka_unit_test(test_response_101),
	    cmocka_unit_test(test_response_no_body),
	    cmocka_unit_test(test_response_close_delimited),
	    cmocka_unit_test(test_head_limit),
	    cmocka_unit_test(test_too_many_headers),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_hop_by_hop),
	    cmocka_unit_test(test_build_request),
	    cmocka_unit_test(test_build_request_upgrade),
	    cmocka_unit_test(test_build_response),
	    cmocka_unit_test(test_error_response),
	    cmocka_unit_test(test_simple_response),
	    cmocka_unit_test(test_build_http10),
	    cmocka_unit_test(test_build_request_default_host),
	    cmocka_unit_test(test_body_sink),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
