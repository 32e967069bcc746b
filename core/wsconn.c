/*
 * Our WebSocket connections, both roles (see wsconn.h).
 */
#include "wsconn.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "http1.h"
#include "runloop.h"
#include "sock.h"
#include "ws.h"
#include "ws_upgrade.h"

/* The socket's send queue. The flush fills a message only while at least
 * MIN_FILL fits, so several messages may wait here: 1 MiB keeps the kernel
 * fed for bulk transfers without holding much per tunnel when idle (the
 * queue's memory is only taken while it holds bytes). */
#define SEND_CAP (1024 * 1024)
/* One message at most: yamux frames are packed into it. */
#define FRAME_MAX (256 * 1024)
#define MIN_FILL 1024

enum {
	ST_CONNECTING = 0,
	ST_HANDSHAKE,
	ST_OPEN,
	ST_DONE, /* refused, failed, or our close frame sent: no more callbacks but on_close */
};

struct pk_wsconn {
	struct lws_context *ctx;
	const struct pk_wsconn_ops *ops;
	void *user;
	struct pk_sock *sock; /* NULL once its on_close ran */
	int state;
	int server; /* accepted: frames we send are not masked, the peer's must be */
	/* The handshake's state, freed once it is over (an open connection
	 * keeps neither). Client: the request, sent once connected, and the
	 * answer's reader; server: the request's reader. */
	char *request;
	struct pk_ws_upgrade *up;
	struct pk_http1_reader *req;
	struct pk_ws_reader wsr;
	char peer_ip[64];
	int closing;                    /* pk_wsconn_close(): close frame after the last fill */
	struct pk_pass_work flush_work; /* a flush at the loop pass's end */
	const char *why;                /* our own reason for ending, reported by on_close */
	uint64_t handshake_timeout_ms;
	lws_sorted_usec_list_t timer_sul; /* handshake or close timeout */
};

static void handshake_free(struct pk_wsconn *c)
{
	if (c->up) {
		pk_ws_upgrade_free(c->up);
		free(c->up);
		c->up = NULL;
	}
	if (c->req) {
		pk_http1_reader_free(c->req);
		free(c->req);
		c->req = NULL;
	}
	free(c->request);
	c->request = NULL;
}

/* ---- writing ----------------------------------------------------------------- */

/* One frame: the header goes right before the payload, which lies at
 * buf + PK_WS_MAX_HDR, and a client's payload is masked in place, so the
 * frame is handed to the socket with a single copy. */
static void put_frame(struct pk_wsconn *c, int opcode, uint8_t *buf, size_t n)
{
	uint8_t mask[4], hdr[PK_WS_MAX_HDR];
	uint8_t *payload = buf + PK_WS_MAX_HDR;
	if (!c->server) {
		pk_ws_mask_key(mask);
		pk_ws_mask(payload, n, mask, 0);
	}
	size_t hl = pk_ws_frame_header(hdr, opcode, 1, n, c->server ? NULL : mask);
	memcpy(payload - hl, hdr, hl);
	pk_sock_write(c->sock, payload - hl, hl + n);
}

/* A control frame goes whole or not at all: one cut short by a full send
 * queue would corrupt the stream. 0, or -1 when the queue has no room. */
static int send_control(struct pk_wsconn *c, int opcode, const uint8_t *p, size_t n)
{
	uint8_t buf[PK_WS_MAX_HDR + PK_WS_MAX_CONTROL];
	if (n > PK_WS_MAX_CONTROL)
		n = PK_WS_MAX_CONTROL;
	if (pk_sock_write_space(c->sock) < PK_WS_MAX_HDR + n)
		return -1;
	if (n)
		memcpy(buf + PK_WS_MAX_HDR, p, n);
	put_frame(c, opcode, buf, n);
	return 0;
}

/* Our close frame, then FIN once the queue is written; a reset when the
 * queue has no room even for the close frame. */
static void send_close(struct pk_wsconn *c, uint16_t code, const char *reason)
{
	uint8_t payload[PK_WS_MAX_CONTROL];
	size_t n = pk_ws_close_payload(payload, code, reason);
	int full = send_control(c, PK_WS_CLOSE, payload, n) < 0;
	c->state = ST_DONE;
	pk_sock_close(c->sock, full);
}

static void flush(struct pk_wsconn *c)
{
	/* One loop thread: one scratch buffer for every connection. */
	static uint8_t *buf;
	if (!c->sock || c->state != ST_OPEN)
		return;
	if (!buf)
		buf = pk_xmalloc(PK_WS_MAX_HDR + FRAME_MAX);
	for (;;) {
		size_t space = pk_sock_write_space(c->sock);
		if (space < PK_WS_MAX_HDR + MIN_FILL)
			return; /* on_drain brings us back */
		size_t cap = space - PK_WS_MAX_HDR;
		if (cap > FRAME_MAX)
			cap = FRAME_MAX;
		size_t n = c->ops->fill(c->user, buf + PK_WS_MAX_HDR, cap);
		if (n == 0)
			break;
		assert(n <= cap);
		put_frame(c, PK_WS_BINARY, buf, n);
	}
	if (c->closing)
		send_close(c, 1000, "");
}

