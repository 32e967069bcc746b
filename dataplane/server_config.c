/*
 * `piko server` options. Only what this node implements is listed: an option
 * we do not act on must not be accepted silently, so the YAML loader rejects
 * the keys of features that do not exist yet.
 */
#include "server_config.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "auth_config.h"
#include "log.h"
#include "yamux.h"

#define O(f) offsetof(struct pk_server_config, f)

static const struct pk_opt tenant_opts[] = {
    {"id", PK_OPT_STRING, offsetof(struct pk_tenant_config, id), NULL, "tenant ID", 0, NULL, 0},
    PK_AUTH_OPTS("auth.", offsetof(struct pk_tenant_config, auth)),
    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
};

const struct pk_opt pk_server_opts[] = {
    {"proxy.bind_addr", PK_OPT_STRING, O(proxy.bind_addr), ":8000",
     "proxy port: where clients send HTTP requests", 0, NULL, 0},
    {"proxy.advertise_addr", PK_OPT_STRING, O(proxy.advertise_addr), NULL,
     "address other nodes reach the proxy port on (derived when empty)", 0, NULL, 0},
    {"proxy.timeout", PK_OPT_DURATION, O(proxy.timeout_ms), "30s",
     "timeout for a proxied request up to its response headers (0 disables)", 0, NULL, 0},
    {"proxy.http.read_timeout", PK_OPT_DURATION, O(proxy.http.read_timeout_ms), "10s",
     "maximum time to read a whole request from a client", 0, NULL, 0},
    {"proxy.http.read_header_timeout", PK_OPT_DURATION, O(proxy.http.read_header_timeout_ms), "10s",
     "maximum time to read a request head from a client", 0, NULL, 0},
    {"proxy.http.write_timeout", PK_OPT_DURATION, O(proxy.http.write_timeout_ms), "10s",
     "accepted for compatibility; responses stream for as long as proxy.timeout allows", 0, NULL,
     0},
    {"proxy.http.idle_timeout", PK_OPT_DURATION, O(proxy.http.idle_timeout_ms), "5m",
     "close a keep-alive client connection idle for this long", 0, NULL, 0},
    {"proxy.http.max_header_bytes", PK_OPT_INT, O(proxy.http.max_header_bytes), "1048576",
     "maximum size of a request head", 0, NULL, 0},
    {"proxy.max_connections", PK_OPT_INT, O(proxy.max_connections), "65536",
     "most client connections open at once on the proxy port; more are answered 503 and closed "
     "(0: no limit)",
     0, NULL, 0},
    PK_ACCESS_LOG_OPTS("proxy.access_log.", O(proxy.access_log)),
    PK_AUTH_OPTS("proxy.auth.", O(proxy.auth)),
    PK_TLS_SERVER_OPTS("proxy.tls.", O(proxy.tls)),
    {"upstream.bind_addr", PK_OPT_STRING, O(upstream.bind_addr), ":8001",
     "upstream port: where agents connect", 0, NULL, 0},
    {"upstream.advertise_addr", PK_OPT_STRING, O(upstream.advertise_addr), NULL,
     "advertised upstream address (derived when empty)", 0, NULL, 0},
    PK_AUTH_OPTS("upstream.auth.", O(upstream.auth)),
    PK_TLS_SERVER_OPTS("upstream.tls.", O(upstream.tls)),
    {"upstream.tenants", PK_OPT_LIST, O(upstream.tenants), NULL,
     "tenants, each with its own auth keys (x-piko-tenant-id)", 1, tenant_opts,
     sizeof(struct pk_tenant_config)},
    {"upstream.rebalance.threshold", PK_OPT_FLOAT, O(upstream.rebalance.threshold), "0",
     "shed upstreams when this node has this fraction more than the cluster average (0: off)", 0,
     NULL, 0},
    {"upstream.rebalance.shed_rate", PK_OPT_FLOAT, O(upstream.rebalance.shed_rate), "0.005",
     "most upstreams shed per second, as a fraction of the cluster average", 0, NULL, 0},
    {"upstream.rebalance.min_conns", PK_OPT_INT, O(upstream.rebalance.min_conns), "50",
     "no rebalancing below this many upstreams on this node", 0, NULL, 0},
    {"upstream.http.read_header_timeout", PK_OPT_DURATION, O(upstream.http.read_header_timeout_ms),
     "10s",
     "maximum time from connecting to the upgrade request's end on the upstream port (and its "
     "TLS handshake); a slower client is closed",
     0, NULL, 0},
    {"upstream.max_connections", PK_OPT_INT, O(upstream.max_connections), "65536",
     "most upstream connections on this node; more are refused with 503 (0: no limit)", 0, NULL, 0},
    {"upstream.max_connections_per_endpoint", PK_OPT_INT, O(upstream.max_connections_per_endpoint),
     "1024",
     "most upstream connections one endpoint may have on this node; more are refused with 503 "
     "(0: no limit)",
     0, NULL, 0},
    {"upstream.max_streams_per_connection", PK_OPT_INT, O(upstream.max_streams_per_connection),
     "16384",
     "most streams (requests, TCP connections) open at once on one upstream connection; a request "
     "beyond is answered 503 (0: no limit)",
     0, NULL, 0},
    {"stream.max_window_size", PK_OPT_INT, O(stream.max_window_size), "262144",
     "receive window per stream on upstream connections, in bytes (at least 262144): a larger "
     "one lets a stream carry more from an agent per round trip, and may buffer as much",
     0, NULL, 0},
    {"admin.bind_addr", PK_OPT_STRING, O(admin.bind_addr), ":8002",
     "admin port: /health, /ready, /metrics", 0, NULL, 0},
    {"admin.advertise_addr", PK_OPT_STRING, O(admin.advertise_addr), NULL,
     "advertised admin address (derived when empty)", 0, NULL, 0},
    {"admin.http.read_header_timeout", PK_OPT_DURATION, O(admin.http.read_header_timeout_ms), "10s",
     "maximum time to read a request head (and a push's body) from an admin client (0 disables)", 0,
     NULL, 0},
    {"admin.http.idle_timeout", PK_OPT_DURATION, O(admin.http.idle_timeout_ms), "5m",
     "close a keep-alive admin connection idle for this long (0 disables)", 0, NULL, 0},
    {"admin.max_connections", PK_OPT_INT, O(admin.max_connections), "256",
     "most connections open at once on the admin port; more are answered 503 and closed (0: no "
     "limit)",
     0, NULL, 0},
    PK_AUTH_OPTS("admin.auth.", O(admin.auth)),
    PK_TLS_SERVER_OPTS("admin.tls.", O(admin.tls)),
    {"cluster.node_id", PK_OPT_STRING, O(cluster.node_id), NULL,
     "this node's ID (default: node_id_prefix + 7 random characters, new on every start)", 0, NULL,
     0},
    {"cluster.node_id_prefix", PK_OPT_STRING, O(cluster.node_id_prefix), NULL,
     "prefix of the generated node ID", 0, NULL, 0},
    {"cluster.join", PK_OPT_STRLIST, O(cluster.join), NULL,
     "members' cluster addresses (host or host:port); names are resolved to every address", 0, NULL,
     0},
    {"cluster.join_interval", PK_OPT_DURATION, O(cluster.join_interval_ms), "5s",
     "how often names in cluster.join are resolved again", 0, NULL, 0},
    {"cluster.join_timeout", PK_OPT_DURATION, O(cluster.join_timeout_ms), "1m",
     "how long a node may start without reaching any joined address", 0, NULL, 0},
    {"cluster.abort_if_join_fails", PK_OPT_BOOL, O(cluster.abort_if_join_fails), "true",
     "exit when no joined address answered within join_timeout", 0, NULL, 0},
    {"cluster.bind_addr", PK_OPT_STRING, O(cluster.bind_addr), NULL,
     "cluster port: node links (default :8003)", 0, NULL, 0},
    {"cluster.advertise_addr", PK_OPT_STRING, O(cluster.advertise_addr), NULL,
     "address other nodes reach the cluster port on (derived when empty)", 0, NULL, 0},
    {"cluster.gossip.bind_addr", PK_OPT_STRING, O(cluster.gossip.bind_addr), NULL,
     "Piko's name for cluster.bind_addr", 0, NULL, 0},
    {"cluster.gossip.advertise_addr", PK_OPT_STRING, O(cluster.gossip.advertise_addr), NULL,
     "Piko's name for cluster.advertise_addr", 0, NULL, 0},
    {"cluster.gossip.interval", PK_OPT_DURATION, O(cluster.gossip.interval_ms), NULL,
     "accepted for Piko configs and ignored (no gossip here)", 0, NULL, 0},
    {"cluster.gossip.max_packet_size", PK_OPT_INT, O(cluster.gossip.max_packet_size), NULL,
     "accepted for Piko configs and ignored (no gossip here)", 0, NULL, 0},
    {"cluster.auth.key", PK_OPT_STRING, O(cluster.auth.key), NULL,
     "the cluster key: node links and member pushes must prove they hold it", 0, NULL, 0},
    {"cluster.auth.key_file", PK_OPT_STRING, O(cluster.auth.key_file), NULL,
     "a file holding the cluster key", 0, NULL, 0},
    PK_TLS_SERVER_OPTS("cluster.tls.", O(cluster.tls)),
    {"log.level", PK_OPT_STRING, O(log.level), "info", "debug, info, warn or error", 0, NULL, 0},
    {"log.subsystems", PK_OPT_STRLIST, O(log.subsystems), NULL, "subsystems logged at every level",
     0, NULL, 0},
    {"grace_period", PK_OPT_DURATION, O(grace_period_ms), "1m",
     "how long a graceful shutdown may take", 0, NULL, 0},
    {"workers", PK_OPT_INT, O(workers), "1",
     "worker processes sharing the ports, one event loop each (docs/multicore.md)", 0, NULL, 0},
    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
};

