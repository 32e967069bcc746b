/*
 * Unit tests for core/yamux.c. Frames we expect on the wire are written out
 * byte by byte (not built with pk_yamux_hdr_encode) so the tests pin the wire
 * format independently of the encoder.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "yamux.h"

#define WIN PK_YAMUX_INITIAL_WINDOW

/* ---- a recording owner ---- */

struct peer {
	struct pk_yamux_session *sess;
	int refuse;       /* on_stream returns -1 */
	int auto_consume; /* call consumed() from on_data */
	int n_stream, n_data, n_fin, n_writable, n_close, n_close_reset, n_want_write;
	int n_go_away, n_session_close, reason;
	int n_close_refused; /* closes with pk_yamux_stream_refused() */
	size_t data_bytes;
	struct pk_yamux_stream *last_stream;
	uint32_t last_closed_id;
	uint8_t rx[4096]; /* data received, all streams, first bytes only */
	size_t rx_len;
	/* Event log for the split test: data of consecutive on_data calls for
	 * one stream is coalesced so any split of the input logs the same. */
	char log[8192];
	size_t log_len;
	uint32_t log_data_id; /* 0: last event was not data */
};

static void logf_(struct peer *p, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(p->log + p->log_len, sizeof(p->log) - p->log_len, fmt, ap);
	va_end(ap);
	/* Tests that compare logs are short; long ones just stop logging. */
	if (n > 0 && (size_t)n < sizeof(p->log) - p->log_len)
		p->log_len += (size_t)n;
	else
		p->log[p->log_len] = '\0';
	p->log_data_id = 0;
}

static int cb_stream(void *user, struct pk_yamux_stream *s)
{
	struct peer *p = user;
	p->n_stream++;
	p->last_stream = s;
	logf_(p, " S%u", pk_yamux_stream_id(s));
	return p->refuse ? -1 : 0;
}

static void cb_data(void *user, struct pk_yamux_stream *s, const uint8_t *d, size_t n)
{
	struct peer *p = user;
	uint32_t id = pk_yamux_stream_id(s);
	assert_true(n > 0);
	p->n_data++;
	p->data_bytes += n;
	size_t k = n < sizeof(p->rx) - p->rx_len ? n : sizeof(p->rx) - p->rx_len;
	memcpy(p->rx + p->rx_len, d, k);
	p->rx_len += k;
	if (p->log_data_id != id)
		logf_(p, " D%u:", id);
	/* Only the first half of the log takes data, so events still fit. */
	size_t room = p->log_len < sizeof(p->log) / 2 ? sizeof(p->log) / 2 - p->log_len : 0;
	k = n < room ? n : room;
	memcpy(p->log + p->log_len, d, k);
	p->log_len += k;
	p->log[p->log_len] = '\0';
	p->log_data_id = id;
	if (p->auto_consume)
		pk_yamux_stream_consumed(s, n);
}

static void cb_fin(void *user, struct pk_yamux_stream *s)
{
	struct peer *p = user;
	p->n_fin++;
	logf_(p, " F%u", pk_yamux_stream_id(s));
}

static void cb_writable(void *user, struct pk_yamux_stream *s)
{
	struct peer *p = user;
	p->n_writable++;
	logf_(p, " W%u", pk_yamux_stream_id(s));
}

static void cb_close(void *user, struct pk_yamux_stream *s, int reset)
{
	struct peer *p = user;
	p->n_close++;
	if (reset)
		p->n_close_reset++;
	if (pk_yamux_stream_refused(s))
		p->n_close_refused++;
	p->last_closed_id = pk_yamux_stream_id(s);
	logf_(p, " C%u:%d", pk_yamux_stream_id(s), reset);
}

static void cb_want_write(void *user)
{
	struct peer *p = user;
	p->n_want_write++;
}

static void cb_go_away(void *user)
{
	struct peer *p = user;
	p->n_go_away++;
	logf_(p, " G");
}

static void cb_session_close(void *user, int reason)
{
	struct peer *p = user;
	p->n_session_close++;
	p->reason = reason;
	logf_(p, " X%d", reason);
}

static const struct pk_yamux_callbacks callbacks = {
    .on_stream = cb_stream,
    .on_data = cb_data,
    .on_fin = cb_fin,
    .on_writable = cb_writable,
    .on_stream_close = cb_close,
    .want_write = cb_want_write,
    .on_go_away = cb_go_away,
    .on_session_close = cb_session_close,
};

static struct peer *peer_new(int is_client, const struct pk_yamux_config *cfg)
{
	struct peer *p = calloc(1, sizeof(*p));
	assert_non_null(p);
	p->auto_consume = 1;
	p->sess = pk_yamux_session_new(is_client, cfg, &callbacks, p, 0);
	assert_non_null(p->sess);
	return p;
}

static void peer_free(struct peer *p)
{
	pk_yamux_session_free(p->sess);
	free(p);
}

/* Everything fill() gives, in calls of at most chunk bytes. */
static uint8_t wire[1 << 20];
static size_t drain(struct pk_yamux_session *s)
{
	size_t total = 0, n;
	while ((n = pk_yamux_session_fill(s, wire + total, sizeof(wire) - total)) > 0)
		total += n;
	assert_false(pk_yamux_session_has_output(s));
	return total;
}

static void frame(uint8_t *o, uint8_t type, uint16_t flags, uint32_t id, uint32_t len)
{
	struct pk_yamux_hdr h = {0, type, flags, id, len};
	pk_yamux_hdr_encode(&h, o);
}

static int feed_frame(struct peer *p, uint8_t type, uint16_t flags, uint32_t id, uint32_t len)
{
	uint8_t f[12];
	frame(f, type, flags, id, len);
	return pk_yamux_session_feed(p->sess, f, 12);
}

static int feed_data(struct peer *p, uint16_t flags, uint32_t id, const void *d, uint32_t len)
{
	uint8_t f[12];
	frame(f, PK_YAMUX_DATA, flags, id, len);
	if (pk_yamux_session_feed(p->sess, f, 12) < 0)
		return -1;
	return pk_yamux_session_feed(p->sess, d, len);
}

static void expect_wire(size_t got, const uint8_t *exp, size_t exp_len)
{
	assert_int_equal(got, exp_len);
	assert_memory_equal(wire, exp, exp_len);
}

/* A server with stream 1 accepted and its ACK flushed. */
static struct peer *server_with_stream(void)
{
	struct peer *p = peer_new(0, NULL);
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_SYN, 1, 0), 0);
	assert_int_equal(p->n_stream, 1);
	drain(p->sess);
	return p;
}

/* A client with stream 1 opened, SYN flushed and ACKed. */
static struct peer *client_with_stream(void)
{
	struct peer *p = peer_new(1, NULL);
	struct pk_yamux_stream *s = pk_yamux_stream_open(p->sess, 0);
	assert_non_null(s);
	p->last_stream = s;
	drain(p->sess);
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_ACK, 1, 0), 0);
	assert_true(pk_yamux_stream_established(s));
	return p;
}

/* ---- header ---- */

static void test_hdr(void **state)
{
	(void)state;
	struct pk_yamux_hdr h = {0, PK_YAMUX_WINDOW_UPDATE, 0x0105, 0x01020304, 0xa0b0c0d0};
	uint8_t o[12];
	pk_yamux_hdr_encode(&h, o);
	const uint8_t exp[12] = {0, 1, 0x01, 0x05, 1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0};
	assert_memory_equal(o, exp, 12);
	struct pk_yamux_hdr d;
	assert_int_equal(pk_yamux_hdr_decode(o, &d), 0);
	assert_int_equal(d.type, 1);
	assert_int_equal(d.flags, 0x0105);
	assert_int_equal(d.stream_id, 0x01020304);
	assert_int_equal(d.length, 0xa0b0c0d0);
	o[0] = 1;
	assert_int_equal(pk_yamux_hdr_decode(o, &d), -1);
	o[0] = 0;
	o[1] = 4;
	assert_int_equal(pk_yamux_hdr_decode(o, &d), -1);
}

