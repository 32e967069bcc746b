/*
 * Node links: the transport (core/sock.c + our WebSocket codec), the yamux
 * session inside it, the control stream and the dispatch of streams the
 * peer opens. See link.h.
 */
#include "link.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "auth.h"
#include "cluster.h"
#include "cluster_auth.h"
#include "link_msg.h"
#include "log.h"
#include "server.h"
#include "sock.h"
#include "strmap.h"
#include "ws_upgrade.h"

#define SUBSYS "cluster"
/* The socket's send queue: one WebSocket message of yamux frames is at
 * most FRAME_MAX, and several may wait. */
#define SEND_CAP (1024 * 1024)
#define FRAME_MAX (64 * 1024)
#define HANDSHAKE_MAX (16 * 1024)
/* Control messages waiting for the control stream's window. A snapshot of
 * PK_LINK_MAX_ENDPOINTS fits; beyond this, deltas are dropped and a
 * snapshot follows once the queue drains (the table is versioned). */
#define CTRL_OUT_CAP (32u * 1024u * 1024u)
#define CONNECT_TIMEOUT_MS 5000
#define CLOSE_TIMEOUT_MS 5000
#define MAX_PENDING_ACCEPTS 256

static void link_flush(struct pk_link *l);
static void ctrl_flush(struct pk_link *l);
static void send_snapshot(struct pk_link *l);

/* ---- helpers ------------------------------------------------------------ */

static struct pk_server *srv_of(const struct pk_link *l)
{
	return l->cl->srv;
}

static const char *peer_name(const struct pk_link *l)
{
	return l->peer_id ? l->peer_id : l->dialer ? l->addr : l->peer_ip;
}

static void flush_cb(lws_sorted_usec_list_t *sul)
{
	struct pk_link *l = lws_container_of(sul, struct pk_link, flush_sul);
	link_flush(l);
}

/* yamux wants to write: flush from the loop, never from inside the caller
 * (want_write may run inside a pk_yamux_stream_*() call). */
static void want_flush(struct pk_link *l)
{
	if (l->flush_due || !l->sock)
		return;
	l->flush_due = 1;
	lws_sul_schedule(srv_of(l)->ctx, 0, &l->flush_sul, flush_cb, 1);
}

/* Raw bytes to the socket (handshake, our own frames). */
static void sock_put(struct pk_link *l, const void *p, size_t n)
{
	if (!l->sock)
		return;
	pk_sock_write(l->sock, p, n);
	pk_link_metrics_add(l->cl->lm.bytes, PK_LINK_OUT, (double)n);
}

/* One WebSocket frame: masked when we dialled (we are the client). */
static void put_frame(struct pk_link *l, int opcode, uint8_t *payload, size_t n)
{
	uint8_t hdr[PK_WS_MAX_HDR], mask[4];
	if (l->dialer) {
		pk_ws_mask_key(mask);
		pk_ws_mask(payload, n, mask, 0);
	}
	size_t hl = pk_ws_frame_header(hdr, opcode, 1, n, l->dialer ? mask : NULL);
	sock_put(l, hdr, hl);
	if (n)
		sock_put(l, payload, n);
}

void pk_link_close(struct pk_link *l, const char *why)
{
	if (l->state == PK_LINK_CLOSING || !l->sock)
		return;
	pk_log(l->state == PK_LINK_ESTABLISHED ? PK_LOG_INFO : PK_LOG_DEBUG, SUBSYS,
	       "closing node link", "node-id", peer_name(l), "reason", why, NULL);
	if (l->member && why)
		snprintf(l->member->last_error, sizeof(l->member->last_error), "%s", why);
	l->state = PK_LINK_CLOSING;
	l->closing_ms = pk_now_ms();
	/* Pending frames (a Go Away, a refusal) go first. */
	want_flush(l);
}

/* ---- streams -------------------------------------------------------------- */

/* A stream the peer opened, before its first byte says what it is. */
struct sniff {
	struct pk_stream_handler h;
	struct pk_link *l;
	struct pk_yamux_stream *s;
};

static void ctrl_on_data(struct pk_stream_handler *h, const uint8_t *data, size_t len);
static const struct pk_stream_ops ctrl_ops;

struct ctrl_handler {
	struct pk_stream_handler h;
	struct pk_link *l;
};

static void sniff_on_data(struct pk_stream_handler *h, const uint8_t *data, size_t len)
{
	struct sniff *sn = (struct sniff *)h;
	struct pk_link *l = sn->l;
	struct pk_yamux_stream *s = sn->s;
	uint8_t kind = data[0];
	pk_yamux_stream_consumed(s, 1);
	data++;
	len--;
	struct pk_stream_handler *next = NULL;
	if (kind == 'C' && !l->dialer && !l->ctrl) {
		l->ctrl = s;
		next = l->ctrl_h;
	} else if (kind == 'P' && l->ctrl && l->state != PK_LINK_CLOSING &&
	           (!l->dialer || l->state == PK_LINK_ESTABLISHED)) {
		/* A dialler only serves the acceptor once its hello proved
		 * the key; the acceptor checked the dialler's proof already. */
		next = pk_proxy_adopt_stream(srv_of(l), s, l->peer_ip);
		if (next)
			pk_link_metrics_add(l->cl->lm.streams, PK_LINK_IN, 1);
	}
	free(sn);
	pk_yamux_stream_set_user(s, next);
	if (!next) {
		pk_log(PK_LOG_WARN, SUBSYS, "unexpected stream on a node link", "node-id",
		       peer_name(l), NULL);
		pk_yamux_stream_reset(s);
		return;
	}
	if (len)
		next->ops->on_data(next, data, len);
}

