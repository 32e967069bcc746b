/*
 * `piko bench http`: the run (upstreams through the agent, then the clients)
 * and its result.
 *
 * The upstreams are the agent's own listeners, endpoint-(i % endpoints) for
 * upstream i, as in Piko, run by pk_agent_run_hooked() with every stream
 * answered by bench_echo.c. Once every tunnel is up (and one agent tick
 * later, so that the server has certainly registered the last one), the
 * clients start and the clock with them.
 *
 * Each client is one keep-alive connection to the proxy URL (a core/sock.c
 * connection, TLS for https://) sending its share of the requests one after
 * the other, as each of Piko's clients does: a fresh random body per
 * request, `x-piko-endpoint: endpoint-<random>`, `Content-Length`. The
 * response body is compared with the request's as it arrives. A request
 * fails on an error (connection refused or closed, a malformed response, no
 * answer within connect.timeout), a status other than 200, or an echo that
 * differs; its connection is then dropped and the next request opens a new
 * one.
 *
 * Where Piko is silent we chose: failures are counted and logged (the first
 * LOG_FAILURES of them, then a count), a summary goes to stderr and the exit
 * status is 1 if any request failed; when the proxy cannot be reached before
 * any request succeeded, the run stops at once (every request would fail the
 * same way) with `bench: proxy <url>: <reason>`.
 *
 * Ownership: the bench and its clients live on pk_bench_run()'s stack and
 * heap until the agent's loop has returned (its teardown closes the client
 * sockets, whose on_close must still find their client).
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "buf.h"
#include "http1.h"
#include "log.h"
#include "runloop.h"
#include "sock.h"
#include "tls.h"

#define SUBSYS "bench"
#define MAX_HEAD (64 * 1024)
/* What a client's socket queues towards the proxy; the body goes out in
 * steps of this as it drains. */
#define SEND_CAP (64 * 1024)
/* Failures logged one by one; the rest are only counted. */
#define LOG_FAILURES 10

enum failure {
	FAIL_ERROR = 0, /* transport or protocol error, timeout */
	FAIL_STATUS,    /* a status other than 200 */
	FAIL_ECHO,      /* a 200 whose body is not the request's */
	FAIL_KINDS,
};

struct bench;

struct bench_client {
	struct bench *b;
	struct pk_sock *sock; /* NULL when no connection is open */
	int connected;        /* sock is established (once, ever, counts for fail-fast) */
	int64_t left;         /* requests not started yet */
	int busy;             /* a request is in progress */
	uint64_t deadline_ms;
	uint8_t *body; /* size bytes: this request's body; owned, freed at the end */
	size_t body_sent;
	char head[512];
	size_t head_len, head_sent;
	int status;       /* of the response, once its head is in */
	size_t matched;   /* response body bytes equal to the request's so far */
	int mismatch;     /* a response body byte differed, or there were too many */
	int reader_ready; /* resp is initialised */
	struct pk_http1_reader resp;
};

struct bench {
	const struct pk_bench_config *cfg;
	struct pk_agent *agent;
	struct pk_server_url proxy;
	char host_header[300];
	const char *path;
	SSL_CTX *tls; /* https:// proxy: the client context, else NULL */
	struct bench_client *clients;
	size_t nclients;
	int started;  /* clients running */
	int finished; /* result printed (or fatal): nothing more starts */
	int ready_seen;
	int64_t done, ok;
	int64_t failed[FAIL_KINDS];
	char first_failure[300];
	struct timespec t0;
	uint64_t rng;
};

/* xorshift64*: bodies need not be cryptographic, only different per
 * request (Piko uses crypto/rand; at 100,000 requests that is the cost of
 * the bench, not of the server). */
static uint64_t rnd(struct bench *b)
{
	b->rng ^= b->rng >> 12;
	b->rng ^= b->rng << 25;
	b->rng ^= b->rng >> 27;
	return b->rng * 0x2545F4914F6CDD1DULL;
}

static double elapsed_s(const struct bench *b)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - b->t0.tv_sec) + (double)(t.tv_nsec - b->t0.tv_nsec) / 1e9;
}

static void client_next(struct bench_client *c);

/* Let go of the client's connection: its callbacks find no client any more
 * (user NULL) and it closes on its own. */
static void drop_sock(struct bench_client *c, int abort)
{
	if (!c->sock)
		return;
	pk_sock_set_user(c->sock, NULL);
	pk_sock_close(c->sock, abort);
	c->sock = NULL;
	c->connected = 0;
}

