/*
 * Upstream port (protocol reference §1.1): our own WebSocket server
 * (core/wsconn.c, through core/tunnel.c) on the sockets the port accepts.
 * Checks happen before the upgrade (on_request): a path that is not
 * GET /piko/v1/upstream/<endpoint> gets the router's 404, a bad token 401, a
 * plain GET of that path gorilla's 400, a cap 503; the connection is closed
 * after any of them. Once upgraded, the socket carries a yamux session and
 * the upstream joins its endpoint's round-robin rotation in the registry.
 */
#include "upstream.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "buf.h"
#include "http1.h"
#include "link.h"
#include "log.h"
#include "route.h"
#include "ws_upgrade.h"
#include "wsconn.h"

#define SUBSYS "upstream"

static void update_gauges(struct pk_server *srv)
{
	pk_metric_set(srv->m.connected_upstreams, NULL,
	              (double)pk_registry_num_upstreams(srv->registry));
	pk_metric_set(srv->m.registered_endpoints, NULL,
	              (double)pk_registry_num_endpoints(srv->registry));
}

/* Take an upstream out of rotation. Safe to call twice. */
static void unregister(struct pk_upstream *up)
{
	if (!up->registered)
		return;
	up->registered = 0;
	pk_stream_pool_clear(&up->pool);
	pk_registry_remove(up->srv->registry, up->endpoint, up);
	update_gauges(up->srv);
	pk_cluster_local_changed(&up->srv->cluster, up->endpoint);
}

struct pk_yamux_stream *pk_upstream_open_stream(struct pk_upstream *up)
{
	struct pk_yamux_stream *s = NULL;
	if (!up->tunnel.closing && up->tunnel.sess)
		s = pk_yamux_stream_open(up->tunnel.sess, pk_now_ms());
	if (!s) {
		/* A listener that sent Go Away is leaving, and a closing tunnel
		 * is going: route elsewhere from now on (protocol reference
		 * §2.3). */
		if (up->tunnel.closing ||
		    (up->tunnel.sess && pk_yamux_session_remote_go_away(up->tunnel.sess)))
			unregister(up);
		return NULL;
	}
	pk_metric_add(up->srv->m.upstream_requests_total, NULL, 1);
	return s;
}

/* Streams are kept only while the tunnel stays: not once it is leaving
 * (either side's Go Away, a rebalance shedding it, closing). */
static int keeps_streams(const struct pk_upstream *up)
{
	return up->registered && !up->tunnel.closing && up->tunnel.sess && !up->shed_deadline_ms &&
	       !up->srv->shutting_down && !pk_yamux_session_remote_go_away(up->tunnel.sess);
}

struct pk_yamux_stream *pk_upstream_take_stream(struct pk_upstream *up, int *reused,
                                                uint64_t *kept_ms)
{
	*reused = 0;
	*kept_ms = 0;
	if (keeps_streams(up)) {
		struct pk_yamux_stream *s = pk_stream_pool_take(&up->pool, kept_ms);
		if (s) {
			*reused = 1;
			pk_metric_add(up->srv->m.upstream_requests_total, NULL, 1);
			return s;
		}
	}
	return pk_upstream_open_stream(up);
}

void pk_upstream_put_stream(struct pk_upstream *up, struct pk_yamux_stream *s)
{
	if (!keeps_streams(up)) {
		pk_yamux_stream_set_user(s, NULL);
		pk_yamux_stream_close(s, pk_now_ms());
		return;
	}
	pk_stream_pool_put(&up->pool, s, pk_now_ms());
}

int pk_upstream_opens_full(const struct pk_upstream *up)
{
	return up->tunnel.sess && !up->tunnel.closing &&
	       !pk_yamux_session_remote_go_away(up->tunnel.sess) &&
	       pk_yamux_session_opens_full(up->tunnel.sess);
}

int pk_upstream_streams_full(const struct pk_upstream *up)
{
	/* Idle streams count in the session's cap, but the next request takes
	 * one of them. */
	return up->tunnel.sess && pk_yamux_session_streams_full(up->tunnel.sess) &&
	       !pk_stream_pool_idle(&up->pool);
}

static void on_go_away(struct pk_tunnel *t)
{
	struct pk_upstream *up = t->owner;
	pk_log(PK_LOG_INFO, SUBSYS, "upstream going away", "endpoint-id", up->endpoint, "client-ip",
	       up->client_ip, NULL);
	unregister(up);
}