static void sniff_on_fin(struct pk_stream_handler *h)
{
	struct sniff *sn = (struct sniff *)h;
	pk_yamux_stream_reset(sn->s);
}

static void sniff_on_writable(struct pk_stream_handler *h)
{
	(void)h;
}

static void sniff_on_close(struct pk_stream_handler *h, int reset)
{
	(void)reset;
	free(h);
}

static const struct pk_stream_ops sniff_ops = {
    .on_data = sniff_on_data,
    .on_fin = sniff_on_fin,
    .on_writable = sniff_on_writable,
    .on_close = sniff_on_close,
};

/* ---- yamux callbacks --------------------------------------------------------- */

static int cb_on_stream(void *user, struct pk_yamux_stream *s)
{
	struct pk_link *l = user;
	if (l->state == PK_LINK_CLOSING)
		return -1;
	/* Owner: the stream (its user pointer) until the first byte replaces
	 * it or the stream closes (sniff_on_close). */
	struct sniff *sn = pk_xcalloc(1, sizeof(*sn));
	sn->h.ops = &sniff_ops;
	sn->l = l;
	sn->s = s;
	pk_yamux_stream_set_user(s, &sn->h);
	return 0;
}

static void cb_want_write(void *user)
{
	want_flush(user);
}

static void cb_on_go_away(void *user)
{
	struct pk_link *l = user;
	l->leaving = 1;
	pk_cluster_update_gauge(l->cl);
}

static void cb_on_session_close(void *user, int reason)
{
	struct pk_link *l = user;
	static const char *const why[] = {"", "protocol error", "remote go away", "ping timeout",
	                                  "stream open timeout"};
	pk_link_close(l, reason > 0 && reason < 5 ? why[reason] : "session closed");
}

static const struct pk_yamux_callbacks link_callbacks = {
    .on_stream = cb_on_stream,
    .on_data = pk_stream_dispatch_data,
    .on_fin = pk_stream_dispatch_fin,
    .on_writable = pk_stream_dispatch_writable,
    .on_stream_close = pk_stream_dispatch_close,
    .want_write = cb_want_write,
    .on_go_away = cb_on_go_away,
    .on_session_close = cb_on_session_close,
};

/* ---- the peer's endpoint table ---------------------------------------------- */

struct table_ctx {
	struct pk_link *l;
};

static void unroute_one(void *arg, const char *endpoint, int64_t count)
{
	(void)count;
	struct pk_link *l = arg;
	pk_registry_remove(l->cl->remote, endpoint, l);
}

/* Withdraw everything this peer announced. */
static void table_clear(struct pk_link *l)
{
	if (!l->eps)
		return;
	pk_strmap_foreach(l->eps, unroute_one, l);
	pk_strmap_clear(l->eps);
}

static void table_set(struct pk_link *l, const char *endpoint, int64_t count)
{
	int64_t old = pk_strmap_set(l->eps, endpoint, count);
	if (count > 0 && old == 0)
		pk_registry_add(l->cl->remote, endpoint, l);
	else if (count == 0 && old > 0)
		pk_registry_remove(l->cl->remote, endpoint, l);
}

static int apply_endpoints(struct pk_link *l, const struct pk_link_msg *m)
{
	if (m->full) {
		table_clear(l);
	} else if (!l->have_table || m->base != l->eps_version) {
		/* A delta we cannot apply (one was lost): ask for the table. */
		pk_log(PK_LOG_DEBUG, SUBSYS, "endpoint table out of step; resyncing", "node-id",
		       peer_name(l), NULL);
		pk_link_msg_simple(&l->ctrl_out, PK_LINK_RESYNC);
		pk_link_metrics_message(&l->cl->lm, PK_LINK_OUT, "resync");
		ctrl_flush(l);
		return 0;
	}
	for (size_t i = 0; i < m->n_eps; i++) {
		if (m->eps[i].count > 0 && !pk_strmap_get(l->eps, m->eps[i].endpoint) &&
		    pk_strmap_count(l->eps) >= PK_LINK_MAX_ENDPOINTS) {
			pk_link_close(l, "peer announced too many endpoints");
			return -1;
		}
		table_set(l, m->eps[i].endpoint, m->eps[i].count);
	}
	l->eps_version = m->version;
	l->have_table = 1;
	return 0;
}

/* ---- control stream ------------------------------------------------------------ */

static void ctrl_flush(struct pk_link *l)
{
	if (!l->ctrl)
		return;
	for (;;) {
		while (l->ctrl_out.len) {
			size_t n;
			const uint8_t *p = pk_bufq_peek(&l->ctrl_out, &n);
			size_t w = pk_yamux_stream_write(l->ctrl, p, n);
			pk_bufq_consume(&l->ctrl_out, w);
			pk_link_metrics_add(l->cl->lm.control_bytes, PK_LINK_OUT, (double)w);
			if (w < n)
				return; /* the stream's on_writable brings us back */
		}
		/* What waited went out: the snapshot owed goes next, built now so
		 * that it is the table as it is when it leaves. */
		if (!l->need_snapshot)
			return;
		l->need_snapshot = 0;
		send_snapshot(l);
	}
}

