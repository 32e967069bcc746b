/*
 * TCP over WebSocket to a Piko proxy port (see tcpws.h).
 *
 * The WebSocket client is our own (core/ws.c over core/sock.c) rather than
 * lws's: lws 4.1's client fails a refused handshake without reading its body,
 * and the body is what says why (`502: no available upstreams`), which the
 * user needs to see; and a close frame can then serve as a half-close, as
 * RFC 6455 allows: after a local EOF we send our close but keep reading the
 * server's frames until its own close.
 *
 * Backpressure: each side's socket pauses while the other side's send queue
 * is above its high-water mark, and resumes on drain.
 *
 * Ownership: a connection is freed once both of its sockets are gone
 * (hooks->on_free runs then).
 */
#include "tcpws.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "sock.h"
#include "ws.h"
#include "ws_upgrade.h"

#define SEND_CAP (512 * 1024)
#define SEND_HWM (256 * 1024)
#define READ_MAX (64 * 1024)

enum {
	ST_CONNECTING = 0,
	ST_HANDSHAKE,
	ST_OPEN,
};

struct pk_tcpws {
	struct pk_tcpws_target *t; /* the owner's, outlives us; lists us in t->live */
	struct pk_tcpws *prev, *next;
	const struct pk_tcpws_hooks *hooks;
	void *user;
	struct pk_sock *local;
	struct pk_sock *remote;
	int state;
	struct pk_ws_upgrade up;
	char *request; /* the upgrade request, sent once connected (owned) */
	struct pk_ws_reader wsr;
	struct pk_bufq pending; /* server bytes waiting for local send space */
	int sent_close;
	int local_paused, remote_paused;
	int failed;    /* already logged why */
	int got_close; /* the server's close frame arrived */
};

/* ---- connection bookkeeping ------------------------------------------- */

static void conn_maybe_free(struct pk_tcpws *c)
{
	if (c->local || c->remote)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		c->t->live = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->hooks->on_free)
		c->hooks->on_free(c->user);
	pk_ws_upgrade_free(&c->up);
	free(c->request);
	pk_bufq_clear(&c->pending);
	free(c);
}

/* Send a client frame: header, then the payload masked with a fresh key. */
static void send_frame(struct pk_tcpws *c, int opcode, const uint8_t *data, size_t len)
{
	static uint8_t buf[PK_WS_MAX_HDR + READ_MAX];
	while (c->remote) {
		size_t n = len > READ_MAX ? READ_MAX : len;
		uint8_t mask[4];
		pk_ws_mask_key(mask);
		size_t hl = pk_ws_frame_header(buf, opcode, 1, n, mask);
		if (n)
			memcpy(buf + hl, data, n);
		pk_ws_mask(buf + hl, n, mask, 0);
		pk_sock_write(c->remote, buf, hl + n);
		data += n;
		len -= n;
		if (!len)
			break;
	}
}

static void send_close(struct pk_tcpws *c, uint16_t code)
{
	if (c->sent_close || !c->remote || c->state != ST_OPEN)
		return;
	uint8_t payload[PK_WS_MAX_CONTROL];
	size_t n = pk_ws_close_payload(payload, code, "");
	assert(n <= sizeof(payload)); /* for the analyzer: send_frame() reads n bytes */
	send_frame(c, PK_WS_CLOSE, payload, n);
	c->sent_close = 1;
}

static void fail(struct pk_tcpws *c, const char *why)
{
	c->failed = 1;
	if (c->hooks->on_fail)
		c->hooks->on_fail(c->user, why);
	if (c->local)
		pk_sock_close(c->local, 0);
	if (c->remote)
		pk_sock_close(c->remote, 1);
}

/* The server refused the upgrade: report `<status>: <error>` as Piko does. */
static void refused(struct pk_tcpws *c)
{
	char why[512], error[256];
	pk_ws_upgrade_error(&c->up, error, sizeof(error));
	snprintf(why, sizeof(why), "%d: %s", c->up.status, error[0] ? error : "bad handshake");
	fail(c, why);
}

/* ---- server -> local ---------------------------------------------------- */

/* Frames from the server. Never reads more than the local socket can take,
 * so a data frame's payload always fits. Returns the bytes consumed. */
