/*
 * The node's lifecycle: build the lws context with one vhost per port, run
 * the service loop, drive timers, and shut down gracefully on SIGTERM/SIGINT:
 * /ready turns 503 at once, upstreams get a yamux Go Away, idle client
 * connections close, in-flight exchanges finish, then the process exits —
 * within grace_period whatever happens.
 */
#include "server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "buf.h"
#include "log.h"
#include "lwsio.h"
#include "runloop.h"
#include "sock.h"
#include "tls.h"
#include "upstream.h"

#define SUBSYS "server"
#define TICK_US (250 * LWS_US_PER_MS)
/* How long a TLS port waits for a connection's first byte where the port
 * has no header timeout of its own (lws's default bound on a TLS
 * handshake). */
#define TLS_FIRST_BYTE_MS 20000

struct pk_server *pk_server_from_wsi(struct lws *wsi)
{
	return lws_context_user(lws_get_context(wsi));
}

void pk_server_fail(struct pk_server *srv)
{
	srv->exit_code = 1;
	srv->exit_now = 1;
	lws_cancel_service(srv->ctx);
}

/* SIGTERM (DESIGN §5 "Deploys"): not ready at once, so load balancers stop
 * sending; peers told we leave, so they route elsewhere first; no new
 * tunnels here; Go Away to the tunnels we hold, so agents dial a fresh one
 * through the load balancer (to another node) and retire this one when
 * its streams are done. In-flight exchanges finish, forwarded ones too. */
static void begin_shutdown(struct pk_server *srv)
{
	if (srv->shutting_down)
		return;
	pk_log(PK_LOG_INFO, SUBSYS, "shutting down", NULL);
	uint64_t now = pk_now_ms();
	srv->shutting_down = 1;
	srv->ready = 0;
	srv->shutdown_deadline_ms = now + (uint64_t)srv->cfg->grace_period_ms;
	srv->upstream_drain_deadline_ms = now + (uint64_t)srv->cfg->grace_period_ms / 2;
	pk_cluster_leave(&srv->cluster);
	if (srv->upstream.ln) {
		pk_sock_listener_close(srv->upstream.ln);
		srv->upstream.ln = NULL;
	}
	pk_upstream_go_away_all(srv);
	pk_proxy_close_idle(srv);
}

/* Whether shutdown waits for agents to move their tunnels: only while some
 * other node can take them, and for half the grace period at most (Piko's
 * agents do not move on Go Away); then the rest are closed. */
static int upstreams_moving(struct pk_server *srv, uint64_t now)
{
	if (!pk_upstream_tunnels(srv) || !srv->upstream_drain_deadline_ms ||
	    pk_cluster_active_peers(&srv->cluster) == 0)
		return 0; /* nowhere to move to: tunnels serve until we exit */
	if (now < srv->upstream_drain_deadline_ms)
		return 1;
	srv->upstream_drain_deadline_ms = 0;
	pk_upstream_close_all(srv);
	return 0;
}