/* Queue a control message (already framed in tmp); when the queue is full,
 * drop what waits and owe the peer a snapshot instead. */
static void ctrl_queue(struct pk_link *l, struct pk_bufq *tmp)
{
	if (l->ctrl_out.len + tmp->len > CTRL_OUT_CAP) {
		/* The peer stopped reading its control stream (the queue's head
		 * may be half written, so it cannot be cut): start over. */
		pk_bufq_clear(tmp);
		pk_link_close(l, "control queue overflow");
		return;
	} else {
		while (tmp->len) {
			size_t n;
			const uint8_t *p = pk_bufq_peek(tmp, &n);
			pk_bufq_append_force(&l->ctrl_out, p, n);
			pk_bufq_consume(tmp, n);
		}
	}
	pk_bufq_clear(tmp);
	ctrl_flush(l);
}

struct snap_ctx {
	struct pk_link_eps_writer *w;
	size_t n;
};

static void snap_one(void *arg, const char *endpoint, size_t count)
{
	struct snap_ctx *c = arg;
	pk_link_eps_add(c->w, endpoint, (int64_t)count);
	c->n++;
}

static void send_snapshot(struct pk_link *l)
{
	struct snap_ctx c = {pk_link_eps_begin(1, l->cl->version, 0), 0};
	pk_registry_foreach(srv_of(l)->registry, snap_one, &c);
	pk_link_metrics_message(&l->cl->lm, PK_LINK_OUT, "snapshot");
	pk_link_metrics_add(l->cl->lm.endpoint_entries, PK_LINK_OUT, (double)c.n);
	/* Straight into the queue (not ctrl_queue: no flush from inside a
	 * flush); a snapshot replaces whatever it would overflow. */
	pk_link_eps_end(c.w, &l->ctrl_out);
}

void pk_link_send_delta(struct pk_link *l, const char *endpoint, int64_t count, uint64_t version)
{
	if (l->state != PK_LINK_ESTABLISHED || l->need_snapshot)
		return; /* the snapshot sent on establishment (or owed) covers it */
	struct pk_link_eps_writer *w = pk_link_eps_begin(0, version, version - 1);
	pk_link_eps_add(w, endpoint, count);
	struct pk_bufq tmp;
	pk_bufq_init(&tmp, CTRL_OUT_CAP);
	pk_link_eps_end(w, &tmp);
	pk_link_metrics_message(&l->cl->lm, PK_LINK_OUT, "delta");
	pk_link_metrics_add(l->cl->lm.endpoint_entries, PK_LINK_OUT, 1);
	ctrl_queue(l, &tmp);
}

void pk_link_send_leaving(struct pk_link *l)
{
	if (l->state != PK_LINK_ESTABLISHED)
		return;
	struct pk_bufq tmp;
	pk_bufq_init(&tmp, 64);
	pk_link_msg_simple(&tmp, PK_LINK_LEAVING);
	pk_link_metrics_message(&l->cl->lm, PK_LINK_OUT, "leaving");
	ctrl_queue(l, &tmp);
}

static void send_hello(struct pk_link *l)
{
	struct pk_cluster *cl = l->cl;
	char *proof = NULL;
	/* The acceptor proves the key too, for this dialler only (aud), so a
	 * dialler never takes an impostor's table or serves its requests. */
	if (!l->dialer && cl->key) {
		char aud[PK_LINK_MAX_ID + 32];
		snprintf(aud, sizeof(aud), PK_CLUSTER_AUD_HELLO "%s", l->peer_id);
		proof =
		    pk_cluster_proof_make(cl->key, cl->key_len, cl->node_id, aud, pk_auth_now());
	}
	struct pk_bufq tmp;
	pk_bufq_init(&tmp, 64 * 1024);
	pk_link_msg_hello(&tmp, cl->node_id, cl->proxy_addr, cl->admin_addr, cl->cluster_addr,
	                  proof);
	free(proof);
	l->hello_sent = 1;
	pk_link_metrics_message(&l->cl->lm, PK_LINK_OUT, "hello");
	ctrl_queue(l, &tmp);
}

static void established(struct pk_link *l)
{
	l->state = PK_LINK_ESTABLISHED;
	l->established_ms = pk_now_ms();
	if (l->member) {
		pk_backoff_reset(&l->member->backoff);
		l->member->last_error[0] = '\0';
	}
	pk_log(PK_LOG_INFO, SUBSYS, "node joined", "node-id", l->peer_id, "addr",
	       l->cluster_addr ? l->cluster_addr : "", "dialled", l->dialer ? "true" : "false",
	       NULL);
	send_snapshot(l);
	ctrl_flush(l);
	if (l->cl->leaving)
		pk_link_send_leaving(l);
	pk_cluster_update_gauge(l->cl);
}

/* The same node over another, established link: keep that one. */
static int duplicate(const struct pk_link *l)
{
	for (const struct pk_link *o = l->cl->links; o; o = o->next)
		if (o != l && o->state == PK_LINK_ESTABLISHED && o->peer_id &&
		    !strcmp(o->peer_id, l->peer_id))
			return 1;
	return 0;
}

