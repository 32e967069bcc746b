/*
 * `piko forward`: local TCP ports whose connections reach an endpoint.
 *
 * Each accepted local connection dials the server's proxy port and opens a
 * WebSocket to GET <url>/_piko/v1/tcp/<endpoint> (protocol reference §1.4);
 * once upgraded, binary messages carry the raw bytes both ways.
 *
 * The WebSocket client is our own (core/ws.c over core/sock.c) rather than
 * lws's: lws 4.1's client fails a refused handshake without reading its body,
 * and the body is what says why (`502: no available upstreams`), which the
 * user needs in the log; and a close frame can then serve as a half-close, as
 * RFC 6455 allows: after a local EOF we send our close but keep reading the
 * server's frames until its own close.
 *
 * Backpressure: each side's socket pauses while the other side's send queue
 * is above its high-water mark, and resumes on drain.
 *
 * Ownership: a connection belongs to the forward's list; it is freed once
 * both of its sockets are gone.
 */
#include "forward.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/rand.h>

#include "backoff.h"
#include "buf.h"
#include "http1.h"
#include "log.h"
#include "runloop.h"
#include "sock.h"
#include "tls.h"
#include "ws.h"

#define SUBSYS "forwarder"
#define SEND_CAP (512 * 1024)
#define SEND_HWM (256 * 1024)
#define READ_MAX (64 * 1024)
#define BODY_MAX 4096
#define TICK_US (250 * LWS_US_PER_MS)

enum {
	ST_CONNECTING = 0,
	ST_HANDSHAKE,
	ST_OPEN,
};

struct fwd_port {
	struct pk_forward *f;
	const struct pk_forward_port_config *cfg;
	struct pk_sock_listener *ln;
	char listen[300];
};

struct fwd_conn {
	struct fwd_port *port;
	struct pk_sock *local;
	struct pk_sock *remote;
	int state;
	char accept[29];
	struct pk_http1_reader resp;
	int status;
	char body[BODY_MAX + 1];
	size_t body_len;
	struct pk_ws_reader wsr;
	struct pk_bufq pending; /* server bytes waiting for local send space */
	int sent_close;
	int local_paused, remote_paused;
	int failed;    /* already logged why */
	int got_close; /* the server's close frame arrived */
	struct fwd_conn *prev, *next;
};

/* ---- connection bookkeeping ------------------------------------------- */

static void conn_maybe_free(struct fwd_conn *c)
{
	if (c->local || c->remote)
		return;
	struct pk_forward *f = c->port->f;
	if (c->prev)
		c->prev->next = c->next;
	else
		f->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	pk_http1_reader_free(&c->resp);
	pk_bufq_clear(&c->pending);
	free(c);
}

