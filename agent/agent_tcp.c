/*
 * Agent TCP listener: each stream the server opens is piped, raw, to a new
 * TCP connection to the service (protocol reference §4.4). A FIN travels
 * both ways (yamux FIN <-> TCP shutdown), so either side may half-close and
 * still receive the other's remaining bytes; a reset travels as a reset.
 *
 * Backpressure: stream bytes are credited back to the yamux window only once
 * the service socket took them; service bytes the stream cannot take yet wait
 * in a small queue while the service socket is paused.
 *
 * Ownership: a pipe is shared by its stream and its socket and freed by
 * whichever goes last.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "buf.h"
#include "log.h"
#include "sock.h"

#define SUBSYS "proxy.tcp.access"
/* The socket's send queue holds at most one yamux window. */
#define SOCK_SEND_CAP PK_YAMUX_INITIAL_WINDOW
#define PENDING_CAP (128 * 1024)

struct tcp_pipe {
	struct pk_stream_handler h; /* first: the stream's user pointer */
	struct pk_agent_listener *l;
	struct pk_yamux_stream *stream;
	struct pk_sock *sock;
	struct pk_bufq pending; /* service bytes waiting for stream space */
	size_t given;           /* stream bytes handed to the socket */
	size_t credited;        /* ... of which credited to the window */
	int sock_eof;           /* the service shut down its writing side */
	int fin_sent;
	int opened;
	uint64_t start_ms;
	char peer[64];
};

static void access_log(struct tcp_pipe *p, const char *msg, const char *why)
{
	const struct pk_listener_config *cfg = p->l->cfg;
	int level =
	    cfg->access_log.disable ? PK_LOG_DEBUG : pk_log_parse_level(cfg->access_log.level);
	char dur[32];
	snprintf(dur, sizeof(dur), "%llums", (unsigned long long)(pk_now_ms() - p->start_ms));
	pk_log(level, SUBSYS, msg, "endpoint-id", cfg->endpoint_id, "addr", cfg->addr, "duration",
	       dur, why ? "reason" : NULL, why, NULL);
}

static void maybe_free(struct tcp_pipe *p)
{
	if (p->stream || p->sock)
		return;
	p->l->streams--;
	pk_bufq_clear(&p->pending);
	free(p);
}

/* Credit the window with what the socket has written to the kernel. */
static void credit(struct tcp_pipe *p)
{
	if (!p->stream || !p->sock)
		return;
	size_t written = p->given - pk_sock_queued(p->sock);
	if (written > p->credited) {
		pk_yamux_stream_consumed(p->stream, written - p->credited);
		p->credited = written;
	}
}

/* FIN the stream once the service's EOF and every byte before it went in. */
static void maybe_fin(struct tcp_pipe *p)
{
	if (p->sock_eof && !p->pending.len && p->stream && !p->fin_sent) {
		p->fin_sent = 1;
		pk_yamux_stream_close(p->stream, pk_now_ms());
	}
}

static void pump(struct tcp_pipe *p)
{
	while (p->stream && p->pending.len) {
		size_t n;
		const uint8_t *d = pk_bufq_peek(&p->pending, &n);
		size_t w = pk_yamux_stream_write(p->stream, d, n);
		if (!w)
			break;
		pk_bufq_consume(&p->pending, w);
	}
	if (p->sock && !p->pending.len && !p->sock_eof)
		pk_sock_pause(p->sock, 0);
	maybe_fin(p);
}

/* ---- the service socket --------------------------------------------------- */

static void sock_connected(struct pk_sock *s)
{
	struct tcp_pipe *p = pk_sock_user(s);
	p->opened = 1;
	access_log(p, "connection opened", NULL);
}

static void sock_data(struct pk_sock *s, const uint8_t *data, size_t len)
{
	struct tcp_pipe *p = pk_sock_user(s);
	if (!p->stream)
		return;
	size_t w = p->pending.len ? 0 : pk_yamux_stream_write(p->stream, data, len);
	if (w < len) {
		pk_bufq_append_force(&p->pending, data + w, len - w);
		pk_sock_pause(s, 1); /* resumed by pump() once the stream took it */
	}
}

