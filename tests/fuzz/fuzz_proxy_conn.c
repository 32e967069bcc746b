/*
 * Fuzz the proxy port's connection handler (dataplane/proxy.c) with the
 * bytes of client connections: request heads, bodies, pipelining, upgrades
 * and the TCP route's WebSocket frames, split at arbitrary points, answered
 * by a fake agent with bytes of the input.
 *
 * Transport: a request forwarded by another node is served by the same
 * connection code as a socket, with a node link's yamux stream as its
 * transport (pk_proxy_adopt_stream), and that path needs no lws. So a fake
 * "other node" (a client-side yamux session) opens one or two streams on a
 * fake link session whose accepted streams are adopted by proxy.c; every
 * client byte crosses real yamux framing, and proxy.c parses, routes and
 * answers it through conn_rx()/process() exactly as for a socket. What only
 * a socket has (lws writable callbacks, shutdown/FIN handling, the
 * max_connections cap) is not reached.
 *
 * Upstream: a struct pk_upstream whose tunnel has a yamux session (server
 * role, as upstream.c) paired with a fake agent session in memory, in the
 * registry as endpoint "ep" (unless the control byte says none: 502 "no
 * available upstreams"). The agent accepts every stream, drops the request
 * bytes, and answers stream k with response segment k of the input, in
 * chunks; with no segment left it resets the stream (502 "upstream
 * unreachable").
 *
 * Input: byte 0 control flags (F_* below), byte 1 seed of the generator
 * that picks chunk sizes and actions, then the client bytes, then
 * optionally SEP_RESP and the agent's response segments separated by
 * SEP_NEXT.
 *
 * Checks: ASan/UBSan and leaks, no loop without progress, and once every
 * session is gone: no connection left in the server, no exchange in flight
 * or waiting.
 */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backoff.h"
#include "log.h"
#include "metrics.h"
#include "registry.h"
#include "server.h"
#include "tunnel.h"
#include "upstream.h"
#include "yamux.h"

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			abort();                                                                   \
	} while (0)

enum {
	F_NO_UPSTREAM = 0x01, /* endpoint "ep" has no upstream */
	F_TWO_CONNS = 0x02,   /* two client connections share the bytes */
	F_LAZY_CLIENT = 0x04, /* the client reads its responses only now and then */
	F_SMALL_HEAD = 0x08,  /* proxy.http.max_header_bytes 256: 431s */
	F_TIGHT_UP = 0x10,    /* upstream session: 1 pending open, 1 stream (wait list, 503) */
	F_AGENT_STAY = 0x20,  /* the agent does not FIN after its response */
	F_CLIENT_FIN = 0x40,  /* the client half-closes after its bytes */
	F_SHUTDOWN = 0x80,    /* the server is shutting down (no keep-alive) */
};

#define SEP_RESP "\n=RESP=\n"
#define SEP_NEXT "\n=NEXT=\n"
#define MAX_SEGS 16
#define MAX_AGENT 16
#define PUMP_BUF (64 * 1024)

struct seg {
	const uint8_t *p;
	size_t n;
};

struct agent_stream {
	struct pk_yamux_stream *s;
	struct seg resp; /* what is left to write; p NULL: reset it */
	int fin_sent;
};

struct harness {
	struct pk_server srv;
	struct pk_server_config cfg;
	struct pk_upstream up;
	struct pk_yamux_session *client, *link, *agent;
	struct pk_yamux_stream *cs[2]; /* client streams, NULL once closed */
	int cs_fin[2];
	size_t cs_owed[2]; /* response bytes the lazy client has not read */
	struct agent_stream as[MAX_AGENT];
	size_t nas;
	struct seg segs[MAX_SEGS];
	size_t nsegs, next_seg;
	unsigned flags;
	uint32_t rng;
	int agent_stay;
	uint8_t buf[PUMP_BUF];
};

static uint32_t next_rand(uint32_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return *x;
}

/* ---- the client node: reads responses, lazily or at once ---------------- */