static void tick(lws_sorted_usec_list_t *sul)
{
	struct pk_server *srv = lws_container_of(sul, struct pk_server, tick_sul);
	uint64_t now = pk_now_ms();
	pk_upstream_tick(srv, now);
	pk_proxy_tick(srv, now);
	pk_admin_tick(srv, now);
	pk_cluster_tick(&srv->cluster, now);
	pk_sock_tick(now);
	if (srv->shutting_down && !upstreams_moving(srv, now) &&
	    (srv->in_flight == 0 || now >= srv->shutdown_deadline_ms)) {
		if (srv->in_flight)
			pk_log(PK_LOG_WARN, SUBSYS,
			       "grace period over; dropping in-flight requests", NULL);
		srv->exit_now = 1;
		lws_cancel_service(srv->ctx);
		return;
	}
	if (srv->shutting_down && now >= srv->shutdown_deadline_ms) {
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
	static const char *const cap[] = {"cap"};
	srv->m.caps_refused = pk_metrics_register(
	    m, PK_METRIC_COUNTER, "piko_server_caps_refused_total",
	    "Connections, tunnels and streams refused because a configured cap was reached.", cap,
	    1, NULL, 0);
	/* Piko has go_* here; we have no Go runtime (process_metrics.h). */
	pk_process_metrics_register(&srv->m.process, m);
}

#define CAP_WARN_INTERVAL_MS 10000

void pk_server_cap_refused(struct pk_server *srv, const char *cap, const char *msg, const char *key,
                           const char *val)
{
	/* One slot per cap name (a handful, all string literals). */
	static struct {
		const char *cap;
		uint64_t last_ms;
		uint64_t suppressed;
	} seen[8];
	const char *lv[] = {cap};
	if (srv && srv->m.caps_refused)
		pk_metric_add(srv->m.caps_refused, lv, 1);
	size_t i = 0;
	while (i < sizeof(seen) / sizeof(seen[0]) && seen[i].cap && strcmp(seen[i].cap, cap))
		i++;
	uint64_t now = pk_now_ms();
	if (i < sizeof(seen) / sizeof(seen[0])) {
		if (!seen[i].cap)
			seen[i].cap = cap;
		else if (now - seen[i].last_ms < CAP_WARN_INTERVAL_MS) {
			seen[i].suppressed++;
			return;
		}
	}
	char sup[24] = "0";
	if (i < sizeof(seen) / sizeof(seen[0])) {
		snprintf(sup, sizeof(sup), "%llu", (unsigned long long)seen[i].suppressed);
		seen[i].suppressed = 0;
		seen[i].last_ms = now;
	}
	pk_log(PK_LOG_WARN, "server", msg, "cap", cap, "not-logged-since", sup, key, val, NULL);
}

/* Accepted connections are adopted into their port's vhost. */
static void on_accept(void *user, int fd)
{
	struct pk_server_port *p = user;
	lws_sock_file_fd_type u;
	u.sockfd = fd;
	/* Small responses and yamux frames must not wait for Nagle (lws sets
	 * this on sockets it accepts itself; these are ours). */
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* On failure lws closes the fd itself. */
	if (!lws_adopt_descriptor_vhost(p->vh, p->adopt, u, p->protocol, NULL))
		pk_log(PK_LOG_WARN, SUBSYS, "failed to adopt a connection", "port-name", p->name,
		       NULL);
}

/* The upstream port's connections are ours (core/wsconn.c), not lws's. */
static void on_upstream_accept(void *user, int fd)
{
	pk_upstream_accept(user, fd);
}

/* A port served by lws: a vhost that only serves adopted raw sockets, bound
 * to protocol (our own HTTP/1.1 parsing). Its listening socket is ours
 * (core/sock.c): lws 4.1's own listener binds [::] even for an IPv4 address
 * and fails silently on a host name; ours binds what was asked, understands
 * host names and port 0, and fails loudly. */
static int create_port(struct pk_server *srv, struct pk_server_port *p, const char *name,
                       const char *vhost_name, const struct lws_protocols *protocols,
                       const char *protocol, const struct pk_tls_server_config *tls)
{
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof(info));
	info.vhost_name = vhost_name;
	/* TLS-only when a certificate is set; with client_cas, a client
	 * certificate signed by one of them is required (mTLS). */
	p->tls = tls->cert && *tls->cert;
	if (p->tls) {
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
		info.ssl_cert_filepath = tls->cert;
		info.ssl_private_key_filepath = tls->key;
		/* Only HTTP/1.1 is spoken here: lws would offer h2 by ALPN. */
		info.alpn = "http/1.1";
		if (tls->client_cas && *tls->client_cas) {
			info.ssl_ca_filepath = tls->client_cas;
			info.options |= LWS_SERVER_OPTION_REQUIRE_VALID_OPENSSL_CLIENT_CERT;
		}
	}
	info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
	info.protocols = protocols;
	info.pt_serv_buf_size = 64 * 1024;
	p->name = name;
	p->protocol = protocol;
	p->adopt = LWS_ADOPT_SOCKET;
	if (p->tls)
		p->adopt |= LWS_ADOPT_ALLOW_SSL;
	p->vh = lws_create_vhost(srv->ctx, &info);
	if (!p->vh) {
		pk_log(PK_LOG_ERROR, SUBSYS, "failed to create a vhost", "port-name", name, "error",
		       p->tls ? "cannot load the TLS certificate, key or client CAs" : "lws", NULL);
		return -1;
	}
	return 0;
}

/* The upstream port: no vhost, only its TLS context when it has a
 * certificate. */
static int create_upstream_port(struct pk_server *srv)
{
	const struct pk_tls_server_config *tls = &srv->cfg->upstream.tls;
	struct pk_server_port *p = &srv->upstream;
	p->name = "upstream";
	p->tls = tls->cert && *tls->cert;
	if (!p->tls)
		return 0;
	char err[256];
	srv->upstream_tls =
	    pk_tls_server_ctx(tls->cert, tls->key, tls->client_cas, err, sizeof(err));
	if (!srv->upstream_tls) {
		pk_log(PK_LOG_ERROR, SUBSYS, "failed to load TLS", "port-name", p->name, "error",
		       err, NULL);
		return -1;
	}
	return 0;
}

/* first_byte_ms: on a TLS port, how long a connection may wait before its
 * first byte (its header timeout; 0 for lws's handshake bound). fd: the
 * socket a workers' supervisor bound for it, or -1 to bind here. */