/* ---- stream ids, SYN, ACK ---- */

static void test_client_ids_syn(void **state)
{
	(void)state;
	struct peer *p = peer_new(1, NULL);
	for (uint32_t want = 1; want <= 5; want += 2) {
		struct pk_yamux_stream *s = pk_yamux_stream_open(p->sess, 0);
		assert_non_null(s);
		assert_int_equal(pk_yamux_stream_id(s), want);
		assert_false(pk_yamux_stream_established(s));
	}
	assert_int_equal(pk_yamux_session_num_streams(p->sess), 3);
	assert_true(p->n_want_write > 0);
	assert_true(pk_yamux_session_has_output(p->sess));
	const uint8_t exp[] = {
	    0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, /* WU SYN id 1 delta 0 */
	    0, 1, 0, 1, 0, 0, 0, 3, 0, 0, 0, 0, /* WU SYN id 3 */
	    0, 1, 0, 1, 0, 0, 0, 5, 0, 0, 0, 0, /* WU SYN id 5 */
	};
	expect_wire(drain(p->sess), exp, sizeof(exp));
	peer_free(p);
}

static void test_server_ids(void **state)
{
	(void)state;
	struct peer *p = peer_new(0, NULL);
	for (uint32_t want = 2; want <= 6; want += 2) {
		struct pk_yamux_stream *s = pk_yamux_stream_open(p->sess, 0);
		assert_non_null(s);
		assert_int_equal(pk_yamux_stream_id(s), want);
	}
	const uint8_t exp[] = {
	    0, 1, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0,
	    0, 4, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0,
	};
	expect_wire(drain(p->sess), exp, sizeof(exp));
	peer_free(p);
}

static void test_accept_ack(void **state)
{
	(void)state;
	struct peer *p = peer_new(0, NULL);
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_SYN, 1, 0), 0);
	assert_int_equal(p->n_stream, 1);
	assert_true(pk_yamux_stream_established(p->last_stream));
	assert_int_equal(pk_yamux_session_num_streams(p->sess), 1);
	const uint8_t exp[] = {0, 1, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0}; /* WU ACK id 1 */
	expect_wire(drain(p->sess), exp, sizeof(exp));
	peer_free(p);
}

static void test_ack_establishes(void **state)
{
	(void)state;
	struct peer *p = peer_new(1, NULL);
	struct pk_yamux_stream *s = pk_yamux_stream_open(p->sess, 0);
	drain(p->sess);
	assert_false(pk_yamux_stream_established(s));
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_ACK, 1, 0), 0);
	assert_true(pk_yamux_stream_established(s));
	assert_int_equal(p->n_writable, 1); /* on_writable tells of the ACK */
	peer_free(p);
}

static void test_larger_window_announced(void **state)
{
	(void)state;
	struct pk_yamux_config cfg;
	pk_yamux_config_default(&cfg);
	cfg.window = 1024 * 1024;
	struct peer *p = peer_new(1, &cfg);
	assert_non_null(pk_yamux_stream_open(p->sess, 0));
	/* The extra 768 KiB ride on the SYN, as Go does. */
	const uint8_t exp[] = {0, 1, 0, 1, 0, 0, 0, 1, 0, 0x0c, 0, 0};
	expect_wire(drain(p->sess), exp, sizeof(exp));
	peer_free(p);
}

/* ---- data, FIN, RST ---- */

static void test_data_frames(void **state)
{
	(void)state;
	struct peer *p = server_with_stream();
	struct pk_yamux_stream *s = p->last_stream;
	assert_int_equal(pk_yamux_stream_write(s, (const uint8_t *)"hello", 5), 5);
	assert_int_equal(pk_yamux_stream_queued(s), 5);
	const uint8_t exp[] = {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'};
	expect_wire(drain(p->sess), exp, sizeof(exp));
	assert_int_equal(pk_yamux_stream_queued(s), 0);

	assert_int_equal(feed_data(p, 0, 1, "abc", 3), 0);
	assert_int_equal(p->rx_len, 3);
	assert_memory_equal(p->rx, "abc", 3);
	peer_free(p);
}

static void test_fin_window_update(void **state)
{
	(void)state;
	struct peer *p = server_with_stream();
	struct pk_yamux_stream *s = p->last_stream;
	pk_yamux_stream_close(s, 0);
	assert_int_equal(pk_yamux_stream_write(s, (const uint8_t *)"x", 1), 0);
	assert_int_equal(pk_yamux_stream_write_space(s), 0);
	const uint8_t exp[] = {0, 1, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0}; /* WU FIN */
	expect_wire(drain(p->sess), exp, sizeof(exp));
	assert_int_equal(p->n_close, 0);
	/* Their FIN completes the close: clean, reported from that feed. */
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_FIN, 1, 0), 0);
	assert_int_equal(p->n_fin, 1);
	assert_int_equal(p->n_close, 1);
	assert_int_equal(p->n_close_reset, 0);
	assert_int_equal(pk_yamux_session_num_streams(p->sess), 0);
	assert_string_equal(p->log, " S1 F1 C1:0");
	peer_free(p);
}

static void test_fin_on_data(void **state)
{
	(void)state;
	struct peer *p = server_with_stream();
	struct pk_yamux_stream *s = p->last_stream;
	/* Peer FINs first, data after. */
	assert_int_equal(feed_data(p, PK_YAMUX_FIN, 1, "end", 3), 0);
	assert_string_equal(p->log, " S1 D1:end F1");
	assert_int_equal(pk_yamux_stream_write(s, (const uint8_t *)"xy", 2), 2);
	pk_yamux_stream_close(s, 0);
	/* Our FIN follows the last data frame on its own (never on it: Go's
	 * yamux may lose a frame's payload when a FIN rides on it); the close
	 * is reported from the same fill that sent it. */
	const uint8_t exp[] = {0,   0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 'x',
	                       'y', 0, 1, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0};
	expect_wire(drain(p->sess), exp, sizeof(exp));
	assert_int_equal(p->n_close, 1);
	assert_int_equal(p->n_close_reset, 0);
	peer_free(p);
}

static void test_duplicate_fin_is_error(void **state)
{
	(void)state;
	struct peer *p = server_with_stream();
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_FIN, 1, 0), 0);
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_FIN, 1, 0), -1);
	assert_int_equal(p->reason, PK_YAMUX_CLOSED_PROTOCOL);
	peer_free(p);
}

static void test_local_reset(void **state)
{
	(void)state;
	struct peer *p = server_with_stream();
	struct pk_yamux_stream *s = p->last_stream;
	pk_yamux_stream_write(s, (const uint8_t *)"dropped", 7);
	pk_yamux_stream_reset(s);
	/* Gone from the session at once, reported later. */
	assert_int_equal(pk_yamux_session_num_streams(p->sess), 0);
	assert_int_equal(p->n_close, 0);
	const uint8_t exp[] = {0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0}; /* WU RST */
	expect_wire(drain(p->sess), exp, sizeof(exp));
	assert_int_equal(p->n_close, 1);
	assert_int_equal(p->n_close_reset, 1);
	/* Late frames for it are ignored. */
	assert_int_equal(feed_data(p, 0, 1, "late", 4), 0);
	assert_int_equal(p->n_data, 0);
	peer_free(p);
}

