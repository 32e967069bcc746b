/*
 * yamux: the stream multiplexer inside every tunnel, wire-compatible with
 * hashicorp/yamux (and andydunstall/yamux v0.1.6, which Piko uses).
 *
 * This module is transport-free: it never touches a socket. The owner feeds
 * received bytes with pk_yamux_session_feed(), pulls bytes to send with
 * pk_yamux_session_fill() when the transport is writable, and drives timers
 * with pk_yamux_session_tick(). Events come back through callbacks. That keeps
 * it unit-testable byte for byte and fuzzable.
 *
 * Frame: version(1)=0 | type(1) | flags(2, BE) | stream id(4, BE) | length(4, BE)
 *   type 0 Data (length = payload bytes that follow), 1 Window Update (length =
 *   window delta), 2 Ping (length = opaque ping id), 3 Go Away (length = code).
 *   flags: SYN 0x1, ACK 0x2, FIN 0x4, RST 0x8.
 *
 * Semantics (protocol reference §1.2):
 *  - client opens odd ids from 1, server even ids from 2, step 2;
 *  - opening sends a Window Update with SYN (delta 0, or what a larger
 *    configured window adds to the protocol's 256 KiB, as Go's
 *    MaxStreamWindowSize); the acceptor replies with a Window Update carrying
 *    ACK (and its own extra window) when it accepts;
 *  - per-stream receive window 256 KiB both ways by default (config.window,
 *    Piko's stream.max_window_size, may raise ours), no session window; only Data
 *    payload counts; the receiver sends a Window Update once at least half the
 *    window has been consumed by the application; data beyond the window is a
 *    protocol error: Go Away code 1 and the session dies;
 *  - FIN half-closes; a stream is gone when both sides sent FIN; RST kills it;
 *    after a local FIN, the peer's FIN must come within 5 minutes or the
 *    stream is reset; frames for unknown stream ids are ignored (data drained);
 *  - Ping every 30 s from both sides (SYN flag, stream 0, incrementing id
 *    from 0); the answer carries ACK and the same id; no answer within 10 s
 *    kills the session;
 *  - at most 256 opened-but-unacknowledged streams; an open not acknowledged
 *    within 75 s kills the session;
 *  - accept backlog 256: a SYN beyond that many unaccepted streams is answered
 *    with RST; so is one beyond max_streams open streams (off by default);
 *  - Go Away code 0 only means "do not open streams towards me"; codes 1, 2 or
 *    unknown terminate the session. After we sent Go Away, incoming SYNs are
 *    answered with RST, unless accept_after_go_away is set (see below).
 *
 * Memory and backpressure: each stream has a capped send queue (256 KiB by
 * default). pk_yamux_stream_write() accepts only what fits; when the queue
 * drains below half, or the peer's window opens, on_writable fires so the
 * owner can resume reading its source. Received data is handed out by
 * pointer (no copy) through on_data; the window is only credited back when
 * the owner calls pk_yamux_stream_consumed(), i.e. when it has delivered the
 * bytes onwards. So a slow destination throttles its own stream and never the
 * shared session.
 *
 * Callbacks and lifetime: callbacks are only ever invoked from inside
 * pk_yamux_session_feed(), _fill(), _tick() and _free() — never from inside a
 * pk_yamux_stream_*() call — so the owner may call stream functions from any
 * callback. on_stream_close fires exactly once for every stream the owner has
 * seen (accepted via on_stream or opened via pk_yamux_stream_open), however it
 * ended; the stream is freed right after that callback returns.
 */
#ifndef PK_YAMUX_H
#define PK_YAMUX_H

#include <stddef.h>
#include <stdint.h>

#define PK_YAMUX_VERSION 0
#define PK_YAMUX_HDR_LEN 12
#define PK_YAMUX_INITIAL_WINDOW (256u * 1024u)

enum pk_yamux_type {
	PK_YAMUX_DATA = 0,
	PK_YAMUX_WINDOW_UPDATE = 1,
	PK_YAMUX_PING = 2,
	PK_YAMUX_GO_AWAY = 3,
};

enum pk_yamux_flag {
	PK_YAMUX_SYN = 0x1,
	PK_YAMUX_ACK = 0x2,
	PK_YAMUX_FIN = 0x4,
	PK_YAMUX_RST = 0x8,
};

enum pk_yamux_goaway_code {
	PK_YAMUX_GOAWAY_NORMAL = 0,
	PK_YAMUX_GOAWAY_PROTO_ERR = 1,
	PK_YAMUX_GOAWAY_INTERNAL_ERR = 2,
};

/* Why a session ended (argument of on_session_close). */
enum pk_yamux_close_reason {
	PK_YAMUX_CLOSED_PROTOCOL = 1,  /* malformed frame or window overflow (we sent Go Away 1) */
	PK_YAMUX_CLOSED_REMOTE_GOAWAY, /* peer sent Go Away 1, 2 or unknown */
	PK_YAMUX_CLOSED_PING_TIMEOUT,  /* keepalive not answered within ping_timeout */
	PK_YAMUX_CLOSED_OPEN_TIMEOUT,  /* an opened stream was not ACKed within open_timeout */
};

