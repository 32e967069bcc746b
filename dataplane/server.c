/*
 * The node's lifecycle: build the lws context with one vhost per port, run
 * the service loop, drive timers, and shut down gracefully on SIGTERM/SIGINT:
 * /ready turns 503 at once, upstreams get a yamux Go Away, idle client
 * connections close, in-flight exchanges finish, then the process exits —
 * within grace_period whatever happens.
 */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "buf.h"
#include "log.h"
#include "lwsio.h"
#include "runloop.h"

#define SUBSYS "server"
#define TICK_US (250 * LWS_US_PER_MS)

struct pk_server *pk_server_from_wsi(struct lws *wsi)
{
	return lws_context_user(lws_get_context(wsi));
}

static void begin_shutdown(struct pk_server *srv)
{
	if (srv->shutting_down)
		return;
	pk_log(PK_LOG_INFO, SUBSYS, "shutting down", NULL);
	srv->shutting_down = 1;
	srv->ready = 0;
	srv->shutdown_deadline_ms = pk_now_ms() + (uint64_t)srv->cfg->grace_period_ms;
	pk_upstream_go_away_all(srv);
	pk_proxy_close_idle(srv);
}

static void tick(lws_sorted_usec_list_t *sul)
{
	struct pk_server *srv = lws_container_of(sul, struct pk_server, tick_sul);
	uint64_t now = pk_now_ms();
	pk_upstream_tick(srv, now);
	pk_proxy_tick(srv, now);
	if (srv->shutting_down && (srv->in_flight == 0 || now >= srv->shutdown_deadline_ms)) {
		if (srv->in_flight)
			pk_log(PK_LOG_WARN, SUBSYS,
			       "grace period over; dropping in-flight requests", NULL);
		srv->exit_now = 1;
		lws_cancel_service(srv->ctx);
		return;
	}
	lws_sul_schedule(srv->ctx, 0, &srv->tick_sul, tick, TICK_US);
}

static void register_metrics(struct pk_server *srv)
{
	static const char *const status_method[] = {"status", "method"};
	struct pk_metrics *m = srv->metrics;
	srv->m.requests_in_flight = pk_metrics_register(
	    m, PK_METRIC_GAUGE, "piko_proxy_requests_in_flight",
	    "Number of requests currently handled by this server.", NULL, 0, NULL, 0);
	srv->m.requests_total =
	    pk_metrics_register(m, PK_METRIC_COUNTER, "piko_proxy_requests_total",
	                        "Total requests.", status_method, 2, NULL, 0);
	srv->m.request_latency = pk_metrics_register(
	    m, PK_METRIC_HISTOGRAM, "piko_proxy_request_latency_seconds", "Request latency.",
	    status_method, 2, pk_metrics_default_buckets, 11);
	srv->m.request_size =
	    pk_metrics_register(m, PK_METRIC_HISTOGRAM, "piko_proxy_request_size_bytes",
	                        "Request size", NULL, 0, pk_metrics_size_buckets, 8);
	srv->m.response_size =
	    pk_metrics_register(m, PK_METRIC_HISTOGRAM, "piko_proxy_response_size_bytes",
	                        "Response size", NULL, 0, pk_metrics_size_buckets, 8);
	srv->m.connected_upstreams =
	    pk_metrics_register(m, PK_METRIC_GAUGE, "piko_upstreams_connected_upstreams",
	                        "Number of upstreams connected to this node.", NULL, 0, NULL, 0);
	srv->m.registered_endpoints = pk_metrics_register(
	    m, PK_METRIC_GAUGE, "piko_upstreams_registered_endpoints",
	    "Number of endpoints registered by upstreams on this node.", NULL, 0, NULL, 0);
	srv->m.upstream_requests_total = pk_metrics_register(
	    m, PK_METRIC_COUNTER, "piko_upstreams_upstream_requests_total",
	    "Number of requests forwarded to local upstreams.", NULL, 0, NULL, 0);
	/* Ours, not Piko's: streams in flight over this node's tunnels, so a
	 * leak of streams shows (it returns to 0 when traffic stops). */
	srv->m.open_streams = pk_metrics_register(
	    m, PK_METRIC_GAUGE, "piko_upstreams_open_streams",
	    "Number of streams open on the upstream connections of this node.", NULL, 0, NULL, 0);
}

/* One listening vhost. raw_protocol: accept as raw sockets bound to that
 * protocol (our own HTTP/1.1 parsing); NULL: lws's HTTP/WebSocket server. */
static int create_vhost(struct pk_server *srv, const char *name, const char *bind,
                        const struct lws_protocols *protocols, const char *raw_protocol)
{
	char iface[128];
	int port;
	if (pk_lwsio_split_bind(bind, iface, sizeof(iface), &port) < 0) {
		fprintf(stderr, "config: invalid %s bind address: %s\n", name, bind);
		return -1;
	}
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof(info));
	info.vhost_name = name;
	info.port = port;
	info.iface = iface[0] ? iface : NULL;
	info.protocols = protocols;
	info.pt_serv_buf_size = 64 * 1024;
	if (raw_protocol) {
		info.options = LWS_SERVER_OPTION_ADOPT_APPLY_LISTEN_ACCEPT_CONFIG;
		info.listen_accept_role = "raw-skt";
		info.listen_accept_protocol = raw_protocol;
	}
	if (!lws_create_vhost(srv->ctx, &info)) {
		pk_log(PK_LOG_ERROR, SUBSYS, "failed to listen", "port-name", name, "addr", bind,
		       NULL);
		return -1;
	}
	pk_log(PK_LOG_INFO, SUBSYS, "listening", "port-name", name, "addr", bind, NULL);
	return 0;
}

int pk_server_run(const struct pk_server_config *cfg)
{
	struct pk_server srv;
	memset(&srv, 0, sizeof(srv));
	srv.cfg = cfg;
	srv.registry = pk_registry_new();
	srv.metrics = pk_metrics_new();
	register_metrics(&srv);

	pk_runloop_lws_logs(1);

	struct lws_context_creation_info info;
	memset(&info, 0, sizeof(info));
	info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
	info.user = &srv;
	info.pt_serv_buf_size = 64 * 1024;
	srv.ctx = lws_create_context(&info);
	int rc = 1;
	if (!srv.ctx) {
		pk_log(PK_LOG_ERROR, SUBSYS, "failed to create the event loop", NULL);
		goto out;
	}
	if (create_vhost(&srv, "proxy", cfg->proxy.bind_addr, pk_proxy_protocols, "piko-proxy") ||
	    create_vhost(&srv, "upstream", cfg->upstream.bind_addr, pk_upstream_protocols, NULL) ||
	    create_vhost(&srv, "admin", cfg->admin.bind_addr, pk_admin_protocols, "piko-admin"))
		goto out;

	pk_runloop_signals(srv.ctx);

	srv.ready = 1;
	pk_log(PK_LOG_INFO, SUBSYS, "server ready", NULL);
	lws_sul_schedule(srv.ctx, 0, &srv.tick_sul, tick, TICK_US);

	while (!srv.exit_now) {
		if (lws_service(srv.ctx, 0) < 0)
			break;
		if (pk_runloop_stop_requested())
			begin_shutdown(&srv);
	}
	rc = 0;
	pk_log(PK_LOG_INFO, SUBSYS, "shutdown complete", NULL);

out:
	pk_runloop_signals_done();
	if (srv.ctx)
		lws_context_destroy(srv.ctx);
	pk_registry_free(srv.registry);
	pk_metrics_free(srv.metrics);
	pk_buf_freelist_release();
	return rc;
}