static void test_reset_before_syn_sent(void **state)
{
	(void)state;
	struct peer *p = peer_new(1, NULL);
	struct pk_yamux_stream *s = pk_yamux_stream_open(p->sess, 0);
	pk_yamux_stream_reset(s);
	/* The peer never heard of it: nothing on the wire. */
	assert_int_equal(drain(p->sess), 0);
	assert_int_equal(p->n_close_reset, 1);
	peer_free(p);
}

static void test_remote_reset(void **state)
{
	(void)state;
	struct peer *p = server_with_stream();
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_RST, 1, 0), 0);
	assert_int_equal(p->n_close, 1);
	assert_int_equal(p->n_close_reset, 1);
	assert_int_equal(drain(p->sess), 0);
	peer_free(p);
}

/* An RST answering our SYN is a refusal (the peer never took the stream);
 * an RST after the ACK, or the session ending, is not. */
static void test_refused(void **state)
{
	(void)state;
	struct peer *p = peer_new(1, NULL);
	struct pk_yamux_stream *s = pk_yamux_stream_open(p->sess, 0);
	assert_non_null(s);
	drain(p->sess);
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_RST, 1, 0), 0);
	assert_int_equal(p->n_close_reset, 1);
	assert_int_equal(p->n_close_refused, 1);
	peer_free(p);

	p = client_with_stream();
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_RST, 1, 0), 0);
	assert_int_equal(p->n_close_reset, 1);
	assert_int_equal(p->n_close_refused, 0);
	peer_free(p);

	p = peer_new(1, NULL);
	assert_non_null(pk_yamux_stream_open(p->sess, 0));
	drain(p->sess);
	pk_yamux_session_free(p->sess); /* ends with the SYN unanswered */
	assert_int_equal(p->n_close_reset, 1);
	assert_int_equal(p->n_close_refused, 0);
	free(p);

	/* ... but after the peer's Go Away, what it did not ACK it never took */
	p = peer_new(1, NULL);
	assert_non_null(pk_yamux_stream_open(p->sess, 0)); /* stream 1, not ACKed */
	assert_non_null(pk_yamux_stream_open(p->sess, 0)); /* stream 3, ACKed below */
	drain(p->sess);
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_ACK, 3, 0), 0);
	assert_int_equal(feed_frame(p, PK_YAMUX_GO_AWAY, 0, 0, PK_YAMUX_GOAWAY_NORMAL), 0);
	pk_yamux_session_free(p->sess);
	assert_int_equal(p->n_close_reset, 2);
	assert_int_equal(p->n_close_refused, 1);
	free(p);
}

/* ---- pings ---- */

static void test_ping(void **state)
{
	(void)state;
	struct peer *p = peer_new(1, NULL);
	assert_int_equal(pk_yamux_session_rtt_ms(p->sess), -1);
	assert_int_equal(pk_yamux_session_tick(p->sess, 29999), 0);
	assert_int_equal(drain(p->sess), 0);
	assert_int_equal(pk_yamux_session_tick(p->sess, 30000), 0);
	const uint8_t ping0[] = {0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}; /* Ping SYN id 0 */
	expect_wire(drain(p->sess), ping0, sizeof(ping0));
	/* Only one ping in flight. */
	assert_int_equal(pk_yamux_session_tick(p->sess, 35000), 0);
	assert_int_equal(drain(p->sess), 0);
	assert_int_equal(feed_frame(p, PK_YAMUX_PING, PK_YAMUX_ACK, 0, 0), 0);
	assert_true(pk_yamux_session_rtt_ms(p->sess) >= 0);
	/* Next one 30 s later, id incremented. */
	assert_int_equal(pk_yamux_session_tick(p->sess, 64999), 0);
	assert_int_equal(drain(p->sess), 0);
	assert_int_equal(pk_yamux_session_tick(p->sess, 65000), 0);
	const uint8_t ping1[] = {0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1};
	expect_wire(drain(p->sess), ping1, sizeof(ping1));

	/* The peer's ping is answered with ACK and the same id. */
	assert_int_equal(feed_frame(p, PK_YAMUX_PING, PK_YAMUX_SYN, 0, 0x01020304), 0);
	const uint8_t pong[] = {0, 2, 0, 2, 0, 0, 0, 0, 1, 2, 3, 4};
	expect_wire(drain(p->sess), pong, sizeof(pong));
	peer_free(p);
}

static void test_ping_timeout(void **state)
{
	(void)state;
	struct peer *p = peer_new(0, NULL);
	struct pk_yamux_stream *s = pk_yamux_stream_open(p->sess, 0);
	assert_non_null(s);
	drain(p->sess);
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_ACK, 2, 0), 0);
	assert_int_equal(pk_yamux_session_tick(p->sess, 30000), 0);
	drain(p->sess);
	/* A wrong id does not count as the answer. */
	assert_int_equal(feed_frame(p, PK_YAMUX_PING, PK_YAMUX_ACK, 0, 5), 0);
	assert_int_equal(pk_yamux_session_tick(p->sess, 39999), 0);
	assert_int_equal(pk_yamux_session_tick(p->sess, 40000), -1);
	assert_int_equal(p->n_session_close, 1);
	assert_int_equal(p->reason, PK_YAMUX_CLOSED_PING_TIMEOUT);
	assert_int_equal(p->n_close_reset, 1); /* streams closed first */
	assert_string_equal(p->log, " W2 C2:1 X3");
	assert_int_equal(drain(p->sess), 0); /* no Go Away for a timeout */
	assert_null(pk_yamux_stream_open(p->sess, 40000));
	assert_int_equal(pk_yamux_session_tick(p->sess, 50000), -1);
	assert_int_equal(feed_frame(p, PK_YAMUX_PING, PK_YAMUX_SYN, 0, 0), -1);
	peer_free(p);
}

static void test_keepalive_disabled(void **state)
{
	(void)state;
	struct pk_yamux_config cfg;
	pk_yamux_config_default(&cfg);
	cfg.keepalive_ms = 0;
	struct peer *p = peer_new(1, &cfg);
	assert_int_equal(pk_yamux_session_tick(p->sess, 1000000), 0);
	assert_int_equal(drain(p->sess), 0);
	peer_free(p);
}

/* ---- Go Away ---- */