static int on_hello(struct pk_link *l, struct pk_link_msg *m)
{
	struct pk_cluster *cl = l->cl;
	if (l->state != PK_LINK_OPEN) {
		pk_link_close(l, "unexpected hello");
		return -1;
	}
	if (l->dialer) {
		if (cl->key) {
			char aud[PK_LINK_MAX_ID + 32];
			snprintf(aud, sizeof(aud), PK_CLUSTER_AUD_HELLO "%s", cl->node_id);
			const char *why = pk_cluster_proof_check(cl->key, cl->key_len, m->proof,
			                                         aud, m->id, pk_auth_now());
			if (why) {
				pk_log(PK_LOG_WARN, SUBSYS,
				       "node link refused: the peer did not "
				       "prove the cluster key",
				       "addr", l->addr, "error", why, NULL);
				pk_link_close(l, why);
				return -1;
			}
		}
	} else if (!l->peer_id || strcmp(l->peer_id, m->id) != 0 || !m->cluster_addr ||
	           strcmp(m->cluster_addr, l->addr) != 0) {
		pk_link_close(l, "hello from another node than the upgrade named");
		return -1;
	}
	free(l->peer_id);
	l->peer_id = m->id;
	l->proxy_addr = m->proxy_addr;
	l->admin_addr = m->admin_addr;
	l->cluster_addr = m->cluster_addr;
	m->id = m->proxy_addr = m->admin_addr = m->cluster_addr = NULL;
	if (l->member) {
		free(l->member->last_id);
		l->member->last_id = pk_xstrdup(l->peer_id);
	}
	if (!strcmp(l->peer_id, cl->node_id)) {
		if (l->member)
			l->member->self = 1;
		pk_link_close(l, "this is us");
		return -1;
	}
	if (duplicate(l)) {
		pk_link_close(l, "already linked");
		return -1;
	}
	if (!l->dialer)
		send_hello(l);
	established(l);
	return 0;
}

static void count_in(struct pk_link *l, const struct pk_link_msg *m)
{
	static const char *const types[] = {
	    [PK_LINK_HELLO] = "hello", [PK_LINK_RESYNC] = "resync", [PK_LINK_LEAVING] = "leaving"};
	const char *type = "unknown";
	if (m->type == PK_LINK_ENDPOINTS) {
		type = m->full ? "snapshot" : "delta";
		pk_link_metrics_add(l->cl->lm.endpoint_entries, PK_LINK_IN, (double)m->n_eps);
	} else if ((size_t)m->type < sizeof(types) / sizeof(types[0]) && types[m->type]) {
		type = types[m->type];
	}
	pk_link_metrics_message(&l->cl->lm, PK_LINK_IN, type);
}

static void ctrl_on_data(struct pk_stream_handler *h, const uint8_t *data, size_t len)
{
	struct pk_link *l = ((struct ctrl_handler *)h)->l;
	pk_yamux_stream_consumed(l->ctrl, len);
	pk_link_metrics_add(l->cl->lm.control_bytes, PK_LINK_IN, (double)len);
	if (l->state == PK_LINK_CLOSING)
		return;
	/* At most one message in progress plus one window's worth. */
	if (l->ctrl_in_len + len > PK_LINK_MSG_MAX + 4 + PK_YAMUX_INITIAL_WINDOW) {
		pk_link_close(l, "control message too large");
		return;
	}
	if (l->ctrl_in_len + len > l->ctrl_in_cap) {
		size_t cap = l->ctrl_in_cap ? l->ctrl_in_cap : 4096;
		while (cap < l->ctrl_in_len + len)
			cap *= 2;
		l->ctrl_in = pk_xrealloc(l->ctrl_in, cap);
		l->ctrl_in_cap = cap;
	}
	memcpy(l->ctrl_in + l->ctrl_in_len, data, len);
	l->ctrl_in_len += len;
	size_t off = 0;
	while (l->state != PK_LINK_CLOSING) {
		struct pk_link_msg m;
		char err[128];
		ssize_t n = pk_link_msg_decode(l->ctrl_in + off, l->ctrl_in_len - off, &m, err,
		                               sizeof(err));
		if (n == 0)
			break;
		if (n < 0) {
			pk_log(PK_LOG_WARN, SUBSYS, "bad control message on a node link", "node-id",
			       peer_name(l), "error", err, NULL);
			pk_link_close(l, err);
			break;
		}
		off += (size_t)n;
		count_in(l, &m);
		if (m.type == PK_LINK_HELLO) {
			on_hello(l, &m);
		} else if (l->state != PK_LINK_ESTABLISHED) {
			pk_link_close(l, "message before hello");
		} else if (m.type == PK_LINK_ENDPOINTS) {
			apply_endpoints(l, &m);
		} else if (m.type == PK_LINK_RESYNC) {
			l->need_snapshot = 1;
			ctrl_flush(l);
		} else if (m.type == PK_LINK_LEAVING) {
			pk_log(PK_LOG_INFO, SUBSYS, "node leaving", "node-id", l->peer_id, NULL);
			l->leaving = 1;
			pk_cluster_update_gauge(l->cl);
		}
		pk_link_msg_clear(&m);
	}
	memmove(l->ctrl_in, l->ctrl_in + off, l->ctrl_in_len - off);
	l->ctrl_in_len -= off;
}

