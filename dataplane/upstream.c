/*
 * Upstream port (protocol reference §1.1): the WebSocket server role of lws.
 * Checks happen before the upgrade: a path that is not
 * /piko/v1/upstream/<endpoint> gets the router's 404, and a plain GET of that
 * path gorilla's 400; the connection is closed after either. Once upgraded, the socket carries a
 * yamux session (tunnel.c) and the upstream joins its endpoint's round-robin rotation in the
 * registry.
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
#include "lwsio.h"
#include "route.h"

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
		/* A listener that sent Go Away is leaving: route elsewhere from
		 * now on (protocol reference §2.3). */
		if (up->tunnel.sess && pk_yamux_session_remote_go_away(up->tunnel.sess))
			unregister(up);
		return NULL;
	}
	pk_metric_add(up->srv->m.upstream_requests_total, NULL, 1);
	return s;
}

int pk_upstream_opens_full(const struct pk_upstream *up)
{
	return up->tunnel.sess && !up->tunnel.closing &&
	       !pk_yamux_session_remote_go_away(up->tunnel.sess) &&
	       pk_yamux_session_opens_full(up->tunnel.sess);
}

int pk_upstream_streams_full(const struct pk_upstream *up)
{
	return up->tunnel.sess && pk_yamux_session_streams_full(up->tunnel.sess);
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

static const struct pk_tunnel_ops upstream_tunnel_ops = {
    .on_stream = NULL, /* the server opens streams; it never accepts them */
    .on_go_away = on_go_away,
    .on_dead = on_dead,
};

/* Write a complete HTTP response on a connection that lws is about to drop.
 * The response is small and the socket fresh, so the kernel takes it whole. */
static void reject(struct lws *wsi, char *resp, size_t len)
{
	unsigned char *buf = pk_xmalloc(LWS_PRE + len);
	memcpy(buf + LWS_PRE, resp, len);
	lws_write(wsi, buf + LWS_PRE, len, LWS_WRITE_HTTP_HEADERS);
	free(buf);
	free(resp);
}

static void reject_not_found(struct lws *wsi)
{
	size_t len;
	char *resp =
	    pk_http1_simple_response(404, PK_HTTP1_ROUTER_404_TYPE, PK_HTTP1_ROUTER_404_BODY,
	                             sizeof(PK_HTTP1_ROUTER_404_BODY) - 1, 1, &len);
	reject(wsi, resp, len);
}

/* lws's per-connection data: the session once established, and what the
 * handshake's token allows until then. */
struct upstream_pss {
	struct pk_upstream *up;
	int64_t token_exp; /* seconds; 0: no expiry to enforce */
};

/* A header lws does not know by name; NULL when absent. */
static const char *custom_header(struct lws *wsi, const char *name_colon, char *buf, size_t cap)
{
	int n = lws_hdr_custom_copy(wsi, buf, (int)cap, name_colon, (int)strlen(name_colon));
	return n > 0 ? buf : NULL;
}

/* Upstream auth before the upgrade (protocol reference §5): NULL to accept,
 * else Piko's 401 reason. */
static const char *authorize(struct lws *wsi, const char *endpoint, int64_t *exp)
{
	struct pk_server *srv = pk_server_from_wsi(wsi);
	*exp = 0;
	if (!pk_access_upstream_on(&srv->access))
		return NULL; /* no header copies when nothing is checked */
	/* Tokens and tenant IDs are short; a longer header is no valid one. */
	char xpa[4096], authz[4096], tenant[256];
	struct pk_access_headers h = {
	    .x_piko_authorization = custom_header(wsi, "x-piko-authorization:", xpa, sizeof(xpa)),
	    .authorization =
	        lws_hdr_copy(wsi, authz, sizeof(authz), WSI_TOKEN_HTTP_AUTHORIZATION) > 0 ? authz
	                                                                                  : NULL,
	    .tenant_id = custom_header(wsi, "x-piko-tenant-id:", tenant, sizeof(tenant)),
	};
	return pk_access_check_upstream(&srv->access, &h, endpoint, pk_auth_now(), exp);
}

static int endpoint_of(struct lws *wsi, char *out, size_t cap)
{
	char uri[1024];
	if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0)
		return -1;
	return pk_route_upstream_path(uri, out, cap);
}