/* Send a client frame: header, then the payload masked with a fresh key. */
static void send_frame(struct fwd_conn *c, int opcode, const uint8_t *data, size_t len)
{
	static uint8_t buf[PK_WS_MAX_HDR + READ_MAX];
	while (c->remote) {
		size_t n = len > READ_MAX ? READ_MAX : len;
		uint8_t mask[4];
		RAND_bytes(mask, sizeof(mask));
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

static void send_close(struct fwd_conn *c, uint16_t code)
{
	if (c->sent_close || !c->remote || c->state != ST_OPEN)
		return;
	uint8_t payload[PK_WS_MAX_CONTROL];
	size_t n = pk_ws_close_payload(payload, code, "");
	assert(n <= sizeof(payload)); /* for the analyzer: send_frame() reads n bytes */
	send_frame(c, PK_WS_CLOSE, payload, n);
	c->sent_close = 1;
}

static void fail(struct fwd_conn *c, const char *why)
{
	c->failed = 1;
	pk_log(PK_LOG_ERROR, SUBSYS, "failed to dial endpoint", "endpoint-id",
	       c->port->cfg->endpoint_id, "error", why, NULL);
	if (c->local)
		pk_sock_close(c->local, 0);
	if (c->remote)
		pk_sock_close(c->remote, 1);
}

/* The server refused the upgrade: report `<status>: <error>` as Piko does. */
static void refused(struct fwd_conn *c)
{
	char why[512];
	const char *msg = NULL;
	c->body[c->body_len] = '\0';
	struct json_object *root = json_tokener_parse(c->body);
	struct json_object *err;
	if (root && json_object_object_get_ex(root, "error", &err) &&
	    json_object_is_type(err, json_type_string))
		msg = json_object_get_string(err);
	snprintf(why, sizeof(why), "%d: %s", c->status, msg ? msg : "bad handshake");
	json_object_put(root);
	fail(c, why);
}

/* ---- server -> local ---------------------------------------------------- */

/* Frames from the server. Never reads more than the local socket can take,
 * so a data frame's payload always fits. Returns the bytes consumed. */
static size_t ws_input(struct fwd_conn *c, const uint8_t *data, size_t len)
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

static void pump_pending(struct fwd_conn *c)
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

static void handshake_input(struct fwd_conn *c, const uint8_t *data, size_t len)
{
	int again = 0;
	while ((len > 0 || again) && c->state == ST_HANDSHAKE) {
		size_t used = 0;
		again = 0;
		enum pk_http1_event ev =
		    pk_http1_reader_feed(&c->resp, (const char *)data, len, &used);
		if (ev == PK_HTTP1_ERROR) {
			fail(c, "bad handshake");
			return;
		}
		if (ev == PK_HTTP1_HEAD) {
			const struct pk_http1_head *h = pk_http1_reader_head(&c->resp);
			c->status = h->status;
			again = 1;
			if (h->status == 101) {
				const char *acc = pk_http1_header_get(h, "Sec-WebSocket-Accept");
				if (!acc || strcmp(acc, c->accept) != 0) {
					fail(c, "bad handshake");
					return;
				}
				c->state = ST_OPEN;
				if (c->local)
					pk_sock_pause(c->local, 0);
				data += used;
				len -= used;
				break;
			}
		} else if (ev == PK_HTTP1_BODY || ev == PK_HTTP1_DONE) {
			size_t n = used < BODY_MAX - c->body_len ? used : BODY_MAX - c->body_len;
			memcpy(c->body + c->body_len, data, n);
			c->body_len += n;
			if (ev == PK_HTTP1_DONE) {
				refused(c);
				return;
			}
		}
		data += used;
		len -= used;
	}
	if (c->state == ST_OPEN && len) {
		/* Frames in the same read as the 101. */
		pk_bufq_append_force(&c->pending, data, len);
		pump_pending(c);
	}
}

static void remote_connected(struct pk_sock *s)
{
	struct fwd_conn *c = pk_sock_user(s);
	struct pk_forward *f = c->port->f;
	char key[25], path[1400], req[6000], auth[4200] = "";
	pk_ws_client_key(key);
	pk_ws_accept_key(key, c->accept);
	/* Piko appends its path to the URL's, without normalising. */
	snprintf(path, sizeof(path), "%s/_piko/v1/tcp/%s", f->url.path, c->port->cfg->endpoint_id);
	if (f->cfg->connect.token && *f->cfg->connect.token)
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", f->cfg->connect.token);
	int n = snprintf(req, sizeof(req),
	                 "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
	                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
	                 "Sec-WebSocket-Version: 13\r\n%s\r\n",
	                 path, f->url.host, f->url.port, key, auth);
	if (n <= 0 || (size_t)n >= sizeof(req)) {
		fail(c, "request too long");
		return;
	}
	pk_sock_write(s, (const uint8_t *)req, (size_t)n);
	c->state = ST_HANDSHAKE;
}

static void remote_data(struct pk_sock *s, const uint8_t *data, size_t len)
{
	struct fwd_conn *c = pk_sock_user(s);
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
	struct fwd_conn *c = pk_sock_user(s);
	if (c->state == ST_HANDSHAKE && c->status && c->status != 101 &&
	    pk_http1_reader_eof(&c->resp)) {
		refused(c);
		return;
	}
	pk_sock_close(s, 0);
}

static void remote_drain(struct pk_sock *s)
{
	struct fwd_conn *c = pk_sock_user(s);
	if (c->local_paused && c->local) {
		c->local_paused = 0;
		pk_sock_pause(c->local, 0);
	}
}

static void remote_close(struct pk_sock *s, int reset, const char *why)
{
	struct fwd_conn *c = pk_sock_user(s);
	c->remote = NULL;
	if (c->state != ST_OPEN && c->local && !c->failed) {
		char msg[256];
		snprintf(msg, sizeof(msg), "dial server: %s", why);
		pk_log(PK_LOG_ERROR, SUBSYS, "failed to dial endpoint", "endpoint-id",
		       c->port->cfg->endpoint_id, "error", msg, NULL);
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
	struct fwd_conn *c = pk_sock_user(s);
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
	struct fwd_conn *c = pk_sock_user(s);
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
	struct fwd_conn *c = pk_sock_user(s);
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

static void on_accept(void *user, int fd)
{
	struct fwd_port *port = user;
	struct pk_forward *f = port->f;
	/* Owner: the forward's connection list; freed by conn_maybe_free(). */
	struct fwd_conn *c = pk_xcalloc(1, sizeof(*c));
	c->port = port;
	pk_http1_reader_init(&c->resp, PK_HTTP1_RESPONSE, 64 * 1024);
	pk_ws_reader_init(&c->wsr, 0);
	pk_bufq_init(&c->pending, SEND_CAP);
	c->local = pk_sock_adopt(fd, &local_ops, c, SEND_CAP);
	if (!c->local) {
		pk_http1_reader_free(&c->resp);
		free(c);
		return;
	}
	c->next = f->conns;
	if (f->conns)
		f->conns->prev = c;
	f->conns = c;
	/* Nothing is read locally until the WebSocket is up. */
	pk_sock_pause(c->local, 1);
	c->remote = pk_sock_connect(f->url.host, f->url.port, (uint64_t)f->cfg->connect.timeout_ms,
	                            &remote_ops, c, SEND_CAP);
	if (c->remote && f->tls)
		pk_sock_use_tls(c->remote, f->tls, f->url.host,
		                !f->cfg->connect.tls.insecure_skip_verify);
	if (!c->remote) {
		pk_log(PK_LOG_ERROR, SUBSYS, "failed to dial endpoint", "endpoint-id",
		       port->cfg->endpoint_id, "error", "cannot create a socket", NULL);
		pk_sock_close(c->local, 1);
	}
}

static void tick(lws_sorted_usec_list_t *sul)
{
	struct pk_forward *f = lws_container_of(sul, struct pk_forward, tick_sul);
	pk_sock_tick(pk_now_ms());
	lws_sul_schedule(f->ctx, 0, &f->tick_sul, tick, TICK_US);
}

int pk_forward_run(const struct pk_forward_config *cfg)
{
	struct pk_forward f;
	char err[256];
	memset(&f, 0, sizeof(f));
	f.cfg = cfg;
	if (pk_server_url_parse(cfg->connect.url, &f.url, err, sizeof(err)) < 0) {
		fprintf(stderr, "config: %s\n", err);
		return 1;
	}
	/* Owner: this function (SSL_CTX_free at the end); connections hold
	 * their own references. */
	if (f.url.tls && !(f.tls = pk_tls_client_ctx(&cfg->connect.tls, err, sizeof(err)))) {
		fprintf(stderr, "config: %s\n", err);
		return 1;
	}
	pk_runloop_lws_logs(0);

	f.ctx = pk_runloop_sock_context();
	if (!f.ctx) {
		SSL_CTX_free(f.tls);
		return 1;
	}

	int rc = 0;
	f.nports = cfg->ports.n;
	/* Owner: this function; freed before it returns. */
	f.ports = pk_xcalloc(f.nports, sizeof(*f.ports));
	const struct pk_forward_port_config *pc = cfg->ports.v;
	for (size_t i = 0; i < f.nports; i++) {
		struct fwd_port *p = &f.ports[i];
		p->f = &f;
		p->cfg = &pc[i];
		pk_forward_listen_addr(pc[i].addr, p->listen, sizeof(p->listen)); /* validated */
		p->ln = pk_sock_listen(p->listen, on_accept, p, err, sizeof(err));
		if (!p->ln) {
			pk_log(PK_LOG_ERROR, SUBSYS, "failed to listen", "addr", p->listen, "error",
			       err, NULL);
			rc = 1;
			goto out;
		}
		pk_log(PK_LOG_INFO, SUBSYS, "forwarding", "addr", p->listen, "endpoint-id",
		       p->cfg->endpoint_id, NULL);
	}

	pk_runloop_signals(f.ctx);
	lws_sul_schedule(f.ctx, 0, &f.tick_sul, tick, TICK_US);
	while (!pk_runloop_stop_requested()) {
		if (lws_service(f.ctx, 0) < 0)
			break;
	}
	pk_log(PK_LOG_INFO, SUBSYS, "shutting down", NULL);
out:
	pk_runloop_signals_done();
	for (size_t i = 0; i < f.nports; i++)
		if (f.ports[i].ln)
			pk_sock_listener_close(f.ports[i].ln);
	lws_context_destroy(f.ctx);
	/* Connections whose sockets lws tore down without our callbacks. */
	while (f.conns) {
		struct fwd_conn *c = f.conns;
		f.conns = c->next;
		pk_http1_reader_free(&c->resp);
		pk_bufq_clear(&c->pending);
		free(c);
	}
	free(f.ports);
	SSL_CTX_free(f.tls);
	pk_buf_freelist_release();
	return rc;
}
