/*
 * yamux over a WebSocket: received binary fragments are fed to the session
 * as a byte stream (message boundaries mean nothing, Go's yamux writes a
 * header and its payload as separate messages). On lws's WebSocket (the
 * server), WRITEABLE packs the session's pending frames into one binary
 * message, one lws_write() per callback; on our client (the agent), its
 * flush pulls them (dial_fill) while the socket has room.
 */
#include "tunnel.h"

#include <stdio.h>
#include <string.h>

#include "backoff.h"
#include "lwsio.h"
#include "ws.h"
#include "wsclient.h"

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

/* lws's WebSocket: write at the end of the loop pass rather than in a
 * WRITEABLE callback. Asking lws for one costs two epoll_ctl calls and a
 * loop pass per write (strace: four epoll_ctl per proxied request on the
 * server), and a socket is nearly always writable. lws 4.1 keeps what the
 * kernel does not take (lws_partial_buffered) and then asks for WRITEABLE
 * itself, where the rest of our queue follows. */
static void pass_write(struct pk_pass_work *w)
{
	struct pk_tunnel *t = lws_container_of(w, struct pk_tunnel, write_work);
	if (!t->wsi)
		return;
	if (lws_partial_buffered(t->wsi)) {
		lws_callback_on_writable(t->wsi);
		return;
	}
	if (pk_tunnel_writeable(t) < 0)
		lws_set_timeout(t->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
}

static void cb_want_write(void *user)
{
	struct pk_tunnel *t = user;
	if (t->wsi)
		pk_runloop_at_pass_end(&t->write_work, pass_write);
	else if (t->wsc)
		pk_wsclient_want_write(t->wsc);
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
	if (t->wsi) {
		lws_callback_on_writable(t->wsi);
		/* If the peer has vanished, WRITEABLE may never come (lws holds
		 * a partial send): close within a few seconds regardless. */
		lws_set_timeout(t->wsi, PENDING_TIMEOUT_CLOSE_SEND, CLOSE_TIMEOUT_MS / 1000);
	} else if (t->wsc) {
		pk_wsclient_close(t->wsc, CLOSE_TIMEOUT_MS);
	}
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

void pk_tunnel_init(struct pk_tunnel *t, struct lws *wsi, int is_client,
                    const struct pk_tunnel_ops *ops, void *owner, uint64_t now_ms)
{
	t->wsi = wsi;
	t->wsc = NULL;
	memset(&t->write_work, 0, sizeof(t->write_work));
	t->ops = ops;
	t->owner = owner;
	t->closing = 0;
	/* Owner of the session: this tunnel; freed in pk_tunnel_destroy(). */
	t->sess = pk_yamux_session_new(is_client, NULL, &tunnel_callbacks, t, now_ms);
}

/* ---- a dialled tunnel (core/wsclient.c) ---------------------------------- */

static void dial_open(void *user)
{
	struct pk_tunnel *t = user;
	struct pk_wsclient *wsc = t->wsc;
	pk_tunnel_init(t, NULL, 1, t->ops, t->owner, pk_now_ms());
	t->wsc = wsc;
	t->dial_hooks->on_up(t);
}

static void dial_refused(void *user, int status, const char *error)
{
	struct pk_tunnel *t = user;
	t->refused_status = status;
	snprintf(t->refused_error, sizeof(t->refused_error), "%s", error ? error : "");
}

static void dial_message(void *user, int opcode, const uint8_t *data, size_t len)
{
	struct pk_tunnel *t = user;
	if (!t->sess || t->closing)
		return;
	if (opcode != PK_WS_BINARY) {
		/* A text message is fatal (protocol reference §1.1). */
		pk_wsclient_abort(t->wsc, "text message on a tunnel");
		return;
	}
	/* On a protocol error the session queues its Go Away and reports the
	 * close (cb_on_session_close), which flushes it and closes. */
	pk_yamux_session_feed(t->sess, data, len);
}

static size_t dial_fill(void *user, uint8_t *buf, size_t cap)
{
	struct pk_tunnel *t = user;
	return t->sess ? pk_yamux_session_fill(t->sess, buf, cap) : 0;
}

static void dial_close(void *user, const char *why)
{
	struct pk_tunnel *t = user;
	int was_up = t->sess != NULL;
	t->wsc = NULL;
	pk_tunnel_destroy(t);
	t->dial_hooks->on_down(t, was_up, t->refused_status, t->refused_error, why);
}

static const struct pk_wsclient_ops dial_ops = {
    .on_open = dial_open,
    .on_refused = dial_refused,
    .on_message = dial_message,
    .fill = dial_fill,
    .on_close = dial_close,
};

int pk_tunnel_dial(struct pk_tunnel *t, struct lws_context *ctx,
                   const struct pk_wsclient_target *target, const struct pk_tunnel_ops *ops,
                   const struct pk_tunnel_dial_hooks *hooks, void *owner)
{
	memset(t, 0, sizeof(*t));
	t->ops = ops;
	t->owner = owner;
	t->dial_hooks = hooks;
	t->wsc = pk_wsclient_connect(ctx, target, &dial_ops, t);
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
		pk_wsclient_disown(t->wsc);
	t->wsc = NULL;
	pk_tunnel_destroy(t);
}

int pk_tunnel_rx(struct pk_tunnel *t, const void *in, size_t len)
{
	if (!lws_frame_is_binary(t->wsi))
		return -1; /* a text message is fatal (protocol reference §1.1) */
	if (t->closing)
		return 0;
	if (pk_yamux_session_feed(t->sess, in, len) < 0)
		lws_callback_on_writable(t->wsi); /* flush our Go Away, then close */
	return 0;
}

int pk_tunnel_writeable(struct pk_tunnel *t)
{
	unsigned char *buf = pk_lwsio_scratch();
	size_t n = pk_yamux_session_fill(t->sess, buf, PK_LWSIO_WRITE_MAX);
	if (n > 0) {
		if (lws_write(t->wsi, buf, n, LWS_WRITE_BINARY) < 0)
			return -1;
		/* Come back for the rest, or to close once lws has flushed. */
		if (pk_yamux_session_has_output(t->sess) || t->closing)
			lws_callback_on_writable(t->wsi);
		return 0;
	}
	return t->closing ? -1 : 0;
}

int pk_tunnel_tick(struct pk_tunnel *t, uint64_t now_ms)
{
	if (t->closing)
		return -1;
	return pk_yamux_session_tick(t->sess, now_ms);
}

void pk_tunnel_close(struct pk_tunnel *t)
{
	t->closing = 1;
	if (t->wsi)
		lws_callback_on_writable(t->wsi);
	else if (t->wsc)
		pk_wsclient_close(t->wsc, CLOSE_TIMEOUT_MS);
}

void pk_tunnel_destroy(struct pk_tunnel *t)
{
	pk_runloop_pass_cancel(&t->write_work);
	t->wsi = NULL;
	t->wsc = NULL;
	if (t->sess) {
		pk_yamux_session_free(t->sess);
		t->sess = NULL;
	}
}
