/*
 * Upstream listeners (piko_listen) and forwarders (piko_listen_and_forward):
 * a WebSocket to <url>/piko/v1/upstream/<endpoint> (core/wsconn.c, as the
 * agent's) carrying a yamux session
 * in which we are the client (core/tunnel.c), redialled with backoff when
 * it drops, as the Go SDK's Listener does; every stream the server opens
 * is piped (core/pipe.c) to one end of a socketpair, whose other end waits
 * in the accept queue for the program, or, for a forwarder, to a new TCP
 * connection to its address.
 *
 * Locking: fields marked "loop" are the loop thread's alone; fields marked
 * "mu" are shared with the program's threads under l->mu.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backoff.h"
#include "buf.h"
#include "client_internal.h"
#include "log.h"
#include "pipe.h"
#include "tls.h"
#include "tunnel.h"
#include "wsconn.h"

#define TICK_US (250 * LWS_US_PER_MS)
/* Streams waiting for piko_accept (yamux's own accept backlog). */
#define ACCEPT_CAP 256

enum { ST_CONNECTING = 0, ST_UP, ST_FAILED, ST_CLOSED };

struct piko_listener {
	/* Set at creation, then read-only. */
	char *endpoint;
	char host[256];
	int port, tls, insecure;
	char path[1400]; /* the upgrade request's path */
	char *headers;   /* the upgrade's Authorization and tenant lines */
	char *ca, *cert, *key;
	uint64_t connect_timeout_ms;
	char *fwd_host; /* forwarder: where streams go, else NULL */
	int fwd_port;

	/* loop */
	SSL_CTX *tls_ctx;        /* https: our CAs (else the system's), the client certificate */
	struct pk_tunnel tunnel; /* pk_tunnel_dial's; tunnel.wsc NULL when idle */
	int up;
	int dead; /* shut down: no more dials, no more streams */
	int ever_up;
	uint64_t started_ms;
	struct pk_backoff backoff;
	lws_sorted_usec_list_t retry_sul, tick_sul;
	char last_error[200];

	pthread_mutex_t mu;
	pthread_cond_t cv;
	int state;                 /* mu */
	struct piko_error failure; /* mu: why ST_FAILED */
	int fds[ACCEPT_CAP];       /* mu: ring of accepted fds */
	size_t fd_head, fd_n;      /* mu */
	size_t streams;            /* mu: pipes alive */
	int closed;                /* mu: piko_listener_close called */
	/* mu: piko_listener_fd()'s eventfd (-1 until asked for), and whether
	 * it is readable now: exactly while piko_accept would not block. */
	int ready_fd;
	int ready_set;
};

struct piko_forwarder {
	struct piko_listener *l;
};

/* Keep piko_listener_fd() readable exactly while piko_accept() would not
 * block (a stream waits, or the listener is closed or failed): level
 * triggered, as a listening socket is, so any event loop can watch it.
 * Called with mu held after every change of those. */
