/*
 * A `piko server` node: one lws context, one service thread, three ports.
 *
 *   proxy port    (proxy.c)     clients' HTTP requests enter here
 *   upstream port (upstream.c)  agents' WebSocket tunnels terminate here
 *   admin port    (admin.c)     /health, /ready, /metrics
 *
 *   cluster port  (link.c)      node links from the other members (cluster.c)
 *
 * A request enters in proxy.c, picks an upstream from the registry
 * (registry.c), crosses the tunnel as a yamux stream opened on that
 * upstream's session (upstream.c, core/tunnel.c), and leaves through the
 * agent at the far end. When the tunnel is on another node, the request
 * crosses the node link to it as a stream first (cluster.c picks the node,
 * link.c carries it), and that node's proxy.c serves it from its tunnels.
 */
#ifndef PK_SERVER_H
#define PK_SERVER_H

#include <stdint.h>

#include <libwebsockets.h>
#include <openssl/ssl.h>

#include "access.h"
#include "cluster.h"
#include "metrics.h"
#include "process_metrics.h"
#include "registry.h"
#include "server_config.h"
#include "sock.h"

struct pk_upstream;
struct pk_proxy_conn;

struct pk_server_metrics {
	struct pk_metric *requests_in_flight;
	struct pk_metric *requests_total;
	struct pk_metric *request_latency;
	struct pk_metric *request_size;
	struct pk_metric *response_size;
	struct pk_metric *connected_upstreams;
	struct pk_metric *registered_endpoints;
	struct pk_metric *upstream_requests_total;
	struct pk_metric *open_streams;
	struct pk_metric *caps_refused; /* {cap}: connections refused by a cap */
	struct pk_process_metrics process;
};

/* A listening port: our socket, and the vhost its connections join (the
 * upstream port has none: its connections are ours, core/wsconn.c). */
struct pk_server_port {
	const char *name;
	struct lws_vhost *vh;
	struct pk_sock_listener *ln;
	const char *protocol; /* the protocol its connections are bound to */
	int adopt;            /* lws_adoption_type */
	int tls;              /* TLS-only port */
};

struct pk_proxy_exchange;
struct admin_conn;

struct pk_server {
	const struct pk_server_config *cfg;
	struct lws_context *ctx;
	struct pk_server_port proxy, upstream, admin;
	SSL_CTX *upstream_tls; /* the upstream port's, when TLS (owned) */
	struct pk_registry *registry;
	struct pk_access access;
	struct pk_metrics *metrics;
	struct pk_server_metrics m;
	int ready;
	int shutting_down;
	uint64_t shutdown_deadline_ms;
	int exit_now;
	/* Every live upstream session and proxy connection, for timers and
	 * shutdown. Owned by their lws connections; these are only links. */
	struct pk_upstream *upstreams;
	struct pk_proxy_conn *conns;
	struct admin_conn *admin_conns; /* admin.c */
	/* Client sockets open on the proxy and admin ports (the caps
	 * proxy.max_connections and admin.max_connections; refused ones
	 * count until they close). */
	size_t n_proxy_sockets, n_admin_sockets;
	/* Connections on the upstream port, handshakes included (the cap
	 * upstream.max_connections; upstream.c). */
	size_t n_upstream_sockets;
	/* Exchanges waiting for an upstream that has 256 unacknowledged opens,
	 * oldest first; links only (proxy.c). */
	struct pk_proxy_exchange *waiting_head, *waiting_tail;
	size_t n_waiting;
	size_t in_flight; /* proxied exchanges not finished */
	/* of which came from another worker (--workers): left out of the
	 * in-flight gauge, which the worker they entered counts */
	size_t in_flight_from_workers;
	lws_sorted_usec_list_t tick_sul;
	struct pk_cluster cluster;
	uint64_t upstream_drain_deadline_ms; /* shutdown: agents may move until then */
	int exit_code;
};

/* Run a node until SIGTERM/SIGINT and a graceful shutdown. Returns the
 * process exit status. */
int pk_server_run(const struct pk_server_config *cfg);

/* mTLS: lws asks the first protocol of the context to judge each client
 * certificate and takes the callback's return value as the verdict (0 =
 * accept, whatever OpenSSL decided). Every server callback answers
 * LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION with this: OpenSSL's
 * own verdict (preverify_ok is the callback's len), so a certificate from
 * another CA is refused. */
static inline int pk_server_client_cert_verdict(size_t preverify_ok)
{
	return preverify_ok ? 0 : 1;
}

/* A fatal condition after start (e.g. the cluster could not be joined):
 * exit 1 at once. */
void pk_server_fail(struct pk_server *srv);

/* A request forwarded by another node arrived as stream s on a node link:
 * serve it as a client connection (proxy.c). Returns the handler now set as
 * the stream's user, to which the stream's first bytes are passed. */
struct pk_yamux_stream;
struct pk_stream_handler *pk_proxy_adopt_stream(struct pk_server *srv, struct pk_yamux_stream *s,
                                                const char *peer_ip);

/* The server a wsi belongs to. */
struct pk_server *pk_server_from_wsi(struct lws *wsi);

/* A cap refused a connection, tunnel or stream: count it in
 * piko_server_caps_refused_total{cap} and log msg as a warning, at most once
 * per 10 s per cap (with how many were not logged). key/val: one more field
 * for the log line, or NULL. */
void pk_server_cap_refused(struct pk_server *srv, const char *cap, const char *msg, const char *key,
                           const char *val);

/* Protocol lists of each port (defined in their files). */
extern const struct lws_protocols pk_proxy_protocols[];
extern const struct lws_protocols pk_admin_protocols[];

/* Timers of each port, called from the server tick. */
void pk_proxy_tick(struct pk_server *srv, uint64_t now_ms);
void pk_upstream_tick(struct pk_server *srv, uint64_t now_ms);
void pk_admin_tick(struct pk_server *srv, uint64_t now_ms);
/* Shutdown: tell upstreams to stop expecting new streams (Go Away). */
void pk_upstream_go_away_all(struct pk_server *srv);
/* Shutdown, once agents had their chance to move: close every tunnel. */
void pk_upstream_close_all(struct pk_server *srv);
/* 1 when some upstream connection carries a session (connections still in
 * their handshake, or refused and closing, do not count). */
int pk_upstream_tunnels(const struct pk_server *srv);
/* Streams carrying an exchange on every upstream session (the open-streams
 * gauge; streams idle in a tunnel's pool, upstream_pool.h, are not). */
size_t pk_upstream_open_streams(const struct pk_server *srv);
/* Open streams for waiting exchanges where there is room now. */
void pk_proxy_retry_waiting(struct pk_server *srv);
/* Shutdown: close idle keep-alive client connections. */
void pk_proxy_close_idle(struct pk_server *srv);

#endif
