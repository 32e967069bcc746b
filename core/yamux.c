/*
 * yamux session state machine. See yamux.h for the protocol summary and the
 * callback rules; this file only adds how it is kept.
 *
 * Output is produced in four tiers, in this order, by fill():
 *   1. ctl_local: whole frames we decided to send (RST of a stream the owner
 *      reset or that timed out, our pings, our Go Away);
 *   2. ctl_peer: whole frames that answer the peer (pongs, RST of refused
 *      SYNs). The peer controls how many of these arise, so the queue is
 *      capped; overflowing it is a protocol error;
 *   3. ctl_list: streams owing a SYN, an ACK or a window update (one Window
 *      Update frame per stream carries all of them);
 *   4. act_list: streams with data and send window, or a FIN to send,
 *      served round-robin (a served stream goes to the tail).
 * A stream's data is never eligible while its SYN or ACK is still owed, so
 * the peer always sees the stream opened before any byte of it.
 *
 * Streams leave the id table the moment they end (so later frames for that
 * id are ignored, as in Go) and wait on dead_list until the next feed, fill
 * or tick tells the owner via on_stream_close and frees them. Nothing is ever
 * freed while a callback runs, so a stream pointer held across a callback
 * stays valid; code re-checks s->dead after every callback.
 */
#include "yamux.h"

#include "buf.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Cap on queued peer-caused control frames (pongs, RSTs for refused SYNs).
 * A peer that sends them faster than the transport lets us answer is either
 * broken or hostile. */
#define CTL_PEER_MAX 1024
#define TABLE_MIN_BITS 4

/* Intrusive doubly-linked list. A list head points to itself when empty; a
 * node has next == NULL while it is on no list. */
struct link {
	struct link *prev;
	struct link *next;
};

#define LINK_ENTRY(ptr, member)                                                                    \
	((struct pk_yamux_stream *)(void *)((char *)(ptr)-offsetof(struct pk_yamux_stream, member)))

static void list_init(struct link *head)
{
	head->prev = head;
	head->next = head;
}

static int link_on(const struct link *n)
{
	return n->next != NULL;
}

static void link_remove(struct link *n)
{
	if (!n->next)
		return;
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = NULL;
	n->next = NULL;
}

static void list_push_tail(struct link *head, struct link *n)
{
	n->prev = head->prev;
	n->next = head;
	head->prev->next = n;
	head->prev = n;
}

static struct link *list_first(const struct link *head)
{
	return head->next == head ? NULL : head->next;
}

struct pk_yamux_stream {
	struct pk_yamux_session *sess;
	void *user;
	uint32_t id;
	uint32_t send_window;     /* bytes the peer lets us send */
	uint32_t recv_window;     /* bytes the peer may still send us */
	uint32_t recv_credit;     /* window owed to the peer, not yet granted */
	uint32_t recv_unconsumed; /* handed out through on_data, not consumed */
	/* recv_window + recv_credit + recv_unconsumed == sess->recv_max, so
	 * none of them can overflow. */
	uint64_t open_at;  /* when we sent SYN (open timeout) */
	uint64_t close_at; /* when the owner closed (close timeout) */
	struct pk_bufq sendq;
	unsigned local : 1;       /* we opened it */
	unsigned syn_pending : 1; /* SYN not written yet */
	unsigned ack_pending : 1; /* ACK not written yet */
	unsigned in_backlog : 1;  /* counts in sess->backlog */
	unsigned established : 1;
	unsigned fin_requested : 1;
	unsigned fin_sent : 1;
	unsigned remote_fin : 1;
	unsigned dead : 1;        /* ended; on dead_list or being dropped */
	unsigned close_reset : 1; /* argument of on_stream_close */
	unsigned refused : 1;     /* we opened it and the peer answered RST, not ACK */
	struct link ctl_link;     /* sess->ctl_list */
	struct link act_link;     /* sess->act_list */
	struct link open_link;    /* sess->open_list while unacknowledged */
	struct link close_link;   /* sess->close_list while our FIN waits for theirs */
	struct link dead_link;    /* sess->dead_list */
};

struct pk_yamux_session {
	struct pk_yamux_config cfg;
	struct pk_yamux_callbacks cb;
	void *user;
	int is_client;
	uint32_t next_id;
	uint32_t recv_max; /* per-stream receive window we grant */

	/* Stream table: open addressing, linear probing, backward-shift
	 * deletion; load factor kept at or below 1/2. Owns nothing: streams
	 * are owned by the session as a whole and freed in dispatch_dead() or
	 * pk_yamux_session_free(). */
	struct pk_yamux_stream **slots;
	unsigned bits;
	size_t count;

	struct link ctl_list;
	struct link act_list;
	struct link open_list;  /* in open order, so the oldest is first */
	struct link close_list; /* in close order, so the oldest is first */
	struct link dead_list;
	size_t pending_opens; /* length of open_list */
	size_t backlog;       /* accepted streams whose ACK is not written */

	struct pk_bufq ctl_local;
	struct pk_bufq ctl_peer;