static void ctrl_on_fin(struct pk_stream_handler *h)
{
	pk_link_close(((struct ctrl_handler *)h)->l, "control stream closed");
}

static void ctrl_on_writable(struct pk_stream_handler *h)
{
	ctrl_flush(((struct ctrl_handler *)h)->l);
}

static void ctrl_on_close(struct pk_stream_handler *h, int reset)
{
	(void)reset;
	struct pk_link *l = ((struct ctrl_handler *)h)->l;
	l->ctrl = NULL;
	pk_link_close(l, "control stream closed");
}

static const struct pk_stream_ops ctrl_ops = {
    .on_data = ctrl_on_data,
    .on_fin = ctrl_on_fin,
    .on_writable = ctrl_on_writable,
    .on_close = ctrl_on_close,
};

/* ---- yamux over the WebSocket ------------------------------------------------ */

static void start_session(struct pk_link *l)
{
	struct pk_yamux_config yc;
	pk_yamux_config_default(&yc);
	/* Links are ours at both ends: fast failure detection, and room for
	 * many exchanges opening at once (no agent to wait for). */
	yc.keepalive_ms = PK_LINK_KEEPALIVE_MS;
	yc.ping_timeout_ms = PK_LINK_PING_TIMEOUT_MS;
	yc.max_pending_opens = 4096;
	yc.accept_backlog = 4096;
	pk_ws_reader_init(&l->wsr, !l->dialer);
	/* Owner: the link; freed in link_free(). */
	l->sess = pk_yamux_session_new(l->dialer, &yc, &link_callbacks, l, pk_now_ms());
	l->state = PK_LINK_OPEN;
	if (l->dialer) {
		l->ctrl = pk_yamux_stream_open(l->sess, pk_now_ms());
		pk_yamux_stream_set_user(l->ctrl, l->ctrl_h);
		pk_yamux_stream_write(l->ctrl, (const uint8_t *)"C", 1);
		send_hello(l);
	}
}

static void link_flush(struct pk_link *l)
{
	static uint8_t *buf;
	l->flush_due = 0;
	if (!l->sock)
		return;
	if (!buf)
		buf = pk_xmalloc(FRAME_MAX); /* one loop thread: one scratch buffer */
	while (l->sess) {
		size_t space = pk_sock_write_space(l->sock);
		if (space < PK_WS_MAX_HDR + 1024)
			return; /* on_drain brings us back */
		size_t cap = space - PK_WS_MAX_HDR;
		if (cap > FRAME_MAX)
			cap = FRAME_MAX;
		size_t n = pk_yamux_session_fill(l->sess, buf, cap);
		if (n == 0)
			break;
		put_frame(l, PK_WS_BINARY, buf, n);
	}
	if (l->state == PK_LINK_CLOSING && !l->sock_closing) {
		l->sock_closing = 1;
		pk_sock_close(l->sock, 0);
	}
}

/* WebSocket frames from the peer: yamux bytes, pings, close. */
static void ws_input(struct pk_link *l, uint8_t *p, size_t n)
{
	while (n > 0 && l->state != PK_LINK_CLOSING) {
		size_t used = 0;
		uint8_t *payload = NULL;
		size_t plen = 0;
		enum pk_ws_event ev = pk_ws_reader_feed(&l->wsr, p, n, &used, &payload, &plen);
		p += used;
		n -= used;
		if (ev == PK_WS_ERROR) {
			uint16_t code;
			pk_link_close(l, pk_ws_reader_error(&l->wsr, &code));
			return;
		}
		if (ev == PK_WS_DATA && plen) {
			if (pk_yamux_session_feed(l->sess, payload, plen) < 0)
				return; /* dead: on_session_close closes the link */
		} else if (ev == PK_WS_CONTROL) {
			const uint8_t *cp;
			size_t cl;
			int op = pk_ws_reader_control(&l->wsr, &cp, &cl);
			if (op == PK_WS_PING) {
				uint8_t pong[PK_WS_MAX_CONTROL];
				memcpy(pong, cp, cl);
				put_frame(l, PK_WS_PONG, pong, cl);
			} else if (op == PK_WS_CLOSE) {
				pk_link_close(l, "peer closed the link");
				return;
			}
		} else if (used == 0) {
			return;
		}
	}
}

/* ---- the upgrade ------------------------------------------------------------- */

static void refuse(struct pk_link *l, int status, const char *msg)
{
	/* A member whose dial we refuse was tried, as far as readiness goes:
	 * waiting for it to link would only delay /ready. */
	struct pk_member *m = l->authenticated ? pk_cluster_member(l->cl, l->addr) : NULL;
	if (m)
		m->dial_failed = 1;
	size_t len;
	char *resp = pk_http1_error_response(status, msg, 1, &len);
	sock_put(l, resp, len);
	free(resp);
	pk_log(PK_LOG_WARN, SUBSYS, "node link refused", "client-ip", l->peer_ip, "status",
	       status == 401   ? "401"
	       : status == 403 ? "403"
	       : status == 409 ? "409"
	                       : "4xx",
	       "error", msg, NULL);
	l->state = PK_LINK_CLOSING;
	l->closing_ms = pk_now_ms();
	want_flush(l);
}