static size_t ws_input(struct pk_tcpws *c, const uint8_t *data, size_t len)
{
	size_t total = 0;
	while (total < len && c->remote) {
		size_t space = c->local ? pk_sock_write_space(c->local) : len - total;
		if (space == 0)
			break;
		size_t feed = len - total < space ? len - total : space;
		size_t used = 0;
		uint8_t *payload = NULL;
		size_t plen = 0;
		/* Server frames are unmasked, so the reader does not write to
		 * the buffer it is given (it checks that they are). */
		enum pk_ws_event ev = pk_ws_reader_feed(&c->wsr, (uint8_t *)data + total, feed,
		                                        &used, &payload, &plen);
		total += used;
		if (ev == PK_WS_ERROR) {
			uint16_t code;
			fail(c, pk_ws_reader_error(&c->wsr, &code));
			return len;
		}
		if (ev == PK_WS_DATA && c->local && plen)
			pk_sock_write(c->local, payload, plen);
		if (ev == PK_WS_CONTROL) {
			const uint8_t *cp;
			size_t cl;
			int op = pk_ws_reader_control(&c->wsr, &cp, &cl);
			if (op == PK_WS_PING) {
				send_frame(c, PK_WS_PONG, cp, cl);
			} else if (op == PK_WS_CLOSE) {
				/* The server is done sending: the local side gets
				 * its EOF once our queue to it is written. Our own
				 * close waits for the local side's EOF (a half-close,
				 * as RFC 6455 lets the side that sent close keep
				 * receiving), unless it was sent already. */
				c->got_close = 1;
				if (c->local)
					pk_sock_shutdown_write(c->local);
				if (c->sent_close || !c->local)
					pk_sock_close(c->remote, 0);
				return len;
			}
		}
		if (ev == PK_WS_NEED_MORE && used == 0)
			break;
	}
	return total;
}

static void pump_pending(struct pk_tcpws *c)
{
	while (c->pending.len && c->remote) {
		size_t n;
		const uint8_t *p = pk_bufq_peek(&c->pending, &n);
		size_t k = ws_input(c, p, n);
		if (!k)
			break;
		pk_bufq_consume(&c->pending, k);
	}
	if (c->remote_paused && !c->pending.len && c->remote) {
		c->remote_paused = 0;
		pk_sock_pause(c->remote, 0);
	}
}

static void handshake_input(struct pk_tcpws *c, const uint8_t *data, size_t len)
{
	size_t used = 0;
	switch (pk_ws_upgrade_feed(&c->up, data, len, &used)) {
	case PK_WS_UPGRADE_MORE:
		return;
	case PK_WS_UPGRADE_BAD:
		fail(c, "bad handshake");
		return;
	case PK_WS_UPGRADE_REFUSED:
		refused(c);
		return;
	case PK_WS_UPGRADE_OPEN:
		break;
	}
	c->state = ST_OPEN;
	if (c->local)
		pk_sock_pause(c->local, 0);
	if (c->hooks->on_open)
		c->hooks->on_open(c->user);
	if (used < len && c->state == ST_OPEN) {
		/* Frames in the same read as the 101. */
		pk_bufq_append_force(&c->pending, data + used, len - used);
		pump_pending(c);
	}
}

static void remote_connected(struct pk_sock *s)
{
	struct pk_tcpws *c = pk_sock_user(s);
	pk_sock_write(s, (const uint8_t *)c->request, strlen(c->request));
	free(c->request);
	c->request = NULL;
	c->state = ST_HANDSHAKE;
}

static void remote_data(struct pk_sock *s, const uint8_t *data, size_t len)
{
	struct pk_tcpws *c = pk_sock_user(s);
	if (c->state == ST_HANDSHAKE) {
		handshake_input(c, data, len);
	} else if (c->pending.len) {
		pk_bufq_append_force(&c->pending, data, len);
	} else {
		size_t k = ws_input(c, data, len);
		if (k < len && c->remote)
			pk_bufq_append_force(&c->pending, data + k, len - k);
	}
	if (c->pending.len && c->remote && !c->remote_paused) {
		c->remote_paused = 1;
		pk_sock_pause(c->remote, 1); /* resumed once the local side drains */
	}
}

static void remote_eof(struct pk_sock *s)
{
	struct pk_tcpws *c = pk_sock_user(s);
	if (c->state == ST_HANDSHAKE && pk_ws_upgrade_eof(&c->up) == PK_WS_UPGRADE_REFUSED) {
		refused(c);
		return;
	}
	pk_sock_close(s, 0);
}

static void remote_drain(struct pk_sock *s)
{
	struct pk_tcpws *c = pk_sock_user(s);
	if (c->local_paused && c->local) {
		c->local_paused = 0;
		pk_sock_pause(c->local, 0);
	}
}

