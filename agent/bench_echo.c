/*
 * The in-process upstream of `piko bench http`: a stream carries HTTP/1.1
 * requests (protocol reference §1.3), one after the other. Each request's
 * body (de-chunked when chunked) is collected, then answered as `200` with
 * the same bytes. As the agent's HTTP listener does (agent_http.c), the
 * stream stays open for the next request when the request allows it
 * (HTTP/1.1 without `Connection: close`, as our server sends): a server that
 * keeps streams (ours) then measures its reuse, as real agents are. After a
 * `Connection: close` request (Piko's server sends one with every request),
 * a 413 (the rest of the oversized body is not read) or the server's FIN, the
 * response says `Connection: close` or is the last, and the stream is
 * half-closed after it.
 *
 * Bytes that arrive while a response is still going out (a pipelined
 * request) are held in `next`, capped, and served after it; over the cap the
 * stream is reset.
 *
 * Backpressure: request bytes are credited to the yamux window as they are
 * collected, since the body queue is capped at max_body (what the bench
 * sends, `size`) and `next` at a head plus a body; the response leaves
 * through pk_yamux_stream_write() as the stream takes it (on_writable).
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
	struct pk_bufq next;            /* bytes after the request being answered */
	char head[160];                 /* the response head ... */
	size_t head_len, head_sent;     /* ... and how much of it went out */
	int too_big;
	int answered; /* the response is queued (head and body) */
	int keep;     /* the stream stays open after this response */
	int peer_fin; /* the server will send no more */
	int done;     /* FIN sent or reset: nothing more goes out */
	/* Last: big (its header array); set up by pk_http1_reader_init. */
	struct pk_http1_reader req;
};

static void reset_stream(struct echo *e, const char *why)
{
	pk_log(PK_LOG_WARN, SUBSYS, why, "endpoint-id", e->l->cfg->endpoint_id, NULL);
	e->done = 1;
	pk_yamux_stream_reset(e->stream);
}

static void send_fin(struct echo *e)
{
	e->done = 1;
	pk_bufq_clear(&e->next);
	pk_yamux_stream_close(e->stream, pk_now_ms());
}

/* Write what the stream takes of the response; 1 once all of it went out. */
static int pump(struct echo *e)
{
	while (e->head_sent < e->head_len) {
		size_t w = pk_yamux_stream_write(e->stream, (const uint8_t *)e->head + e->head_sent,
		                                 e->head_len - e->head_sent);
		if (!w)
			return 0; /* on_writable resumes */
		e->head_sent += w;
	}
	while (e->body.len) {
		size_t n;
		const uint8_t *d = pk_bufq_peek(&e->body, &n);
		size_t w = pk_yamux_stream_write(e->stream, d, n);
		if (!w)
			return 0;
		pk_bufq_consume(&e->body, w);
	}
	return 1;
}

static void answer(struct echo *e, int status)
{
	if (status != 200) {
		pk_bufq_clear(&e->body);
		e->keep = 0; /* the rest of the request is not read */
	} else {
		e->keep = pk_http1_reader_head(&e->req)->keep_alive && !e->peer_fin;
	}
	int n = snprintf(e->head, sizeof(e->head),
	                 "HTTP/1.1 %d %s\r\nContent-Type: application/octet-stream\r\n"
	                 "Content-Length: %zu\r\n%s\r\n",
	                 status, pk_http1_status_text(status), e->body.len,
	                 e->keep ? "" : "Connection: close\r\n");
	e->head_len = (size_t)n < sizeof(e->head) ? (size_t)n : sizeof(e->head) - 1;
	e->head_sent = 0;
	e->answered = 1;
}

static void body_sink(void *arg, const char *data, size_t len)
{
	struct echo *e = arg;
	if (e->too_big)
		return;
	if (pk_bufq_append(&e->body, data, len) < len)
		e->too_big = 1;
}

/* Parse request bytes until a request is complete (then answered is set);
 * returns the bytes used, or -1 after resetting the stream. */
static ssize_t feed(struct echo *e, const uint8_t *data, size_t len)
{
	size_t off = 0;
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
			e->done = 1;
			pk_yamux_stream_reset(e->stream);
			return -1;
		}
		if (e->too_big)
			answer(e, 413);
		else if (ev == PK_HTTP1_DONE)
			answer(e, 200);
		else if (ev == PK_HTTP1_NEED_MORE || (ev == PK_HTTP1_BODY && off == len))
			break;
	}
	return (ssize_t)off;
}

/* Send what is due and serve what was held, as far as the stream takes it. */
static void step(struct echo *e)
{
	while (!e->done) {
		if (e->answered) {
			if (!pump(e))
				return;
			if (!e->keep) {
				send_fin(e);
				return;
			}
			e->answered = 0;
		}
		if (!e->next.len) {
			/* Nothing held: a server that closed its side ends the stream,
			 * and a request it left unfinished gets no echo. */
			if (!e->peer_fin)
				return;
			if (pk_http1_reader_in_message(&e->req))
				reset_stream(e, "request cut short");
			else
				send_fin(e);
			return;
		}
		size_t n;
		const uint8_t *d = pk_bufq_peek(&e->next, &n);
		ssize_t used = feed(e, d, n);
		if (used < 0)
			return;
		pk_bufq_consume(&e->next, (size_t)used);
	}
}

static void st_data(struct pk_stream_handler *h, const uint8_t *data, size_t len)
{
	struct echo *e = (struct echo *)h;
	/* Held or dropped, the bytes are delivered: the window is credited for
	 * all of them (what is held is capped). */
	pk_yamux_stream_consumed(e->stream, len);
	/* Dropped: after a reset or FIN, the rest of an oversized body, or bytes
	 * after a last request. */
	if (e->done || (e->answered && !e->keep))
		return;
	size_t off = 0;
	if (!e->answered && !e->next.len) {
		ssize_t used = feed(e, data, len);
		if (used < 0)
			return;
		off = (size_t)used;
	}
	if (off < len && !(e->answered && !e->keep) &&
	    pk_bufq_append(&e->next, data + off, len - off) < len - off) {
		reset_stream(e, "requests pipelined beyond what is held");
		return;
	}
	step(e);
}

static void st_fin(struct pk_stream_handler *h)
{
	struct echo *e = (struct echo *)h;
	e->peer_fin = 1;
	step(e);
}

static void st_writable(struct pk_stream_handler *h)
{
	step((struct echo *)h);
}

static void st_close(struct pk_stream_handler *h, int reset)
{
	struct echo *e = (struct echo *)h;
	if (reset || !e->done)
		pk_log(PK_LOG_DEBUG, SUBSYS, "stream closed early", "endpoint-id",
		       e->l->cfg->endpoint_id, "reset", reset ? "true" : "false", "answered",
		       e->answered ? "true" : "false", NULL);
	e->stream = NULL;
	e->l->streams--;
	pk_bufq_clear(&e->body);
	pk_bufq_clear(&e->next);
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
	pk_bufq_init(&e->next, max_body + MAX_HEAD);
	pk_http1_reader_init(&e->req, PK_HTTP1_REQUEST, MAX_HEAD);
	pk_http1_reader_set_body_sink(&e->req, body_sink, e);
	l->streams++;
	pk_yamux_stream_set_user(s, &e->h);
	return 0;
}