static void upstream_established(struct lws *wsi, struct upstream_pss *pss)
{
	assert(pss); /* allocated by lws before the filter (see there) */
	struct pk_server *srv = pk_server_from_wsi(wsi);
	char ep[512];
	if (endpoint_of(wsi, ep, sizeof(ep)) < 0)
		ep[0] = '\0'; /* checked in the filter; cannot happen */

	/* Owner: the lws connection (slot in its per-session data); freed on
	 * LWS_CALLBACK_CLOSED. */
	struct pk_upstream *up = pk_xcalloc(1, sizeof(*up));
	pss->up = up;
	up->token_exp = pss->token_exp;
	up->srv = srv;
	up->endpoint = pk_xstrdup(ep);
	pk_lwsio_peer_ip(wsi, up->client_ip, sizeof(up->client_ip));
	pk_tunnel_init(&up->tunnel, wsi, 0, &upstream_tunnel_ops, up, pk_now_ms());
	pk_yamux_session_set_max_streams(up->tunnel.sess,
	                                 (uint32_t)srv->cfg->upstream.max_streams_per_connection);

	up->next = srv->upstreams;
	if (srv->upstreams)
		srv->upstreams->prev = up;
	srv->upstreams = up;

	pk_registry_add(srv->registry, up->endpoint, up);
	up->registered = 1;
	update_gauges(srv);
	pk_cluster_local_changed(&srv->cluster, up->endpoint);
	pk_log(PK_LOG_INFO, SUBSYS, "upstream connected", "endpoint-id", up->endpoint, "client-ip",
	       up->client_ip, NULL);
	if (srv->shutting_down)
		pk_yamux_session_go_away(up->tunnel.sess, PK_YAMUX_GOAWAY_NORMAL);
}

static void upstream_closed(struct pk_upstream *up)
{
	struct pk_server *srv = up->srv;
	unregister(up);
	if (up->prev)
		up->prev->next = up->next;
	else
		srv->upstreams = up->next;
	if (up->next)
		up->next->prev = up->prev;
	pk_log(PK_LOG_INFO, SUBSYS, "upstream disconnected", "endpoint-id", up->endpoint,
	       "client-ip", up->client_ip, NULL);
	/* Streams in flight end here: their proxied exchanges fail. */
	pk_tunnel_destroy(&up->tunnel);
	free(up->endpoint);
	free(up);
}

/* upstream.max_connections (connections on the upstream port, handshakes
 * included: n_upstream_sockets) and
 * upstream.max_connections_per_endpoint (tunnels of one endpoint on this
 * node): at the cap, 503 with a JSON error before the upgrade (our agent and
 * Piko's retry a 503 with backoff). Returns 1 when refused. */
static int over_endpoint_cap(struct lws *wsi, const char *ep)
{
	struct pk_server *srv = pk_server_from_wsi(wsi);
	int64_t all = srv->cfg->upstream.max_connections;
	int64_t cap = srv->cfg->upstream.max_connections_per_endpoint;
	size_t n;
	/* Every connection counts, handshakes too (this one included), so
	 * that clients that never finish their upgrade cannot hold more
	 * than the cap either. */
	if (all > 0 && srv->n_upstream_sockets > (size_t)all) {
		char *resp = pk_http1_error_response(
		    503, "too many upstream connections on this node", PK_HTTP1_RESP_CLOSE, &n);
		reject(wsi, resp, n);
		pk_server_cap_refused(
		    srv, "upstream_connections",
		    "upstream connection refused: upstream.max_connections reached", "endpoint-id",
		    ep);
		return 1;
	}
	if (cap <= 0 || pk_registry_upstreams(srv->registry, ep) < (size_t)cap)
		return 0;
	char *resp = pk_http1_error_response(
	    503, "too many upstream connections for this endpoint on this node",
	    PK_HTTP1_RESP_CLOSE, &n);
	reject(wsi, resp, n);
	pk_server_cap_refused(srv, "upstream_connections_per_endpoint",
	                      "upstream connection refused: upstream.max_connections_per_endpoint "
	                      "reached",
	                      "endpoint-id", ep);
	return 1;
}