static void test_go_away_codes(void **state)
{
	(void)state;
	struct peer *p = peer_new(1, NULL);
	pk_yamux_session_go_away(p->sess, PK_YAMUX_GOAWAY_NORMAL);
	pk_yamux_session_go_away(p->sess, PK_YAMUX_GOAWAY_NORMAL); /* not repeated */
	const uint8_t ga0[] = {0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
	expect_wire(drain(p->sess), ga0, sizeof(ga0));
	pk_yamux_session_go_away(p->sess, PK_YAMUX_GOAWAY_INTERNAL_ERR);
	const uint8_t ga2[] = {0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
	expect_wire(drain(p->sess), ga2, sizeof(ga2));
	peer_free(p);

	/* Go Away 1 is what a protocol error sends (bad version here). */
	p = peer_new(1, NULL);
	const uint8_t bad[12] = {1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0};
	assert_int_equal(pk_yamux_session_feed(p->sess, bad, sizeof(bad)), -1);
	assert_int_equal(p->reason, PK_YAMUX_CLOSED_PROTOCOL);
	const uint8_t ga1[] = {0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
	expect_wire(drain(p->sess), ga1, sizeof(ga1));
	peer_free(p);
}

static void test_remote_go_away_normal(void **state)
{
	(void)state;
	struct peer *p = client_with_stream();
	assert_int_equal(feed_frame(p, PK_YAMUX_GO_AWAY, 0, 0, 0), 0);
	assert_int_equal(p->n_go_away, 1);
	assert_true(pk_yamux_session_remote_go_away(p->sess));
	assert_null(pk_yamux_stream_open(p->sess, 0));
	/* Existing streams keep working. */
	assert_int_equal(pk_yamux_stream_write(p->last_stream, (const uint8_t *)"k", 1), 1);
	const uint8_t exp[] = {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 'k'};
	expect_wire(drain(p->sess), exp, sizeof(exp));
	peer_free(p);
}

static void test_remote_go_away_fatal(void **state)
{
	(void)state;
	for (uint32_t code = 1; code <= 3; code++) {
		struct peer *p = client_with_stream();
		assert_int_equal(feed_frame(p, PK_YAMUX_GO_AWAY, 0, 0, code), -1);
		assert_int_equal(p->reason, PK_YAMUX_CLOSED_REMOTE_GOAWAY);
		assert_int_equal(p->n_close_reset, 1);
		assert_int_equal(drain(p->sess), 0);
		peer_free(p);
	}
}

static void test_syn_after_go_away(void **state)
{
	(void)state;
	struct peer *p = peer_new(0, NULL);
	pk_yamux_session_go_away(p->sess, 0);
	drain(p->sess);
	/* A SYN riding on data: refused with RST, its data dropped. */
	assert_int_equal(feed_data(p, PK_YAMUX_SYN, 1, "abcd", 4), 0);
	assert_int_equal(p->n_stream, 0);
	assert_int_equal(p->n_data, 0);
	const uint8_t exp[] = {0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0};
	expect_wire(drain(p->sess), exp, sizeof(exp));
	peer_free(p);
}

/* accept_after_go_away: a SYN that crossed our Go Away is still offered to
 * on_stream and ACKed, its data delivered (set by config or by the setter). */
static void test_syn_after_go_away_accepted(void **state)
{
	(void)state;
	for (int by_setter = 0; by_setter <= 1; by_setter++) {
		struct pk_yamux_config cfg;
		pk_yamux_config_default(&cfg);
		assert_int_equal(cfg.accept_after_go_away, 0); /* off by default */
		cfg.accept_after_go_away = !by_setter;
		struct peer *p = peer_new(0, &cfg);
		if (by_setter)
			pk_yamux_session_set_accept_after_go_away(p->sess, 1);
		pk_yamux_session_go_away(p->sess, PK_YAMUX_GOAWAY_NORMAL);
		drain(p->sess);
		assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_SYN, 1, 0), 0);
		assert_int_equal(p->n_stream, 1);
		assert_int_equal(pk_yamux_session_num_streams(p->sess), 1);
		/* The ACK, not an RST. */
		const uint8_t exp[] = {0, 1, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0};
		expect_wire(drain(p->sess), exp, sizeof(exp));
		/* Its data is delivered. */
		assert_int_equal(feed_data(p, 0, 1, "abcd", 4), 0);
		assert_int_equal(p->n_data, 1);
		/* Turned off again: the next SYN is refused as by default. */
		pk_yamux_session_set_accept_after_go_away(p->sess, 0);
		assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_SYN, 3, 0), 0);
		assert_int_equal(p->n_stream, 1);
		const uint8_t rst[] = {0, 1, 0, 8, 0, 0, 0, 3, 0, 0, 0, 0};
		expect_wire(drain(p->sess), rst, sizeof(rst));
		peer_free(p);
	}
}

/* After our own Go Away we still open streams: it only refuses the peer's. */
static void test_open_after_own_go_away(void **state)
{
	(void)state;
	struct peer *p = peer_new(0, NULL);
	pk_yamux_session_go_away(p->sess, PK_YAMUX_GOAWAY_NORMAL);
	drain(p->sess);
	struct pk_yamux_stream *s = pk_yamux_stream_open(p->sess, 0);
	assert_non_null(s);
	/* Server ids are even: the SYN is a window update for stream 2. */
	const uint8_t exp[] = {0, 1, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0};
	expect_wire(drain(p->sess), exp, sizeof(exp));
	peer_free(p);
}

/* ---- windows ---- */

static void test_window_update_half(void **state)
{
	(void)state;
	struct peer *p = server_with_stream();
	p->auto_consume = 0;
	struct pk_yamux_stream *s = p->last_stream;
	static uint8_t big[WIN];
	memset(big, 'z', sizeof(big));
	assert_int_equal(feed_data(p, 0, 1, big, WIN / 2 - 1), 0);
	/* Not credited until consumed. */
	assert_false(pk_yamux_session_has_output(p->sess));
	pk_yamux_stream_consumed(s, WIN / 2 - 1);
	assert_false(pk_yamux_session_has_output(p->sess));
	assert_int_equal(feed_data(p, 0, 1, big, 1), 0);
	assert_false(pk_yamux_session_has_output(p->sess));
	pk_yamux_stream_consumed(s, 1);
	const uint8_t exp[] = {0, 1, 0, 0, 0, 0, 0, 1, 0, 2, 0, 0}; /* WU delta 131072 */
	expect_wire(drain(p->sess), exp, sizeof(exp));
	/* Credit beyond what was delivered is ignored. */
	pk_yamux_stream_consumed(s, 1000000);
	assert_false(pk_yamux_session_has_output(p->sess));
	/* The window is full again: exactly 256 KiB fits. */
	assert_int_equal(feed_data(p, 0, 1, big, WIN), 0);
	assert_int_equal(p->n_session_close, 0);
	peer_free(p);
}

static void test_window_overflow(void **state)
{
	(void)state;
	struct peer *p = server_with_stream();
	p->auto_consume = 0;
	static uint8_t big[WIN];
	assert_int_equal(feed_data(p, 0, 1, big, WIN), 0);
	/* One byte beyond the window, announced in the header. */
	assert_int_equal(feed_frame(p, PK_YAMUX_DATA, 0, 1, 1), -1);
	assert_int_equal(p->n_session_close, 1);
	assert_int_equal(p->reason, PK_YAMUX_CLOSED_PROTOCOL);
	assert_int_equal(p->n_close_reset, 1);
	assert_string_equal(p->log + p->log_len - 8, " C1:1 X1");
	const uint8_t ga1[] = {0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
	expect_wire(drain(p->sess), ga1, sizeof(ga1));
	peer_free(p);

	/* A single frame larger than the window. */
	p = server_with_stream();
	assert_int_equal(feed_frame(p, PK_YAMUX_DATA, 0, 1, WIN + 1), -1);
	assert_int_equal(p->n_data, 0);
	expect_wire(drain(p->sess), ga1, sizeof(ga1));
	peer_free(p);
}

static void test_send_window_respected(void **state)
{
	(void)state;
	struct pk_yamux_config cfg;
	pk_yamux_config_default(&cfg);
	cfg.send_queue_cap = 2 * WIN;
	struct peer *p = peer_new(0, &cfg);
	feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_SYN, 1, 0);
	drain(p->sess);
	struct pk_yamux_stream *s = p->last_stream;
	static uint8_t big[WIN + 100];
	assert_int_equal(pk_yamux_stream_write(s, big, sizeof(big)), sizeof(big));
	size_t n = drain(p->sess);
	assert_int_equal(n, 12 + WIN); /* one frame, the whole window */
	assert_int_equal(pk_yamux_stream_queued(s), 100);
	p->n_writable = 0;
	/* The peer grants 40 bytes: 40 go, and on_writable tells the owner. */
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, 0, 1, 40), 0);
	assert_int_equal(p->n_writable, 1);
	n = drain(p->sess);
	assert_int_equal(n, 12 + 40);
	assert_int_equal(wire[11], 40);
	assert_int_equal(pk_yamux_stream_queued(s), 60);
	peer_free(p);
}

/* ---- unknown streams, refusals, backlog, pending opens ---- */