/* Acceptor: judge the upgrade request. */
static void accept_upgrade(struct pk_link *l, const struct pk_http1_head *h)
{
	struct pk_cluster *cl = l->cl;
	size_t plen = strcspn(h->url, "?");
	if (strcmp(h->method, "GET") != 0 || plen != strlen(PK_LINK_PATH) ||
	    strncmp(h->url, PK_LINK_PATH, plen) != 0) {
		refuse(l, 404, "not found");
		return;
	}
	const char *id = pk_http1_header_get(h, "x-piko-node-id");
	const char *addr = pk_http1_header_get(h, "x-piko-cluster-addr");
	if (!id || !*id || strlen(id) > PK_LINK_MAX_ID || !addr ||
	    strlen(addr) >= sizeof(l->addr)) {
		refuse(l, 400, "missing node id or cluster address");
		return;
	}
	if (cl->key) {
		/* The proof must be for this node's address, signed as the node
		 * the upgrade names: one seen elsewhere opens nothing here. */
		const char *token = NULL;
		size_t tlen = 0;
		const char *why = pk_auth_token_from_headers(
		    NULL, pk_http1_header_get(h, "Authorization"), &token, &tlen);
		char tok[4097], aud[192];
		snprintf(aud, sizeof(aud), PK_CLUSTER_AUD_LINK "%s", cl->cluster_addr);
		if (!why && tlen < sizeof(tok)) {
			memcpy(tok, token, tlen);
			tok[tlen] = '\0';
			why = pk_cluster_proof_check(cl->key, cl->key_len, tok, aud, id,
			                             pk_auth_now());
		} else if (!why) {
			why = "invalid cluster proof";
		}
		if (why) {
			refuse(l, 401, why);
			return;
		}
	}
	/* Authenticated (or no key): from here a refusal counts as a try of
	 * that member for readiness, and the address is the link's. */
	l->authenticated = 1;
	snprintf(l->addr, sizeof(l->addr), "%s", addr);
	if (!strcmp(id, cl->node_id)) {
		refuse(l, 409, "this is us");
		return;
	}
	if (cl->leaving) {
		refuse(l, 503, "node leaving");
		return;
	}
	struct pk_member *m = pk_cluster_member(cl, addr);
	if (!m || m->self) {
		refuse(l, 403, "not a member");
		return;
	}
	l->peer_id = pk_xstrdup(id);
	if (duplicate(l)) {
		refuse(l, 409, "already linked");
		return;
	}
	char *resp;
	size_t len;
	if (pk_ws_upgrade_answer(h, &resp, &len) < 0) {
		sock_put(l, resp, len);
		free(resp);
		l->state = PK_LINK_CLOSING;
		l->closing_ms = pk_now_ms();
		want_flush(l);
		return;
	}
	sock_put(l, resp, len);
	free(resp);
	start_session(l);
}

/* Dialler: judge the answer. */
static int dial_answered(struct pk_link *l, const struct pk_http1_head *h, const uint8_t *rest,
                         size_t rest_len)
{
	char want[29];
	const char *got = pk_http1_header_get(h, "Sec-WebSocket-Accept");
	if (h->status == 101 && got && pk_ws_accept_key(l->ws_key, want) == 0 &&
	    !strcmp(want, got)) {
		start_session(l);
		return 0;
	}
	char why[200];
	/* The refusal's JSON body, when it came with the head. */
	snprintf(why, sizeof(why), "%d: %.*s", h->status, (int)(rest_len > 120 ? 120 : rest_len),
	         rest_len ? (const char *)rest : "");
	for (char *c = why; *c; c++)
		if (*c == '\n' || *c == '\r')
			*c = ' ';
	if (h->status == 409 && rest_len && memmem(rest, rest_len, "this is us", 10) && l->member)
		l->member->self = 1;
	pk_log(h->status == 409 ? PK_LOG_DEBUG : PK_LOG_WARN, SUBSYS, "node link refused", "addr",
	       l->addr, "error", why, NULL);
	pk_link_close(l, why);
	return -1;
}

/* ---- the socket ----------------------------------------------------------------- */

static void on_connected(struct pk_sock *s)
{
	struct pk_link *l = pk_sock_user(s);
	struct pk_cluster *cl = l->cl;
	if (!l->dialer)
		return; /* an accepted socket's TLS handshake is done */
	l->state = PK_LINK_HANDSHAKE;
	pk_ws_client_key(l->ws_key);
	char aud[192];
	snprintf(aud, sizeof(aud), PK_CLUSTER_AUD_LINK "%s", l->addr);
	char *proof =
	    cl->key ? pk_cluster_proof_make(cl->key, cl->key_len, cl->node_id, aud, pk_auth_now())
	            : NULL;
	char req[8192];
	int n = snprintf(req, sizeof(req),
	                 "GET " PK_LINK_PATH " HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
	                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
	                 "Sec-WebSocket-Version: 13\r\nx-piko-node-id: %s\r\n"
	                 "x-piko-cluster-addr: %s\r\n%s%s%s\r\n",
	                 l->addr, l->ws_key, cl->node_id, cl->cluster_addr,
	                 proof ? "Authorization: Bearer " : "", proof ? proof : "",
	                 proof ? "\r\n" : "");
	free(proof);
	if (n < 0 || (size_t)n >= sizeof(req)) {
		pk_link_close(l, "handshake too large");
		return;
	}
	sock_put(l, req, (size_t)n);
}

