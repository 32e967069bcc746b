/*
 * pk_balancer: accepted connections piped raw to a picked backend (see
 * balancer.h for the contract).
 *
 * A connection is two pk_socks, front (the client) and back (the backend).
 * Bytes read on one side are written to the other; pk_sock_write never
 * comes back short here because a side stops reading (pk_sock_pause) as soon
 * as the other side's queue holds SEND_HWM bytes, and one read is at most
 * READ_MAX bytes: SEND_HWM + READ_MAX <= SEND_CAP. SEND_HWM is exactly half
 * the cap because that is when pk_sock arms on_drain, which resumes reading.
 *
 * An EOF on one side becomes a shutdown of the other side's writing, so each
 * direction ends on its own; a pk_sock closes itself once both directions of
 * it are done. When one side closes, the other is closed gracefully (what
 * is queued for it is written first) after a clean end, or aborted after a
 * reset, so that a client sees its backend's reset as a reset.
 *
 * Ownership: a connection belongs to its balancer's list and is freed once
 * both of its sockets are gone (conn_maybe_free).
 */
#include "balancer.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libwebsockets.h>

#include "buf.h"
#include "log.h"
#include "sock.h"

#define SUBSYS "balancer"
#define SEND_CAP (256 * 1024)
#define SEND_HWM (SEND_CAP / 2)
/* The most one pk_sock read delivers (core/sock.c READ_MAX). */
#define READ_MAX (64 * 1024)
_Static_assert(SEND_HWM + READ_MAX <= SEND_CAP, "a read must always fit the other side's queue");
/* A backend on loopback or a LAN answers a SYN in far less; past this the
 * next backend is tried. */
#define CONNECT_TIMEOUT_MS 3000

struct pk_balancer {
	char name[32];
	char addr[160];
	struct pk_sock_listener *ln;
	pk_balancer_pick_fn pick;
	void *user;
	int stopping;
	lws_dll2_owner_t conns;
};

struct lb_conn {
	struct pk_balancer *b;
	struct pk_sock *front;
	struct pk_sock *back;
	uint64_t tried;     /* backend indexes dialled for it */
	int attempts;       /* dials started */
	int connected;      /* back is up: bytes flow */
	int front_paused;   /* by us: back not up, or its queue is full */
	int back_paused;    /* by us: front's queue is full */
	char last_why[64];  /* why the last dial failed */
	char last_peer[64]; /* the backend it failed on */
	lws_dll2_t link;    /* b->conns */
};

static const struct pk_sock_ops front_ops;
static const struct pk_sock_ops back_ops;

static void conn_maybe_free(struct lb_conn *c)
{
	if (c->front || c->back)
		return;
	lws_dll2_remove(&c->link);
	free(c);
}

/* Start a dial to a backend not tried yet. Returns 0 when one is under way,
 * -1 when there is none left (or no socket could be made). */
static int dial(struct lb_conn *c)
{
	struct pk_balancer *b = c->b;
	char host[256];
	int port = 0;
	while (!b->stopping && c->attempts < PK_BALANCER_MAX_ATTEMPTS) {
		int i = b->pick(b->user, c->tried, host, sizeof(host), &port);
		if (i < 0 || i > 63)
			return -1;
		c->tried |= UINT64_C(1) << i;
		c->attempts++;
		c->back = pk_sock_connect(host, port, CONNECT_TIMEOUT_MS, &back_ops, c, SEND_CAP);
		if (c->back)
			return 0;
		snprintf(c->last_why, sizeof(c->last_why), "cannot create a socket");
	}
	return -1;
}

static void give_up(struct lb_conn *c)
{
	pk_log(PK_LOG_WARN, SUBSYS, "no backend reachable; closing the connection", "balancer",
	       c->b->name, "client", c->front ? pk_sock_peer(c->front) : "", "backend",
	       c->last_peer[0] ? c->last_peer : "none", "error",
	       c->last_why[0] ? c->last_why : "no backend", NULL);
	if (c->front)
		pk_sock_close(c->front, 1);
}

/* ---- front: the client ------------------------------------------------------ */

static void front_data(struct pk_sock *s, const uint8_t *data, size_t len)
{
	struct lb_conn *c = pk_sock_user(s);
	if (!c->back)
		return; /* closing */
	if (pk_sock_write(c->back, data, len) < len) {
		/* Cannot happen while the invariant in the file comment holds. */
		pk_log(PK_LOG_ERROR, SUBSYS, "send queue overflow", "balancer", c->b->name, NULL);
		pk_sock_close(s, 1);
		pk_sock_close(c->back, 1);
		return;
	}
	if (pk_sock_queued(c->back) >= SEND_HWM && !c->front_paused) {
		c->front_paused = 1;
		pk_sock_pause(s, 1); /* resumed on the back's drain */
	}
}

static void front_eof(struct pk_sock *s)
{
	struct lb_conn *c = pk_sock_user(s);
	if (c->back)
		pk_sock_shutdown_write(c->back);
}

static void front_drain(struct pk_sock *s)
{
	struct lb_conn *c = pk_sock_user(s);
	if (c->back_paused && c->back) {
		c->back_paused = 0;
		pk_sock_pause(c->back, 0);
	}
}

static void front_close(struct pk_sock *s, int reset, const char *why)
{
	struct lb_conn *c = pk_sock_user(s);
	(void)why;
	c->front = NULL;
	if (c->back)
		pk_sock_close(c->back, reset || !c->connected);
	conn_maybe_free(c);
}

static const struct pk_sock_ops front_ops = {
    .on_connected = NULL,
    .on_data = front_data,
    .on_eof = front_eof,
    .on_drain = front_drain,
    .on_close = front_close,
};

