/*
 * Fuzz the HTTP/1.1 reader and builders. Input: one control byte, then the
 * bytes of a connection. The same bytes go through a request reader and a
 * response reader, split into chunks whose sizes come from the control byte;
 * every HEAD is run through the builders. Checks the reader's contract: used
 * never exceeds the input, NEED_MORE uses everything, every call either
 * makes progress or reports an event, errors carry a reason and a status.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			abort();                                                                   \
	} while (0)

static void exercise_head(const struct pk_http1_head *h, enum pk_http1_kind kind, uint8_t ctl)
{
	CHECK(h->nheaders <= PK_HTTP1_MAX_HEADERS);
	for (size_t i = 0; i < h->nheaders; i++) {
		CHECK(h->headers[i].name && h->headers[i].value);
		CHECK(pk_http1_header_get(h, h->headers[i].name) != NULL);
		(void)pk_http1_is_hop_by_hop(h, h->headers[i].name);
	}
	size_t len = 0;
	char *out;
	if (kind == PK_HTTP1_REQUEST) {
		CHECK(h->method && h->url);
		out = pk_http1_build_request(
		    h, (ctl & 1) ? "/prefix" : NULL, (ctl & 2) ? "192.0.2.1" : NULL,
		    ((ctl & 4) ? PK_HTTP1_PIKO_FORWARD : 0) | ((ctl & 8) ? PK_HTTP1_KEEP_ALIVE : 0),
		    &len);
	} else {
		CHECK(h->reason && h->status >= 0);
		out = pk_http1_build_response(h, ctl & 1, &len);
	}
	CHECK(out && strlen(out) == len);
	/* A built head is a well-formed head that the reader takes back. */
	struct pk_http1_reader r;
	pk_http1_reader_init(&r, kind, len + 1);
	size_t used;
	enum pk_http1_event ev = pk_http1_reader_feed(&r, out, len, &used);
	/* Requests the builder cannot make valid on its own: no Host (an
	 * HTTP/1.0 original, now written as 1.1), or a target that is not a
	 * path (CONNECT authority, "*", with a prefix glued on). */
	int must_parse =
	    kind == PK_HTTP1_RESPONSE || (pk_http1_header_get(h, "Host") && h->url[0] == '/' &&
	                                  strcmp(h->method, "CONNECT") != 0);
	if (must_parse)
		CHECK(ev == PK_HTTP1_HEAD && used == len);
	pk_http1_reader_free(&r);
	free(out);
}

static void run(enum pk_http1_kind kind, uint8_t ctl, const uint8_t *data, size_t size)
{
	struct pk_http1_reader r;
	/* mostly roomy, sometimes tight so the 431 path is reached */
	size_t max_head = (ctl & 0x80) ? 64 + (ctl & 0x3f) : 8192;
	pk_http1_reader_init(&r, kind, max_head);
	/* As the proxy port reads a client's request: what the builders add
	 * must still fit the next hop's reader (exercise_head). */
	if (kind == PK_HTTP1_REQUEST)
		pk_http1_reader_set_max_headers(&r, PK_HTTP1_CLIENT_MAX_HEADERS);
	pk_http1_reader_set_head_request(&r, (ctl >> 6) & 1);
	uint32_t rng = ctl * 2654435761u + 1;
	size_t off = 0;
	int stalls = 0;
	while (off < size) {
		rng = rng * 1103515245u + 12345u;
		size_t chunk = 1 + (rng >> 16) % 97;
		if (chunk > size - off)
			chunk = size - off;
		const char *p = (const char *)data + off;
		size_t pos = 0;
		for (;;) {
			size_t used = (size_t)-1;
			enum pk_http1_event ev =
			    pk_http1_reader_feed(&r, p + pos, chunk - pos, &used);
			CHECK(used <= chunk - pos);
			pos += used;
			stalls = used ? 0 : stalls + 1;
			CHECK(stalls < 4); /* HEAD, DONE: then progress */
			if (ev == PK_HTTP1_ERROR) {
				int status = 0;
				CHECK(pk_http1_reader_error(&r, &status) != NULL);
				CHECK(status == 400 || status == 431 || status == 502 ||
				      status == 505);
				goto out;
			}
			if (ev == PK_HTTP1_NEED_MORE) {
				CHECK(pos == chunk);
				break;
			}
			if (ev == PK_HTTP1_HEAD) {
				exercise_head(pk_http1_reader_head(&r), kind, ctl);
				continue;
			}
			if (ev == PK_HTTP1_DONE && pk_http1_reader_head(&r)->upgrade)
				goto out; /* the rest is not HTTP */
			if (pos == chunk)
				break;
		}
		off += chunk;
	}
	(void)pk_http1_reader_eof(&r);
	(void)pk_http1_reader_in_message(&r);
out:
	pk_http1_reader_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t ctl = data[0];
	run(PK_HTTP1_REQUEST, ctl, data + 1, size - 1);
	run(PK_HTTP1_RESPONSE, ctl, data + 1, size - 1);
	/* JSON escaping of arbitrary bytes */
	char msg[65];
	size_t n = size - 1 < 64 ? size - 1 : 64;
	memcpy(msg, data + 1, n);
	msg[n] = '\0';
	size_t len;
	char *e = pk_http1_error_response(502, msg, ctl & 1, &len);
	CHECK(e && strlen(e) == len);
	free(e);
	return 0;
}