static void test_unknown_stream_ignored(void **state)
{
	(void)state;
	struct peer *p = peer_new(0, NULL);
	assert_int_equal(feed_data(p, 0, 99, "ignored", 7), 0);
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, 0, 77, 1000), 0);
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_FIN, 77, 0), 0);
	assert_int_equal(p->n_data, 0);
	assert_int_equal(p->n_session_close, 0);
	assert_int_equal(drain(p->sess), 0);
	/* Framing is intact afterwards. */
	assert_int_equal(feed_frame(p, PK_YAMUX_PING, PK_YAMUX_SYN, 0, 9), 0);
	const uint8_t pong[] = {0, 2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 9};
	expect_wire(drain(p->sess), pong, sizeof(pong));
	peer_free(p);
}

static void test_refused_stream(void **state)
{
	(void)state;
	struct peer *p = peer_new(0, NULL);
	p->refuse = 1;
	assert_int_equal(feed_data(p, PK_YAMUX_SYN, 1, "data", 4), 0);
	assert_int_equal(p->n_stream, 1);
	assert_int_equal(p->n_data, 0);
	assert_int_equal(p->n_close, 0); /* never known to the owner */
	assert_int_equal(pk_yamux_session_num_streams(p->sess), 0);
	const uint8_t exp[] = {0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0};
	expect_wire(drain(p->sess), exp, sizeof(exp));
	peer_free(p);
}

static void test_backlog(void **state)
{
	(void)state;
	struct pk_yamux_config cfg;
	pk_yamux_config_default(&cfg);
	cfg.accept_backlog = 2;
	struct peer *p = peer_new(0, &cfg);
	/* Three SYNs before we could write a single ACK. */
	for (uint32_t id = 1; id <= 5; id += 2)
		assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_SYN, id, 0), 0);
	assert_int_equal(p->n_stream, 2);
	const uint8_t exp[] = {
	    0, 1, 0, 8, 0, 0, 0, 5, 0, 0, 0, 0, /* RST 5 (peer answers go first) */
	    0, 1, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, /* ACK 1 */
	    0, 1, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, /* ACK 3 */
	};
	expect_wire(drain(p->sess), exp, sizeof(exp));
	/* ACKs written: the backlog is free again. */
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_SYN, 7, 0), 0);
	assert_int_equal(p->n_stream, 3);
	peer_free(p);
}

static void test_bad_syn_ids(void **state)
{
	(void)state;
	/* Our own parity. */
	struct peer *p = peer_new(0, NULL);
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_SYN, 2, 0), -1);
	assert_int_equal(p->reason, PK_YAMUX_CLOSED_PROTOCOL);
	peer_free(p);
	p = peer_new(1, NULL);
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_SYN, 3, 0), -1);
	peer_free(p);
	/* Stream 0. */
	p = peer_new(1, NULL);
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_SYN, 0, 0), -1);
	peer_free(p);
	/* Duplicate. */
	p = server_with_stream();
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_SYN, 1, 0), -1);
	assert_int_equal(p->n_close_reset, 1);
	peer_free(p);
}

static void test_pending_opens(void **state)
{
	(void)state;
	struct pk_yamux_config cfg;
	pk_yamux_config_default(&cfg);
	cfg.max_pending_opens = 2;
	struct peer *p = peer_new(1, &cfg);
	assert_non_null(pk_yamux_stream_open(p->sess, 0));
	assert_non_null(pk_yamux_stream_open(p->sess, 0));
	assert_null(pk_yamux_stream_open(p->sess, 0));
	assert_false(pk_yamux_session_remote_go_away(p->sess));
	drain(p->sess);
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_ACK, 1, 0), 0);
	struct pk_yamux_stream *s = pk_yamux_stream_open(p->sess, 0);
	assert_non_null(s);
	assert_int_equal(pk_yamux_stream_id(s), 5);
	/* A refused open (RST) frees its slot too. */
	assert_null(pk_yamux_stream_open(p->sess, 0));
	drain(p->sess);
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_RST, 3, 0), 0);
	assert_non_null(pk_yamux_stream_open(p->sess, 0));
	peer_free(p);
}

/* max_streams: opens beyond it fail, SYNs beyond it are reset, and a stream
 * that ends frees its place. */
static void test_max_streams(void **state)
{
	(void)state;
	struct pk_yamux_config cfg;
	pk_yamux_config_default(&cfg);
	cfg.max_streams = 2;
	struct peer *p = peer_new(0, &cfg);
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_SYN, 1, 0), 0);
	assert_false(pk_yamux_session_streams_full(p->sess));
	assert_non_null(pk_yamux_stream_open(p->sess, 0)); /* id 2 */
	assert_true(pk_yamux_session_streams_full(p->sess));
	assert_null(pk_yamux_stream_open(p->sess, 0));
	drain(p->sess);
	/* A third stream from the peer: RST, never offered to the owner. */
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_SYN, 3, 0), 0);
	assert_int_equal(p->n_stream, 1);
	const uint8_t rst3[] = {0, 1, 0, 8, 0, 0, 0, 3, 0, 0, 0, 0};
	expect_wire(drain(p->sess), rst3, sizeof(rst3));
	assert_int_equal(p->n_session_close, 0);
	/* The peer resets stream 2: room for one more. */
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_RST, 2, 0), 0);
	assert_false(pk_yamux_session_streams_full(p->sess));
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_SYN, 5, 0), 0);
	assert_int_equal(p->n_stream, 2);
	/* 0 lifts the cap on a live session. */
	pk_yamux_session_set_max_streams(p->sess, 0);
	assert_non_null(pk_yamux_stream_open(p->sess, 0));
	peer_free(p);
}

/* ---- timeouts ---- */

static void test_open_timeout(void **state)
{
	(void)state;
	struct peer *p = peer_new(1, NULL);
	assert_non_null(pk_yamux_stream_open(p->sess, 1000));
	drain(p->sess);
	assert_int_equal(pk_yamux_session_tick(p->sess, 75999), 0);
	drain(p->sess); /* the keepalive ping */
	assert_int_equal(feed_frame(p, PK_YAMUX_PING, PK_YAMUX_ACK, 0, 0), 0);
	assert_int_equal(pk_yamux_session_tick(p->sess, 76000), -1);
	assert_int_equal(p->reason, PK_YAMUX_CLOSED_OPEN_TIMEOUT);
	assert_int_equal(p->n_close_reset, 1);
	assert_int_equal(drain(p->sess), 0);
	peer_free(p);

	/* ACKed in time: no timeout. */
	p = client_with_stream();
	assert_int_equal(pk_yamux_session_tick(p->sess, 20000), 0);
	assert_int_equal(pk_yamux_session_tick(p->sess, 29999), 0);
	peer_free(p);
}

static void test_close_timeout(void **state)
{
	(void)state;
	struct pk_yamux_config cfg;
	pk_yamux_config_default(&cfg);
	cfg.keepalive_ms = 0;
	struct peer *p = peer_new(1, &cfg);
	struct pk_yamux_stream *s = pk_yamux_stream_open(p->sess, 0);
	drain(p->sess);
	feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_ACK, 1, 0);
	pk_yamux_stream_close(s, 1000);
	const uint8_t fin[] = {0, 1, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0};
	expect_wire(drain(p->sess), fin, sizeof(fin));
	assert_int_equal(pk_yamux_session_tick(p->sess, 300999), 0);
	assert_int_equal(p->n_close, 0);
	assert_int_equal(pk_yamux_session_tick(p->sess, 301000), 0);
	assert_int_equal(p->n_close, 1);
	assert_int_equal(p->n_close_reset, 1);
	const uint8_t rst[] = {0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0};
	expect_wire(drain(p->sess), rst, sizeof(rst));
	assert_int_equal(pk_yamux_session_num_streams(p->sess), 0);
	peer_free(p);

	/* Their FIN in time cancels it. */
	p = peer_new(1, &cfg);
	s = pk_yamux_stream_open(p->sess, 0);
	drain(p->sess);
	pk_yamux_stream_close(s, 1000);
	drain(p->sess);
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_ACK | PK_YAMUX_FIN, 1, 0),
	                 0);
	assert_int_equal(p->n_close, 1);
	assert_int_equal(p->n_close_reset, 0);
	assert_int_equal(pk_yamux_session_tick(p->sess, 400000), 0);
	assert_int_equal(drain(p->sess), 0);
	peer_free(p);
}