static void on_data(struct pk_sock *s, const uint8_t *data, size_t len)
{
	static uint8_t *buf;
	static size_t cap;
	struct pk_link *l = pk_sock_user(s);
	pk_link_metrics_add(l->cl->lm.bytes, PK_LINK_IN, (double)len);
	if (l->state == PK_LINK_CLOSING)
		return;
	/* The WebSocket reader unmasks in place: a copy of ours. */
	if (len > cap) {
		buf = pk_xrealloc(buf, len);
		cap = len;
	}
	if (len) /* buf is still NULL when the first read is empty */
		memcpy(buf, data, len);
	uint8_t *p = buf;
	while (len && l->state == PK_LINK_HANDSHAKE) {
		size_t used = 0;
		enum pk_http1_event ev = pk_http1_reader_feed(&l->hs, (const char *)p, len, &used);
		p += used;
		len -= used;
		if (ev == PK_HTTP1_ERROR) {
			int status;
			const char *why = pk_http1_reader_error(&l->hs, &status);
			if (l->dialer)
				pk_link_close(l, why);
			else
				refuse(l, status, why);
			return;
		}
		if (ev == PK_HTTP1_HEAD) {
			const struct pk_http1_head *h = pk_http1_reader_head(&l->hs);
			if (l->dialer) {
				if (dial_answered(l, h, p, len) < 0)
					return;
			} else {
				accept_upgrade(l, h);
			}
		} else if (ev == PK_HTTP1_NEED_MORE) {
			break;
		}
	}
	if (len && (l->state == PK_LINK_OPEN || l->state == PK_LINK_ESTABLISHED))
		ws_input(l, p, len);
}

static void on_eof(struct pk_sock *s)
{
	struct pk_link *l = pk_sock_user(s);
	pk_link_close(l, "peer closed the connection");
}

static void on_drain(struct pk_sock *s)
{
	link_flush(pk_sock_user(s));
}

static void link_free(struct pk_link *l)
{
	struct pk_cluster *cl = l->cl;
	int was_established = l->state == PK_LINK_ESTABLISHED || l->established_ms;
	lws_sul_cancel(&l->flush_sul);
	/* Out of routing first: a stream's close below may start the next
	 * pipelined request, which must not pick this link. */
	table_clear(l);
	l->state = PK_LINK_CLOSING;
	if (l->sess) {
		/* Every stream ends here: exchanges forwarded over the link
		 * fail, forwarded-in requests are dropped. */
		pk_yamux_session_free(l->sess);
		l->sess = NULL;
	}
	pk_strmap_free(l->eps);
	if (l->prev)
		l->prev->next = l->next;
	else
		cl->links = l->next;
	if (l->next)
		l->next->prev = l->prev;
	if (l->member && l->member->link == l) {
		struct pk_member *m = l->member;
		m->link = NULL;
		if (!was_established)
			m->dial_failed = 1;
		/* A link that was up comes back at once; one that never got
		 * up backs off. */
		if (was_established)
			pk_backoff_reset(&m->backoff);
		m->next_dial_ms = pk_now_ms() + (m->self ? 0 : pk_backoff_next(&m->backoff));
	}
	if (was_established)
		pk_log(PK_LOG_INFO, SUBSYS, "node left; its endpoints withdrawn", "node-id",
		       l->peer_id, NULL);
	pk_http1_reader_free(&l->hs);
	pk_bufq_clear(&l->ctrl_out);
	free(l->ctrl_in);
	free(l->ctrl_h);
	free(l->peer_id);
	free(l->proxy_addr);
	free(l->admin_addr);
	free(l->cluster_addr);
	free(l);
	pk_cluster_update_gauge(cl);
}

static void on_close(struct pk_sock *s, int reset, const char *why)
{
	(void)reset;
	struct pk_link *l = pk_sock_user(s);
	if (l->member && l->state != PK_LINK_ESTABLISHED && l->member->last_error[0] == '\0')
		snprintf(l->member->last_error, sizeof(l->member->last_error), "%s", why);
	if (l->state != PK_LINK_CLOSING)
		pk_log(l->state == PK_LINK_ESTABLISHED ? PK_LOG_WARN : PK_LOG_DEBUG, SUBSYS,
		       "node link lost", "node-id", peer_name(l), "error", why, NULL);
	l->sock = NULL;
	link_free(l);
}

static const struct pk_sock_ops link_sock_ops = {
    .on_connected = on_connected,
    .on_data = on_data,
    .on_eof = on_eof,
    .on_drain = on_drain,
    .on_close = on_close,
};

/* ---- creation ---------------------------------------------------------------------- */

