/*
 * yamux over a WebSocket (core/wsconn.c): received binary fragments are fed
 * to the session as a byte stream (message boundaries mean nothing, Go's
 * yamux writes a header and its payload as separate messages), and the
 * connection's flush pulls the session's pending frames (conn_fill) while
 * the socket has room, packing them into binary messages.
 */
#include "tunnel.h"

#include <stdio.h>
#include <string.h>

#include "backoff.h"
#include "runloop.h"
#include "ws.h"
#include "wsconn.h"

/* A session that died, or a retired tunnel: how long its last frames (a Go
 * Away) may take to leave before the connection is reset. A peer that
 * vanished would otherwise hold it open. */
#define CLOSE_TIMEOUT_MS 3000

static struct pk_stream_handler *handler(struct pk_yamux_stream *s)
{
	return pk_yamux_stream_get_user(s);
}

static int cb_on_stream(void *user, struct pk_yamux_stream *s)
{
	struct pk_tunnel *t = user;
	if (!t->ops->on_stream)
		return -1; /* the server never accepts streams from upstreams */
	return t->ops->on_stream(t, s);
}

void pk_stream_dispatch_data(void *user, struct pk_yamux_stream *s, const uint8_t *data, size_t len)
{
	(void)user;
	struct pk_stream_handler *h = handler(s);
	if (h)
		h->ops->on_data(h, data, len);
	else
		pk_yamux_stream_consumed(s, len); /* nobody listens: drop, keep window */
}

void pk_stream_dispatch_fin(void *user, struct pk_yamux_stream *s)
{
	(void)user;
	struct pk_stream_handler *h = handler(s);
	if (h)
		h->ops->on_fin(h);
}

void pk_stream_dispatch_writable(void *user, struct pk_yamux_stream *s)
{
	(void)user;
	struct pk_stream_handler *h = handler(s);
	if (h)
		h->ops->on_writable(h);
}

void pk_stream_dispatch_close(void *user, struct pk_yamux_stream *s, int reset)
{
	(void)user;
	struct pk_stream_handler *h = handler(s);
	pk_yamux_stream_set_user(s, NULL);
	if (h)
		h->ops->on_close(h, reset);
}

static void cb_want_write(void *user)
{
	struct pk_tunnel *t = user;
	if (t->wsc)
		pk_wsconn_want_write(t->wsc);
}

static void cb_on_go_away(void *user)
{
	struct pk_tunnel *t = user;
	if (t->ops->on_go_away)
		t->ops->on_go_away(t);
}

static void cb_on_session_close(void *user, int reason)
{
	struct pk_tunnel *t = user;
	t->closing = 1;
	if (t->ops->on_dead)
		t->ops->on_dead(t, reason);
	/* If the peer has vanished, what is queued may never leave: close
	 * within a few seconds regardless. */
	if (t->wsc)
		pk_wsconn_close(t->wsc, CLOSE_TIMEOUT_MS);
}

static const struct pk_yamux_callbacks tunnel_callbacks = {
    .on_stream = cb_on_stream,
    .on_data = pk_stream_dispatch_data,
    .on_fin = pk_stream_dispatch_fin,
    .on_writable = pk_stream_dispatch_writable,
    .on_stream_close = pk_stream_dispatch_close,
    .want_write = cb_want_write,
    .on_go_away = cb_on_go_away,
    .on_session_close = cb_on_session_close,
};

/* Free the session (every stream gets on_close). */
static void session_free(struct pk_tunnel *t)
{
	if (t->sess) {
		pk_yamux_session_free(t->sess);
		t->sess = NULL;
	}
}

/* ---- the WebSocket's events ------------------------------------------------ */

static int conn_request(void *user, const struct pk_http1_head *h, char **resp, size_t *len)
{
	struct pk_tunnel *t = user;
	return t->hooks->on_request(t, h, resp, len);
}

static void conn_open(void *user)
{
	struct pk_tunnel *t = user;
	/* Owner of the session: this tunnel; freed when the connection is
	 * gone (conn_close) or abandoned. */
	struct pk_yamux_config cfg;
	pk_yamux_config_default(&cfg);
	if (t->window)
		cfg.window = t->window;
	t->sess = pk_yamux_session_new(t->is_client, &cfg, &tunnel_callbacks, t, pk_now_ms());
	t->hooks->on_up(t);
}