static void update_ready(struct piko_listener *l)
{
	if (l->ready_fd < 0)
		return;
	int want = l->fd_n > 0 || l->closed || l->state == ST_FAILED;
	uint64_t v = 1;
	if (want && !l->ready_set) {
		if (write(l->ready_fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
			l->ready_set = 1;
	} else if (!want && l->ready_set) {
		if (read(l->ready_fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
			l->ready_set = 0;
	}
}

/* ---- loop thread ---------------------------------------------------------- */

static void dial(struct piko_listener *l);

static void set_state(struct piko_listener *l, int st, const struct piko_error *why)
{
	pthread_mutex_lock(&l->mu);
	if (l->state != ST_CLOSED && l->state != ST_FAILED) {
		l->state = st;
		if (why)
			l->failure = *why;
	}
	update_ready(l);
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->mu);
}

static void retry_cb(lws_sorted_usec_list_t *sul)
{
	dial(lws_container_of(sul, struct piko_listener, retry_sul));
}

static void fail(struct piko_listener *l, int code, const char *msg)
{
	struct piko_error e;
	pkc_error(&e, code, "%s", msg);
	l->dead = 1;
	set_state(l, ST_FAILED, &e);
}

static void schedule_retry(struct piko_listener *l, const char *why)
{
	if (l->dead)
		return;
	snprintf(l->last_error, sizeof(l->last_error), "%s", why);
	if (!l->ever_up && l->connect_timeout_ms &&
	    pk_now_ms() - l->started_ms >= l->connect_timeout_ms) {
		char msg[256];
		snprintf(msg, sizeof(msg), "connect timeout: %s", why);
		fail(l, PIKO_ETIMEDOUT, msg);
		return;
	}
	uint64_t wait = pk_backoff_next(&l->backoff);
	pk_log(PK_LOG_WARN, "client", "disconnected; reconnecting", "endpoint-id", l->endpoint,
	       "error", why, NULL);
	lws_sul_schedule(pkc_rt_context(), 0, &l->retry_sul, retry_cb,
	                 (lws_usec_t)wait * LWS_US_PER_MS);
}

static const struct pk_tunnel_hooks dial_hooks;
static const struct pk_tunnel_ops tunnel_ops;

static void dial(struct piko_listener *l)
{
	if (l->dead || l->tunnel.wsc)
		return;
	struct pk_wsconn_target t = {
	    .host = l->host,
	    .port = l->port,
	    .path = l->path,
	    .headers = l->headers,
	    .tls = l->tls_ctx,
	    .verify_name = !l->insecure,
	    .connect_timeout_ms = PK_WSCONN_PIKO_TIMEOUT_MS,
	    .handshake_timeout_ms = PK_WSCONN_PIKO_TIMEOUT_MS,
	};
	if (pk_tunnel_dial(&l->tunnel, pkc_rt_context(), &t, &tunnel_ops, &dial_hooks, l) < 0)
		schedule_retry(l, "cannot create a socket");
}

static void tick(lws_sorted_usec_list_t *sul)
{
	struct piko_listener *l = lws_container_of(sul, struct piko_listener, tick_sul);
	if (l->up)
		pk_tunnel_tick(&l->tunnel, pk_now_ms());
	lws_sul_schedule(pkc_rt_context(), 0, sul, tick, TICK_US);
}

static void pipe_free(void *user)
{
	struct piko_listener *l = user;
	pthread_mutex_lock(&l->mu);
	l->streams--;
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->mu);
}

static const struct pk_pipe_hooks pipe_hooks = {.on_free = pipe_free};

/* A stream for the program: one end of a socketpair piped to it, the other
 * queued for piko_accept. */
static int accept_fd_stream(struct piko_listener *l, struct pk_yamux_stream *s)
{
	int sv[2];
	pthread_mutex_lock(&l->mu);
	int full = l->closed || l->fd_n >= ACCEPT_CAP;
	pthread_mutex_unlock(&l->mu);
	if (full)
		return -1; /* refused: the server resets it */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
		return -1;
	/* pk_sock wants its descriptors nonblocking; the program's end stays
	 * blocking, as accept(2) would give it. */
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
	if (pk_pipe_adopt(s, sv[0], &pipe_hooks, l) < 0) {
		close(sv[1]);
		return -1;
	}
	pthread_mutex_lock(&l->mu);
	l->streams++;
	if (l->closed || l->fd_n >= ACCEPT_CAP) {
		/* Closed (or filled by nobody else: only this thread adds)
		 * since the check above: nobody will accept it, and the pipe
		 * sees its EOF. */
		close(sv[1]);
	} else {
		l->fds[(l->fd_head + l->fd_n) % ACCEPT_CAP] = sv[1];
		l->fd_n++;
	}
	update_ready(l);
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->mu);
	return 0;
}

static int on_stream(struct pk_tunnel *t, struct pk_yamux_stream *s)
{
	struct piko_listener *l = t->owner;
	if (l->dead)
		return -1;
	if (!l->fwd_host)
		return accept_fd_stream(l, s);
	pthread_mutex_lock(&l->mu);
	int closed = l->closed;
	pthread_mutex_unlock(&l->mu);
	if (closed || pk_pipe_connect(s, l->fwd_host, l->fwd_port, 30000, &pipe_hooks, l) < 0)
		return -1;
	pthread_mutex_lock(&l->mu);
	l->streams++;
	pthread_mutex_unlock(&l->mu);
	return 0;
}

static const struct pk_tunnel_ops tunnel_ops = {.on_stream = on_stream};

static void on_up(struct pk_tunnel *t)
{
	struct piko_listener *l = t->owner;
	l->up = 1;
	l->ever_up = 1;
	pk_backoff_reset(&l->backoff);
	pk_log(PK_LOG_INFO, "client", "connected", "endpoint-id", l->endpoint, NULL);
	pthread_mutex_lock(&l->mu);
	if (l->closed) /* closed while this dial was in flight */
		pk_yamux_session_go_away(l->tunnel.sess, PK_YAMUX_GOAWAY_NORMAL);
	pthread_mutex_unlock(&l->mu);
	set_state(l, ST_UP, NULL);
}

static void on_down(struct pk_tunnel *t, int was_up, int status, const char *error, const char *why)
{
	struct piko_listener *l = t->owner;
	if (!was_up) {
		if (!pk_tunnel_retryable(status)) {
			/* Piko's report: `<status>: <the error of its JSON body>`. */
			char msg[320];
			if (error[0])
				snprintf(msg, sizeof(msg), "connect: %d: %s", status, error);
			else
				snprintf(msg, sizeof(msg), "connect: %d", status);
			fail(l, PIKO_EREFUSED, msg);
			return;
		}
		char st[16];
		snprintf(st, sizeof(st), "%d", status);
		schedule_retry(l, status ? st : why);
		return;
	}
	l->up = 0;
	set_state(l, ST_CONNECTING, NULL);
	pthread_mutex_lock(&l->mu);
	int closed = l->closed;
	pthread_mutex_unlock(&l->mu);
	if (!closed)
		schedule_retry(l, why);
}

static const struct pk_tunnel_hooks dial_hooks = {.on_up = on_up, .on_down = on_down};

/* Start: the TLS context if needed, the first dial, the tick. */
static void start_on_loop(void *arg)
{
	struct piko_listener *l = arg;
	struct lws_context *ctx = pkc_rt_context();
	if (l->tls) {
		/* Owner: the listener (freed with it); connections hold their
		 * own reference. */
		struct pk_tls_client_config tc = {
		    .cert = l->cert,
		    .key = l->key,
		    .root_cas = l->ca,
		    .insecure_skip_verify = l->insecure,
		};
		char err[256];
		l->tls_ctx = pk_tls_client_ctx(&tc, err, sizeof(err));
		if (!l->tls_ctx) {
			fail(l, PIKO_EINVAL, "tls: cannot load the CA, certificate or key");
			return;
		}
	}
	l->started_ms = pk_now_ms();
	lws_sul_schedule(ctx, 0, &l->tick_sul, tick, TICK_US);
	dial(l);
}

static void close_on_loop(void *arg)
{
	struct piko_listener *l = arg;
	lws_sul_cancel(&l->retry_sul);
	if (l->up)
		pk_yamux_session_go_away(l->tunnel.sess, PK_YAMUX_GOAWAY_NORMAL);
	else
		l->dead = 1; /* nothing to keep: no dial from now on */
}

static void shutdown_on_loop(void *arg)
{
	struct piko_listener *l = arg;
	l->dead = 1;
	lws_sul_cancel(&l->retry_sul);
	/* The connection is reset and tells us nothing more; the session is
	 * freed here, which resets its streams. */
	pk_tunnel_abandon(&l->tunnel);
	l->up = 0;
	lws_sul_cancel(&l->tick_sul);
}

/* ---- the program's threads -------------------------------------------------- */

static char *dup_or_null(const char *s)
{
	return s && *s ? pk_xstrdup(s) : NULL;
}

static void listener_free_fields(struct piko_listener *l)
{
	while (l->fd_n) { /* queued after the last close (see mark_closed) */
		close(l->fds[l->fd_head]);
		l->fd_head = (l->fd_head + 1) % ACCEPT_CAP;
		l->fd_n--;
	}
	if (l->ready_fd >= 0)
		close(l->ready_fd);
	pthread_mutex_destroy(&l->mu);
	pthread_cond_destroy(&l->cv);
	free(l->endpoint);
	free(l->ca);
	free(l->cert);
	free(l->key);
	free(l->fwd_host);
	free(l->headers);
	SSL_CTX_free(l->tls_ctx);
	free(l);
}

/* Parse options into a new listener (no runtime yet). NULL with err. */
static struct piko_listener *listener_new(const struct piko_options *opts, const char *endpoint,
                                          struct piko_error *err)
{
	struct piko_options def;
	if (!opts) {
		piko_options_init(&def);
		opts = &def;
	}
	if (!endpoint || !*endpoint || strchr(endpoint, '/')) {
		pkc_error(err, PIKO_EINVAL, "invalid endpoint id: %s", endpoint ? endpoint : "");
		return NULL;
	}
	if ((opts->tls_cert_file && *opts->tls_cert_file) !=
	    (opts->tls_key_file && *opts->tls_key_file)) {
		pkc_error(err, PIKO_EINVAL, "tls: a client certificate needs its key and back");
		return NULL;
	}
	if (opts->max_window_size && opts->max_window_size < PK_YAMUX_INITIAL_WINDOW) {
		pkc_error(err, PIKO_EINVAL, "max window size must be >= %u",
		          PK_YAMUX_INITIAL_WINDOW);
		return NULL;
	}
	char url[2048];
	const char *url_in = opts->url ? opts->url : "http://localhost:8001";
	snprintf(url, sizeof(url), "%s", url_in);
	const char *prot, *ads, *path;
	int port;
	if (lws_parse_uri(url, &prot, &ads, &port, &path) || !*ads ||
	    (strcmp(prot, "http") && strcmp(prot, "https") && strcmp(prot, "ws") &&
	     strcmp(prot, "wss"))) {
		pkc_error(err, PIKO_EINVAL, "invalid url: %s", url_in);
		return NULL;
	}
	/* Owner: the caller of piko_listen (piko_listener_free). */
	struct piko_listener *l = pk_xcalloc(1, sizeof(*l));
	pthread_mutex_init(&l->mu, NULL);
	pkc_cond_init(&l->cv);
	l->ready_fd = -1;
	l->tls = !strcmp(prot, "https") || !strcmp(prot, "wss");
	snprintf(l->host, sizeof(l->host), "%s", ads);
	l->port = port;
	/* lws gives the URL's path without its leading '/', or "/" when there
	 * is none; Piko appends its own to it (the agent's escaping, which
	 * keeps '-', '.', '_' and '~' as Go does, where lws_urlencode would
	 * not). */
	if (!strcmp(path, "/"))
		path = "";
	char base[1024];
	snprintf(base, sizeof(base), "%s%s", *path ? "/" : "", path);
	pk_wsconn_piko_upstream_path(base, endpoint, l->path, sizeof(l->path));
	l->endpoint = pk_xstrdup(endpoint);
	l->headers = pk_wsconn_piko_headers(opts->token, opts->tenant_id);
	l->ca = dup_or_null(opts->tls_ca_file);
	l->cert = dup_or_null(opts->tls_cert_file);
	l->key = dup_or_null(opts->tls_key_file);
	l->insecure = opts->tls_insecure_skip_verify;
	l->connect_timeout_ms = opts->connect_timeout_ms;
	l->tunnel.window = opts->max_window_size; /* kept by every dial */
	pk_backoff_init(&l->backoff, opts->min_reconnect_backoff_ms ?: 100,
	                opts->max_reconnect_backoff_ms ?: 15000);
	return l;
}

/* Start l on the loop and wait for its first connection. 0, or an error
 * (l is then shut down and freed). */
static int listener_start(struct piko_listener *l, struct piko_error *err)
{
	if (pkc_rt_get(err) < 0) {
		listener_free_fields(l);
		return err ? err->code : PIKO_ESYSTEM;
	}
	pkc_rt_call(start_on_loop, l);
	pthread_mutex_lock(&l->mu);
	while (l->state == ST_CONNECTING)
		pthread_cond_wait(&l->cv, &l->mu);
	int st = l->state;
	struct piko_error why = l->failure;
	pthread_mutex_unlock(&l->mu);
	if (st == ST_UP)
		return 0;
	if (err)
		*err = why;
	piko_listener_free(l);
	return why.code;
}

struct piko_listener *piko_listen(const struct piko_options *opts, const char *endpoint,
                                  struct piko_error *err)
{
	struct piko_listener *l = listener_new(opts, endpoint, err);
	if (!l || listener_start(l, err) < 0)
		return NULL;
	return l;
}

int piko_accept(struct piko_listener *l, int timeout_ms, struct piko_error *err)
{
	struct timespec ts;
	if (timeout_ms > 0)
		pkc_deadline(&ts, timeout_ms);
	pthread_mutex_lock(&l->mu);
	for (;;) {
		if (l->closed) {
			pthread_mutex_unlock(&l->mu);
			pkc_error(err, PIKO_ECLOSED, "listener closed");
			return -1;
		}
		if (l->state == ST_FAILED) {
			if (err)
				*err = l->failure;
			pthread_mutex_unlock(&l->mu);
			return -1;
		}
		if (l->fd_n) {
			int fd = l->fds[l->fd_head];
			l->fd_head = (l->fd_head + 1) % ACCEPT_CAP;
			l->fd_n--;
			update_ready(l);
			pthread_mutex_unlock(&l->mu);
			return fd;
		}
		if (timeout_ms == 0 ||
		    (timeout_ms > 0 && pthread_cond_timedwait(&l->cv, &l->mu, &ts) == ETIMEDOUT)) {
			pthread_mutex_unlock(&l->mu);
			pkc_error(err, PIKO_ETIMEDOUT, "accept: timed out");
			return -1;
		}
		if (timeout_ms < 0)
			pthread_cond_wait(&l->cv, &l->mu);
	}
}

int piko_listener_fd(struct piko_listener *l, struct piko_error *err)
{
	pthread_mutex_lock(&l->mu);
	if (l->ready_fd < 0) {
		/* Owner: l (closed by piko_listener_free). */
		l->ready_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (l->ready_fd < 0) {
			pthread_mutex_unlock(&l->mu);
			pkc_error(err, PIKO_ESYSTEM, "eventfd: %s", strerror(errno));
			return -1;
		}
		update_ready(l);
	}
	int fd = l->ready_fd;
	pthread_mutex_unlock(&l->mu);
	return fd;
}

int piko_listener_dispatch(struct piko_listener *l, piko_stream_cb cb, void *arg,
                           struct piko_error *err)
{
	int n = 0;
	for (;;) {
		struct piko_error e = {0};
		int fd = piko_accept(l, 0, &e);
		if (fd >= 0) {
			cb(arg, fd);
			n++;
			continue;
		}
		if (e.code == PIKO_ETIMEDOUT)
			return n; /* nothing more waits */
		if (err)
			*err = e;
		return n ? n : -1;
	}
}

/* Mark closed and close the fds nobody accepted (their pipes see EOF). */
static int mark_closed(struct piko_listener *l)
{
	pthread_mutex_lock(&l->mu);
	int was = l->closed;
	l->closed = 1;
	while (l->fd_n) {
		close(l->fds[l->fd_head]);
		l->fd_head = (l->fd_head + 1) % ACCEPT_CAP;
		l->fd_n--;
	}
	update_ready(l);
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->mu);
	return was;
}