struct pk_yamux_hdr {
	uint8_t version;
	uint8_t type;
	uint16_t flags;
	uint32_t stream_id;
	uint32_t length;
};

/* Encode h into exactly 12 bytes (big-endian fields). */
void pk_yamux_hdr_encode(const struct pk_yamux_hdr *h, uint8_t out[PK_YAMUX_HDR_LEN]);
/* Decode 12 bytes; returns 0, or -1 when version != 0 or type > 3. */
int pk_yamux_hdr_decode(const uint8_t in[PK_YAMUX_HDR_LEN], struct pk_yamux_hdr *h);

struct pk_yamux_config {
	uint32_t window;            /* receive window per stream; 256 KiB (the least) */
	size_t send_queue_cap;      /* per-stream send queue cap; 256 KiB */
	uint32_t accept_backlog;    /* 256 */
	uint32_t max_pending_opens; /* 256 */
	/* Streams open at once on the session, both directions (0: no cap, the
	 * default, as hashicorp): beyond it pk_yamux_stream_open() returns
	 * NULL and a SYN is answered with RST. */
	uint32_t max_streams;
	uint64_t keepalive_ms;     /* 30000; 0 disables pings */
	uint64_t ping_timeout_ms;  /* 10000 */
	uint64_t open_timeout_ms;  /* 75000 */
	uint64_t close_timeout_ms; /* 300000 */
	/* 0 (default, as hashicorp): after our own Go Away, a SYN is answered
	 * with RST. 1: keep offering SYNs to on_stream, for an owner that sent
	 * Go Away to move its peer elsewhere but still serves what crossed it
	 * in flight (the agent retiring a tunnel). */
	int accept_after_go_away;
};

/* Fill cfg with the hashicorp defaults above. */
void pk_yamux_config_default(struct pk_yamux_config *cfg);

/* Piko's stream.max_window_size rule, for the server's and the agent's
 * configs: 0 when v can be a session's window (PK_YAMUX_INITIAL_WINDOW to
 * UINT32_MAX), else -1 with Piko's message in err ("stream: max-window-size
 * must be >= 262144"). */
int pk_yamux_window_check(int64_t v, char *err, size_t errlen);

struct pk_yamux_session;
struct pk_yamux_stream;

struct pk_yamux_callbacks {
	/* The peer opened stream s (SYN received, backlog not full). Return 0 to
	 * accept it now (an ACK is queued), or -1 to refuse (RST is queued and
	 * the stream is dropped without on_stream_close). */
	int (*on_stream)(void *user, struct pk_yamux_stream *s);
	/* len > 0 payload bytes arrived on s. data points into the caller's
	 * feed buffer: copy or forward before returning. Call
	 * pk_yamux_stream_consumed() once they have been delivered. */
	void (*on_data)(void *user, struct pk_yamux_stream *s, const uint8_t *data, size_t len);
	/* The peer half-closed s (FIN): no more data will arrive. */
	void (*on_fin)(void *user, struct pk_yamux_stream *s);
	/* s may accept more writes (send queue below half its cap or window
	 * reopened), or, for a stream we opened, the peer ACKed it. */
	void (*on_writable)(void *user, struct pk_yamux_stream *s);
	/* s is finished: both sides closed, reset by either side, timed out or
	 * the session ended. reset is 1 unless it was a clean FIN/FIN close.
	 * s is freed after this returns. */
	void (*on_stream_close)(void *user, struct pk_yamux_stream *s, int reset);
	/* The session has bytes to send: the owner should ask its transport for
	 * a writable callback and then call pk_yamux_session_fill(). May be
	 * called from inside pk_yamux_stream_*() calls: it must only request
	 * writability, nothing else. */
	void (*want_write)(void *user);
	/* The peer sent Go Away with code 0: do not open new streams. */
	void (*on_go_away)(void *user);
	/* The session is dead (see enum pk_yamux_close_reason). Every stream
	 * got on_stream_close first. The owner should flush what fill() still
	 * gives (e.g. our Go Away) and close the transport. */
	void (*on_session_close)(void *user, int reason);
};

/* Create a session. is_client selects odd stream ids (client) or even
 * (server). cfg may be NULL for the defaults. now_ms is the monotonic clock
 * (starts the keepalive schedule). Owner: the caller; free with
 * pk_yamux_session_free(). */
struct pk_yamux_session *pk_yamux_session_new(int is_client, const struct pk_yamux_config *cfg,
                                              const struct pk_yamux_callbacks *cb, void *user,
                                              uint64_t now_ms);

/* Fire on_stream_close for every live stream, then free everything. The
 * transport is the caller's to close. No frames are sent (as in Go, session
 * close does not send Go Away). */
void pk_yamux_session_free(struct pk_yamux_session *sess);

/* Feed received transport bytes (any split: a frame may span calls). Returns
 * 0, or -1 when the session is dead (on_session_close has been called). */
int pk_yamux_session_feed(struct pk_yamux_session *sess, const uint8_t *data, size_t len);