static void remote_close(struct pk_sock *s, int reset, const char *why)
{
	struct pk_tcpws *c = pk_sock_user(s);
	c->remote = NULL;
	if (c->state != ST_OPEN && c->local && !c->failed) {
		char msg[256];
		snprintf(msg, sizeof(msg), "dial server: %s", why);
		c->failed = 1;
		if (c->hooks->on_fail)
			c->hooks->on_fail(c->user, msg);
		pk_sock_close(c->local, 1);
	} else if (c->local) {
		if (reset || c->failed)
			pk_sock_close(c->local, 1);
		else
			pk_sock_close(c->local, 0); /* after what is queued for it */
	}
	conn_maybe_free(c);
}

static const struct pk_sock_ops remote_ops = {
    .on_connected = remote_connected,
    .on_data = remote_data,
    .on_eof = remote_eof,
    .on_drain = remote_drain,
    .on_close = remote_close,
};

/* ---- local -> server ---------------------------------------------------- */

static void local_data(struct pk_sock *s, const uint8_t *data, size_t len)
{
	struct pk_tcpws *c = pk_sock_user(s);
	if (!c->remote || c->sent_close)
		return;
	send_frame(c, PK_WS_BINARY, data, len);
	if (pk_sock_write_space(c->remote) < SEND_CAP - SEND_HWM && !c->local_paused) {
		c->local_paused = 1;
		pk_sock_pause(s, 1); /* resumed on the server socket's drain */
	}
}

static void local_eof(struct pk_sock *s)
{
	/* Half-close: our close frame says we are done sending, and we keep
	 * reading the server's frames until its own close. */
	struct pk_tcpws *c = pk_sock_user(s);
	send_close(c, 1000);
	if (c->got_close && c->remote)
		pk_sock_close(c->remote, 0);
}

static void local_drain(struct pk_sock *s)
{
	pump_pending(pk_sock_user(s));
}

static void local_close(struct pk_sock *s, int reset, const char *why)
{
	struct pk_tcpws *c = pk_sock_user(s);
	(void)why;
	c->local = NULL;
	if (c->remote) {
		if (reset || c->state != ST_OPEN) {
			pk_sock_close(c->remote, 1);
		} else {
			send_close(c, 1000);
			pk_sock_close(c->remote, 0);
		}
	}
	conn_maybe_free(c);
}

static const struct pk_sock_ops local_ops = {
    .on_connected = NULL,
    .on_data = local_data,
    .on_eof = local_eof,
    .on_drain = local_drain,
    .on_close = local_close,
};

int pk_tcpws_start(int fd, struct pk_tcpws_target *t, const struct pk_tcpws_hooks *hooks,
                   void *user)
{
	/* Owner: the connection itself; freed by conn_maybe_free(). */
	struct pk_tcpws *c = pk_xcalloc(1, sizeof(*c));
	c->t = t;
	c->hooks = hooks;
	c->user = user;
	/* Piko appends its path to the URL's, without normalising. */
	char path[1400], auth[4200] = "";
	snprintf(path, sizeof(path), "%s/_piko/v1/tcp/%s", t->base_path, t->endpoint);
	if (t->token && *t->token)
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", t->token);
	c->request = pk_ws_upgrade_start(&c->up, t->host, t->port, path, auth);
	pk_ws_reader_init(&c->wsr, 0);
	pk_bufq_init(&c->pending, SEND_CAP);
	c->local = pk_sock_adopt(fd, &local_ops, c, SEND_CAP);
	if (!c->local) {
		pk_ws_upgrade_free(&c->up);
		free(c->request);
		free(c);
		return -1;
	}
	c->next = t->live;
	if (t->live)
		t->live->prev = c;
	t->live = c;
	/* Nothing is read locally until the WebSocket is up. */
	pk_sock_pause(c->local, 1);
	c->remote = pk_sock_connect(t->host, t->port, t->timeout_ms, &remote_ops, c, SEND_CAP);
	if (c->remote && t->tls)
		pk_sock_use_tls(c->remote, t->tls, t->host, t->verify_name);
	if (!c->remote) {
		c->failed = 1;
		if (hooks->on_fail)
			hooks->on_fail(user, "cannot create a socket");
		pk_sock_close(c->local, 1);
	}
	return 0;
}

void pk_tcpws_reap(struct pk_tcpws_target *t)
{
	while (t->live) {
		struct pk_tcpws *c = t->live;
		t->live = c->next;
		pk_ws_upgrade_free(&c->up);
		free(c->request);
		pk_bufq_clear(&c->pending);
		free(c);
	}
}