static void flush_cb(struct pk_pass_work *w)
{
	flush(lws_container_of(w, struct pk_wsconn, flush_work));
}

void pk_wsconn_want_write(struct pk_wsconn *c)
{
	/* Never from inside the caller (fill() may be what called us): at
	 * the end of this loop pass, so that what every event of the pass
	 * queued leaves in one message and one send(). */
	if (!c->sock || c->state != ST_OPEN)
		return;
	pk_runloop_at_pass_end(&c->flush_work, flush_cb);
}

static void timeout_cb(lws_sorted_usec_list_t *sul)
{
	struct pk_wsconn *c = lws_container_of(sul, struct pk_wsconn, timer_sul);
	if (!c->sock)
		return;
	if (!c->why)
		c->why = c->state == ST_HANDSHAKE ? "handshake timeout" : "close timeout";
	/* A client too slow with its request is closed as Go's server closes
	 * it (FIN, no answer); anything else is reset. */
	int reset = !(c->server && c->state == ST_HANDSHAKE);
	c->state = ST_DONE;
	pk_sock_close(c->sock, reset);
}

void pk_wsconn_close(struct pk_wsconn *c, uint64_t timeout_ms)
{
	if (!c->sock)
		return;
	lws_sul_schedule(c->ctx, 0, &c->timer_sul, timeout_cb, (lws_usec_t)timeout_ms * 1000);
	if (c->closing)
		return;
	c->closing = 1;
	if (c->state == ST_OPEN) {
		pk_runloop_at_pass_end(&c->flush_work, flush_cb);
	} else if (c->state != ST_DONE) {
		c->why = "closed";
		c->state = ST_DONE;
		pk_sock_close(c->sock, 1);
	}
}

void pk_wsconn_abort(struct pk_wsconn *c, const char *why)
{
	if (!c->sock)
		return;
	if (!c->why)
		c->why = why;
	c->state = ST_DONE;
	pk_sock_close(c->sock, 1);
}

static void silent_open(void *user)
{
	(void)user;
}

static void silent_message(void *user, int opcode, const uint8_t *data, size_t len)
{
	(void)user, (void)opcode, (void)data, (void)len;
}

static size_t silent_fill(void *user, uint8_t *buf, size_t cap)
{
	(void)user, (void)buf, (void)cap;
	return 0;
}

static void silent_close(void *user, const char *why)
{
	(void)user, (void)why;
}

static const struct pk_wsconn_ops silent_ops = {
    .on_open = silent_open,
    .on_message = silent_message,
    .fill = silent_fill,
    .on_close = silent_close,
};

void pk_wsconn_disown(struct pk_wsconn *c)
{
	c->ops = &silent_ops;
	c->user = NULL;
	pk_wsconn_abort(c, "closed");
}

const char *pk_wsconn_peer_ip(const struct pk_wsconn *c)
{
	return c->peer_ip;
}

/* ---- reading ----------------------------------------------------------------- */

/* End now with a close frame saying why (a protocol error of the peer's),
 * then FIN once it is sent. */
static void fail(struct pk_wsconn *c, uint16_t code, const char *why)
{
	if (!c->why)
		c->why = why;
	send_close(c, code, why);
}

/* The server refused the upgrade: its status, and the `error` of its JSON
 * body when there is one. */
static void refused(struct pk_wsconn *c)
{
	char error[256];
	pk_ws_upgrade_error(c->up, error, sizeof(error));
	c->state = ST_DONE;
	c->why = "refused";
	if (c->ops->on_refused)
		c->ops->on_refused(c->user, c->up->status, error[0] ? error : NULL);
	pk_sock_close(c->sock, 0);
}