static void finish(struct bench *b)
{
	b->finished = 1;
	int64_t nfailed = b->failed[FAIL_ERROR] + b->failed[FAIL_STATUS] + b->failed[FAIL_ECHO];
	/* Piko's line: every request counts, as in Piko. */
	printf("Throughput: %.1f requests/sec\n", (double)b->cfg->requests / elapsed_s(b));
	fflush(stdout);
	if (nfailed) {
		fprintf(stderr,
		        "bench: %lld of %lld requests failed (%lld errors, %lld bad status, %lld "
		        "wrong echoes); first: %s\n",
		        (long long)nfailed, (long long)b->cfg->requests,
		        (long long)b->failed[FAIL_ERROR], (long long)b->failed[FAIL_STATUS],
		        (long long)b->failed[FAIL_ECHO], b->first_failure);
	}
	pk_agent_exit(b->agent, nfailed ? 1 : 0);
}

static void fatal(struct bench *b, const char *why)
{
	b->finished = 1;
	pk_log(PK_LOG_ERROR, SUBSYS, "failed to run benchmark", "error", why, NULL);
	fprintf(stderr, "bench: %s\n", why);
	pk_agent_exit(b->agent, 1);
}

/* The request in progress is over. */
static void request_done(struct bench_client *c, int ok, enum failure kind, const char *why)
{
	struct bench *b = c->b;
	c->busy = 0;
	b->done++;
	if (ok) {
		b->ok++;
	} else {
		int64_t nfailed =
		    b->failed[FAIL_ERROR] + b->failed[FAIL_STATUS] + b->failed[FAIL_ECHO];
		b->failed[kind]++;
		if (!nfailed)
			snprintf(b->first_failure, sizeof(b->first_failure), "%s", why);
		if (nfailed < LOG_FAILURES)
			pk_log(PK_LOG_WARN, SUBSYS, "request failed", "error", why, NULL);
		else if (nfailed == LOG_FAILURES)
			pk_log(PK_LOG_WARN, SUBSYS, "more requests failed; counting only", NULL);
		/* Whatever the connection still carries belongs to this
		 * request: start the next one on a fresh connection. */
		drop_sock(c, 1);
	}
	if (b->done == b->cfg->requests) {
		finish(b);
		return;
	}
	client_next(c);
}

static void body_sink(void *arg, const char *data, size_t len)
{
	struct bench_client *c = arg;
	size_t size = (size_t)c->b->cfg->size;
	if (c->mismatch)
		return;
	if (len > size - c->matched || memcmp(c->body + c->matched, data, len)) {
		c->mismatch = 1;
		return;
	}
	c->matched += len;
}

static void pump(struct bench_client *c)
{
	size_t size = (size_t)c->b->cfg->size;
	while (c->sock && c->head_sent < c->head_len) {
		size_t w = pk_sock_write(c->sock, (const uint8_t *)c->head + c->head_sent,
		                         c->head_len - c->head_sent);
		if (!w)
			return; /* on_drain resumes */
		c->head_sent += w;
	}
	while (c->sock && c->body_sent < size) {
		size_t w = pk_sock_write(c->sock, c->body + c->body_sent, size - c->body_sent);
		if (!w)
			return;
		c->body_sent += w;
	}
}

static void response_complete(struct bench_client *c, int keep_alive)
{
	char why[200];
	if (c->status != 200) {
		snprintf(why, sizeof(why), "bad status: %d", c->status);
		request_done(c, 0, FAIL_STATUS, why);
		return;
	}
	if (c->mismatch || c->matched != (size_t)c->b->cfg->size) {
		snprintf(why, sizeof(why), "unexpected response body (%s)",
		         c->mismatch ? "bytes differ" : "too short");
		request_done(c, 0, FAIL_ECHO, why);
		return;
	}
	if (!keep_alive)
		drop_sock(c, 0);
	request_done(c, 1, FAIL_ERROR, NULL);
}

/* ---- the connection ------------------------------------------------------ */

static void on_connected(struct pk_sock *s)
{
	struct bench_client *c = pk_sock_user(s);
	if (c)
		c->connected = 1;
}

static void on_data(struct pk_sock *s, const uint8_t *data, size_t len)
{
	struct bench_client *c = pk_sock_user(s);
	size_t off = 0;
	while (c && c->busy && c->sock == s) {
		size_t used = 0;
		enum pk_http1_event ev =
		    pk_http1_reader_feed(&c->resp, (const char *)data + off, len - off, &used);
		off += used;
		if (ev == PK_HTTP1_ERROR) {
			char why[200];
			int st;
			snprintf(why, sizeof(why), "malformed response: %s",
			         pk_http1_reader_error(&c->resp, &st));
			request_done(c, 0, FAIL_ERROR, why);
			return;
		}
		if (ev == PK_HTTP1_HEAD)
			c->status = pk_http1_reader_head(&c->resp)->status;
		if (ev == PK_HTTP1_DONE) {
			/* The head stays readable until the next feed. */
			int keep = pk_http1_reader_head(&c->resp)->keep_alive;
			response_complete(c, keep && off == len);
			return;
		}
		if (ev == PK_HTTP1_NEED_MORE || (ev == PK_HTTP1_BODY && off == len))
			return;
	}
}