static int client_index(struct harness *hs, struct pk_yamux_stream *s)
{
	for (int i = 0; i < 2; i++)
		if (hs->cs[i] == s)
			return i;
	return -1;
}

/* PK_FUZZ_DEBUG=1 in the environment: what the client receives goes to
 * stderr, to check what a corpus input reaches. */
static int debug_output;

static void cl_on_data(void *user, struct pk_yamux_stream *s, const uint8_t *data, size_t len)
{
	struct harness *hs = user;
	int i = client_index(hs, s);
	if (debug_output)
		fprintf(stderr, "[conn %d] %.*s\n", i, (int)len, (const char *)data);
	if (i >= 0 && (hs->flags & F_LAZY_CLIENT))
		hs->cs_owed[i] += len;
	else
		pk_yamux_stream_consumed(s, len);
}

static void cl_on_close(void *user, struct pk_yamux_stream *s, int reset)
{
	struct harness *hs = user;
	(void)reset;
	int i = client_index(hs, s);
	if (i >= 0) {
		hs->cs[i] = NULL;
		hs->cs_owed[i] = 0;
	}
}

static void client_read(struct harness *hs)
{
	for (int i = 0; i < 2; i++) {
		if (hs->cs[i] && hs->cs_owed[i]) {
			pk_yamux_stream_consumed(hs->cs[i], hs->cs_owed[i]);
			hs->cs_owed[i] = 0;
		}
	}
}

static void no_write(void *user)
{
	(void)user;
}

static void no_stream_fn(void *user, struct pk_yamux_stream *s)
{
	(void)user;
	(void)s;
}

static void no_go_away(void *user)
{
	(void)user;
}

static void no_session_close(void *user, int reason)
{
	(void)user;
	(void)reason;
}

static const struct pk_yamux_callbacks client_cb = {
    .on_data = cl_on_data,
    .on_fin = no_stream_fn,
    .on_writable = no_stream_fn,
    .on_stream_close = cl_on_close,
    .want_write = no_write,
    .on_go_away = no_go_away,
    .on_session_close = no_session_close,
};

/* ---- this node's end of the link: streams become client connections ---- */

static int link_on_stream(void *user, struct pk_yamux_stream *s)
{
	struct harness *hs = user;
	pk_proxy_adopt_stream(&hs->srv, s, "192.0.2.7");
	return 0;
}

static const struct pk_yamux_callbacks link_cb = {
    .on_stream = link_on_stream,
    .on_data = pk_stream_dispatch_data,
    .on_fin = pk_stream_dispatch_fin,
    .on_writable = pk_stream_dispatch_writable,
    .on_stream_close = pk_stream_dispatch_close,
    .want_write = no_write,
    .on_go_away = no_go_away,
    .on_session_close = no_session_close,
};

/* The upstream's session, as upstream.c runs it (tunnel.c's dispatch). */
static const struct pk_yamux_callbacks upstream_cb = {
    .on_data = pk_stream_dispatch_data,
    .on_fin = pk_stream_dispatch_fin,
    .on_writable = pk_stream_dispatch_writable,
    .on_stream_close = pk_stream_dispatch_close,
    .want_write = no_write,
    .on_go_away = no_go_away,
    .on_session_close = no_session_close,
};

/* ---- the agent: one response segment per stream ------------------------ */

static struct agent_stream *agent_find(struct harness *hs, struct pk_yamux_stream *s)
{
	for (size_t i = 0; i < hs->nas; i++)
		if (hs->as[i].s == s)
			return &hs->as[i];
	return NULL;
}

static int agent_on_stream(void *user, struct pk_yamux_stream *s)
{
	struct harness *hs = user;
	if (hs->nas == MAX_AGENT)
		return -1;
	struct agent_stream *a = &hs->as[hs->nas++];
	memset(a, 0, sizeof(*a));
	a->s = s;
	if (hs->next_seg < hs->nsegs)
		a->resp = hs->segs[hs->next_seg++];
	return 0;
}

static void agent_on_data(void *user, struct pk_yamux_stream *s, const uint8_t *data, size_t len)
{
	(void)user;
	(void)data;
	pk_yamux_stream_consumed(s, len);
}