static int callback_upstream(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                             void *in, size_t len)
{
	if (reason == LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION)
		return pk_server_client_cert_verdict(len); /* user is not ours here */
	struct upstream_pss *pss = user;
	struct pk_upstream *up = pss ? pss->up : NULL;
	char ep[512];

	switch (reason) {
	case LWS_CALLBACK_HTTP: {
		/* Not a WebSocket upgrade: nothing is served here but upgrades.
		 * Piko's order still holds: route, auth, then the upgrade fails
		 * (which is how an agent reads why it was refused). */
		int64_t exp;
		const char *denied;
		size_t n;
		char *resp;
		if (endpoint_of(wsi, ep, sizeof(ep)) < 0) {
			reject_not_found(wsi);
			return -1;
		}
		if ((denied = authorize(wsi, ep, &exp)))
			resp = pk_access_error_response(denied, 0, &n);
		else
			resp = pk_http1_ws_bad_request(&n);
		reject(wsi, resp, n);
		return -1;
	}

	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
		/* lws binds the protocol, and allocates its per-session data,
		 * before the filter and ESTABLISHED; the analyzer cannot see it. */
		assert(pss);
		if (endpoint_of(wsi, ep, sizeof(ep)) < 0) {
			reject_not_found(wsi);
			return 1;
		}
		const char *denied = authorize(wsi, ep, &pss->token_exp);
		if (denied) {
			size_t n;
			char *resp = pk_access_error_response(denied, 0, &n);
			reject(wsi, resp, n);
			return 1;
		}
		return over_endpoint_cap(wsi, ep);

	case LWS_CALLBACK_ESTABLISHED:
		upstream_established(wsi, pss);
		return 0;

	/* Every connection of the port, from adoption to its end (lws sends
	 * these to the vhost's first protocol, this one). */
	case LWS_CALLBACK_WSI_CREATE:
		pk_server_from_wsi(wsi)->n_upstream_sockets++;
		return 0;
	case LWS_CALLBACK_WSI_DESTROY:
		pk_server_from_wsi(wsi)->n_upstream_sockets--;
		return 0;

	case LWS_CALLBACK_RECEIVE: {
		if (!up)
			return -1;
		struct pk_server *srv = up->srv;
		int rc = pk_tunnel_rx(&up->tunnel, in, len);
		/* ACKs may have made room for exchanges waiting to open. */
		if (srv->n_waiting)
			pk_proxy_retry_waiting(srv);
		return rc;
	}

	case LWS_CALLBACK_SERVER_WRITEABLE:
		if (!up)
			return -1;
		return pk_tunnel_writeable(&up->tunnel);

	case LWS_CALLBACK_CLOSED:
		if (up) {
			pss->up = NULL;
			upstream_closed(up);
		}
		return 0;

	default:
		return 0;
	}
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
		pk_tunnel_tick(&up->tunnel, now_ms);
	}
}

size_t pk_upstream_open_streams(const struct pk_server *srv)
{
	size_t n = 0;
	for (const struct pk_upstream *up = srv->upstreams; up; up = up->next)
		if (up->tunnel.sess)
			n += pk_yamux_session_num_streams(up->tunnel.sess);
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
	for (struct pk_upstream *up = srv->upstreams; up; up = up->next)
		pk_yamux_session_go_away(up->tunnel.sess, PK_YAMUX_GOAWAY_NORMAL);
}

const struct lws_protocols pk_upstream_protocols[] = {
    {
        .name = "piko-upstream",
        .callback = callback_upstream,
        .per_session_data_size = sizeof(struct upstream_pss),
        .rx_buffer_size = 64 * 1024,
    },
    {NULL, NULL, 0, 0, 0, NULL, 0}, /* terminator */
};