void piko_listener_close(struct piko_listener *l)
{
	if (!mark_closed(l))
		pkc_rt_call(close_on_loop, l);
}

void piko_listener_shutdown(struct piko_listener *l)
{
	mark_closed(l);
	pkc_rt_call(shutdown_on_loop, l);
	pthread_mutex_lock(&l->mu);
	l->state = ST_CLOSED;
	pthread_mutex_unlock(&l->mu);
}

void piko_listener_free(struct piko_listener *l)
{
	if (!l)
		return;
	piko_listener_shutdown(l);
	/* The pipes point at l until their sockets are gone (they were reset
	 * by the shutdown; a few loop passes). */
	pthread_mutex_lock(&l->mu);
	while (l->streams)
		pthread_cond_wait(&l->cv, &l->mu);
	pthread_mutex_unlock(&l->mu);
	pkc_rt_put();
	listener_free_fields(l);
}

const char *piko_listener_endpoint(const struct piko_listener *l)
{
	return l->endpoint;
}

int piko_listener_connected(struct piko_listener *l)
{
	pthread_mutex_lock(&l->mu);
	int up = l->state == ST_UP && !l->closed;
	pthread_mutex_unlock(&l->mu);
	return up;
}

/* ---- forwarders ------------------------------------------------------------- */