static void agent_on_close(void *user, struct pk_yamux_stream *s, int reset)
{
	struct harness *hs = user;
	(void)reset;
	struct agent_stream *a = agent_find(hs, s);
	if (a)
		*a = hs->as[--hs->nas];
}

static const struct pk_yamux_callbacks agent_cb = {
    .on_stream = agent_on_stream,
    .on_data = agent_on_data,
    .on_fin = no_stream_fn,
    .on_writable = no_stream_fn,
    .on_stream_close = agent_on_close,
    .want_write = no_write,
    .on_go_away = no_go_away,
    .on_session_close = no_session_close,
};

/* Write up to max bytes of each agent stream's response; FIN (or, with no
 * response for it, reset) once it is all written. */
static void agent_step(struct harness *hs, size_t max)
{
	for (size_t i = 0; i < hs->nas; i++) {
		struct agent_stream *a = &hs->as[i];
		if (a->fin_sent)
			continue;
		if (!a->resp.p) {
			a->fin_sent = 1;
			pk_yamux_stream_reset(a->s);
			continue;
		}
		size_t n = a->resp.n < max ? a->resp.n : max;
		size_t w = n ? pk_yamux_stream_write(a->s, a->resp.p, n) : 0;
		a->resp.p += w;
		a->resp.n -= w;
		if (a->resp.n == 0 && !hs->agent_stay) {
			a->fin_sent = 1;
			pk_yamux_stream_close(a->s, pk_now_ms());
		}
	}
}

/* ---- moving bytes between the sessions --------------------------------- */

/* One direction: what from has to send, fed to to. 1 when bytes moved. */
static int move(struct harness *hs, struct pk_yamux_session *from, struct pk_yamux_session *to)
{
	size_t n = pk_yamux_session_fill(from, hs->buf, sizeof(hs->buf));
	if (n == 0)
		return 0;
	/* proxy.c may unmask WebSocket frames in place: the fed bytes must be
	 * writable, as link.c's receive copy is. */
	pk_yamux_session_feed(to, hs->buf, n);
	return 1;
}

static void pump(struct harness *hs)
{
	for (int i = 0; i < 10000; i++) {
		int moved = move(hs, hs->client, hs->link);
		moved |= move(hs, hs->link, hs->client);
		moved |= move(hs, hs->up.tunnel.sess, hs->agent);
		moved |= move(hs, hs->agent, hs->up.tunnel.sess);
		if (!moved)
			return;
	}
	abort(); /* the sessions never settle */
}

/* ---- setup ---------------------------------------------------------------- */

static void split_input(struct harness *hs, const uint8_t *data, size_t size, size_t *client_len)
{
	const uint8_t *r = memmem(data, size, SEP_RESP, strlen(SEP_RESP));
	*client_len = r ? (size_t)(r - data) : size;
	if (!r)
		return;
	const uint8_t *p = r + strlen(SEP_RESP), *end = data + size;
	while (hs->nsegs < MAX_SEGS) {
		const uint8_t *q = memmem(p, (size_t)(end - p), SEP_NEXT, strlen(SEP_NEXT));
		size_t n = q ? (size_t)(q - p) : (size_t)(end - p);
		hs->segs[hs->nsegs].p = p;
		hs->segs[hs->nsegs].n = n;
		hs->nsegs++;
		if (!q)
			break;
		p = q + strlen(SEP_NEXT);
	}
}