static void on_dead(struct pk_tunnel *t, int reason)
{
	struct pk_upstream *up = t->owner;
	static const char *const why[] = {"", "protocol error", "remote go away",
	                                  "keepalive timeout", "stream open timeout"};
	pk_log(PK_LOG_WARN, SUBSYS, "upstream session failed", "endpoint-id", up->endpoint,
	       "reason", reason > 0 && reason < 5 ? why[reason] : "unknown", NULL);
	unregister(up);
}

/* ACKs may have made room for exchanges waiting to open. */
static void on_input(struct pk_tunnel *t)
{
	struct pk_upstream *up = t->owner;
	if (up->srv->n_waiting)
		pk_proxy_retry_waiting(up->srv);
}

static const struct pk_tunnel_ops upstream_tunnel_ops = {
    .on_stream = NULL, /* the server opens streams; it never accepts them */
    .on_go_away = on_go_away,
    .on_dead = on_dead,
    .on_input = on_input,
};

/* ---- the upgrade ------------------------------------------------------------- */

/* Upstream auth before the upgrade (protocol reference §5): NULL to accept,
 * else Piko's 401 reason. */
static const char *authorize(struct pk_server *srv, const struct pk_http1_head *h,
                             const char *endpoint, int64_t *exp)
{
	*exp = 0;
	if (!pk_access_upstream_on(&srv->access))
		return NULL;
	struct pk_access_headers ah = {
	    .x_piko_authorization = pk_http1_header_get(h, "x-piko-authorization"),
	    .authorization = pk_http1_header_get(h, "Authorization"),
	    .tenant_id = pk_http1_header_get(h, "x-piko-tenant-id"),
	};
	return pk_access_check_upstream(&srv->access, &ah, endpoint, pk_auth_now(), exp);
}

/* upstream.max_connections (connections on the upstream port, handshakes
 * included: n_upstream_sockets) and upstream.max_connections_per_endpoint
 * (tunnels of one endpoint on this node): at the cap, 503 with a JSON error
 * before the upgrade (our agent and Piko's retry a 503 with backoff). NULL,
 * or the refusal. */
static char *over_cap(struct pk_server *srv, const char *ep, size_t *n)
{
	int64_t all = srv->cfg->upstream.max_connections;
	int64_t cap = srv->cfg->upstream.max_connections_per_endpoint;
	/* Every connection counts, handshakes too (this one included), so
	 * that clients that never finish their upgrade cannot hold more
	 * than the cap either. */
	if (all > 0 && srv->n_upstream_sockets > (size_t)all) {
		pk_server_cap_refused(
		    srv, "upstream_connections",
		    "upstream connection refused: upstream.max_connections reached", "endpoint-id",
		    ep);
		return pk_http1_error_response(503, "too many upstream connections on this node",
		                               PK_HTTP1_RESP_CLOSE, n);
	}
	if (cap <= 0 || pk_registry_upstreams(srv->registry, ep) < (size_t)cap)
		return NULL;
	pk_server_cap_refused(srv, "upstream_connections_per_endpoint",
	                      "upstream connection refused: upstream.max_connections_per_endpoint "
	                      "reached",
	                      "endpoint-id", ep);
	return pk_http1_error_response(
	    503, "too many upstream connections for this endpoint on this node",
	    PK_HTTP1_RESP_CLOSE, n);
}

/* Piko's order (gin's router, then the handler): a path that is not
 * GET /piko/v1/upstream/<endpoint> gets the router's 404, then auth's 401,
 * then a request that is not a valid upgrade gorilla's 400; ours: the caps'
 * 503. */