static void sock_eof(struct pk_sock *s)
{
	struct tcp_pipe *p = pk_sock_user(s);
	p->sock_eof = 1;
	maybe_fin(p);
}

static void sock_drain(struct pk_sock *s)
{
	credit(pk_sock_user(s));
}

static void sock_close(struct pk_sock *s, int reset, const char *why)
{
	struct tcp_pipe *p = pk_sock_user(s);
	p->sock = NULL;
	if (!p->opened) {
		/* The dial failed: Piko's agent just closes the stream. */
		pk_log(PK_LOG_WARN, SUBSYS, "dial failed", "endpoint-id", p->l->cfg->endpoint_id,
		       "addr", p->l->cfg->addr, "reason", why, NULL);
		if (p->stream)
			pk_yamux_stream_reset(p->stream);
	} else {
		access_log(p, "connection closed", why);
		if (p->stream && reset)
			pk_yamux_stream_reset(p->stream);
		else if (p->stream) {
			p->sock_eof = 1;
			pump(p);
		}
	}
	maybe_free(p);
}

static const struct pk_sock_ops tcp_sock_ops = {
    .on_connected = sock_connected,
    .on_data = sock_data,
    .on_eof = sock_eof,
    .on_drain = sock_drain,
    .on_close = sock_close,
};

/* ---- the stream ----------------------------------------------------------- */

static void st_data(struct pk_stream_handler *h, const uint8_t *data, size_t len)
{
	struct tcp_pipe *p = (struct tcp_pipe *)h;
	if (!p->sock) {
		pk_yamux_stream_consumed(p->stream, len);
		return;
	}
	/* Always fits: the window (256 KiB) bounds what is uncredited, and
	 * the socket queue holds a window. */
	size_t w = pk_sock_write(p->sock, data, len);
	p->given += w;
	if (w < len) {
		/* Only after the socket was shut down or closed: drop. */
		p->given += len - w;
		p->credited += len - w;
		pk_yamux_stream_consumed(p->stream, len - w);
	}
	credit(p);
}

static void st_fin(struct pk_stream_handler *h)
{
	struct tcp_pipe *p = (struct tcp_pipe *)h;
	if (p->sock)
		pk_sock_shutdown_write(p->sock);
}

static void st_writable(struct pk_stream_handler *h)
{
	pump((struct tcp_pipe *)h);
}

static void st_close(struct pk_stream_handler *h, int reset)
{
	struct tcp_pipe *p = (struct tcp_pipe *)h;
	p->stream = NULL;
	if (p->sock) {
		if (reset)
			pk_sock_close(p->sock, 1);
		else
			pk_sock_shutdown_write(p->sock);
	}
	maybe_free(p);
}

static const struct pk_stream_ops tcp_stream_ops = {
    .on_data = st_data,
    .on_fin = st_fin,
    .on_writable = st_writable,
    .on_close = st_close,
};

int pk_agent_tcp_accept(struct pk_agent_listener *l, struct pk_yamux_stream *s)
{
	/* Owner: shared by the stream and the socket; see maybe_free(). */
	struct tcp_pipe *p = pk_xcalloc(1, sizeof(*p));
	p->h.ops = &tcp_stream_ops;
	p->l = l;
	p->stream = s;
	p->start_ms = pk_now_ms();
	pk_bufq_init(&p->pending, PENDING_CAP);
	p->sock = pk_sock_connect(l->target.host, l->target.port, (uint64_t)l->cfg->timeout_ms,
	                          &tcp_sock_ops, p, SOCK_SEND_CAP);
	if (!p->sock) {
		pk_bufq_clear(&p->pending);
		free(p);
		return -1;
	}
	l->streams++;
	const char *ep[] = {l->cfg->endpoint_id};
	pk_metric_add(l->agent->m.tcp_conns_total, ep, 1);
	pk_yamux_stream_set_user(s, &p->h);
	return 0;
}