/* Write up to cap bytes of frames into out: control frames first (ACKs,
 * window updates, pings, RST, Go Away), then data from streams with both
 * queued bytes and window, round-robin across streams so no stream starves
 * another. A data frame is never split across fill calls: each frame's header
 * and payload are written together (payload shortened to fit). Returns bytes
 * written; 0 when there is nothing to send. */
size_t pk_yamux_session_fill(struct pk_yamux_session *sess, uint8_t *out, size_t cap);

/* 1 when fill() would produce bytes. */
int pk_yamux_session_has_output(const struct pk_yamux_session *sess);

/* Drive timers: keepalive pings, ping timeout, open timeout, close timeout.
 * Call at least once a second. Returns -1 when the session died. */
int pk_yamux_session_tick(struct pk_yamux_session *sess, uint64_t now_ms);

/* Queue a Go Away (code 0 for a graceful "no new streams"). */
void pk_yamux_session_go_away(struct pk_yamux_session *sess, uint32_t code);

/* Set accept_after_go_away (see struct pk_yamux_config) on a live session,
 * for owners that create it with the defaults. */
void pk_yamux_session_set_accept_after_go_away(struct pk_yamux_session *sess, int on);

/* 1 when the peer sent us a normal Go Away. */
int pk_yamux_session_remote_go_away(const struct pk_yamux_session *sess);
/* Number of live streams. */
size_t pk_yamux_session_num_streams(const struct pk_yamux_session *sess);
/* 1 when max_pending_opens SYNs wait for their ACK: pk_yamux_stream_open()
 * fails until an ACK (or a reset) arrives. */
int pk_yamux_session_opens_full(const struct pk_yamux_session *sess);
/* 1 when max_streams streams are open (an open would fail until one ends). */
int pk_yamux_session_streams_full(const struct pk_yamux_session *sess);
/* Set max_streams on a live session (0: no cap); streams already open stay. */
void pk_yamux_session_set_max_streams(struct pk_yamux_session *sess, uint32_t max);
/* Milliseconds of the last ping round trip, or -1 if none yet. */
int64_t pk_yamux_session_rtt_ms(const struct pk_yamux_session *sess);

/* Open a stream (SYN queued). Returns NULL when the peer sent Go Away, the
 * session is dead, or max_pending_opens SYNs are waiting for ACK (errno-free:
 * check pk_yamux_session_remote_go_away() to tell). Our own Go Away does not
 * stop us opening streams (as in hashicorp/yamux: it only refuses the peer's). */
struct pk_yamux_stream *pk_yamux_stream_open(struct pk_yamux_session *sess, uint64_t now_ms);

/* Queue up to len bytes for sending; returns bytes accepted (0 when the send
 * queue is full or the stream is closed for writing). */
size_t pk_yamux_stream_write(struct pk_yamux_stream *s, const uint8_t *data, size_t len);

/* Bytes pk_yamux_stream_write() would accept now. */
size_t pk_yamux_stream_write_space(const struct pk_yamux_stream *s);

/* The owner delivered n bytes received through on_data; credits the window
 * (a Window Update is queued once half the window is owed). */
void pk_yamux_stream_consumed(struct pk_yamux_stream *s, size_t n);

/* Half-close: FIN is sent after the queued data. */
void pk_yamux_stream_close(struct pk_yamux_stream *s, uint64_t now_ms);

/* Abort: queued data is dropped, RST is sent; on_stream_close(reset=1) follows
 * from the next feed/fill/tick. */
void pk_yamux_stream_reset(struct pk_yamux_stream *s);

uint32_t pk_yamux_stream_id(const struct pk_yamux_stream *s);
/* The receive window s grants its peer (the session's config.window): the
 * most bytes on_data can hand over that were not yet consumed, which is what
 * an owner's queue towards a socket must hold. */
uint32_t pk_yamux_stream_window(const struct pk_yamux_stream *s);
void pk_yamux_stream_set_user(struct pk_yamux_stream *s, void *user);
void *pk_yamux_stream_get_user(const struct pk_yamux_stream *s);
/* Bytes queued for sending and not yet framed. */
size_t pk_yamux_stream_queued(const struct pk_yamux_stream *s);
/* 1 once the peer ACKed a stream we opened (always 1 for accepted streams). */
int pk_yamux_stream_established(const struct pk_yamux_stream *s);
/* 1 when the peer never took a stream we opened, so what was written on it
 * was not acted on: it answered with RST before any ACK (Go's yamux does
 * to a stream that crosses its own Go Away), or the session was freed
 * after the peer's Go Away with the stream still not ACKed (a leaving peer
 * serves what it took before it closes). A session that ends without a Go
 * Away is not this: a stream may have been taken with its ACK still in
 * flight. Valid in on_stream_close. */
int pk_yamux_stream_refused(const struct pk_yamux_stream *s);
/* 1 when s's session is ending: Go Away sent or received, or dead. A
 * stream kept for another request is closed instead then. */
int pk_yamux_stream_session_leaving(const struct pk_yamux_stream *s);

#endif