static int on_request(struct pk_tunnel *t, const struct pk_http1_head *h, char **resp, size_t *len)
{
	struct pk_upstream *up = t->owner;
	struct pk_server *srv = up->srv;
	char ep[512];
	if (strcmp(h->method, "GET") != 0 || pk_route_upstream_path(h->url, ep, sizeof(ep)) < 0) {
		*resp = pk_http1_simple_response(
		    404, PK_HTTP1_ROUTER_404_TYPE, PK_HTTP1_ROUTER_404_BODY,
		    sizeof(PK_HTTP1_ROUTER_404_BODY) - 1, PK_HTTP1_RESP_CLOSE, len);
		return 0;
	}
	int64_t exp;
	const char *denied = authorize(srv, h, ep, &exp);
	if (denied) {
		*resp = pk_access_error_response(denied, 0, len);
		return 0;
	}
	if (pk_ws_upgrade_answer(h, resp, len) < 0) {
		/* gorilla's Upgrader without an Error handler: "Bad Request". */
		free(*resp);
		*resp = pk_http1_ws_bad_request(len);
		return 0;
	}
	char *refusal = over_cap(srv, ep, len);
	if (refusal) {
		free(*resp);
		*resp = refusal;
		return 0;
	}
	up->endpoint = pk_xstrdup(ep);
	up->token_exp = exp;
	return 1;
}

static void on_up(struct pk_tunnel *t)
{
	struct pk_upstream *up = t->owner;
	struct pk_server *srv = up->srv;
	pk_yamux_session_set_max_streams(t->sess,
	                                 (uint32_t)srv->cfg->upstream.max_streams_per_connection);
	pk_registry_add(srv->registry, up->endpoint, up);
	up->registered = 1;
	update_gauges(srv);
	pk_cluster_local_changed(&srv->cluster, up->endpoint);
	pk_log(PK_LOG_INFO, SUBSYS, "upstream connected", "endpoint-id", up->endpoint, "client-ip",
	       up->client_ip, NULL);
	if (srv->shutting_down)
		pk_yamux_session_go_away(t->sess, PK_YAMUX_GOAWAY_NORMAL);
}

static void on_down(struct pk_tunnel *t, int was_up, int status, const char *error, const char *why)
{
	(void)status, (void)error, (void)why;
	struct pk_upstream *up = t->owner;
	struct pk_server *srv = up->srv;
	unregister(up);
	if (up->prev)
		up->prev->next = up->next;
	else
		srv->upstreams = up->next;
	if (up->next)
		up->next->prev = up->prev;
	srv->n_upstream_sockets--;
	/* Streams in flight ended with the session: their proxied exchanges
	 * failed. */
	if (was_up)
		pk_log(PK_LOG_INFO, SUBSYS, "upstream disconnected", "endpoint-id", up->endpoint,
		       "client-ip", up->client_ip, NULL);
	free(up->endpoint);
	free(up);
}

static const struct pk_tunnel_hooks upstream_hooks = {
    .on_request = on_request,
    .on_up = on_up,
    .on_down = on_down,
};

void pk_upstream_accept(struct pk_server *srv, int fd)
{
	/* Owner: the connection; freed in on_down, when it is gone. */
	struct pk_upstream *up = pk_xcalloc(1, sizeof(*up));
	up->srv = srv;
	struct pk_wsconn_accept_opts o = {
	    .tls = srv->upstream_tls,
	    .max_head = PK_UPSTREAM_MAX_HEAD,
	    .handshake_timeout_ms = (uint64_t)srv->cfg->upstream.http.read_header_timeout_ms,
	};
	up->tunnel.window = (uint32_t)srv->cfg->stream.max_window_size;
	if (pk_tunnel_accept(&up->tunnel, srv->ctx, fd, &o, &upstream_tunnel_ops, &upstream_hooks,
	                     up) < 0) {
		free(up);
		pk_log(PK_LOG_WARN, SUBSYS, "failed to adopt a connection", NULL);
		return;
	}
	snprintf(up->client_ip, sizeof(up->client_ip), "%s", pk_wsconn_peer_ip(up->tunnel.wsc));
	srv->n_upstream_sockets++;
	up->next = srv->upstreams;
	if (srv->upstreams)
		srv->upstreams->prev = up;
	srv->upstreams = up;
}

/* How long a shed upstream may take to move before it is closed. */
#define SHED_GRACE_MS 10000

/* Rebalancing (protocol reference §3.7, Piko's arithmetic): with more
 * upstreams than the cluster's average by upstream.rebalance.threshold,
 * shed some each second, at most ceil(average x shed_rate). Shedding is a Go
 * Away (our agents dial a fresh tunnel, which the load balancer sends to
 * another node, and retire this one when its streams are done), and a close
 * after SHED_GRACE_MS for agents that do not move on Go Away. */
