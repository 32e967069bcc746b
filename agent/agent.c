/*
 * The agent's lifecycle: one lws context, a tunnel per listener, reconnects
 * with backoff, and graceful shutdown (Go Away to the server so it routes
 * elsewhere, finish in-flight exchanges, exit within grace_period).
 *
 * The server's Go Away (it is shutting down; the connect URL leads to other
 * nodes too) moves a listener to a fresh tunnel without a moment without
 * one: the fresh tunnel is dialled at once into the listener's free slot
 * while the old one keeps serving; once the fresh one is up, the old one is
 * retired: our Go Away tells the server to stop routing to it, streams that
 * still arrive (a SYN may cross our Go Away) are served, and it is closed
 * once it has no streams and RETIRE_LINGER_MS passed, or after grace_period.
 * Its close is not a disconnection: the listener has its fresh tunnel.
 */
#include "agent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "runloop.h"
#include "sock.h"
#include "tls.h"
#include "wsconn.h"

#define SUBSYS "client"
#define TICK_US (250 * LWS_US_PER_MS)
/* How long a retired tunnel stays open after our Go Away even when idle:
 * the server may have opened streams before it read our Go Away. */
#define RETIRE_LINGER_MS 1000
/* How long the old tunnel keeps taking requests after the fresh one is up:
 * the fresh tunnel's node tells the other nodes of it over their links
 * (a round trip on a LAN), and only then may the old node stop routing
 * here, or a request in between would find the endpoint nowhere. */
#define RETIRE_DELAY_MS 300
/* On SIGTERM: after our Go Away, how long requests the server opened before
 * reading it may still arrive (a round trip; the same bound as a retiring
 * tunnel's). The agent exits once drained and this long has passed. */
#define SHUTDOWN_LINGER_MS RETIRE_LINGER_MS

static struct pk_agent_tunnel *current(struct pk_agent_listener *l)
{
	return &l->tun[l->cur];
}

static struct pk_agent_tunnel *other(struct pk_agent_listener *l)
{
	return &l->tun[!l->cur];
}

static void dial(struct pk_agent_listener *l);
static const struct pk_tunnel_hooks tunnel_dial_hooks;
static const struct pk_tunnel_ops agent_tunnel_ops;
static void boot_timeout(struct pk_agent *a, struct pk_agent_listener *l);

static void retry_cb(lws_sorted_usec_list_t *sul)
{
	struct pk_agent_listener *l = lws_container_of(sul, struct pk_agent_listener, retry_sul);
	dial(l);
}

static void schedule_retry(struct pk_agent_listener *l, const char *why)
{
	struct pk_agent *a = l->agent;
	if (a->shutting_down)
		return;
	uint64_t wait = pk_backoff_next(&l->backoff);
	char ms[32];
	snprintf(ms, sizeof(ms), "%llu", (unsigned long long)wait);
	pk_log(PK_LOG_WARN, SUBSYS,
	       l->ever_up ? "disconnected; reconnecting" : "connect failed; retrying",
	       "endpoint-id", l->cfg->endpoint_id, "error", why, "backoff-ms", ms, NULL);
	lws_sul_schedule(a->ctx, 0, &l->retry_sul, retry_cb, (lws_usec_t)wait * LWS_US_PER_MS);
}

static void fatal(struct pk_agent *a, const char *endpoint, const char *msg)
{
	pk_log(PK_LOG_ERROR, SUBSYS, "connect failed", "endpoint-id", endpoint, "error", msg, NULL);
	fprintf(stderr, "connect: %s\n", msg);
	a->exit_code = 1;
	a->exit_now = 1;
	lws_cancel_service(a->ctx);
}

/* Dial the current slot's tunnel (if that slot is free). A server name is
 * resolved off the loop by core/sock.c, which tries each address in turn,
 * as Go's dialer does. */
static void dial(struct pk_agent_listener *l)
{
	struct pk_agent *a = l->agent;
	struct pk_agent_tunnel *t = current(l);
	if (a->shutting_down || t->tunnel.wsc)
		return;
	char path[1400];
	pk_wsconn_piko_upstream_path(a->url.path, l->cfg->endpoint_id, path, sizeof(path));
	struct pk_wsconn_target wt = {
	    .host = a->url.host,
	    .port = a->url.port,
	    .path = path,
	    .headers = a->headers,
	    .tls = a->tls,
	    .verify_name = !a->cfg->connect.tls.insecure_skip_verify,
	    .connect_timeout_ms = PK_WSCONN_PIKO_TIMEOUT_MS,
	    .handshake_timeout_ms = PK_WSCONN_PIKO_TIMEOUT_MS,
	};
	pk_log(PK_LOG_DEBUG, SUBSYS, "connecting", "endpoint-id", l->cfg->endpoint_id, "url",
	       a->cfg->connect.url, NULL);
	t->tunnel.window = (uint32_t)a->cfg->stream.max_window_size;
	if (pk_tunnel_dial(&t->tunnel, a->ctx, &wt, &agent_tunnel_ops, &tunnel_dial_hooks, t) < 0)
		schedule_retry(l, "cannot create a socket");
}