static void conn_refused(void *user, int status, const char *error)
{
	struct pk_tunnel *t = user;
	t->refused_status = status;
	snprintf(t->refused_error, sizeof(t->refused_error), "%s", error ? error : "");
}

static void conn_message(void *user, int opcode, const uint8_t *data, size_t len)
{
	struct pk_tunnel *t = user;
	if (!t->sess || t->closing)
		return;
	if (opcode != PK_WS_BINARY) {
		/* A text message is fatal (protocol reference §1.1). */
		pk_wsconn_abort(t->wsc, "text message on a tunnel");
		return;
	}
	/* On a protocol error the session queues its Go Away and reports the
	 * close (cb_on_session_close), which flushes it and closes. */
	pk_yamux_session_feed(t->sess, data, len);
	if (t->ops->on_input)
		t->ops->on_input(t);
}

static size_t conn_fill(void *user, uint8_t *buf, size_t cap)
{
	struct pk_tunnel *t = user;
	return t->sess ? pk_yamux_session_fill(t->sess, buf, cap) : 0;
}

static void conn_close(void *user, const char *why)
{
	struct pk_tunnel *t = user;
	int was_up = t->sess != NULL;
	t->wsc = NULL;
	/* Closing from here: whatever the streams' on_close starts (a retry,
	 * the next pipelined request) must not pick this tunnel. */
	t->closing = 1;
	session_free(t);
	t->hooks->on_down(t, was_up, t->refused_status, t->refused_error, why);
}

static const struct pk_wsconn_ops conn_ops = {
    .on_request = conn_request,
    .on_open = conn_open,
    .on_refused = conn_refused,
    .on_message = conn_message,
    .fill = conn_fill,
    .on_close = conn_close,
};

static void tunnel_reset(struct pk_tunnel *t, int is_client, const struct pk_tunnel_ops *ops,
                         const struct pk_tunnel_hooks *hooks, void *owner)
{
	uint32_t window = t->window; /* the owner's setting outlives a redial */
	memset(t, 0, sizeof(*t));
	t->window = window;
	t->is_client = is_client;
	t->ops = ops;
	t->owner = owner;
	t->hooks = hooks;
}

int pk_tunnel_dial(struct pk_tunnel *t, struct lws_context *ctx,
                   const struct pk_wsconn_target *target, const struct pk_tunnel_ops *ops,
                   const struct pk_tunnel_hooks *hooks, void *owner)
{
	tunnel_reset(t, 1, ops, hooks, owner);
	t->wsc = pk_wsconn_connect(ctx, target, &conn_ops, t);
	return t->wsc ? 0 : -1;
}

int pk_tunnel_accept(struct pk_tunnel *t, struct lws_context *ctx, int fd,
                     const struct pk_wsconn_accept_opts *o, const struct pk_tunnel_ops *ops,
                     const struct pk_tunnel_hooks *hooks, void *owner)
{
	tunnel_reset(t, 0, ops, hooks, owner);
	t->wsc = pk_wsconn_accept(ctx, fd, o, &conn_ops, t);
	return t->wsc ? 0 : -1;
}

int pk_tunnel_retryable(int status)
{
	return status == 0 || status == 408 || status == 429 || status == 500 || status == 502 ||
	       status == 503 || status == 504;
}

void pk_tunnel_abandon(struct pk_tunnel *t)
{
	if (t->wsc)
		pk_wsconn_disown(t->wsc);
	t->wsc = NULL;
	session_free(t);
}

int pk_tunnel_tick(struct pk_tunnel *t, uint64_t now_ms)
{
	if (t->closing || !t->sess)
		return -1;
	return pk_yamux_session_tick(t->sess, now_ms);
}

void pk_tunnel_close(struct pk_tunnel *t)
{
	t->closing = 1;
	if (t->wsc)
		pk_wsconn_close(t->wsc, CLOSE_TIMEOUT_MS);
}