static void rebalance(struct pk_server *srv, uint64_t now_ms)
{
	const struct pk_server_config *cfg = srv->cfg;
	double threshold = cfg->upstream.rebalance.threshold;
	if (threshold <= 0 || srv->shutting_down)
		return;
	struct pk_cluster *cl = &srv->cluster;
	size_t nodes = 1, active = 1;
	int64_t sum = 0;
	for (struct pk_link *l = cl->links; l; l = l->next) {
		if (l->state != PK_LINK_ESTABLISHED)
			continue;
		nodes++;
		if (!l->leaving) {
			active++;
			sum += pk_strmap_sum(l->eps);
		}
	}
	if (nodes <= 1)
		return;
	int64_t local = 0;
	for (struct pk_upstream *up = srv->upstreams; up; up = up->next)
		local += up->registered && !up->shed_deadline_ms;
	if (local == 0 || local < cfg->upstream.rebalance.min_conns)
		return;
	int64_t avg = (sum + local) / (int64_t)active;
	if (avg == 0)
		return;
	double balance = (double)(local - avg) / (double)avg;
	if (balance < threshold)
		return;
	double shed = (double)local * balance;
	double cap = (double)avg * cfg->upstream.rebalance.shed_rate;
	if (shed > cap)
		shed = ceil(cap);
	int64_t n = (int64_t)shed;
	if (n <= 0)
		return;
	char ns[24];
	snprintf(ns, sizeof(ns), "%lld", (long long)n);
	pk_log(PK_LOG_INFO, SUBSYS, "rebalance; shedding connections", "count", ns, NULL);
	for (struct pk_upstream *up = srv->upstreams; up && n > 0; up = up->next) {
		if (!up->registered || up->shed_deadline_ms || up->tunnel.closing)
			continue;
		up->shed_deadline_ms = now_ms + SHED_GRACE_MS;
		pk_yamux_session_go_away(up->tunnel.sess, PK_YAMUX_GOAWAY_NORMAL);
		/* Its agent moves and ends its streams after their response:
		 * none is kept from now on. */
		pk_stream_pool_clear(&up->pool);
		n--;
	}
}

void pk_upstream_tick(struct pk_server *srv, uint64_t now_ms)
{
	int64_t now = pk_auth_now();
	static uint64_t last_rebalance_ms;
	if (now_ms - last_rebalance_ms >= 1000) {
		last_rebalance_ms = now_ms;
		rebalance(srv, now_ms);
	}
	for (struct pk_upstream *up = srv->upstreams; up; up = up->next) {
		if (up->shed_deadline_ms && now_ms >= up->shed_deadline_ms && !up->tunnel.closing) {
			unregister(up);
			pk_tunnel_close(&up->tunnel);
			continue;
		}
		if (up->token_exp && now >= up->token_exp && !up->tunnel.closing) {
			/* The session ends with its token; streams in flight die
			 * with it, as in Piko. */
			pk_log(PK_LOG_INFO, SUBSYS, "upstream token expired", "endpoint-id",
			       up->endpoint, "client-ip", up->client_ip, NULL);
			unregister(up);
			pk_tunnel_close(&up->tunnel);
			continue;
		}
		pk_stream_pool_expire(&up->pool, now_ms);
		pk_tunnel_tick(&up->tunnel, now_ms);
	}
}

int pk_upstream_tunnels(const struct pk_server *srv)
{
	for (const struct pk_upstream *up = srv->upstreams; up; up = up->next)
		if (up->tunnel.sess)
			return 1;
	return 0;
}

size_t pk_upstream_open_streams(const struct pk_server *srv)
{
	size_t n = 0;
	for (const struct pk_upstream *up = srv->upstreams; up; up = up->next)
		if (up->tunnel.sess)
			n += pk_yamux_session_num_streams(up->tunnel.sess) - up->pool.n;
	return n;
}

void pk_upstream_close_all(struct pk_server *srv)
{
	for (struct pk_upstream *up = srv->upstreams; up; up = up->next) {
		unregister(up);
		pk_tunnel_close(&up->tunnel);
	}
}

void pk_upstream_go_away_all(struct pk_server *srv)
{
	for (struct pk_upstream *up = srv->upstreams; up; up = up->next) {
		pk_stream_pool_clear(&up->pool);
		if (up->tunnel.sess)
			pk_yamux_session_go_away(up->tunnel.sess, PK_YAMUX_GOAWAY_NORMAL);
	}
}