static int on_stream(struct pk_tunnel *tn, struct pk_yamux_stream *s)
{
	struct pk_agent_tunnel *t = tn->owner;
	struct pk_agent_listener *l = t->l;
	/* Streams on a retiring tunnel, or after our shutdown began, are
	 * served like any other: the server opened them before it read our Go
	 * Away (refusing them failed requests another tunnel could serve). */
	const struct pk_agent_hooks *hk = l->agent->hooks;
	if (hk && hk->accept)
		return hk->accept(hk->arg, l, s);
	if (!strcmp(l->cfg->protocol, "tcp"))
		return pk_agent_tcp_accept(l, s);
	return pk_agent_http_accept(l, s);
}

/* Move the listener to a fresh tunnel in its other slot, the current one
 * (superseded) serving until the fresh one is up. If the other slot still
 * holds an older tunnel being retired, wait for it to close (at most
 * grace_period; see retire_tick): the current tunnel serves meanwhile. */
static void start_move(struct pk_agent_listener *l)
{
	if (other(l)->tunnel.wsc) {
		l->move_pending = 1;
		return;
	}
	l->move_pending = 0;
	l->cur = !l->cur;
	dial(l);
}

static void on_go_away(struct pk_tunnel *tn)
{
	struct pk_agent_tunnel *t = tn->owner;
	struct pk_agent_listener *l = t->l;
	/* Nothing to do when we are leaving anyway (our shutdown) or the
	 * tunnel is already being replaced or retired. */
	if (l->agent->shutting_down || t != current(l) || t->superseded)
		return;
	pk_log(PK_LOG_INFO, SUBSYS, "server going away; reconnecting", "endpoint-id",
	       l->cfg->endpoint_id, NULL);
	t->superseded = 1;
	start_move(l);
}

/* The fresh tunnel is up: ask the server to stop routing to the old one. */
static void retire(struct pk_agent_tunnel *t, uint64_t now)
{
	t->retiring = 1;
	t->goaway_ms = now;
	pk_yamux_session_go_away(t->tunnel.sess, PK_YAMUX_GOAWAY_NORMAL);
	pk_log(PK_LOG_INFO, SUBSYS, "retiring the old tunnel", "endpoint-id",
	       t->l->cfg->endpoint_id, NULL);
}

/* Close a retired tunnel once drained (and the stragglers' time is over),
 * or when grace_period is over whatever it still carries. */
static void retire_tick(struct pk_agent_tunnel *t, uint64_t now)
{
	if (t->up && !t->retiring && !t->closing && t->retire_at_ms && now >= t->retire_at_ms)
		retire(t, now);
	if (!t->up || !t->retiring || t->closing)
		return;
	uint64_t age = now - t->goaway_ms;
	size_t n = pk_yamux_session_num_streams(t->tunnel.sess);
	if (!(n == 0 && age >= RETIRE_LINGER_MS) &&
	    age < (uint64_t)t->l->agent->cfg->grace_period_ms)
		return;
	char ns[32];
	snprintf(ns, sizeof(ns), "%zu", n);
	pk_log(PK_LOG_INFO, SUBSYS, "closing the retired tunnel", "endpoint-id",
	       t->l->cfg->endpoint_id, "streams", ns, NULL);
	t->closing = 1;
	/* Within a few seconds even if the peer stopped reading. */
	pk_tunnel_close(&t->tunnel);
}

static void on_dead(struct pk_tunnel *tn, int reason)
{
	struct pk_agent_tunnel *t = tn->owner;
	struct pk_agent_listener *l = t->l;
	char r[16];
	snprintf(r, sizeof(r), "%d", reason);
	pk_log(PK_LOG_WARN, SUBSYS, "session failed", "endpoint-id", l->cfg->endpoint_id, "reason",
	       r, NULL);
}

static const struct pk_tunnel_ops agent_tunnel_ops = {
    .on_stream = on_stream,
    .on_go_away = on_go_away,
    .on_dead = on_dead,
};

