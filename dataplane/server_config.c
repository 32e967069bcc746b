/*
 * `piko server` options. Only what this node implements is listed: an option
 * we do not act on must not be accepted silently, so the YAML loader rejects
 * the keys of features that do not exist yet.
 */
#include "server_config.h"

#include <stdio.h>
#include <string.h>

#include "auth_config.h"
#include "log.h"

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
    {"proxy.access_log.level", PK_OPT_STRING, O(proxy.access_log.level), "info",
     "level of access log records", 0, NULL, 0},
    {"proxy.access_log.disable", PK_OPT_BOOL, O(proxy.access_log.disable), "false",
     "disable the access log", 0, NULL, 0},
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
    {"admin.bind_addr", PK_OPT_STRING, O(admin.bind_addr), ":8002",
     "admin port: /health, /ready, /metrics", 0, NULL, 0},
    {"admin.advertise_addr", PK_OPT_STRING, O(admin.advertise_addr), NULL,
     "advertised admin address (derived when empty)", 0, NULL, 0},
    PK_AUTH_OPTS("admin.auth.", O(admin.auth)),
    PK_TLS_SERVER_OPTS("admin.tls.", O(admin.tls)),
    {"log.level", PK_OPT_STRING, O(log.level), "info", "debug, info, warn or error", 0, NULL, 0},
    {"log.subsystems", PK_OPT_STRLIST, O(log.subsystems), NULL, "subsystems logged at every level",
     0, NULL, 0},
    {"grace_period", PK_OPT_DURATION, O(grace_period_ms), "1m",
     "how long a graceful shutdown may take", 0, NULL, 0},
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
	if (pk_log_parse_level(cfg->proxy.access_log.level) < 0) {
		snprintf(err, errlen, "invalid access log level: %s", cfg->proxy.access_log.level);
		return -1;
	}
	if (cfg->grace_period_ms <= 0) {
		snprintf(err, errlen, "missing grace period");
		return -1;
	}
	if (cfg->proxy.timeout_ms < 0) {
		snprintf(err, errlen, "invalid proxy timeout");
		return -1;
	}
	if (pk_tls_check_pair("proxy tls", cfg->proxy.tls.cert, cfg->proxy.tls.key, err, errlen) ||
	    pk_tls_check_pair("upstream tls", cfg->upstream.tls.cert, cfg->upstream.tls.key, err,
	                      errlen) ||
	    pk_tls_check_pair("admin tls", cfg->admin.tls.cert, cfg->admin.tls.key, err, errlen))
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