/* ---- control queue cap ---- */

static void test_pong_flood(void **state)
{
	(void)state;
	struct peer *p = peer_new(0, NULL);
	for (int i = 0; i < 1024; i++)
		assert_int_equal(feed_frame(p, PK_YAMUX_PING, PK_YAMUX_SYN, 0, (uint32_t)i), 0);
	assert_int_equal(feed_frame(p, PK_YAMUX_PING, PK_YAMUX_SYN, 0, 1024), -1);
	assert_int_equal(p->reason, PK_YAMUX_CLOSED_PROTOCOL);
	const uint8_t ga1[] = {0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
	expect_wire(drain(p->sess), ga1, sizeof(ga1));
	peer_free(p);
}

/* ---- fill() framing ---- */

static void test_fill_never_splits(void **state)
{
	(void)state;
	struct peer *p = server_with_stream();
	struct pk_yamux_stream *s = p->last_stream;
	pk_yamux_stream_write(s, (const uint8_t *)"abc", 3);
	assert_int_equal(pk_yamux_session_fill(p->sess, wire, 11), 0);
	assert_int_equal(pk_yamux_session_fill(p->sess, wire, 12), 0); /* no room for payload */
	assert_int_equal(pk_yamux_session_fill(p->sess, wire, 13), 13);
	const uint8_t exp1[] = {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 'a'};
	assert_memory_equal(wire, exp1, sizeof(exp1));
	pk_yamux_stream_close(s, 0);
	/* The rest, then the FIN on its own. */
	assert_int_equal(pk_yamux_session_fill(p->sess, wire, 100), 26);
	const uint8_t exp2[] = {0,   0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 'b',
	                        'c', 0, 1, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0};
	assert_memory_equal(wire, exp2, sizeof(exp2));
	peer_free(p);
}

static void test_round_robin(void **state)
{
	(void)state;
	struct peer *p = peer_new(1, NULL);
	struct pk_yamux_stream *a = pk_yamux_stream_open(p->sess, 0);
	struct pk_yamux_stream *b = pk_yamux_stream_open(p->sess, 0);
	drain(p->sess);
	uint8_t d[100];
	memset(d, 'a', sizeof(d));
	pk_yamux_stream_write(a, d, sizeof(d));
	memset(d, 'b', sizeof(d));
	pk_yamux_stream_write(b, d, sizeof(d));
	uint32_t order[6];
	for (int i = 0; i < 6; i++) {
		assert_int_equal(pk_yamux_session_fill(p->sess, wire, 22), 22);
		order[i] = wire[7];
		assert_int_equal(wire[12], order[i] == 1 ? 'a' : 'b');
	}
	const uint32_t exp[6] = {1, 3, 1, 3, 1, 3};
	assert_memory_equal(order, exp, sizeof(exp));
	/* A single fill interleaves too, each frame as large as it can be. */
	size_t n = pk_yamux_session_fill(p->sess, wire, 2 * (12 + 70));
	assert_int_equal(n, 164);
	assert_int_equal(wire[7], 1);
	assert_int_equal(wire[11], 70);
	assert_int_equal(wire[82 + 7], 3);
	assert_int_equal(wire[82 + 11], 70);
	assert_false(pk_yamux_session_has_output(p->sess));
	peer_free(p);
}

/* ---- backpressure ---- */

static void test_backpressure(void **state)
{
	(void)state;
	struct pk_yamux_config cfg;
	pk_yamux_config_default(&cfg);
	cfg.send_queue_cap = 1000;
	struct peer *p = peer_new(0, &cfg);
	feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_SYN, 1, 0);
	drain(p->sess);
	struct pk_yamux_stream *s = p->last_stream;
	static uint8_t d[1500];
	assert_int_equal(pk_yamux_stream_write_space(s), 1000);
	assert_int_equal(pk_yamux_stream_write(s, d, sizeof(d)), 1000);
	assert_int_equal(pk_yamux_stream_write_space(s), 0);
	assert_int_equal(pk_yamux_stream_write(s, d, 1), 0);
	p->n_writable = 0;
	assert_int_equal(pk_yamux_session_fill(p->sess, wire, 12 + 400), 412);
	assert_int_equal(p->n_writable, 0); /* 600 queued: above half */
	assert_int_equal(pk_yamux_session_fill(p->sess, wire, 12 + 100), 112);
	assert_int_equal(p->n_writable, 1); /* 500 queued: half drained */
	assert_int_equal(pk_yamux_stream_write_space(s), 500);
	drain(p->sess);
	assert_int_equal(p->n_writable, 1); /* once per crossing */
	peer_free(p);
}

/* ---- split feeds ---- */

static size_t build_sequence(uint8_t *o)
{
	size_t n = 0;
	frame(o + n, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_SYN, 1, 0);
	n += 12;
	frame(o + n, PK_YAMUX_DATA, 0, 1, 11);
	n += 12;
	memcpy(o + n, "hello world", 11);
	n += 11;
	frame(o + n, PK_YAMUX_DATA, PK_YAMUX_SYN, 3, 4);
	n += 12;
	memcpy(o + n, "3333", 4);
	n += 4;
	frame(o + n, PK_YAMUX_WINDOW_UPDATE, 0, 1, 100);
	n += 12;
	frame(o + n, PK_YAMUX_PING, PK_YAMUX_SYN, 0, 7);
	n += 12;
	frame(o + n, PK_YAMUX_DATA, 0, 99, 3); /* unknown stream */
	n += 12;
	memcpy(o + n, "???", 3);
	n += 3;
	frame(o + n, PK_YAMUX_DATA, PK_YAMUX_FIN, 1, 3);
	n += 12;
	memcpy(o + n, "bye", 3);
	n += 3;
	frame(o + n, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_RST, 3, 0);
	n += 12;
	frame(o + n, PK_YAMUX_GO_AWAY, 0, 0, 0);
	n += 12;
	return n;
}

static void run_split(const uint8_t *seq, size_t len, const size_t *cuts, size_t ncuts,
                      char *log_out, uint8_t *out, size_t *out_len)
{
	struct peer *p = peer_new(0, NULL);
	size_t prev = 0;
	for (size_t i = 0; i <= ncuts; i++) {
		size_t end = i < ncuts ? cuts[i] : len;
		assert_int_equal(pk_yamux_session_feed(p->sess, seq + prev, end - prev), 0);
		prev = end;
	}
	strcpy(log_out, p->log);
	*out_len = drain(p->sess);
	memcpy(out, wire, *out_len);
	peer_free(p);
}

