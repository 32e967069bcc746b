/*
 * libFuzzer harness for core/yamux.c.
 *
 * Input: byte 0 selects owner behaviour and config (bits below), byte 1
 * seeds the generator that picks chunk sizes, fill sizes, clock steps and
 * owner actions (its top bit also turns keepalives off, so that the long
 * timers can fire without the input having to answer our pings); the rest
 * is raw yamux bytes, fed to a server-side session
 * and, separately, to a client-side session. So a seed corpus of valid frame
 * sequences (prefixed by two bytes) is directly mutable.
 *
 * The owner checks the callback contract as it goes and aborts on a breach:
 * every stream it knows gets exactly one on_stream_close (each known stream
 * carries a tracker that is freed there; a second close would be a
 * use-after-free for ASan, a missing one a leak and a count mismatch),
 * on_session_close fires at most once, and fill() only ever produces whole,
 * well-formed frames.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "yamux.h"

enum {
	F_REFUSE = 0x01,     /* refuse every third incoming stream */
	F_ECHO = 0x02,       /* echo received data back */
	F_LAZY = 0x04,       /* consume only half of what arrives */
	F_CLOSE_FIN = 0x08,  /* close our side when the peer FINs */
	F_SLOW_CLOCK = 0x10, /* big clock steps: timeouts fire */
	F_SMALL_CFG = 0x20,  /* tiny queues and backlogs */
	F_ACTIONS = 0x40,    /* open/write/close/reset from outside callbacks */
	F_BIG_WINDOW = 0x80, /* announce a window above 256 KiB */
};

#define TRACK_MAX 64
#define TRACK_MAGIC 0x7a6d7578u

struct tracker {
	uint32_t magic;
	struct pk_yamux_stream *s;
};

struct owner {
	struct pk_yamux_session *sess;
	unsigned flags;
	uint64_t now;
	uint32_t rng;
	unsigned accepted;
	long known; /* streams told to us and not yet closed */
	int session_closed;
	struct tracker *track[TRACK_MAX]; /* a sample of live streams to act on */
	size_t ntrack;
	size_t send_cap;
};

static uint32_t next_rand(uint32_t *x)
{
	/* xorshift32: any non-zero state works. */
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return *x;
}

static void know(struct owner *o, struct pk_yamux_stream *s)
{
	struct tracker *t = malloc(sizeof(*t));
	if (!t)
		abort();
	t->magic = TRACK_MAGIC;
	t->s = s;
	pk_yamux_stream_set_user(s, t);
	o->known++;
	if (o->ntrack < TRACK_MAX)
		o->track[o->ntrack++] = t;
}

static struct tracker *tracker_of(struct pk_yamux_stream *s)
{
	struct tracker *t = pk_yamux_stream_get_user(s);
	if (!t || t->magic != TRACK_MAGIC || t->s != s)
		abort();
	return t;
}

static int on_stream(void *user, struct pk_yamux_stream *s)
{
	struct owner *o = user;
	if (pk_yamux_stream_get_user(s))
		abort(); /* a new stream has no owner data */
	if ((o->flags & F_REFUSE) && ++o->accepted % 3 == 0)
		return -1;
	know(o, s);
	return 0;
}

static void on_data(void *user, struct pk_yamux_stream *s, const uint8_t *d, size_t n)
{
	struct owner *o = user;
	tracker_of(s);
	if (n == 0)
		abort();
	if (o->flags & F_ECHO)
		pk_yamux_stream_write(s, d, n > 64 ? 64 : n);
	pk_yamux_stream_consumed(s, (o->flags & F_LAZY) ? n / 2 : n);
}

static void on_fin(void *user, struct pk_yamux_stream *s)
{
	struct owner *o = user;
	tracker_of(s);
	if (o->flags & F_CLOSE_FIN)
		pk_yamux_stream_close(s, o->now);
}

static void on_writable(void *user, struct pk_yamux_stream *s)
{
	struct owner *o = user;
	tracker_of(s);
	static const uint8_t more[16] = "writable-more...";
	if (o->flags & F_ECHO)
		pk_yamux_stream_write(s, more, sizeof(more));
}

static void on_stream_close(void *user, struct pk_yamux_stream *s, int reset)
{
	struct owner *o = user;
	struct tracker *t = tracker_of(s);
	if (reset != 0 && reset != 1)
		abort();
	for (size_t i = 0; i < o->ntrack; i++) {
		if (o->track[i] == t) {
			o->track[i] = o->track[--o->ntrack];
			break;
		}
	}
	t->magic = 0;
	free(t);
	o->known--;
	/* Stream calls on other streams are allowed from here. */
	if (o->ntrack > 0)
		pk_yamux_stream_write(o->track[0]->s, (const uint8_t *)"c", 1);
}

static void want_write(void *user)
{
	(void)user;
}

static void on_go_away(void *user)
{
	(void)user;
}

