/*
 * The in-process upstream of `piko bench http`: each stream carries one
 * HTTP/1.1 request (protocol reference §1.3); its body (de-chunked when
 * chunked) is collected, then answered as `200` with the same bytes and
 * `Connection: close`, and the stream is half-closed after the response.
 *
 * Backpressure: request bytes are credited to the yamux window as they are
 * collected, since the body queue is capped at max_body (what the bench
 * sends, `size`); the response leaves through pk_yamux_stream_write() as the
 * stream takes it (on_writable).
 *
 * Ownership: an echo belongs to its stream and is freed in on_close.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "buf.h"
#include "http1.h"
#include "log.h"

#define SUBSYS "bench.upstream"
#define MAX_HEAD (64 * 1024)

struct echo {
	struct pk_stream_handler h; /* first: the stream's user pointer */
	struct pk_agent_listener *l;
	struct pk_yamux_stream *stream; /* NULL once gone */
	struct pk_bufq body;            /* the request body, capped at max_body */
	char head[160];                 /* the response head ... */
	size_t head_len, head_sent;     /* ... and how much of it went out */
	int too_big;
	int answered; /* the response is queued (head and body) */
	int fin_sent;
	/* Last: big (its header array); set up by pk_http1_reader_init. */
	struct pk_http1_reader req;
};

static void pump(struct echo *e)
{
	if (!e->stream || !e->answered || e->fin_sent)
		return;
	while (e->head_sent < e->head_len) {
		size_t w = pk_yamux_stream_write(e->stream, (const uint8_t *)e->head + e->head_sent,
		                                 e->head_len - e->head_sent);
		if (!w)
			return; /* on_writable resumes */
		e->head_sent += w;
	}
	while (e->body.len) {
		size_t n;
		const uint8_t *d = pk_bufq_peek(&e->body, &n);
		size_t w = pk_yamux_stream_write(e->stream, d, n);
		if (!w)
			return;
		pk_bufq_consume(&e->body, w);
	}
	e->fin_sent = 1;
	pk_yamux_stream_close(e->stream, pk_now_ms());
}

static void answer(struct echo *e, int status)
{
	if (status != 200)
		pk_bufq_clear(&e->body);
	int n = snprintf(e->head, sizeof(e->head),
	                 "HTTP/1.1 %d %s\r\nContent-Type: application/octet-stream\r\n"
	                 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
	                 status, pk_http1_status_text(status), e->body.len);
	e->head_len = (size_t)n < sizeof(e->head) ? (size_t)n : sizeof(e->head) - 1;
	e->answered = 1;
	pump(e);
}

static void body_sink(void *arg, const char *data, size_t len)
{
	struct echo *e = arg;
	if (e->too_big)
		return;
	if (pk_bufq_append(&e->body, data, len) < len)
		e->too_big = 1;
}

static void st_data(struct pk_stream_handler *h, const uint8_t *data, size_t len)
{
	struct echo *e = (struct echo *)h;
	size_t off = 0;
	/* Bytes after the request (there should be none) are dropped. */
	while (!e->answered) {
		size_t used = 0;
		enum pk_http1_event ev =
		    pk_http1_reader_feed(&e->req, (const char *)data + off, len - off, &used);
		off += used;
		if (ev == PK_HTTP1_ERROR) {
			int st;
			const char *why = pk_http1_reader_error(&e->req, &st);
			pk_log(PK_LOG_WARN, SUBSYS, "bad request", "endpoint-id",
			       e->l->cfg->endpoint_id, "error", why, NULL);
			pk_yamux_stream_reset(e->stream);
			break;
		}
		if (e->too_big) {
			answer(e, 413);
			break;
		}
		if (ev == PK_HTTP1_DONE) {
			answer(e, 200);
			break;
		}
		if (ev == PK_HTTP1_NEED_MORE || (ev == PK_HTTP1_BODY && off == len))
			break;
	}
	/* Held in the capped body queue or dropped: either way delivered. */
	pk_yamux_stream_consumed(e->stream, len);
}

static void st_fin(struct pk_stream_handler *h)
{
	struct echo *e = (struct echo *)h;
	/* A request cut short can get no echo. */
	if (!e->answered) {
		pk_log(PK_LOG_WARN, SUBSYS, "request cut short", "endpoint-id",
		       e->l->cfg->endpoint_id, NULL);
		pk_yamux_stream_reset(e->stream);
	}
}

static void st_writable(struct pk_stream_handler *h)
{
	pump((struct echo *)h);
}

static void st_close(struct pk_stream_handler *h, int reset)
{
	struct echo *e = (struct echo *)h;
	if (reset || !e->fin_sent)
		pk_log(PK_LOG_DEBUG, SUBSYS, "stream closed early", "endpoint-id",
		       e->l->cfg->endpoint_id, "reset", reset ? "true" : "false", "answered",
		       e->answered ? "true" : "false", NULL);
	e->stream = NULL;
	e->l->streams--;
	pk_bufq_clear(&e->body);
	pk_http1_reader_free(&e->req);
	free(e);
}

static const struct pk_stream_ops echo_ops = {
    .on_data = st_data,
    .on_fin = st_fin,
    .on_writable = st_writable,
    .on_close = st_close,
};

int pk_bench_echo_accept(struct pk_agent_listener *l, struct pk_yamux_stream *s, size_t max_body)
{
	/* Owner: the stream (freed in st_close). Not zeroed as a whole: the
	 * reader's header array is big, and pk_http1_reader_init sets it up. */
	struct echo *e = pk_xmalloc(sizeof(*e));
	memset(e, 0, offsetof(struct echo, req));
	e->h.ops = &echo_ops;
	e->l = l;
	e->stream = s;
	pk_bufq_init(&e->body, max_body);
	pk_http1_reader_init(&e->req, PK_HTTP1_REQUEST, MAX_HEAD);
	pk_http1_reader_set_body_sink(&e->req, body_sink, e);
	l->streams++;
	pk_yamux_stream_set_user(s, &e->h);
	return 0;
}