static void frames_input(struct pk_wsconn *c, uint8_t *p, size_t n)
{
	while (n > 0 && c->state == ST_OPEN) {
		size_t used = 0;
		uint8_t *payload = NULL;
		size_t plen = 0;
		enum pk_ws_event ev = pk_ws_reader_feed(&c->wsr, p, n, &used, &payload, &plen);
		p += used;
		n -= used;
		if (ev == PK_WS_ERROR) {
			uint16_t code;
			const char *why = pk_ws_reader_error(&c->wsr, &code);
			fail(c, code, why);
			return;
		}
		if (ev == PK_WS_DATA && plen) {
			c->ops->on_message(c->user, pk_ws_reader_data_opcode(&c->wsr), payload,
			                   plen);
		} else if (ev == PK_WS_CONTROL) {
			const uint8_t *cp;
			size_t cl;
			int op = pk_ws_reader_control(&c->wsr, &cp, &cl);
			if (op == PK_WS_PING) {
				/* Dropped when our queue is full: a peer that
				 * pings and does not read has its pong late
				 * or never, as from any busy server. */
				(void)send_control(c, PK_WS_PONG, cp, cl);
			} else if (op == PK_WS_CLOSE) {
				/* Answer with ours and end (RFC 6455 §5.5.1). */
				c->why =
				    c->server ? "closed by the client" : "closed by the server";
				send_close(c, 1000, "");
				return;
			}
		} else if (ev == PK_WS_NEED_MORE && used == 0) {
			return;
		}
	}
}

static void opened(struct pk_wsconn *c, uint8_t *rest, size_t len)
{
	handshake_free(c);
	c->state = ST_OPEN;
	lws_sul_cancel(&c->timer_sul);
	c->ops->on_open(c->user);
	if (c->closing && c->state == ST_OPEN)
		pk_wsconn_want_write(c);
	if (len && c->state == ST_OPEN)
		frames_input(c, rest, len); /* frames in the handshake's read */
}

/* The client's side: the server's answer. */
static void answer_input(struct pk_wsconn *c, uint8_t *data, size_t len)
{
	size_t used = 0;
	switch (pk_ws_upgrade_feed(c->up, data, len, &used)) {
	case PK_WS_UPGRADE_MORE:
		return;
	case PK_WS_UPGRADE_BAD:
		pk_wsconn_abort(c, "bad handshake");
		return;
	case PK_WS_UPGRADE_REFUSED:
		refused(c);
		return;
	case PK_WS_UPGRADE_OPEN:
		break;
	}
	opened(c, data + used, len - used);
}

/* Write a whole handshake answer (the socket's queue is empty this early,
 * and an answer is far below its cap); owns resp. A refusal (why set) then
 * closes once it is sent. */
static void put_answer(struct pk_wsconn *c, char *resp, size_t len, const char *why)
{
	pk_sock_write(c->sock, (const uint8_t *)resp, len);
	free(resp);
	if (why) {
		c->why = why;
		c->state = ST_DONE;
		pk_sock_close(c->sock, 0);
	}
}

/* The server's side: the client's request. */
static void request_input(struct pk_wsconn *c, uint8_t *data, size_t len)
{
	size_t used = 0;
	enum pk_http1_event ev = pk_http1_reader_feed(c->req, (const char *)data, len, &used);
	char *resp = NULL;
	size_t n = 0;
	if (ev == PK_HTTP1_ERROR) {
		int status;
		const char *why = pk_http1_reader_error(c->req, &status);
		resp = pk_http1_unreadable_response(status, 0, &n);
		put_answer(c, resp, n, why);
		return;
	}
	if (ev != PK_HTTP1_HEAD)
		return; /* NEED_MORE: every byte was taken */
	if (!c->ops->on_request(c->user, pk_http1_reader_head(c->req), &resp, &n)) {
		put_answer(c, resp, n, "refused");
		return;
	}
	put_answer(c, resp, n, NULL);
	opened(c, data + used, len - used);
}

/* ---- the socket -------------------------------------------------------------- */

static void on_connected(struct pk_sock *s)
{
	struct pk_wsconn *c = pk_sock_user(s);
	if (c->server)
		return; /* an accepted socket's TLS handshake is done: nothing to do */
	pk_sock_peer_ip(c->sock, c->peer_ip, sizeof(c->peer_ip));
	pk_sock_write(s, (const uint8_t *)c->request, strlen(c->request));
	free(c->request);
	c->request = NULL;
	if (c->state == ST_DONE)
		return;
	c->state = ST_HANDSHAKE;
	if (c->handshake_timeout_ms)
		lws_sul_schedule(c->ctx, 0, &c->timer_sul, timeout_cb,
		                 (lws_usec_t)c->handshake_timeout_ms * 1000);
}

static void on_data(struct pk_sock *s, const uint8_t *data, size_t len)
{
	struct pk_wsconn *c = pk_sock_user(s);
	/* The socket's read buffer is ours until we return (core/sock.c reads
	 * into one of its own): the reader unmasks a client's frames in
	 * place, and never writes to a server's, which are unmasked. */
	uint8_t *p = (uint8_t *)data;
	if (c->state == ST_HANDSHAKE && c->server)
		request_input(c, p, len);
	else if (c->state == ST_HANDSHAKE)
		answer_input(c, p, len);
	else if (c->state == ST_OPEN)
		frames_input(c, p, len);
}