static void on_session_close(void *user, int reason)
{
	struct owner *o = user;
	if (o->session_closed || reason < PK_YAMUX_CLOSED_PROTOCOL ||
	    reason > PK_YAMUX_CLOSED_OPEN_TIMEOUT || o->known != 0)
		abort();
	o->session_closed = 1;
}

static const struct pk_yamux_callbacks callbacks = {
    .on_stream = on_stream,
    .on_data = on_data,
    .on_fin = on_fin,
    .on_writable = on_writable,
    .on_stream_close = on_stream_close,
    .want_write = want_write,
    .on_go_away = on_go_away,
    .on_session_close = on_session_close,
};

/* fill() output must be whole frames; our data frames never exceed what a
 * send queue can hold. */
static void check_output(const struct owner *o, const uint8_t *b, size_t n)
{
	size_t off = 0;
	while (off < n) {
		struct pk_yamux_hdr h;
		if (n - off < PK_YAMUX_HDR_LEN || pk_yamux_hdr_decode(b + off, &h) < 0)
			abort();
		off += PK_YAMUX_HDR_LEN;
		if (h.type == PK_YAMUX_DATA) {
			if (h.length == 0 || h.length > n - off || h.length > o->send_cap ||
			    h.stream_id == 0)
				abort();
			off += h.length;
		}
	}
}

static void pump_out(struct owner *o)
{
	static uint8_t out[70000];
	size_t cap;
	switch (next_rand(&o->rng) % 4) {
	case 0:
		cap = next_rand(&o->rng) % 40;
		break;
	case 1:
		cap = next_rand(&o->rng) % 2000;
		break;
	default:
		cap = sizeof(out);
		break;
	}
	for (int i = 0; i < 4; i++) {
		size_t n = pk_yamux_session_fill(o->sess, out, cap);
		if (n > cap)
			abort();
		check_output(o, out, n);
		if (n == 0)
			break;
	}
}

static void act(struct owner *o)
{
	uint32_t r = next_rand(&o->rng);
	struct tracker *t = o->ntrack ? o->track[(r >> 8) % o->ntrack] : NULL;
	switch (r % 8) {
	case 0: {
		struct pk_yamux_stream *s = pk_yamux_stream_open(o->sess, o->now);
		if (s)
			know(o, s);
		break;
	}
	case 1:
		if (t) {
			static uint8_t blob[3000];
			pk_yamux_stream_write(t->s, blob, (r >> 16) % sizeof(blob));
		}
		break;
	case 2:
		if (t)
			pk_yamux_stream_close(t->s, o->now);
		break;
	case 3:
		if (t)
			pk_yamux_stream_reset(t->s);
		break;
	case 4:
		pk_yamux_session_go_away(o->sess, (r >> 16) % 4);
		break;
	default:
		break;
	}
	if (t && pk_yamux_stream_write_space(t->s) > o->send_cap)
		abort();
}

static void run(const uint8_t *data, size_t size, int is_client, unsigned flags, uint8_t seed)
{
	struct owner o;
	memset(&o, 0, sizeof(o));
	o.flags = flags;
	o.rng = 0x9e3779b9u ^ seed ^ ((uint32_t)is_client << 8);

	struct pk_yamux_config cfg;
	pk_yamux_config_default(&cfg);
	if (flags & F_SMALL_CFG) {
		cfg.send_queue_cap = 100;
		cfg.accept_backlog = 2;
		cfg.max_pending_opens = 2;
	}
	if (flags & F_BIG_WINDOW)
		cfg.window = 1024 * 1024;
	if (seed & 0x80)
		cfg.keepalive_ms = 0;
	o.send_cap = cfg.send_queue_cap;
	o.sess = pk_yamux_session_new(is_client, &cfg, &callbacks, &o, 0);

	size_t off = 0;
	while (off < size) {
		size_t chunk = 1 + next_rand(&o.rng) % 64;
		if (next_rand(&o.rng) % 32 == 0)
			chunk = 1 + next_rand(&o.rng) % 4096;
		if (chunk > size - off)
			chunk = size - off;
		int rc = pk_yamux_session_feed(o.sess, data + off, chunk);
		off += chunk;
		if (rc < 0 && !o.session_closed)
			abort();
		if (flags & F_ACTIONS)
			act(&o);
		pump_out(&o);
		o.now += next_rand(&o.rng) % ((flags & F_SLOW_CLOCK) ? 40000 : 700);
		rc = pk_yamux_session_tick(o.sess, o.now);
		if (rc < 0 && !o.session_closed)
			abort();
		if (pk_yamux_session_num_streams(o.sess) > (size_t)o.known)
			abort(); /* the table holds only streams we know */
	}
	pump_out(&o);
	pk_yamux_session_free(o.sess);
	if (o.known != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	unsigned flags = data[0];
	uint8_t seed = data[1];
	run(data + 2, size - 2, 0, flags, seed);
	run(data + 2, size - 2, 1, flags, seed);
	/* Keep leak checkers focused on real leaks, not the chunk cache. */
	pk_buf_freelist_release();
	return 0;
}