static void on_eof(struct pk_sock *s)
{
	struct bench_client *c = pk_sock_user(s);
	if (!c)
		return;
	if (c->busy && pk_http1_reader_eof(&c->resp)) {
		drop_sock(c, 0);
		response_complete(c, 0);
		return;
	}
	if (c->busy)
		request_done(c, 0, FAIL_ERROR, "connection closed before the response ended");
	else
		drop_sock(c, 0);
}

static void on_drain(struct pk_sock *s)
{
	struct bench_client *c = pk_sock_user(s);
	if (c)
		pump(c);
}

static void on_close(struct pk_sock *s, int reset, const char *why)
{
	(void)reset;
	struct bench_client *c = pk_sock_user(s);
	if (!c)
		return;
	struct bench *b = c->b;
	int was_connected = c->connected;
	c->sock = NULL;
	c->connected = 0;
	if (b->finished)
		return;
	if (!was_connected && !b->ok) {
		/* Not one request got through and the proxy takes no
		 * connection: every other request would fail the same way. */
		char msg[400];
		snprintf(msg, sizeof(msg), "proxy %s: %s", b->cfg->connect.proxy_url, why);
		fatal(b, msg);
		return;
	}
	if (c->busy) {
		char msg[200];
		snprintf(msg, sizeof(msg), "%s: %s", was_connected ? "connection" : "connect", why);
		request_done(c, 0, FAIL_ERROR, msg);
	}
}

static const struct pk_sock_ops client_ops = {
    .on_connected = on_connected,
    .on_data = on_data,
    .on_eof = on_eof,
    .on_drain = on_drain,
    .on_close = on_close,
};

/* ---- requests ------------------------------------------------------------ */

/* Start the client's next request, on its connection or a new one. */
static void client_next(struct bench_client *c)
{
	struct bench *b = c->b;
	if (b->finished || c->left == 0)
		return;
	if (!c->sock) {
		c->sock =
		    pk_sock_connect(b->proxy.host, b->proxy.port,
		                    (uint64_t)b->cfg->connect.timeout_ms, &client_ops, c, SEND_CAP);
		if (!c->sock) {
			fatal(b, "cannot create a socket");
			return;
		}
		if (b->tls)
			pk_sock_use_tls(c->sock, b->tls, b->proxy.host, 1);
		/* A fresh connection: a fresh reader. */
		if (c->reader_ready)
			pk_http1_reader_free(&c->resp);
		pk_http1_reader_init(&c->resp, PK_HTTP1_RESPONSE, MAX_HEAD);
		pk_http1_reader_set_body_sink(&c->resp, body_sink, c);
		c->reader_ready = 1;
	}
	c->left--;
	c->busy = 1;
	c->status = 0;
	c->matched = 0;
	c->mismatch = 0;
	c->deadline_ms = pk_now_ms() + (uint64_t)b->cfg->connect.timeout_ms;
	size_t size = (size_t)b->cfg->size;
	for (size_t i = 0; i < size; i += 8) {
		uint64_t r = rnd(b);
		memcpy(c->body + i, &r, size - i < 8 ? size - i : 8);
	}
	int n = snprintf(c->head, sizeof(c->head),
	                 "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: piko-bench\r\n"
	                 "X-Piko-Endpoint: endpoint-%llu\r\nContent-Length: %zu\r\n\r\n",
	                 b->path, b->host_header,
	                 (unsigned long long)(rnd(b) % (uint64_t)b->cfg->endpoints), size);
	c->head_len = (size_t)n;
	c->head_sent = 0;
	c->body_sent = 0;
	pump(c);
}

static void start_clients(struct bench *b)
{
	b->started = 1;
	pk_log(PK_LOG_INFO, SUBSYS, "upstreams registered; sending requests", NULL);
	clock_gettime(CLOCK_MONOTONIC, &b->t0);
	for (size_t i = 0; i < b->nclients && !b->finished; i++)
		client_next(&b->clients[i]);
}

/* ---- agent hooks --------------------------------------------------------- */

static int hook_accept(void *arg, struct pk_agent_listener *l, struct pk_yamux_stream *s)
{
	struct bench *b = arg;
	return pk_bench_echo_accept(l, s, (size_t)b->cfg->size);
}