static int check_addr(const char *name, const char *v, char *err, size_t errlen)
{
	if (!v || !*v) {
		snprintf(err, errlen, "missing %s", name);
		return -1;
	}
	return 0;
}

int pk_server_config_validate(const struct pk_server_config *cfg, char *err, size_t errlen)
{
	if (check_addr("proxy bind address", cfg->proxy.bind_addr, err, errlen) ||
	    check_addr("upstream bind address", cfg->upstream.bind_addr, err, errlen) ||
	    check_addr("admin bind address", cfg->admin.bind_addr, err, errlen))
		return -1;
	if (pk_log_parse_level(cfg->log.level) < 0) {
		snprintf(err, errlen, "invalid log level: %s", cfg->log.level);
		return -1;
	}
	if (pk_access_log_validate(&cfg->proxy.access_log, err, errlen) < 0)
		return -1;
	if (cfg->grace_period_ms <= 0) {
		snprintf(err, errlen, "missing grace period");
		return -1;
	}
	if (cfg->proxy.timeout_ms < 0) {
		snprintf(err, errlen, "invalid proxy timeout");
		return -1;
	}
	if (cfg->proxy.max_connections < 0 || cfg->upstream.max_connections < 0 ||
	    cfg->upstream.max_connections_per_endpoint < 0 || cfg->admin.max_connections < 0 ||
	    cfg->upstream.max_streams_per_connection < 0 ||
	    cfg->upstream.max_streams_per_connection > UINT32_MAX) {
		snprintf(err, errlen,
		         "the max_connections and max_streams_per_connection caps must not be "
		         "negative (0: no limit) nor above 4294967295");
		return -1;
	}
	if (pk_yamux_window_check(cfg->stream.max_window_size, err, errlen) < 0)
		return -1;
	/* A handshake is always bounded: there is no "0: none" here. */
	if (cfg->upstream.http.read_header_timeout_ms <= 0) {
		snprintf(err, errlen, "upstream.http.read_header_timeout must be positive");
		return -1;
	}
	if (cfg->upstream.rebalance.threshold < 0) {
		snprintf(err, errlen, "upstream.rebalance.threshold must not be negative");
		return -1;
	}
	if (cfg->upstream.rebalance.shed_rate < 0 || cfg->upstream.rebalance.shed_rate > 1) {
		snprintf(err, errlen, "upstream.rebalance.shed_rate must be between 0 and 1");
		return -1;
	}
	if (cfg->workers < 1 || cfg->workers > PK_MAX_WORKERS) {
		snprintf(err, errlen, "workers must be between 1 and %d", PK_MAX_WORKERS);
		return -1;
	}
	/* The workers are a cluster of their own, on loopback; a pod of
	 * workers that is also one node of a larger cluster is the design's
	 * next step (docs/multicore.md), not built yet. */
	if (cfg->workers > 1 &&
	    (cfg->cluster.join.n || (cfg->cluster.tls.cert && *cfg->cluster.tls.cert))) {
		snprintf(err, errlen,
		         "workers > 1 cannot be combined with cluster.join or cluster.tls yet: the "
		         "workers form their own cluster on loopback");
		return -1;
	}
	if (cfg->cluster.join_interval_ms <= 0) {
		snprintf(err, errlen, "cluster.join_interval must be positive");
		return -1;
	}
	if (cfg->cluster.join_timeout_ms <= 0) {
		snprintf(err, errlen, "missing cluster join timeout");
		return -1;
	}
	if (cfg->cluster.auth.key && *cfg->cluster.auth.key && cfg->cluster.auth.key_file &&
	    *cfg->cluster.auth.key_file) {
		snprintf(err, errlen, "cluster.auth: key and key_file are exclusive");
		return -1;
	}
	if (pk_tls_check_pair("proxy tls", cfg->proxy.tls.cert, cfg->proxy.tls.key, err, errlen) ||
	    pk_tls_check_pair("upstream tls", cfg->upstream.tls.cert, cfg->upstream.tls.key, err,
	                      errlen) ||
	    pk_tls_check_pair("admin tls", cfg->admin.tls.cert, cfg->admin.tls.key, err, errlen) ||
	    pk_tls_check_pair("cluster tls", cfg->cluster.tls.cert, cfg->cluster.tls.key, err,
	                      errlen))
		return -1;
	const struct pk_tenant_config *tenants = cfg->upstream.tenants.v;
	for (size_t i = 0; i < cfg->upstream.tenants.n; i++) {
		if (!tenants[i].id || !*tenants[i].id) {
			snprintf(err, errlen, "upstream: tenant %zu: missing id", i);
			return -1;
		}
		if (!pk_auth_enabled(&tenants[i].auth)) {
			snprintf(err, errlen, "upstream: tenant %s: missing auth", tenants[i].id);
			return -1;
		}
	}
	if (cfg->proxy.http.max_header_bytes < 1024 ||
	    cfg->proxy.http.max_header_bytes > 64 * 1024 * 1024) {
		snprintf(err, errlen,
		         "proxy.http.max_header_bytes must be between 1024 and 67108864");
		return -1;
	}
	return 0;
}