static void register_metrics(struct pk_server *srv)
{
	static const char *const status_method[] = {"status", "method"};
	static const char *const cap[] = {"cap"};
	static const double buckets[] = {0.1, 1, 10};
	struct pk_metrics *m = srv->metrics;
	srv->m.requests_in_flight =
	    pk_metrics_register(m, PK_METRIC_GAUGE, "in_flight", "", NULL, 0, NULL, 0);
	srv->m.requests_total = pk_metrics_register(m, PK_METRIC_COUNTER, "requests_total", "",
	                                            status_method, 2, NULL, 0);
	srv->m.request_latency = pk_metrics_register(m, PK_METRIC_HISTOGRAM, "latency", "",
	                                             status_method, 2, buckets, 3);
	srv->m.request_size =
	    pk_metrics_register(m, PK_METRIC_HISTOGRAM, "req_size", "", NULL, 0, buckets, 3);
	srv->m.response_size =
	    pk_metrics_register(m, PK_METRIC_HISTOGRAM, "resp_size", "", NULL, 0, buckets, 3);
	srv->m.connected_upstreams =
	    pk_metrics_register(m, PK_METRIC_GAUGE, "upstreams", "", NULL, 0, NULL, 0);
	srv->m.registered_endpoints =
	    pk_metrics_register(m, PK_METRIC_GAUGE, "endpoints", "", NULL, 0, NULL, 0);
	srv->m.upstream_requests_total =
	    pk_metrics_register(m, PK_METRIC_COUNTER, "upstream_requests", "", NULL, 0, NULL, 0);
	srv->m.open_streams =
	    pk_metrics_register(m, PK_METRIC_GAUGE, "open_streams", "", NULL, 0, NULL, 0);
	srv->m.caps_refused =
	    pk_metrics_register(m, PK_METRIC_COUNTER, "caps_refused", "", cap, 1, NULL, 0);
}

static void setup(struct harness *hs)
{
	uint64_t now = pk_now_ms();
	struct pk_server_config *cfg = &hs->cfg;
	cfg->proxy.timeout_ms = 30000;
	cfg->proxy.http.read_header_timeout_ms = 10000;
	cfg->proxy.http.idle_timeout_ms = 60000;
	cfg->proxy.http.max_header_bytes = (hs->flags & F_SMALL_HEAD) ? 256 : 8192;
	cfg->proxy.access_log.level = "info";

	struct pk_server *srv = &hs->srv;
	srv->cfg = cfg;
	srv->registry = pk_registry_new();
	srv->metrics = pk_metrics_new();
	register_metrics(srv);
	srv->shutting_down = !!(hs->flags & F_SHUTDOWN);

	struct pk_yamux_config ycfg;
	pk_yamux_config_default(&ycfg);
	ycfg.keepalive_ms = 0;
	hs->client = pk_yamux_session_new(1, &ycfg, &client_cb, hs, now);
	hs->link = pk_yamux_session_new(0, &ycfg, &link_cb, hs, now);
	hs->agent = pk_yamux_session_new(1, &ycfg, &agent_cb, hs, now);
	if (hs->flags & F_TIGHT_UP) {
		ycfg.max_pending_opens = 1;
		ycfg.max_streams = 1;
	}
	hs->up.srv = srv;
	hs->up.endpoint = "ep";
	hs->up.tunnel.sess = pk_yamux_session_new(0, &ycfg, &upstream_cb, &hs->up, now);
	if (!(hs->flags & F_NO_UPSTREAM)) {
		pk_registry_add(srv->registry, "ep", &hs->up);
		hs->up.registered = 1;
	}
	int conns = (hs->flags & F_TWO_CONNS) ? 2 : 1;
	for (int i = 0; i < conns; i++)
		hs->cs[i] = pk_yamux_stream_open(hs->client, now);
	pump(hs);
}

static void teardown(struct harness *hs)
{
	/* The client side first, as when a node link drops: the connections
	 * close, their exchanges reset their streams and wait for them. */
	pk_yamux_session_free(hs->client);
	pk_yamux_session_free(hs->link);
	pk_yamux_session_free(hs->agent);
	pk_yamux_session_free(hs->up.tunnel.sess);
	CHECK(hs->srv.conns == NULL);
	CHECK(hs->srv.in_flight == 0);
	CHECK(hs->srv.n_waiting == 0 && hs->srv.waiting_head == NULL);
	pk_registry_free(hs->srv.registry);
	pk_metrics_free(hs->srv.metrics);
}

/* ---- the run ---------------------------------------------------------------- */