struct piko_forwarder *piko_listen_and_forward(const struct piko_options *opts,
                                               const char *endpoint, const char *addr,
                                               struct piko_error *err)
{
	const char *colon = addr ? strrchr(addr, ':') : NULL;
	int port = colon ? atoi(colon + 1) : 0;
	if (!colon || port <= 0 || port > 65535 || colon == addr) {
		pkc_error(err, PIKO_EINVAL, "invalid address: %s (want host:port)",
		          addr ? addr : "");
		return NULL;
	}
	struct piko_listener *l = listener_new(opts, endpoint, err);
	if (!l)
		return NULL;
	l->fwd_host = pk_xstrndup(addr, (size_t)(colon - addr));
	l->fwd_port = port;
	if (listener_start(l, err) < 0)
		return NULL;
	/* Owner: the caller (piko_forwarder_free). */
	struct piko_forwarder *f = pk_xcalloc(1, sizeof(*f));
	f->l = l;
	return f;
}

void piko_forwarder_close(struct piko_forwarder *f)
{
	piko_listener_close(f->l);
}

int piko_forwarder_wait(struct piko_forwarder *f, int timeout_ms)
{
	struct piko_listener *l = f->l;
	struct timespec ts;
	if (timeout_ms >= 0)
		pkc_deadline(&ts, timeout_ms);
	int rc = 0;
	pthread_mutex_lock(&l->mu);
	while (!(l->closed && l->streams == 0)) {
		if (timeout_ms < 0) {
			pthread_cond_wait(&l->cv, &l->mu);
		} else if (pthread_cond_timedwait(&l->cv, &l->mu, &ts) == ETIMEDOUT) {
			rc = PIKO_ETIMEDOUT;
			break;
		}
	}
	pthread_mutex_unlock(&l->mu);
	return rc;
}

void piko_forwarder_free(struct piko_forwarder *f)
{
	if (!f)
		return;
	piko_listener_free(f->l);
	free(f);
}