static int listen_port(struct pk_server_port *p, void (*accept)(void *user, int fd), void *user,
                       const char *bind, int64_t first_byte_ms, int fd)
{
	char err[256], port[16];
	p->ln = fd >= 0 ? pk_sock_listen_adopt(fd, accept, user, err, sizeof(err))
	                : pk_sock_listen(bind, accept, user, err, sizeof(err));
	if (!p->ln) {
		pk_log(PK_LOG_ERROR, SUBSYS, "failed to listen", "port-name", p->name, "addr", bind,
		       "error", err, NULL);
		return -1;
	}
	/* Plain HTTP on a TLS port gets Go's 400 instead of a failed
	 * handshake: the first byte is peeked before the TLS handshake sees
	 * the socket. */
	if (p->tls)
		pk_sock_listener_refuse_plain_http(
		    p->ln, first_byte_ms > 0 ? (uint64_t)first_byte_ms : TLS_FIRST_BYTE_MS);
	snprintf(port, sizeof(port), "%d", pk_sock_listener_port(p->ln));
	pk_log(PK_LOG_INFO, SUBSYS, "listening", "port-name", p->name, "addr", bind, "port", port,
	       NULL);
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
	char err[512];
	if (pk_access_init(&srv.access, cfg, err, sizeof(err)) < 0) {
		/* Keys are checked before any port opens: a bad key is a
		 * config error, not a server that lets everyone in. */
		pk_log(PK_LOG_ERROR, SUBSYS, "invalid auth config", "error", err, NULL);
		pk_registry_free(srv.registry);
		pk_metrics_free(srv.metrics);
		return 1;
	}

	struct lws_context_creation_info info;
	memset(&info, 0, sizeof(info));
	/* OpenSSL is initialised once for every vhost that may use it. */
	info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
	info.user = &srv;
	info.pt_serv_buf_size = 64 * 1024;
	struct pk_runloop loop;
	pk_runloop_epoll(&loop, &info);
	srv.ctx = pk_runloop_create(&loop, &info);
	int rc = 1;
	if (!srv.ctx) {
		pk_log(PK_LOG_ERROR, SUBSYS, "failed to create the event loop", NULL);
		goto out;
	}
	/* The admin vhost also carries core/sock.c's protocol, which runs
	 * every listening socket and the upstream port's connections. */
	static struct lws_protocols admin_protocols[3];
	admin_protocols[0] = pk_admin_protocols[0];
	admin_protocols[1] = pk_sock_protocols[0];
	if (create_upstream_port(&srv) ||
	    create_port(&srv, &srv.admin, "admin", "/admin", admin_protocols, "piko-admin",
	                &cfg->admin.tls) ||
	    create_port(&srv, &srv.proxy, "proxy", "/proxy", pk_proxy_protocols, "piko-proxy",
	                &cfg->proxy.tls))
		goto out;
	pk_sock_init(srv.admin.vh);
	const int w = cfg->worker.on;
	if (listen_port(&srv.admin, on_accept, &srv.admin, cfg->admin.bind_addr,
	                cfg->admin.http.read_header_timeout_ms, w ? cfg->worker.admin_fd : -1) ||
	    listen_port(&srv.proxy, on_accept, &srv.proxy, cfg->proxy.bind_addr,
	                cfg->proxy.http.read_header_timeout_ms, w ? cfg->worker.proxy_fd : -1) ||
	    listen_port(&srv.upstream, on_upstream_accept, &srv, cfg->upstream.bind_addr,
	                cfg->upstream.http.read_header_timeout_ms,
	                w ? cfg->worker.upstream_fd : -1))
		goto out;
	if (pk_cluster_init(&srv.cluster, &srv, err, sizeof(err)) < 0) {
		pk_log(PK_LOG_ERROR, SUBSYS, "invalid cluster config", "error", err, NULL);
		goto out;
	}

	pk_runloop_signals(srv.ctx);

	srv.ready = 1;
	pk_log(PK_LOG_INFO, SUBSYS, "server ready", NULL);
	lws_sul_schedule(srv.ctx, 0, &srv.tick_sul, tick, TICK_US);

	while (!srv.exit_now) {
		if (pk_runloop_once(&loop, srv.ctx) < 0)
			break;
		if (pk_runloop_stop_requested())
			begin_shutdown(&srv);
	}
	rc = srv.exit_code;
	if (!rc)
		pk_log(PK_LOG_INFO, SUBSYS, "shutdown complete", NULL);

out:
	pk_runloop_signals_done();
	/* Links end before the context: their streams' owners (exchanges,
	 * forwarded requests) still have live connections to tell. */
	pk_cluster_stop(&srv.cluster);
	struct pk_server_port *ports[] = {&srv.proxy, &srv.upstream, &srv.admin};
	for (size_t i = 0; i < 3; i++)
		if (ports[i]->ln)
			pk_sock_listener_close(ports[i]->ln);
	if (srv.ctx)
		lws_context_destroy(srv.ctx);
	pk_runloop_free(&loop);
	if (srv.upstream_tls)
		SSL_CTX_free(srv.upstream_tls);
	pk_cluster_free(&srv.cluster);
	pk_registry_free(srv.registry);
	pk_access_free(&srv.access);
	pk_metrics_free(srv.metrics);
	pk_buf_freelist_release();
	return rc;
}