static void test_split_feeds(void **state)
{
	(void)state;
	uint8_t seq[512];
	size_t len = build_sequence(seq);
	static char ref_log[8192], log[8192];
	static uint8_t ref_out[1024], out[1024];
	size_t ref_len, out_len;
	run_split(seq, len, NULL, 0, ref_log, ref_out, &ref_len);
	assert_string_equal(ref_log, " S1 D1:hello world S3 D3:3333 D1:bye F1 C3:1 G");
	const uint8_t exp_out[] = {
	    0,
	    2,
	    0,
	    2,
	    0,
	    0,
	    0,
	    0,
	    0,
	    0,
	    0,
	    7, /* pong 7 */
	    /* ACK 1 (stream 3 was reset); it carries the 14 bytes consumed
	     * so far as window credit, as Go's ACK would. */
	    0,
	    1,
	    0,
	    2,
	    0,
	    0,
	    0,
	    1,
	    0,
	    0,
	    0,
	    14,
	};
	assert_int_equal(ref_len, sizeof(exp_out));
	assert_memory_equal(ref_out, exp_out, sizeof(exp_out));

	/* Every single cut point. */
	for (size_t k = 1; k < len; k++) {
		run_split(seq, len, &k, 1, log, out, &out_len);
		assert_string_equal(log, ref_log);
		assert_int_equal(out_len, ref_len);
		assert_memory_equal(out, ref_out, ref_len);
	}
	/* Byte by byte. */
	size_t cuts[512];
	for (size_t k = 1; k < len; k++)
		cuts[k - 1] = k;
	run_split(seq, len, cuts, len - 1, log, out, &out_len);
	assert_string_equal(log, ref_log);
	assert_memory_equal(out, ref_out, ref_len);
}

/* ---- two sessions back to back ---- */

#define B2B_STREAMS 4
#define B2B_TOTAL (10u * 1024 * 1024)
#define B2B_PER (B2B_TOTAL / B2B_STREAMS)

struct b2b_stream {
	struct pk_yamux_stream *s;
	uint32_t id;
	size_t sent, received, unconsumed;
	int fin, closed, close_reset;
};

struct b2b {
	struct pk_yamux_session *sess;
	int is_client;
	struct b2b_stream st[B2B_STREAMS];
	int n;
	/* Wire-level check of the window the OTHER side granted us: data we
	 * send must never exceed it. Indexed by id. */
	int64_t peer_window[16];
};

static uint8_t b2b_byte(uint32_t id, int from_client, size_t off)
{
	return (uint8_t)(id * 31 + (unsigned)from_client * 101 + off * 7 + (off >> 10));
}

static struct b2b_stream *b2b_find(struct pk_yamux_stream *s)
{
	struct b2b_stream *t = pk_yamux_stream_get_user(s);
	assert_non_null(t);
	assert_ptr_equal(t->s, s);
	return t;
}

static int b2b_on_stream(void *user, struct pk_yamux_stream *s)
{
	struct b2b *b = user;
	assert_true(b->n < B2B_STREAMS);
	struct b2b_stream *t = &b->st[b->n++];
	t->s = s;
	t->id = pk_yamux_stream_id(s);
	pk_yamux_stream_set_user(s, t);
	return 0;
}

static void b2b_on_data(void *user, struct pk_yamux_stream *s, const uint8_t *d, size_t n)
{
	struct b2b *b = user;
	struct b2b_stream *t = b2b_find(s);
	for (size_t i = 0; i < n; i++) {
		if (d[i] != b2b_byte(t->id, !b->is_client, t->received + i))
			fail_msg("stream %u byte %zu differs", t->id, t->received + i);
	}
	t->received += n;
	t->unconsumed += n;
	/* Never more than the window we granted can be outstanding. */
	assert_true(t->unconsumed <= WIN);
}

static void b2b_on_fin(void *user, struct pk_yamux_stream *s)
{
	(void)user;
	struct b2b_stream *t = b2b_find(s);
	assert_false(t->fin);
	t->fin = 1;
}

static void b2b_on_close(void *user, struct pk_yamux_stream *s, int reset)
{
	(void)user;
	struct b2b_stream *t = b2b_find(s);
	assert_false(t->closed);
	t->closed = 1;
	t->close_reset = reset;
	t->s = NULL;
}

static void b2b_on_session_close(void *user, int reason)
{
	(void)user;
	fail_msg("session closed: %d", reason);
}

static const struct pk_yamux_callbacks b2b_cb = {
    .on_stream = b2b_on_stream,
    .on_data = b2b_on_data,
    .on_fin = b2b_on_fin,
    .on_stream_close = b2b_on_close,
    .on_session_close = b2b_on_session_close,
};

/* Account the frames in buf (whole frames only, as fill() guarantees):
 * data from `from` uses the window `to` granted, window updates from `from`
 * grant `to` more. */
static void b2b_tap(struct b2b *from, struct b2b *to, const uint8_t *buf, size_t len)
{
	size_t off = 0;
	while (off < len) {
		struct pk_yamux_hdr h;
		assert_true(len - off >= 12);
		assert_int_equal(pk_yamux_hdr_decode(buf + off, &h), 0);
		off += 12;
		assert_true(h.stream_id < 16);
		if (h.type == PK_YAMUX_DATA) {
			assert_true(len - off >= h.length);
			from->peer_window[h.stream_id] -= h.length;
			assert_true(from->peer_window[h.stream_id] >= 0);
			off += h.length;
		} else if (h.type == PK_YAMUX_WINDOW_UPDATE) {
			to->peer_window[h.stream_id] += h.length;
		}
	}
}

static int b2b_step(struct b2b *me, struct b2b *other, uint8_t *buf, size_t cap)
{
	int progress = 0;
	/* Write what fits, close when all is queued. */
	for (int i = 0; i < me->n; i++) {
		struct b2b_stream *t = &me->st[i];
		if (!t->s)
			continue;
		if (t->sent < B2B_PER) {
			uint8_t tmp[8192];
			size_t want = B2B_PER - t->sent;
			if (want > sizeof(tmp))
				want = sizeof(tmp);
			for (size_t k = 0; k < want; k++)
				tmp[k] = b2b_byte(t->id, me->is_client, t->sent + k);
			size_t n = pk_yamux_stream_write(t->s, tmp, want);
			t->sent += n;
			progress |= n > 0;
			if (t->sent == B2B_PER)
				pk_yamux_stream_close(t->s, 0);
		}
		/* Deliver to the "destination" slowly: a bit at a time. */
		if (t->unconsumed > 0) {
			size_t c = t->unconsumed < 50000 ? t->unconsumed : 50000;
			t->unconsumed -= c;
			pk_yamux_stream_consumed(t->s, c);
			progress = 1;
		}
	}
	size_t n = pk_yamux_session_fill(me->sess, buf, cap);
	if (n > 0) {
		b2b_tap(me, other, buf, n);
		assert_int_equal(pk_yamux_session_feed(other->sess, buf, n), 0);
		progress = 1;
	}
	return progress;
}

static void test_back_to_back(void **state)
{
	(void)state;
	static struct b2b c, s;
	memset(&c, 0, sizeof(c));
	memset(&s, 0, sizeof(s));
	c.is_client = 1;
	c.sess = pk_yamux_session_new(1, NULL, &b2b_cb, &c, 0);
	s.sess = pk_yamux_session_new(0, NULL, &b2b_cb, &s, 0);
	for (int i = 0; i < 16; i++)
		c.peer_window[i] = s.peer_window[i] = WIN;
	for (int i = 0; i < B2B_STREAMS; i++) {
		struct b2b_stream *t = &c.st[c.n++];
		t->s = pk_yamux_stream_open(c.sess, 0);
		assert_non_null(t->s);
		t->id = pk_yamux_stream_id(t->s);
		pk_yamux_stream_set_user(t->s, t);
	}
	static uint8_t buf[70000];
	const size_t caps[] = {65536, 1500, 13, 4096, 70000, 100};
	int idle = 0;
	for (unsigned iter = 0; idle < 3; iter++) {
		assert_true(iter < 1000000);
		size_t cap = caps[iter % 6];
		int p = b2b_step(&c, &s, buf, cap);
		p |= b2b_step(&s, &c, buf, caps[(iter + 3) % 6]);
		idle = p ? 0 : idle + 1;
	}
	assert_int_equal(s.n, B2B_STREAMS);
	for (int i = 0; i < B2B_STREAMS; i++) {
		struct b2b_stream *ct = &c.st[i], *st = &s.st[i];
		assert_int_equal(ct->received, B2B_PER);
		assert_int_equal(st->received, B2B_PER);
		assert_true(ct->fin && st->fin);
		assert_true(ct->closed && st->closed);
		assert_int_equal(ct->close_reset, 0);
		assert_int_equal(st->close_reset, 0);
	}
	assert_int_equal(pk_yamux_session_num_streams(c.sess), 0);
	assert_int_equal(pk_yamux_session_num_streams(s.sess), 0);
	pk_yamux_session_free(c.sess);
	pk_yamux_session_free(s.sess);
}