static const size_t chunk_max[4] = {3, 31, 700, 70000};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int quiet;
	if (!quiet) {
		/* Every path logs; the records are not what is tested. */
		int fd = open("/dev/null", O_WRONLY);
		if (fd >= 0)
			pk_log_set_fd(fd);
		pk_log_set_level(PK_LOG_DEBUG);
		debug_output = getenv("PK_FUZZ_DEBUG") != NULL;
		quiet = 1;
	}
	if (size < 2)
		return 0;
	struct harness *hs = calloc(1, sizeof(*hs));
	CHECK(hs);
	hs->flags = data[0];
	hs->rng = 0x9e3779b9u ^ ((uint32_t)data[1] << 8 | data[1]);
	hs->agent_stay = !!(hs->flags & F_AGENT_STAY);
	size_t max_chunk = chunk_max[data[1] & 3];
	data += 2;
	size -= 2;
	size_t client_len;
	split_input(hs, data, size, &client_len);
	setup(hs);

	size_t off = 0;
	int stalls = 0;
	while (off < client_len) {
		uint32_t r = next_rand(&hs->rng);
		if (debug_output)
			fprintf(stderr, "[action %u at %zu/%zu]\n", r % 16, off, client_len);
		switch (r % 16) {
		case 12:
			agent_step(hs, 1 + (r >> 8) % max_chunk);
			break;
		case 13:
			client_read(hs);
			break;
		case 14: {
			/* The server's tick, mostly now, sometimes later:
			 * timeouts fire (504, header and idle timeouts,
			 * waiting exchanges). */
			static const uint64_t later[8] = {0, 0, 0, 0, 0, 0, 35000, 70000};
			pk_proxy_tick(&hs->srv, pk_now_ms() + later[(r >> 8) & 7]);
			break;
		}
		case 15:
			/* Now and then the agent leaves (Go Away: the upstream
			 * goes out of rotation) or drops a stream mid-way. */
			if (((r >> 8) & 31) == 0) {
				pk_yamux_session_go_away(hs->agent, PK_YAMUX_GOAWAY_NORMAL);
				break;
			}
			if (((r >> 8) & 31) == 1 && hs->nas) {
				if (!hs->as[0].fin_sent) {
					hs->as[0].fin_sent = 1;
					pk_yamux_stream_reset(hs->as[0].s);
				}
				break;
			}
			/* Mostly a write, as below. */
			/* fall through */
		default: {
			int i = (hs->flags & F_TWO_CONNS) ? (int)((r >> 4) & 1) : 0;
			if (!hs->cs[i] || hs->cs_fin[i]) {
				i = !i;
				if (!hs->cs[i] || hs->cs_fin[i]) {
					off = client_len; /* nobody left to send */
					break;
				}
			}
			size_t n = 1 + (r >> 8) % max_chunk;
			if (n > client_len - off)
				n = client_len - off;
			size_t w = pk_yamux_stream_write(hs->cs[i], data + off, n);
			off += w;
			if (w)
				stalls = 0;
			break;
		}
		}
		pump(hs);
		/* Nothing moves while the window is shut: the client reads and
		 * the agent answers until it does, then it gives up. */
		if (++stalls > 64) {
			client_read(hs);
			agent_step(hs, SIZE_MAX);
			pump(hs);
			if (stalls > 256)
				break;
		}
	}
	/* The end: the agent says everything, the client reads it. */
	if (hs->flags & F_CLIENT_FIN) {
		for (int i = 0; i < 2; i++) {
			if (hs->cs[i] && !hs->cs_fin[i]) {
				hs->cs_fin[i] = 1;
				pk_yamux_stream_close(hs->cs[i], pk_now_ms());
			}
		}
	}
	for (int round = 0; round < 8; round++) {
		agent_step(hs, SIZE_MAX);
		client_read(hs);
		pump(hs);
	}
	pk_proxy_tick(&hs->srv, pk_now_ms());
	pump(hs);
	pk_proxy_tick(&hs->srv, pk_now_ms() + 400000);
	client_read(hs);
	pump(hs);
	teardown(hs);
	free(hs);
	return 0;
}