/* ---- back: the backend -------------------------------------------------------- */

static void back_connected(struct pk_sock *s)
{
	struct lb_conn *c = pk_sock_user(s);
	c->connected = 1;
	if (c->front && c->front_paused) {
		c->front_paused = 0;
		pk_sock_pause(c->front, 0);
	}
}

static void back_data(struct pk_sock *s, const uint8_t *data, size_t len)
{
	struct lb_conn *c = pk_sock_user(s);
	if (!c->front)
		return; /* closing */
	if (pk_sock_write(c->front, data, len) < len) {
		pk_log(PK_LOG_ERROR, SUBSYS, "send queue overflow", "balancer", c->b->name, NULL);
		pk_sock_close(s, 1);
		pk_sock_close(c->front, 1);
		return;
	}
	if (pk_sock_queued(c->front) >= SEND_HWM && !c->back_paused) {
		c->back_paused = 1;
		pk_sock_pause(s, 1); /* resumed on the front's drain */
	}
}

static void back_eof(struct pk_sock *s)
{
	struct lb_conn *c = pk_sock_user(s);
	if (c->front)
		pk_sock_shutdown_write(c->front);
}

static void back_drain(struct pk_sock *s)
{
	struct lb_conn *c = pk_sock_user(s);
	if (c->front_paused && c->front && c->connected) {
		c->front_paused = 0;
		pk_sock_pause(c->front, 0);
	}
}

static void back_close(struct pk_sock *s, int reset, const char *why)
{
	struct lb_conn *c = pk_sock_user(s);
	c->back = NULL;
	if (!c->connected && c->front && !c->b->stopping) {
		/* Nothing was read from the client yet: try another backend. */
		snprintf(c->last_why, sizeof(c->last_why), "%s", why);
		snprintf(c->last_peer, sizeof(c->last_peer), "%s", pk_sock_peer(s));
		pk_log(PK_LOG_DEBUG, SUBSYS, "backend dial failed", "balancer", c->b->name,
		       "backend", c->last_peer, "error", why, NULL);
		if (dial(c) < 0)
			give_up(c);
	} else if (c->front) {
		pk_sock_close(c->front, reset || !c->connected);
	}
	conn_maybe_free(c);
}

static const struct pk_sock_ops back_ops = {
    .on_connected = back_connected,
    .on_data = back_data,
    .on_eof = back_eof,
    .on_drain = back_drain,
    .on_close = back_close,
};

/* ---- the listener --------------------------------------------------------------- */

static void on_accept(void *user, int fd)
{
	struct pk_balancer *b = user;
	if (b->stopping || b->conns.count >= PK_BALANCER_MAX_CONNS) {
		if (!b->stopping)
			pk_log(PK_LOG_WARN, SUBSYS, "too many connections; refusing one",
			       "balancer", b->name, NULL);
		close(fd);
		return;
	}
	/* Owner: b->conns; freed by conn_maybe_free() once both sockets are
	 * gone (or by pk_balancer_free() for what the loop never closed). */
	struct lb_conn *c = pk_xcalloc(1, sizeof(*c));
	c->b = b;
	c->front = pk_sock_adopt(fd, &front_ops, c, SEND_CAP);
	if (!c->front) {
		free(c);
		return;
	}
	lws_dll2_add_tail(&c->link, &b->conns);
	/* Nothing is read until a backend is up (see balancer.h). */
	c->front_paused = 1;
	pk_sock_pause(c->front, 1);
	if (dial(c) < 0)
		give_up(c);
}

struct pk_balancer *pk_balancer_listen(const char *name, const char *addr, pk_balancer_pick_fn pick,
                                       void *user, char *err, size_t errlen)
{
	/* Owner: the caller (pk_balancer_stop, then pk_balancer_free). */
	struct pk_balancer *b = pk_xcalloc(1, sizeof(*b));
	snprintf(b->name, sizeof(b->name), "%s", name);
	snprintf(b->addr, sizeof(b->addr), "%s", addr);
	b->pick = pick;
	b->user = user;
	b->ln = pk_sock_listen(addr, on_accept, b, err, errlen);
	if (!b->ln) {
		free(b);
		return NULL;
	}
	return b;
}

int pk_balancer_port(const struct pk_balancer *b)
{
	return b->ln ? pk_sock_listener_port(b->ln) : 0;
}

size_t pk_balancer_conns(const struct pk_balancer *b)
{
	return (size_t)b->conns.count;
}

void pk_balancer_stop(struct pk_balancer *b)
{
	if (!b)
		return;
	b->stopping = 1; /* no more dials, not even from the closes below */
	if (b->ln) {
		pk_sock_listener_close(b->ln);
		b->ln = NULL;
	}
	lws_start_foreach_dll(struct lws_dll2 *, d, b->conns.head)
	{
		struct lb_conn *c = lws_container_of(d, struct lb_conn, link);
		/* on_close is never called from inside pk_sock_close, so the
		 * list cannot change under this walk. */
		if (c->front)
			pk_sock_close(c->front, 1);
		if (c->back)
			pk_sock_close(c->back, 1);
	}
	lws_end_foreach_dll(d);
}

void pk_balancer_free(struct pk_balancer *b)
{
	if (!b)
		return;
	struct lws_dll2 *d;
	while ((d = lws_dll2_get_head(&b->conns))) {
		lws_dll2_remove(d);
		/* The analyzer does not see into lws (d->owner is &b->conns): without this it
		 * takes the head as unchanged and reports the freed node as used. */
		assert(lws_dll2_get_head(&b->conns) != d);
		free(lws_container_of(d, struct lb_conn, link));
	}
	free(b);
}