/* ---- lifetime ---- */

static void test_free_closes_streams(void **state)
{
	(void)state;
	struct peer *p = peer_new(1, NULL);
	for (int i = 0; i < 3; i++)
		pk_yamux_stream_open(p->sess, 0);
	struct pk_yamux_session *sess = p->sess;
	p->sess = NULL;
	pk_yamux_session_free(sess);
	assert_int_equal(p->n_close, 3);
	assert_int_equal(p->n_close_reset, 3);
	assert_int_equal(p->n_session_close, 0);
	free(p);
}

static uint32_t lcg(uint32_t *x)
{
	*x = *x * 1664525u + 1013904223u;
	return *x;
}

static void test_many_streams(void **state)
{
	(void)state;
	/* Enough streams to grow the id table several times. Random ids so
	 * probe runs form, and removal from the middle of them is exercised. */
	struct pk_yamux_config cfg;
	pk_yamux_config_default(&cfg);
	cfg.accept_backlog = 100000;
	struct peer *p = peer_new(0, &cfg);
	enum { N = 5000 };
	static uint32_t ids[N];
	uint32_t x = 12345;
	for (uint32_t i = 0; i < N; i++) {
		/* Distinct odd ids: high bits random, low bits the index. */
		ids[i] = (lcg(&x) & 0x7ffe0000u) | (i << 1) | 1u;
		assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_SYN, ids[i], 0), 0);
	}
	assert_int_equal(pk_yamux_session_num_streams(p->sess), N);
	drain(p->sess);
	for (uint32_t i = 0; i < N; i += 3)
		assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_RST, ids[i], 0), 0);
	assert_int_equal(p->n_close, (N + 2) / 3);
	assert_int_equal(pk_yamux_session_num_streams(p->sess), N - (N + 2) / 3);
	/* Every remaining stream is still found by id, removed ones are not. */
	for (uint32_t i = 0; i < N; i++) {
		size_t before = p->data_bytes;
		assert_int_equal(feed_data(p, 0, ids[i], "x", 1), 0);
		assert_int_equal(p->data_bytes, before + (i % 3 == 0 ? 0 : 1));
	}
	peer_free(p);
}

static void reset_on_data(void *user, struct pk_yamux_stream *s, const uint8_t *d, size_t n)
{
	cb_data(user, s, d, n);
	pk_yamux_stream_reset(s);
}

static void test_reset_inside_on_data(void **state)
{
	(void)state;
	struct pk_yamux_callbacks cb = callbacks;
	cb.on_data = reset_on_data;
	struct peer *p = calloc(1, sizeof(*p));
	assert_non_null(p);
	p->sess = pk_yamux_session_new(0, NULL, &cb, p, 0);
	uint8_t f[12];
	frame(f, PK_YAMUX_DATA, PK_YAMUX_SYN | PK_YAMUX_FIN, 1, 6);
	assert_int_equal(pk_yamux_session_feed(p->sess, f, 12), 0);
	/* First half delivered, the owner resets: the rest is drained, no
	 * FIN is reported, and framing continues after it. */
	assert_int_equal(pk_yamux_session_feed(p->sess, (const uint8_t *)"abc", 3), 0);
	assert_int_equal(pk_yamux_session_feed(p->sess, (const uint8_t *)"def", 3), 0);
	assert_int_equal(feed_frame(p, PK_YAMUX_PING, PK_YAMUX_SYN, 0, 1), 0);
	assert_string_equal(p->log, " S1 D1:abc C1:1");
	const uint8_t exp[] = {
	    0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, /* our RST */
	    0, 2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, /* pong */
	};
	expect_wire(drain(p->sess), exp, sizeof(exp));
	peer_free(p);
}

static void test_data_after_fin_dropped(void **state)
{
	(void)state;
	struct peer *p = server_with_stream();
	assert_int_equal(feed_frame(p, PK_YAMUX_WINDOW_UPDATE, PK_YAMUX_FIN, 1, 0), 0);
	assert_int_equal(feed_data(p, 0, 1, "more", 4), 0);
	assert_int_equal(p->n_data, 0);
	assert_int_equal(p->n_session_close, 0);
	/* Closing our side now completes the stream. */
	pk_yamux_stream_close(p->last_stream, 0);
	assert_int_equal(pk_yamux_session_fill(p->sess, wire, 12), 12); /* FIN fits in 12 */
	const uint8_t fin[] = {0, 1, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0};
	assert_memory_equal(wire, fin, sizeof(fin));
	assert_string_equal(p->log, " S1 F1 C1:0");
	peer_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hdr),
	    cmocka_unit_test(test_client_ids_syn),
	    cmocka_unit_test(test_server_ids),
	    cmocka_unit_test(test_accept_ack),
	    cmocka_unit_test(test_ack_establishes),
	    cmocka_unit_test(test_larger_window_announced),
	    cmocka_unit_test(test_data_frames),
	    cmocka_unit_test(test_fin_window_update),
	    cmocka_unit_test(test_fin_on_data),
	    cmocka_unit_test(test_duplicate_fin_is_error),
	    cmocka_unit_test(test_local_reset),
	    cmocka_unit_test(test_reset_before_syn_sent),
	    cmocka_unit_test(test_remote_reset),
	    cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_ping),
	    cmocka_unit_test(test_ping_timeout),
	    cmocka_unit_test(test_keepalive_disabled),
	    cmocka_unit_test(test_go_away_codes),
	    cmocka_unit_test(test_remote_go_away_normal),
	    cmocka_unit_test(test_remote_go_away_fatal),
	    cmocka_unit_test(test_syn_after_go_away),
	    cmocka_unit_test(test_syn_after_go_away_accepted),
	    cmocka_unit_test(test_open_after_own_go_away),
	    cmocka_unit_test(test_window_update_half),
	    cmocka_unit_test(test_window_overflow),
	    cmocka_unit_test(test_send_window_respected),
	    cmocka_unit_test(test_unknown_stream_ignored),
	    cmocka_unit_test(test_refused_stream),
	    cmocka_unit_test(test_backlog),
	    cmocka_unit_test(test_max_streams),
	    cmocka_unit_test(test_bad_syn_ids),
	    cmocka_unit_test(test_pending_opens),
	    cmocka_unit_test(test_open_timeout),
	    cmocka_unit_test(test_close_timeout),
	    cmocka_unit_test(test_pong_flood),
	    cmocka_unit_test(test_fill_never_splits),
	    cmocka_unit_test(test_round_robin),
	    cmocka_unit_test(test_backpressure),
	    cmocka_unit_test(test_split_feeds),
	    cmocka_unit_test(test_back_to_back),
	    cmocka_unit_test(test_free_closes_streams),
	    cmocka_unit_test(test_many_streams),
	    cmocka_unit_test(test_reset_inside_on_data),
	    cmocka_unit_test(test_data_after_fin_dropped),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	pk_buf_freelist_release();
	return rc;
}