/* The first connection kept failing for connect.timeout: exit, saying why. */
static void boot_timeout(struct pk_agent *a, struct pk_agent_listener *l)
{
	char why[320];
	if (l->last_error[0])
		snprintf(why, sizeof(why), "connect timeout: %s", l->last_error);
	else
		snprintf(why, sizeof(why), "connect timeout");
	fatal(a, l->cfg->endpoint_id, why);
}

/* ---- the tunnel's WebSocket (core/wsconn.c) ---------------------------------- */

static void on_up(struct pk_tunnel *tn)
{
	struct pk_agent_tunnel *t = tn->owner;
	struct pk_agent_listener *l = t->l;
	struct pk_agent *a = l->agent;
	uint64_t now = pk_now_ms();
	t->up = 1;
	l->ever_up = 1;
	pk_backoff_reset(&l->backoff);
	const char *ep[] = {l->cfg->endpoint_id};
	pk_metric_add(a->m.connects_total, ep, 1);
	snprintf(l->server_ip, sizeof(l->server_ip), "%s", pk_wsconn_peer_ip(tn->wsc));
	/* Once we retire this tunnel, a SYN that crossed our Go Away is still
	 * a request to serve, not to refuse. */
	pk_yamux_session_set_accept_after_go_away(t->tunnel.sess, 1);
	pk_log(PK_LOG_INFO, SUBSYS, "connected", "endpoint-id", l->cfg->endpoint_id, "url",
	       a->cfg->connect.url, NULL);
	if (a->shutting_down) {
		/* Dialled before our shutdown began: not for routing. */
		pk_yamux_session_go_away(t->tunnel.sess, PK_YAMUX_GOAWAY_NORMAL);
		return;
	}
	struct pk_agent_tunnel *o = other(l);
	if (t == current(l) && o->up && !o->retiring)
		o->retire_at_ms = now + RETIRE_DELAY_MS;
}

/* The dial failed, or the server refused the tunnel. */
static void dial_failed(struct pk_agent_tunnel *t, int status, const char *error,
                        const char *reason)
{
	struct pk_agent_listener *l = t->l;
	struct pk_agent *a = l->agent;
	char why[256];
	if (status)
		snprintf(why, sizeof(why), "%d", status);
	else
		snprintf(why, sizeof(why), "%s", reason);
	snprintf(l->last_error, sizeof(l->last_error), "%s", why);
	if (!pk_tunnel_retryable(status)) {
		/* Piko's report: `<status>: <the error of its JSON body>`. */
		char msg[512];
		snprintf(msg, sizeof(msg), "%d: %s", status,
		         error[0]        ? error
		         : status == 401 ? "unauthorized"
		                         : "unexpected status");
		fatal(a, l->cfg->endpoint_id, msg);
		return;
	}
	if (!l->ever_up && pk_now_ms() >= a->boot_deadline_ms) {
		boot_timeout(a, l);
		return;
	}
	schedule_retry(l, why);
}

static void on_down(struct pk_tunnel *tn, int was_up, int status, const char *error,
                    const char *why)
{
	struct pk_agent_tunnel *t = tn->owner;
	struct pk_agent_listener *l = t->l;
	if (!was_up) {
		if (!l->agent->shutting_down)
			dial_failed(t, status, error, why);
		return;
	}
	int was_current = t == current(l);
	int retired = t->retiring;
	t->up = 0;
	t->superseded = 0;
	t->retiring = 0;
	t->closing = 0;
	t->retire_at_ms = 0;
	if (was_current) {
		/* The normal reconnect; a move waiting for the other slot is
		 * moot (the reconnect is a fresh tunnel). */
		l->move_pending = 0;
		schedule_retry(l, why);
		return;
	}
	/* The old tunnel of a move: the current slot is up, being dialled or
	 * has its retry scheduled, so this is no disconnection of the
	 * listener. */
	pk_log(retired ? PK_LOG_INFO : PK_LOG_WARN, SUBSYS,
	       retired ? "retired tunnel closed"
	               : "old tunnel closed before its replacement was up",
	       "endpoint-id", l->cfg->endpoint_id, NULL);
	if (l->move_pending)
		start_move(l);
}

static const struct pk_tunnel_hooks tunnel_dial_hooks = {
    .on_up = on_up,
    .on_down = on_down,
};

/* The lws context's protocols: core/sock.c's carries every socket (the
 * tunnels, service connections, the admin port); the first is lws's default
 * for events of no protocol of ours. */