static void hook_tick(void *arg, struct pk_agent *a, uint64_t now)
{
	struct bench *b = arg;
	/* The agent lives inside pk_agent_run_hooked(): kept for
	 * pk_agent_exit(). The first tick comes before any client starts. */
	b->agent = a;
	if (b->finished)
		return;
	if (pk_runloop_stop_requested()) {
		fatal(b, "interrupted");
		return;
	}
	char why[200];
	if (!b->started) {
		/* Ready on the previous tick too: our 101 came after the
		 * server registered the tunnel, but Piko's server registers it
		 * only after writing the 101. */
		int ready = pk_agent_ready(a, why, sizeof(why));
		if (ready && b->ready_seen)
			start_clients(b);
		b->ready_seen = ready;
		return;
	}
	for (size_t i = 0; i < b->nclients && !b->finished; i++) {
		struct bench_client *c = &b->clients[i];
		if (c->busy && now >= c->deadline_ms) {
			snprintf(why, sizeof(why), "timeout: no response within %lldms",
			         (long long)b->cfg->connect.timeout_ms);
			request_done(c, 0, FAIL_ERROR, why);
		}
	}
}

/* ---- the run ------------------------------------------------------------- */

int pk_bench_run(const struct pk_bench_config *cfg)
{
	struct bench b;
	char err[256];
	memset(&b, 0, sizeof(b));
	b.cfg = cfg;
	if (pk_server_url_parse(cfg->connect.proxy_url, &b.proxy, err, sizeof(err)) < 0) {
		fprintf(stderr, "config: server: %s\n", err);
		return 1;
	}
	if (strchr(b.proxy.host, ':'))
		snprintf(b.host_header, sizeof(b.host_header), "[%s]:%d", b.proxy.host,
		         b.proxy.port);
	else
		snprintf(b.host_header, sizeof(b.host_header), "%s:%d", b.proxy.host, b.proxy.port);
	b.path = b.proxy.path[0] ? b.proxy.path : "/";
	if (b.proxy.tls) {
		struct pk_tls_client_config none;
		memset(&none, 0, sizeof(none));
		/* Owner: this function; the sockets hold their own references. */
		b.tls = pk_tls_client_ctx(&none, err, sizeof(err));
		if (!b.tls) {
			fprintf(stderr, "bench: tls: %s\n", err);
			return 1;
		}
	}
	if (getrandom(&b.rng, sizeof(b.rng), 0) != sizeof(b.rng) || !b.rng)
		b.rng = (uint64_t)time(NULL) | 1;

	pk_log(PK_LOG_INFO, SUBSYS, "starting http benchmark", "version", PK_VERSION, NULL);

	/* The agent's view: one listener per upstream. Owner: this function
	 * (the endpoint ids and the listener array, freed below). */
	size_t nup = (size_t)cfg->upstreams;
	struct pk_listener_config *ls = pk_xcalloc(nup, sizeof(*ls));
	for (size_t i = 0; i < nup; i++) {
		char ep[64];
		snprintf(ep, sizeof(ep), "endpoint-%llu",
		         (unsigned long long)(i % (size_t)cfg->endpoints));
		ls[i].endpoint_id = pk_xstrdup(ep);
		ls[i].protocol = "http";
		ls[i].timeout_ms = cfg->connect.timeout_ms;
		ls[i].access_log.level = "debug";
	}
	struct pk_agent_config acfg;
	memset(&acfg, 0, sizeof(acfg));
	acfg.connect.url = cfg->connect.upstream_url;
	acfg.connect.timeout_ms = cfg->connect.timeout_ms;
	acfg.log.level = cfg->log.level;
	acfg.grace_period_ms = 1000;
	acfg.listeners.v = ls;
	acfg.listeners.n = nup;

	/* No more clients than requests: the others would have none to send. */
	b.nclients = (size_t)(cfg->clients < cfg->requests ? cfg->clients : cfg->requests);
	/* Owner: this function, freed after the loop (see the file comment). */
	b.clients = pk_xcalloc(b.nclients, sizeof(*b.clients));
	for (size_t i = 0; i < b.nclients; i++) {
		struct bench_client *c = &b.clients[i];
		c->b = &b;
		c->left = pk_bench_requests_for_client(cfg->requests, cfg->clients, (int64_t)i);
		c->body = pk_xmalloc((size_t)cfg->size);
	}

	struct pk_agent_hooks hooks = {
	    .accept = hook_accept,
	    .tick = hook_tick,
	    .arg = &b,
	};
	int rc = pk_agent_run_hooked(&acfg, &hooks);
	if (!b.finished && rc == 0) {
		/* The agent left its loop on its own (a signal before the
		 * upstreams were up). */
		fprintf(stderr, "bench: interrupted\n");
		rc = 1;
	}

	for (size_t i = 0; i < b.nclients; i++) {
		if (b.clients[i].reader_ready)
			pk_http1_reader_free(&b.clients[i].resp);
		free(b.clients[i].body);
	}
	free(b.clients);
	for (size_t i = 0; i < nup; i++)
		free(ls[i].endpoint_id);
	free(ls);
	SSL_CTX_free(b.tls);
	return rc;
}