static struct pk_link *link_new(struct pk_cluster *cl, int dialer)
{
	/* Owner: cl->links; freed by link_free() from the socket's on_close. */
	struct pk_link *l = pk_xcalloc(1, sizeof(*l));
	l->cl = cl;
	l->dialer = dialer;
	l->created_ms = pk_now_ms();
	pk_http1_reader_init(&l->hs, dialer ? PK_HTTP1_RESPONSE : PK_HTTP1_REQUEST, HANDSHAKE_MAX);
	pk_bufq_init(&l->ctrl_out, CTRL_OUT_CAP);
	l->eps = pk_strmap_new();
	struct ctrl_handler *ch = pk_xcalloc(1, sizeof(*ch));
	ch->h.ops = &ctrl_ops;
	ch->l = l;
	l->ctrl_h = &ch->h;
	l->next = cl->links;
	if (cl->links)
		cl->links->prev = l;
	cl->links = l;
	return l;
}

/* "host:port" / "[v6]:port" into its parts. */
static int split_addr(const char *addr, char *host, size_t cap, int *port)
{
	const char *colon = strrchr(addr, ':');
	if (!colon)
		return -1;
	const char *h = addr;
	size_t hl = (size_t)(colon - addr);
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	if (hl == 0 || hl >= cap)
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = atoi(colon + 1);
	return *port > 0 && *port < 65536 ? 0 : -1;
}

struct pk_link *pk_link_dial(struct pk_cluster *cl, struct pk_member *m)
{
	char host[128];
	int port;
	if (split_addr(m->addr, host, sizeof(host), &port) < 0)
		return NULL;
	struct pk_link *l = link_new(cl, 1);
	l->member = m;
	m->link = l;
	snprintf(l->addr, sizeof(l->addr), "%s", m->addr);
	snprintf(l->peer_ip, sizeof(l->peer_ip), "%.63s", host);
	l->state = PK_LINK_CONNECTING;
	l->sock = pk_sock_connect(host, port, CONNECT_TIMEOUT_MS, &link_sock_ops, l, SEND_CAP);
	if (!l->sock) {
		m->link = NULL;
		l->member = NULL;
		link_free(l);
		return NULL;
	}
	pk_link_metrics_add(cl->lm.connections, PK_LINK_OUT, 1);
	if (cl->tls_client) {
		/* Verified against cluster.tls.client.server_name when set (one
		 * certificate for every node), else the address dialled. */
		const char *sn = cl->srv->cfg->cluster.tls.client.server_name;
		pk_sock_use_tls(l->sock, cl->tls_client, sn && *sn ? sn : host, 1);
	}
	return l;
}

void pk_link_accept(struct pk_cluster *cl, int fd)
{
	/* Connections that have not proved the key yet hold a slot each for
	 * up to PK_LINK_HANDSHAKE_TIMEOUT_MS: a bounded number of them. */
	size_t pending = 0;
	for (struct pk_link *o = cl->links; o; o = o->next)
		pending += !o->dialer && o->state != PK_LINK_ESTABLISHED;
	if (pending >= MAX_PENDING_ACCEPTS) {
		close(fd);
		return;
	}
	struct pk_link *l = link_new(cl, 0);
	l->state = PK_LINK_HANDSHAKE;
	l->sock = pk_sock_adopt(fd, &link_sock_ops, l, SEND_CAP);
	if (!l->sock) {
		link_free(l);
		return;
	}
	pk_link_metrics_add(cl->lm.connections, PK_LINK_IN, 1);
	if (cl->tls_server)
		pk_sock_accept_tls(l->sock, cl->tls_server);
	pk_sock_peer_ip(l->sock, l->peer_ip, sizeof(l->peer_ip));
}

void pk_link_abort(struct pk_link *l)
{
	table_clear(l);
	l->state = PK_LINK_CLOSING;
	if (l->sess) {
		pk_yamux_session_free(l->sess);
		l->sess = NULL;
	}
	l->ctrl = NULL;
	if (l->sock && !l->sock_closing) {
		l->sock_closing = 1;
		pk_sock_close(l->sock, 1);
	}
}

struct pk_yamux_stream *pk_link_open_stream(struct pk_link *l)
{
	if (l->state != PK_LINK_ESTABLISHED || !l->sess)
		return NULL;
	struct pk_yamux_stream *s = pk_yamux_stream_open(l->sess, pk_now_ms());
	if (s) {
		pk_yamux_stream_write(s, (const uint8_t *)"P", 1);
		pk_link_metrics_add(l->cl->lm.streams, PK_LINK_OUT, 1);
	}
	return s;
}

void pk_link_tick(struct pk_link *l, uint64_t now_ms)
{
	if (l->sess && l->state != PK_LINK_CLOSING)
		pk_yamux_session_tick(l->sess, now_ms);
	/* A handshake that never completes does not hold a slot forever. */
	if ((l->state == PK_LINK_HANDSHAKE || l->state == PK_LINK_OPEN) &&
	    now_ms - l->created_ms > PK_LINK_HANDSHAKE_TIMEOUT_MS)
		pk_link_close(l, "handshake timeout");
	/* A peer that stopped reading does not keep a closing link (and its
	 * queued frames) alive: cut it. */
	if (l->state == PK_LINK_CLOSING && l->sock && now_ms - l->closing_ms > CLOSE_TIMEOUT_MS) {
		l->sock_closing = 1;
		pk_sock_close(l->sock, 1);
	}
}

size_t pk_link_streams(const struct pk_link *l)
{
	return l->sess ? pk_yamux_session_num_streams(l->sess) : 0;
}