static const struct lws_protocols agent_protocols[] = {
    {.name = "piko-agent", .callback = lws_callback_http_dummy},
    {.name = NULL}, /* filled with pk_sock_protocols[0] at start */
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void begin_shutdown(struct pk_agent *a)
{
	if (a->shutting_down)
		return;
	pk_log(PK_LOG_INFO, SUBSYS, "shutting down", NULL);
	a->shutting_down = 1;
	a->shutdown_started_ms = pk_now_ms();
	a->shutdown_deadline_ms = a->shutdown_started_ms + (uint64_t)a->cfg->grace_period_ms;
	for (size_t i = 0; i < a->nlisteners; i++) {
		struct pk_agent_listener *l = &a->listeners[i];
		lws_sul_cancel(&l->retry_sul);
		l->move_pending = 0;
		/* Go Away on both tunnels (a retiring one has it already): the
		 * server stops routing new requests to us while those in
		 * flight finish. */
		for (int k = 0; k < 2; k++)
			if (l->tun[k].up) {
				/* SYNs that cross the Go Away are served (on_stream). */
				pk_yamux_session_set_accept_after_go_away(l->tun[k].tunnel.sess, 1);
				pk_yamux_session_go_away(l->tun[k].tunnel.sess,
				                         PK_YAMUX_GOAWAY_NORMAL);
			}
	}
}

int pk_agent_ready(const struct pk_agent *a, char *why, size_t cap)
{
	if (a->shutting_down) {
		snprintf(why, cap, "shutting down");
		return 0;
	}
	for (size_t i = 0; i < a->nlisteners; i++) {
		const struct pk_agent_listener *l = &a->listeners[i];
		int up = 0;
		/* A superseded tunnel still carries the listener until its
		 * replacement is up; a retiring one is only closed once the
		 * replacement is. */
		for (int k = 0; k < 2; k++)
			up |= l->tun[k].up && !l->tun[k].closing;
		if (!up) {
			snprintf(why, cap, "endpoint %s disconnected", l->cfg->endpoint_id);
			return 0;
		}
	}
	return 1;
}

static void tick(lws_sorted_usec_list_t *sul)
{
	struct pk_agent *a = lws_container_of(sul, struct pk_agent, tick_sul);
	uint64_t now = pk_now_ms();
	size_t streams = 0;
	for (size_t i = 0; i < a->nlisteners; i++) {
		struct pk_agent_listener *l = &a->listeners[i];
		for (int k = 0; k < 2; k++) {
			if (l->tun[k].up)
				pk_tunnel_tick(&l->tun[k].tunnel, now);
			retire_tick(&l->tun[k], now);
		}
		if (l->move_pending && !a->shutting_down)
			start_move(l);
		streams += l->streams;
		/* Also while an attempt is in progress: one dial may take up to
		 * its 60 s connect and handshake timeouts (a server that takes
		 * the connection and never answers), longer than
		 * connect.timeout. */
		if (!l->ever_up && now >= a->boot_deadline_ms) {
			boot_timeout(a, l);
			return;
		}
	}
	pk_agent_http_tick(a, now);
	pk_agent_admin_tick(a, now);
	pk_sock_tick(now);
	if (a->hooks && a->hooks->tick) {
		a->hooks->tick(a->hooks->arg, a, now);
		if (a->exit_now)
			return;
	}
	/* Exit once drained, but not before SHUTDOWN_LINGER_MS after the Go
	 * Away: a request the server sent just before reading it is still on
	 * its way. */
	if (a->shutting_down &&
	    ((streams == 0 && now >= a->shutdown_started_ms + SHUTDOWN_LINGER_MS) ||
	     now >= a->shutdown_deadline_ms)) {
		a->exit_now = 1;
		lws_cancel_service(a->ctx);
		return;
	}
	lws_sul_schedule(a->ctx, 0, &a->tick_sul, tick, TICK_US);
}

void pk_agent_exit(struct pk_agent *a, int code)
{
	a->exit_code = code;
	a->exit_now = 1;
	lws_cancel_service(a->ctx);
}

int pk_agent_run(const struct pk_agent_config *cfg)
{
	return pk_agent_run_hooked(cfg, NULL);
}

int pk_agent_run_hooked(const struct pk_agent_config *cfg, const struct pk_agent_hooks *hooks)
{
	struct pk_agent a;
	char err[256];
	memset(&a, 0, sizeof(a));
	a.cfg = cfg;
	a.hooks = hooks;
	if (pk_server_url_parse(cfg->connect.url, &a.url, err, sizeof(err)) < 0) {
		fprintf(stderr, "config: %s\n", err);
		return 1;
	}
	pk_agent_metrics_init(&a.m);

	pk_runloop_lws_logs(0);

	struct lws_protocols protocols[3];
	memcpy(protocols, agent_protocols, sizeof(protocols));
	protocols[1] = pk_sock_protocols[0];

	/* Owner: this function (SSL_CTX_free at the end); connections hold
	 * their own reference. Our CAs (else the system's), and the client
	 * certificate for mTLS. */
	if (a.url.tls && !(a.tls = pk_tls_client_ctx(&cfg->connect.tls, err, sizeof(err)))) {
		fprintf(stderr, "config: connect tls: %s\n", err);
		pk_agent_metrics_free(&a.m);
		return 1;
	}
	a.headers = pk_wsconn_piko_headers(cfg->connect.token, cfg->connect.tenant_id);

	struct lws_context_creation_info info;
	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	info.user = &a;
	info.pt_serv_buf_size = 64 * 1024;
	/* epoll, as the server: every socket is a core/sock.c one now, and
	 * poll() paid for every descriptor on every wakeup. */
	struct pk_runloop loop;
	pk_runloop_epoll(&loop, &info);
	a.ctx = pk_runloop_create(&loop, &info);
	if (!a.ctx) {
		pk_runloop_free(&loop);
		pk_log(PK_LOG_ERROR, SUBSYS, "failed to create the event loop", NULL);
		pk_agent_metrics_free(&a.m);
		SSL_CTX_free(a.tls);
		free(a.headers);
		return 1;
	}
	/* Without explicit vhosts, lws made one "default" vhost from info. */
	pk_sock_init(lws_get_vhost_by_name(a.ctx, "default"));

	a.nlisteners = cfg->listeners.n;
	/* Owner: this function; freed before it returns. */
	a.listeners = pk_xcalloc(a.nlisteners, sizeof(*a.listeners));
	const struct pk_listener_config *lcfg = cfg->listeners.v;
	for (size_t i = 0; i < a.nlisteners; i++) {
		struct pk_agent_listener *l = &a.listeners[i];
		l->agent = &a;
		l->cfg = &lcfg[i];
		l->tun[0].l = l;
		l->tun[1].l = l;
		/* validated already (or NULL: hooks->accept serves the streams) */
		if (lcfg[i].addr)
			pk_target_parse(lcfg[i].addr, strcmp(lcfg[i].protocol, "tcp") != 0,
			                &l->target, err, sizeof(err));
		pk_backoff_init(&l->backoff, 100, 15000);
		/* Owner: the listener; freed below (connections hold references). */
		if (l->target.tls && !a.exit_now &&
		    !(l->svc_tls = pk_tls_client_ctx(&lcfg[i].tls, err, sizeof(err)))) {
			pk_log(PK_LOG_ERROR, SUBSYS, "invalid listener tls", "endpoint-id",
			       lcfg[i].endpoint_id, "error", err, NULL);
			a.exit_code = 1;
			a.exit_now = 1; /* straight to the teardown below */
		}
	}

	/* After the listeners: /ready reads them. A port we cannot bind is
	 * fatal, as the server's ports are. */
	if (!a.exit_now && pk_agent_admin_start(&a, err, sizeof(err)) < 0) {
		pk_log(PK_LOG_ERROR, "server", "failed to listen", "addr", cfg->server.bind_addr,
		       "error", err, NULL);
		fprintf(stderr, "server: %s\n", err);
		a.exit_code = 1;
		a.exit_now = 1;
	}

	pk_runloop_signals(a.ctx);

	a.boot_deadline_ms = pk_now_ms() + (uint64_t)cfg->connect.timeout_ms;
	for (size_t i = 0; i < a.nlisteners && !a.exit_now; i++)
		dial(&a.listeners[i]);
	lws_sul_schedule(a.ctx, 0, &a.tick_sul, tick, TICK_US);

	while (!a.exit_now) {
		if (pk_runloop_once(&loop, a.ctx) < 0)
			break;
		if (pk_runloop_stop_requested())
			begin_shutdown(&a);
	}
	pk_runloop_signals_done();
	a.shutting_down = 1; /* no reconnects while the context is torn down */
	for (size_t i = 0; i < a.nlisteners; i++)
		lws_sul_cancel(&a.listeners[i].retry_sul);
	pk_agent_admin_stop(&a);
	lws_context_destroy(a.ctx);
	pk_runloop_free(&loop);
	pk_agent_admin_free(&a);
	for (size_t i = 0; i < a.nlisteners; i++) {
		pk_target_free(&a.listeners[i].target);
		SSL_CTX_free(a.listeners[i].svc_tls);
	}
	free(a.listeners);
	SSL_CTX_free(a.tls);
	free(a.headers);
	pk_agent_metrics_free(&a.m);
	pk_buf_freelist_release();
	if (!a.exit_code)
		pk_log(PK_LOG_INFO, SUBSYS, "shutdown complete", NULL);
	return a.exit_code;
}