static void on_eof(struct pk_sock *s)
{
	struct pk_wsconn *c = pk_sock_user(s);
	if (c->state == ST_HANDSHAKE && !c->server &&
	    pk_ws_upgrade_eof(c->up) == PK_WS_UPGRADE_REFUSED) {
		refused(c);
		return;
	}
	if (!c->why)
		c->why = c->state == ST_HANDSHAKE && !c->server ? "bad handshake" : "closed";
	c->state = ST_DONE;
	pk_sock_close(s, 0);
}

static void on_drain(struct pk_sock *s)
{
	flush(pk_sock_user(s));
}

static void on_close(struct pk_sock *s, int reset, const char *why)
{
	struct pk_wsconn *c = pk_sock_user(s);
	(void)reset;
	c->sock = NULL;
	pk_runloop_pass_cancel(&c->flush_work);
	lws_sul_cancel(&c->timer_sul);
	/* The socket's reason for a failed connect ("connection refused",
	 * "tls: ..."), ours once the handshake was under way. */
	c->ops->on_close(c->user, c->why && c->state != ST_CONNECTING ? c->why : why);
	handshake_free(c);
	free(c);
}

static const struct pk_sock_ops sock_ops = {
    .on_connected = on_connected,
    .on_data = on_data,
    .on_eof = on_eof,
    .on_drain = on_drain,
    .on_close = on_close,
};

void pk_wsconn_piko_upstream_path(const char *base, const char *endpoint, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	char ep[768];
	size_t o = 0;
	for (const char *in = endpoint; *in && o + 4 < sizeof(ep); in++) {
		unsigned char ch = (unsigned char)*in;
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
			ep[o++] = (char)ch;
		} else {
			ep[o++] = '%';
			ep[o++] = hex[ch >> 4];
			ep[o++] = hex[ch & 15];
		}
	}
	ep[o] = '\0';
	snprintf(out, cap, "%s/piko/v1/upstream/%s", base, ep);
}

char *pk_wsconn_piko_headers(const char *token, const char *tenant)
{
	size_t cap = (token ? strlen(token) : 0) + (tenant ? strlen(tenant) : 0) + 64;
	char *h = pk_xmalloc(cap);
	size_t n = 0;
	h[0] = '\0';
	if (token && *token)
		n += (size_t)snprintf(h, cap, "Authorization: Bearer %s\r\n", token);
	if (tenant && *tenant)
		snprintf(h + n, cap - n, "x-piko-tenant-id: %s\r\n", tenant);
	return h;
}

static struct pk_wsconn *conn_new(struct lws_context *ctx, const struct pk_wsconn_ops *ops,
                                  void *user, int server)
{
	/* Owner: the connection itself; freed in on_close(). */
	struct pk_wsconn *c = pk_xcalloc(1, sizeof(*c));
	c->ctx = ctx;
	c->ops = ops;
	c->user = user;
	c->server = server;
	pk_ws_reader_init(&c->wsr, server);
	return c;
}

struct pk_wsconn *pk_wsconn_connect(struct lws_context *ctx, const struct pk_wsconn_target *t,
                                    const struct pk_wsconn_ops *ops, void *user)
{
	struct pk_wsconn *c = conn_new(ctx, ops, user, 0);
	c->handshake_timeout_ms = t->handshake_timeout_ms;
	c->up = pk_xmalloc(sizeof(*c->up));
	c->request = pk_ws_upgrade_start(c->up, t->host, t->port, t->path, t->headers);
	c->sock = pk_sock_connect(t->host, t->port, t->connect_timeout_ms, &sock_ops, c, SEND_CAP);
	if (!c->sock) {
		handshake_free(c);
		free(c);
		return NULL;
	}
	if (t->tls)
		pk_sock_use_tls(c->sock, t->tls, t->host, t->verify_name);
	return c;
}

struct pk_wsconn *pk_wsconn_accept(struct lws_context *ctx, int fd,
                                   const struct pk_wsconn_accept_opts *o,
                                   const struct pk_wsconn_ops *ops, void *user)
{
	struct pk_wsconn *c = conn_new(ctx, ops, user, 1);
	c->sock = pk_sock_adopt(fd, &sock_ops, c, SEND_CAP);
	if (!c->sock) {
		free(c);
		return NULL;
	}
	c->state = ST_HANDSHAKE;
	c->req = pk_xmalloc(sizeof(*c->req));
	pk_http1_reader_init(c->req, PK_HTTP1_REQUEST, o->max_head);
	if (o->tls)
		pk_sock_accept_tls(c->sock, o->tls);
	pk_sock_peer_ip(c->sock, c->peer_ip, sizeof(c->peer_ip));
	/* One bound for the TLS handshake and the request head together. */
	if (o->handshake_timeout_ms)
		lws_sul_schedule(ctx, 0, &c->timer_sul, timeout_cb,
		                 (lws_usec_t)o->handshake_timeout_ms * 1000);
	return c;
}