	/* Receive state: a header being assembled, or a payload being passed
	 * through (rx_stream NULL: drained). */
	uint8_t hdr[PK_YAMUX_HDR_LEN];
	size_t hdr_len;
	uint32_t rx_left;
	struct pk_yamux_stream *rx_stream;
	int rx_fin; /* apply the peer's FIN once the payload is through */

	uint64_t now; /* latest clock value we were given */
	uint64_t next_ping_at;
	uint64_t ping_sent_at;
	uint32_t ping_next_id;
	uint32_t ping_out_id;
	int ping_out;
	int64_t rtt;

	int remote_go_away;
	int local_go_away;
	unsigned go_away_sent; /* bit per code class, so repeats are not queued */
	int dead;
};

/* ---- header ---- */

void pk_yamux_hdr_encode(const struct pk_yamux_hdr *h, uint8_t out[PK_YAMUX_HDR_LEN])
{
	out[0] = h->version;
	out[1] = h->type;
	out[2] = (uint8_t)(h->flags >> 8);
	out[3] = (uint8_t)h->flags;
	out[4] = (uint8_t)(h->stream_id >> 24);
	out[5] = (uint8_t)(h->stream_id >> 16);
	out[6] = (uint8_t)(h->stream_id >> 8);
	out[7] = (uint8_t)h->stream_id;
	out[8] = (uint8_t)(h->length >> 24);
	out[9] = (uint8_t)(h->length >> 16);
	out[10] = (uint8_t)(h->length >> 8);
	out[11] = (uint8_t)h->length;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

int pk_yamux_hdr_decode(const uint8_t in[PK_YAMUX_HDR_LEN], struct pk_yamux_hdr *h)
{
	h->version = in[0];
	h->type = in[1];
	h->flags = (uint16_t)(in[2] << 8 | in[3]);
	h->stream_id = be32(in + 4);
	h->length = be32(in + 8);
	if (h->version != PK_YAMUX_VERSION || h->type > PK_YAMUX_GO_AWAY)
		return -1;
	return 0;
}

static void put_frame(uint8_t *out, uint8_t type, uint16_t flags, uint32_t id, uint32_t len)
{
	struct pk_yamux_hdr h = {.version = PK_YAMUX_VERSION,
	                         .type = type,
	                         .flags = flags,
	                         .stream_id = id,
	                         .length = len};
	pk_yamux_hdr_encode(&h, out);
}

void pk_yamux_config_default(struct pk_yamux_config *cfg)
{
	cfg->window = PK_YAMUX_INITIAL_WINDOW;
	cfg->send_queue_cap = 256 * 1024;
	cfg->accept_backlog = 256;
	cfg->max_pending_opens = 256;
	cfg->keepalive_ms = 30000;
	cfg->ping_timeout_ms = 10000;
	cfg->open_timeout_ms = 75000;
	cfg->close_timeout_ms = 300000;
	cfg->accept_after_go_away = 0;
}

int pk_yamux_window_check(int64_t v, char *err, size_t errlen)
{
	if (v < (int64_t)PK_YAMUX_INITIAL_WINDOW) {
		snprintf(err, errlen, "stream: max-window-size must be >= %u",
		         PK_YAMUX_INITIAL_WINDOW);
		return -1;
	}
	if (v > (int64_t)UINT32_MAX) {
		snprintf(err, errlen, "stream: max-window-size must be <= %u", UINT32_MAX);
		return -1;
	}
	return 0;
}

/* ---- small helpers ---- */

static uint64_t elapsed(uint64_t now, uint64_t since)
{
	/* A clock that goes backwards must not fire every timer at once. */
	return now > since ? now - since : 0;
}

static void note_now(struct pk_yamux_session *sess, uint64_t now)
{
	if (now > sess->now)
		sess->now = now;
}

static void want_write(struct pk_yamux_session *sess)
{
	if (sess->cb.want_write)
		sess->cb.want_write(sess->user);
}

/* Frames we chose to send. Not capped by bytes: each stream contributes at
 * most one RST and the session at most one outstanding ping and four Go
 * Aways, so the queue is bounded by the number of streams the owner had. */
static void queue_local(struct pk_yamux_session *sess, uint8_t type, uint16_t flags, uint32_t id,
                        uint32_t len)
{
	uint8_t f[PK_YAMUX_HDR_LEN];
	put_frame(f, type, flags, id, len);
	pk_bufq_append_force(&sess->ctl_local, f, sizeof(f));
	want_write(sess);
}

static void protocol_error(struct pk_yamux_session *sess);

/* Frames that answer the peer. Returns -1 when the session died. */
static int queue_peer(struct pk_yamux_session *sess, uint8_t type, uint16_t flags, uint32_t id,
                      uint32_t len)
{
	uint8_t f[PK_YAMUX_HDR_LEN];
	if (pk_bufq_space(&sess->ctl_peer) < sizeof(f)) {
		protocol_error(sess);
		return -1;
	}
	put_frame(f, type, flags, id, len);
	pk_bufq_append(&sess->ctl_peer, f, sizeof(f));
	want_write(sess);
	return 0;
}

/* ---- stream table ---- */

static size_t tbl_home(const struct pk_yamux_session *sess, uint32_t id)
{
	/* Fibonacci hashing: the top bits of the product are well mixed even
	 * for ids that differ only in their low bits (1, 3, 5...). */
	return (uint32_t)(id * 2654435761u) >> (32 - sess->bits);
}

static size_t tbl_mask(const struct pk_yamux_session *sess)
{
	return ((size_t)1 << sess->bits) - 1;
}

static struct pk_yamux_stream *tbl_find(const struct pk_yamux_session *sess, uint32_t id)
{
	size_t mask = tbl_mask(sess);
	for (size_t i = tbl_home(sess, id);; i = (i + 1) & mask) {
		struct pk_yamux_stream *s = sess->slots[i];
		if (!s || s->id == id)
			return s;
	}
}

static void tbl_put(struct pk_yamux_session *sess, struct pk_yamux_stream *s)
{
	size_t mask = tbl_mask(sess);
	size_t i = tbl_home(sess, s->id);
	while (sess->slots[i])
		i = (i + 1) & mask;
	sess->slots[i] = s;
}

static void tbl_insert(struct pk_yamux_session *sess, struct pk_yamux_stream *s)
{
	if ((sess->count + 1) * 2 > ((size_t)1 << sess->bits)) {
		struct pk_yamux_stream **old = sess->slots;
		size_t old_n = (size_t)1 << sess->bits;
		sess->bits++;
		sess->slots = pk_xcalloc((size_t)1 << sess->bits, sizeof(*sess->slots));
		for (size_t i = 0; i < old_n; i++)
			if (old[i])
				tbl_put(sess, old[i]);
		free(old);
	}
	tbl_put(sess, s);
	sess->count++;
}

static void tbl_remove(struct pk_yamux_session *sess, const struct pk_yamux_stream *s)
{
	size_t mask = tbl_mask(sess);
	size_t i = tbl_home(sess, s->id);
	while (sess->slots[i] != s) {
		if (!sess->slots[i])
			return;
		i = (i + 1) & mask;
	}
	sess->slots[i] = NULL;
	sess->count--;
	/* Backward shift: pull later entries of the probe run into the hole
	 * unless their home lies cyclically in (i, j]. */
	for (size_t j = (i + 1) & mask; sess->slots[j]; j = (j + 1) & mask) {
		size_t k = tbl_home(sess, sess->slots[j]->id);
		int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
		if (stays)
			continue;
		sess->slots[i] = sess->slots[j];
		sess->slots[j] = NULL;
		i = j;
	}
}

/* ---- stream bookkeeping ---- */

static void stream_free(struct pk_yamux_stream *s)
{
	pk_bufq_clear(&s->sendq);
	free(s);
}

/* Put s on or off ctl_list according to what it owes. */
static void update_ctl(struct pk_yamux_stream *s)
{
	struct pk_yamux_session *sess = s->sess;
	int need = !s->dead && (s->syn_pending || s->ack_pending ||
	                        (!s->remote_fin && s->recv_credit >= sess->recv_max / 2));
	if (need && !link_on(&s->ctl_link)) {
		list_push_tail(&sess->ctl_list, &s->ctl_link);
		want_write(sess);
	} else if (!need) {
		link_remove(&s->ctl_link);
	}
}

/* Put s on or off act_list according to what it can send. */
static void update_act(struct pk_yamux_stream *s)
{
	struct pk_yamux_session *sess = s->sess;
	int need =
	    !s->dead && !s->fin_sent && !s->syn_pending && !s->ack_pending &&
	    ((s->sendq.len > 0 && s->send_window > 0) || (s->fin_requested && s->sendq.len == 0));
	if (need && !link_on(&s->act_link)) {
		list_push_tail(&sess->act_list, &s->act_link);
		want_write(sess);
	} else if (!need) {
		link_remove(&s->act_link);
	}
}

/* End s: out of the table and every list, onto dead_list. The owner hears of
 * it from dispatch_dead(). in_table == 0 when the caller empties the table in
 * bulk. */
static void stream_end(struct pk_yamux_stream *s, int reset, int in_table)
{
	struct pk_yamux_session *sess = s->sess;
	if (s->dead)
		return;
	s->dead = 1;
	s->close_reset = reset ? 1 : 0;
	if (in_table)
		tbl_remove(sess, s);
	link_remove(&s->ctl_link);
	link_remove(&s->act_link);
	if (link_on(&s->open_link)) {
		link_remove(&s->open_link);
		sess->pending_opens--;
	}
	link_remove(&s->close_link);
	if (s->in_backlog) {
		s->in_backlog = 0;
		sess->backlog--;
	}
	if (sess->rx_stream == s) {
		sess->rx_stream = NULL; /* the rest of its payload is drained */
		sess->rx_fin = 0;
	}
	pk_bufq_clear(&s->sendq);
	list_push_tail(&sess->dead_list, &s->dead_link);
}

static void dispatch_dead(struct pk_yamux_session *sess)
{
	struct link *l;
	while ((l = list_first(&sess->dead_list))) {
		struct pk_yamux_stream *s = LINK_ENTRY(l, dead_link);
		link_remove(l);
		if (sess->cb.on_stream_close)
			sess->cb.on_stream_close(sess->user, s, s->close_reset);
#ifndef __clang_analyzer__
		/* l->prev is the head (l is first), so link_remove() moved the
		 * head on; the analyzer cannot tell the two pointers are one node
		 * and reported the freed stream as still first. */
		stream_free(s);
#endif
	}
}

/* Owner of the returned stream: the session (freed in dispatch_dead() or
 * pk_yamux_session_free()). */
static struct pk_yamux_stream *stream_new(struct pk_yamux_session *sess, uint32_t id, int local)
{
	struct pk_yamux_stream *s = pk_xcalloc(1, sizeof(*s));
	s->sess = sess;
	s->id = id;
	s->local = local ? 1 : 0;
	s->send_window = PK_YAMUX_INITIAL_WINDOW;
	s->recv_window = PK_YAMUX_INITIAL_WINDOW;
	/* A window larger than the protocol's initial one is granted with the
	 * SYN or ACK, as Go does. */
	s->recv_credit = sess->recv_max - PK_YAMUX_INITIAL_WINDOW;
	pk_bufq_init(&s->sendq, sess->cfg.send_queue_cap);
	return s;
}

/* ---- session death ---- */

static void session_die(struct pk_yamux_session *sess, int reason, int send_go_away)
{
	if (sess->dead)
		return;
	sess->dead = 1;
	/* Whatever was queued is moot: the owner closes the transport after
	 * flushing what fill() still gives, which is only our Go Away. */
	pk_bufq_clear(&sess->ctl_local);
	pk_bufq_clear(&sess->ctl_peer);
	size_t n = (size_t)1 << sess->bits;
	for (size_t i = 0; i < n; i++) {
		if (sess->slots[i]) {
			stream_end(sess->slots[i], 1, 0);
			sess->slots[i] = NULL;
		}
	}
	sess->count = 0;
	sess->rx_stream = NULL;
	if (send_go_away) {
		sess->local_go_away = 1;
		queue_local(sess, PK_YAMUX_GO_AWAY, 0, 0, PK_YAMUX_GOAWAY_PROTO_ERR);
	}
	dispatch_dead(sess);
	if (sess->cb.on_session_close)
		sess->cb.on_session_close(sess->user, reason);
}

static void protocol_error(struct pk_yamux_session *sess)
{
	session_die(sess, PK_YAMUX_CLOSED_PROTOCOL, 1);
}

/* ---- receiving ---- */

static void skip_payload(struct pk_yamux_session *sess, uint32_t len)
{
	sess->rx_stream = NULL;
	sess->rx_left = len;
	sess->rx_fin = 0;
}

static void remote_fin(struct pk_yamux_stream *s)
{
	struct pk_yamux_session *sess = s->sess;
	if (s->remote_fin) {
		/* Go rejects a second FIN the same way (ErrUnexpectedFlag). */
		protocol_error(sess);
		return;
	}
	s->remote_fin = 1;
	link_remove(&s->close_link);
	update_ctl(s); /* no more window updates needed */
	if (sess->cb.on_fin)
		sess->cb.on_fin(sess->user, s);
	if (!s->dead && s->fin_sent)
		stream_end(s, 0, 1);
}

/* The peer opened id. Returns -1 when the session died. */
static int incoming_syn(struct pk_yamux_session *sess, uint32_t id)
{
	if (sess->local_go_away && !sess->cfg.accept_after_go_away)
		return queue_peer(sess, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_RST, id, 0);
	/* The peer must use its own parity, or its ids would collide with
	 * ours; 0 is the session's. */
	if (id == 0 || (int)(id & 1) == (sess->is_client ? 1 : 0) || tbl_find(sess, id)) {
		protocol_error(sess);
		return -1;
	}
	if (sess->backlog >= sess->cfg.accept_backlog || pk_yamux_session_streams_full(sess))
		return queue_peer(sess, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_RST, id, 0);

	struct pk_yamux_stream *s = stream_new(sess, id, 0);
	tbl_insert(sess, s);
	s->in_backlog = 1;
	sess->backlog++;
	/* Set before on_stream so data the owner writes from inside it waits
	 * for the ACK (see update_act()). */
	s->established = 1;
	s->ack_pending = 1;
	int rc = sess->cb.on_stream ? sess->cb.on_stream(sess->user, s) : -1;
	if (rc != 0) {
		/* Refused: dropped without on_stream_close, even if the owner
		 * already reset it inside on_stream (then its RST is queued). */
		int was_dead = s->dead;
		stream_end(s, 1, 1);
		link_remove(&s->dead_link);
		stream_free(s);
		if (!was_dead)
			return queue_peer(sess, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_RST, id, 0);
		return 0;
	}
	update_ctl(s);
	return 0;
}

static void handle_stream_frame(struct pk_yamux_session *sess, const struct pk_yamux_hdr *h)
{
	uint16_t fl = h->flags;
	int is_data = h->type == PK_YAMUX_DATA;
	uint32_t dlen = is_data ? h->length : 0;

	if ((fl & PK_YAMUX_SYN) && incoming_syn(sess, h->stream_id) < 0)
		return;
	struct pk_yamux_stream *s = tbl_find(sess, h->stream_id);
	if (!s) {
		/* Likely a stream we reset or refused: drop its data, as Go. */
		skip_payload(sess, dlen);
		return;
	}
	if ((fl & PK_YAMUX_ACK) && s->local && !s->established) {
		s->established = 1;
		link_remove(&s->open_link);
		sess->pending_opens--;
		if (sess->cb.on_writable)
			sess->cb.on_writable(sess->user, s);
		if (s->dead) {
			skip_payload(sess, dlen);
			return;
		}
	}
	if (fl & PK_YAMUX_RST) {
		if (s->local && !s->established)
			s->refused = 1;
		stream_end(s, 1, 1);
		skip_payload(sess, dlen);
		return;
	}
	if (!is_data && h->length > 0) {
		uint32_t was = s->send_window;
		/* A compliant peer never grants more than 4 GiB; saturate
		 * rather than wrap for one that does. */
		s->send_window = h->length > UINT32_MAX - was ? UINT32_MAX : was + h->length;
		update_act(s);
		if (was == 0 && !s->fin_requested && sess->cb.on_writable) {
			sess->cb.on_writable(sess->user, s);
			if (s->dead)
				return;
		}
	}
	if (fl & PK_YAMUX_FIN) {
		if (s->remote_fin) {
			protocol_error(sess);
			return;
		}
		if (dlen == 0) {
			remote_fin(s);
			return;
		}
	}
	if (dlen == 0)
		return;
	if (s->remote_fin) {
		/* Data after the peer's FIN: on_fin promised no more. */
		skip_payload(sess, dlen);
		return;
	}
	if (dlen > s->recv_window) {
		protocol_error(sess);
		return;
	}
	s->recv_window -= dlen;
	sess->rx_stream = s;
	sess->rx_left = dlen;
	sess->rx_fin = (fl & PK_YAMUX_FIN) != 0;
}

static void handle_frame(struct pk_yamux_session *sess)
{
	struct pk_yamux_hdr h;
	if (pk_yamux_hdr_decode(sess->hdr, &h) < 0) {
		protocol_error(sess);
		return;
	}
	switch (h.type) {
	case PK_YAMUX_PING:
		if (h.flags & PK_YAMUX_SYN) {
			queue_peer(sess, PK_YAMUX_PING, PK_YAMUX_ACK, 0, h.length);
		} else if (sess->ping_out && h.length == sess->ping_out_id) {
			sess->ping_out = 0;
			sess->rtt = (int64_t)elapsed(sess->now, sess->ping_sent_at);
			sess->next_ping_at = sess->now + sess->cfg.keepalive_ms;
		}
		break;
	case PK_YAMUX_GO_AWAY:
		if (h.length == PK_YAMUX_GOAWAY_NORMAL) {
			if (!sess->remote_go_away) {
				sess->remote_go_away = 1;
				if (sess->cb.on_go_away)
					sess->cb.on_go_away(sess->user);
			}
		} else {
			session_die(sess, PK_YAMUX_CLOSED_REMOTE_GOAWAY, 0);
		}
		break;
	default:
		handle_stream_frame(sess, &h);
		break;
	}
}

static void payload_done(struct pk_yamux_session *sess)
{
	struct pk_yamux_stream *s = sess->rx_stream;
	int fin = sess->rx_fin;
	sess->rx_stream = NULL;
	sess->rx_fin = 0;
	/* A FIN riding on data takes effect after the data, so on_fin is the
	 * last thing the owner hears for the receive side. */
	if (s && fin && !s->dead)
		remote_fin(s);
}

int pk_yamux_session_feed(struct pk_yamux_session *sess, const uint8_t *data, size_t len)
{
	if (sess->dead)
		return -1;
	dispatch_dead(sess);
	while (len > 0 && !sess->dead) {
		if (sess->rx_left > 0) {
			size_t n = len < sess->rx_left ? len : sess->rx_left;
			struct pk_yamux_stream *s = sess->rx_stream;
			sess->rx_left -= (uint32_t)n;
			if (s) {
				s->recv_unconsumed += (uint32_t)n;
				if (sess->cb.on_data)
					sess->cb.on_data(sess->user, s, data, n);
			}
			data += n;
			len -= n;
			if (sess->rx_left == 0) {
				payload_done(sess);
				dispatch_dead(sess);
			}
			continue;
		}
		size_t n = PK_YAMUX_HDR_LEN - sess->hdr_len;
		if (n > len)
			n = len;
		memcpy(sess->hdr + sess->hdr_len, data, n);
		sess->hdr_len += n;
		data += n;
		len -= n;
		if (sess->hdr_len == PK_YAMUX_HDR_LEN) {
			sess->hdr_len = 0;
			handle_frame(sess);
			/* Closes are told frame by frame, so the order of
			 * events does not depend on how the input was split. */
			dispatch_dead(sess);
		}
	}
	dispatch_dead(sess);
	return sess->dead ? -1 : 0;
}

/* ---- sending ---- */

/* Move whole 12-byte frames from q into out. */
static size_t drain_frames(struct pk_bufq *q, uint8_t *out, size_t room)
{
	size_t n = q->len < room ? q->len : room;
	n -= n % PK_YAMUX_HDR_LEN;
	pk_bufq_copy(q, out, n);
	pk_bufq_consume(q, n);
	return n;
}

/* One data or FIN frame from the head of act_list. Returns bytes written,
 * 0 when the head stream cannot make progress in room. */
static size_t fill_one_data(struct pk_yamux_session *sess, uint8_t *out, size_t room)
{
	struct link *l = list_first(&sess->act_list);
	struct pk_yamux_stream *s = LINK_ENTRY(l, act_link);
	size_t queued = s->sendq.len;
	size_t n = 0;
	int writable = 0;

	if (queued > 0) {
		n = room - PK_YAMUX_HDR_LEN;
		if (n > queued)
			n = queued;
		if (n > s->send_window)
			n = s->send_window;
		if (n == 0)
			return 0;
		/* Never a FIN on a data frame, though the spec allows it: Go's
		 * yamux applies a frame's FIN before it buffers the frame's
		 * payload, so a reader woken in between sees EOF and loses
		 * that payload (a response cut short, or "EOF" with none of
		 * it, through Piko's server). Go itself sends FIN alone; so do
		 * we, in a Window Update after the last data (update_act puts
		 * the stream back for it). */
		put_frame(out, PK_YAMUX_DATA, 0, s->id, (uint32_t)n);
		pk_bufq_copy(&s->sendq, out + PK_YAMUX_HDR_LEN, n);
		pk_bufq_consume(&s->sendq, n);
		s->send_window -= (uint32_t)n;
		size_t half = s->sendq.cap / 2;
		writable = !s->fin_requested && queued > half && s->sendq.len <= half;
	} else {
		put_frame(out, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_FIN, s->id, 0);
		s->fin_sent = 1;
	}
	/* Round-robin: the served stream goes to the back of the line. */
	link_remove(l);
	if (s->fin_sent) {
		if (s->remote_fin)
			stream_end(s, 0, 1);
	} else {
		update_act(s);
	}
	if (writable && sess->cb.on_writable)
		sess->cb.on_writable(sess->user, s);
	return PK_YAMUX_HDR_LEN + n;
}

size_t pk_yamux_session_fill(struct pk_yamux_session *sess, uint8_t *out, size_t cap)
{
	size_t off = 0;
	struct link *l;

	dispatch_dead(sess);
	off += drain_frames(&sess->ctl_local, out, cap);
	if (!sess->dead) {
		off += drain_frames(&sess->ctl_peer, out + off, cap - off);
		while (cap - off >= PK_YAMUX_HDR_LEN && (l = list_first(&sess->ctl_list))) {
			struct pk_yamux_stream *s = LINK_ENTRY(l, ctl_link);
			uint16_t fl = 0;
			link_remove(l);
			if (s->syn_pending) {
				fl |= PK_YAMUX_SYN;
				s->syn_pending = 0;
			}
			if (s->ack_pending) {
				fl |= PK_YAMUX_ACK;
				s->ack_pending = 0;
				if (s->in_backlog) {
					s->in_backlog = 0;
					sess->backlog--;
				}
			}
			uint32_t delta = s->recv_credit;
			s->recv_window += delta;
			s->recv_credit = 0;
			put_frame(out + off, PK_YAMUX_WINDOW_UPDATE, fl, s->id, delta);
			off += PK_YAMUX_HDR_LEN;
			update_act(s); /* data may follow the SYN or ACK now */
		}
		while (cap - off > PK_YAMUX_HDR_LEN && list_first(&sess->act_list)) {
			size_t n = fill_one_data(sess, out + off, cap - off);
			if (n == 0)
				break;
			off += n;
		}
		/* Exactly 12 bytes left: only a FIN-only frame fits. */
		if (cap - off == PK_YAMUX_HDR_LEN && (l = list_first(&sess->act_list)) &&
		    LINK_ENTRY(l, act_link)->sendq.len == 0)
			off += fill_one_data(sess, out + off, cap - off);
	}
	dispatch_dead(sess);
	return off;
}

int pk_yamux_session_has_output(const struct pk_yamux_session *sess)
{
	if (sess->ctl_local.len > 0)
		return 1;
	if (sess->dead)
		return 0;
	return sess->ctl_peer.len > 0 || list_first(&sess->ctl_list) || list_first(&sess->act_list);
}

/* ---- timers ---- */

int pk_yamux_session_tick(struct pk_yamux_session *sess, uint64_t now_ms)
{
	struct link *l;
	const struct pk_yamux_config *cfg = &sess->cfg;

	if (sess->dead)
		return -1;
	note_now(sess, now_ms);
	dispatch_dead(sess);

	if (sess->ping_out) {
		if (cfg->ping_timeout_ms &&
		    elapsed(now_ms, sess->ping_sent_at) >= cfg->ping_timeout_ms) {
			session_die(sess, PK_YAMUX_CLOSED_PING_TIMEOUT, 0);
			return -1;
		}
	} else if (cfg->keepalive_ms && now_ms >= sess->next_ping_at) {
		sess->ping_out = 1;
		sess->ping_out_id = sess->ping_next_id++;
		sess->ping_sent_at = now_ms;
		queue_local(sess, PK_YAMUX_PING, PK_YAMUX_SYN, 0, sess->ping_out_id);
	}

	if (cfg->open_timeout_ms && (l = list_first(&sess->open_list)) &&
	    elapsed(now_ms, LINK_ENTRY(l, open_link)->open_at) >= cfg->open_timeout_ms) {
		session_die(sess, PK_YAMUX_CLOSED_OPEN_TIMEOUT, 0);
		return -1;
	}

	while (cfg->close_timeout_ms && (l = list_first(&sess->close_list))) {
		struct pk_yamux_stream *s = LINK_ENTRY(l, close_link);
		if (elapsed(now_ms, s->close_at) < cfg->close_timeout_ms)
			break;
		/* The peer never sent its FIN: reset so both sides let go. */
		if (!s->syn_pending)
			queue_local(sess, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_RST, s->id, 0);
		stream_end(s, 1, 1);
	}

	dispatch_dead(sess);
	return sess->dead ? -1 : 0;
}

/* ---- session ---- */

struct pk_yamux_session *pk_yamux_session_new(int is_client, const struct pk_yamux_config *cfg,
                                              const struct pk_yamux_callbacks *cb, void *user,
                                              uint64_t now_ms)
{
	struct pk_yamux_session *sess = pk_xcalloc(1, sizeof(*sess));
	if (cfg)
		sess->cfg = *cfg;
	else
		pk_yamux_config_default(&sess->cfg);
	/* Zero would make the session useless; take it as "default". A
	 * window below the protocol's initial one cannot be announced (the
	 * peer assumes 256 KiB), so it is raised to that. */
	struct pk_yamux_config def;
	pk_yamux_config_default(&def);
	if (sess->cfg.window < PK_YAMUX_INITIAL_WINDOW)
		sess->cfg.window = PK_YAMUX_INITIAL_WINDOW;
	if (sess->cfg.send_queue_cap == 0)
		sess->cfg.send_queue_cap = def.send_queue_cap;
	if (sess->cfg.accept_backlog == 0)
		sess->cfg.accept_backlog = def.accept_backlog;
	if (sess->cfg.max_pending_opens == 0)
		sess->cfg.max_pending_opens = def.max_pending_opens;
	if (cb)
		sess->cb = *cb;
	sess->user = user;
	sess->is_client = is_client ? 1 : 0;
	sess->next_id = is_client ? 1 : 2;
	sess->recv_max = sess->cfg.window;
	sess->bits = TABLE_MIN_BITS;
	sess->slots = pk_xcalloc((size_t)1 << sess->bits, sizeof(*sess->slots));
	list_init(&sess->ctl_list);
	list_init(&sess->act_list);
	list_init(&sess->open_list);
	list_init(&sess->close_list);
	list_init(&sess->dead_list);
	/* Only bounded by the number of streams, see queue_local(). */
	pk_bufq_init(&sess->ctl_local, SIZE_MAX);
	pk_bufq_init(&sess->ctl_peer, (size_t)CTL_PEER_MAX * PK_YAMUX_HDR_LEN);
	sess->now = now_ms;
	sess->next_ping_at = now_ms + sess->cfg.keepalive_ms;
	sess->rtt = -1;
	return sess;
}

void pk_yamux_session_free(struct pk_yamux_session *sess)
{
	if (!sess)
		return;
	size_t n = (size_t)1 << sess->bits;
	for (size_t i = 0; i < n; i++) {
		struct pk_yamux_stream *s = sess->slots[i];
		if (s) {
			/* The transport is gone after the peer's Go Away: a stream
			 * it never ACKed, it never took (it ACKs what it accepts
			 * before it serves it, and a leaving peer closes only once
			 * what it took is served). */
			if (s->local && !s->established && sess->remote_go_away)
				s->refused = 1;
			stream_end(s, 1, 0);
			sess->slots[i] = NULL;
		}
	}
	sess->count = 0;
	/* Nothing may be opened from the close callbacks below. */
	sess->dead = 1;
	dispatch_dead(sess);
	pk_bufq_clear(&sess->ctl_local);
	pk_bufq_clear(&sess->ctl_peer);
	free(sess->slots);
	free(sess);
}

void pk_yamux_session_go_away(struct pk_yamux_session *sess, uint32_t code)
{
	unsigned bit = 1u << (code < 3 ? code : 3);
	if (sess->dead || (sess->go_away_sent & bit))
		return;
	sess->go_away_sent |= bit;
	sess->local_go_away = 1;
	queue_local(sess, PK_YAMUX_GO_AWAY, 0, 0, code);
}

void pk_yamux_session_set_accept_after_go_away(struct pk_yamux_session *sess, int on)
{
	sess->cfg.accept_after_go_away = on ? 1 : 0;
}

int pk_yamux_stream_session_leaving(const struct pk_yamux_stream *s)
{
	return s->sess->local_go_away || s->sess->remote_go_away || s->sess->dead;
}

int pk_yamux_session_remote_go_away(const struct pk_yamux_session *sess)
{
	return sess->remote_go_away;
}

size_t pk_yamux_session_num_streams(const struct pk_yamux_session *sess)
{
	return sess->count;
}

int64_t pk_yamux_session_rtt_ms(const struct pk_yamux_session *sess)
{
	return sess->rtt;
}

/* ---- streams ---- */

int pk_yamux_session_opens_full(const struct pk_yamux_session *sess)
{
	return sess->pending_opens >= sess->cfg.max_pending_opens;
}

int pk_yamux_session_streams_full(const struct pk_yamux_session *sess)
{
	return sess->cfg.max_streams && sess->count >= sess->cfg.max_streams;
}

void pk_yamux_session_set_max_streams(struct pk_yamux_session *sess, uint32_t max)
{
	sess->cfg.max_streams = max;
}

struct pk_yamux_stream *pk_yamux_stream_open(struct pk_yamux_session *sess, uint64_t now_ms)
{
	/* Our own Go Away only refuses the peer's streams (as hashicorp's
	 * OpenStream): a server that is draining still opens streams to the
	 * upstreams it has, for the requests it still accepts. */
	if (sess->dead || sess->remote_go_away)
		return NULL;
	if (sess->pending_opens >= sess->cfg.max_pending_opens ||
	    pk_yamux_session_streams_full(sess))
		return NULL;
	if (sess->next_id >= UINT32_MAX - 1)
		return NULL; /* ids exhausted, as Go's ErrStreamsExhausted */
	note_now(sess, now_ms);
	struct pk_yamux_stream *s = stream_new(sess, sess->next_id, 1);
	sess->next_id += 2;
	tbl_insert(sess, s);
	s->open_at = now_ms;
	list_push_tail(&sess->open_list, &s->open_link);
	sess->pending_opens++;
	s->syn_pending = 1;
	update_ctl(s);
	return s;
}

size_t pk_yamux_stream_write(struct pk_yamux_stream *s, const uint8_t *data, size_t len)
{
	if (s->dead || s->fin_requested)
		return 0;
	size_t n = pk_bufq_append(&s->sendq, data, len);
	if (n > 0)
		update_act(s);
	return n;
}

size_t pk_yamux_stream_write_space(const struct pk_yamux_stream *s)
{
	if (s->dead || s->fin_requested)
		return 0;
	return pk_bufq_space(&s->sendq);
}

void pk_yamux_stream_consumed(struct pk_yamux_stream *s, size_t n)
{
	if (s->dead)
		return;
	/* Crediting more than was delivered would let the peer overrun us. */
	if (n > s->recv_unconsumed)
		n = s->recv_unconsumed;
	s->recv_unconsumed -= (uint32_t)n;
	s->recv_credit += (uint32_t)n;
	update_ctl(s);
}

void pk_yamux_stream_close(struct pk_yamux_stream *s, uint64_t now_ms)
{
	struct pk_yamux_session *sess = s->sess;
	if (s->dead || s->fin_requested)
		return;
	note_now(sess, now_ms);
	s->fin_requested = 1;
	if (!s->remote_fin) {
		s->close_at = now_ms;
		list_push_tail(&sess->close_list, &s->close_link);
	}
	update_act(s);
}

void pk_yamux_stream_reset(struct pk_yamux_stream *s)
{
	if (s->dead)
		return;
	/* A stream whose SYN never left is unknown to the peer: nothing to
	 * reset there. */
	if (!s->syn_pending)
		queue_local(s->sess, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_RST, s->id, 0);
	stream_end(s, 1, 1);
}

uint32_t pk_yamux_stream_id(const struct pk_yamux_stream *s)
{
	return s->id;
}

uint32_t pk_yamux_stream_window(const struct pk_yamux_stream *s)
{
	return s->sess->recv_max;
}

void pk_yamux_stream_set_user(struct pk_yamux_stream *s, void *user)
{
	s->user = user;
}

void *pk_yamux_stream_get_user(const struct pk_yamux_stream *s)
{
	return s->user;
}

size_t pk_yamux_stream_queued(const struct pk_yamux_stream *s)
{
	return s->sendq.len;
}

int pk_yamux_stream_established(const struct pk_yamux_stream *s)
{
	return s->established;
}

int pk_yamux_stream_refused(const struct pk_yamux_stream *s)
{
	return s->refused;
}
