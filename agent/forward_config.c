#include "forward_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_config.h"
#include "log.h"

#define F(f) offsetof(struct pk_forward_config, f)
#define P(f) offsetof(struct pk_forward_port_config, f)

static const struct pk_opt port_opts[] = {
    {"addr", PK_OPT_STRING, P(addr), NULL, "local address to listen on", 0, NULL, 0},
    {"endpoint_id", PK_OPT_STRING, P(endpoint_id), NULL, "endpoint to connect to", 0, NULL, 0},
    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
};

const struct pk_opt pk_forward_opts[] = {
    {"connect.url", PK_OPT_STRING, F(connect.url), "http://localhost:8000", "Piko server proxy URL",
     0, NULL, 0},
    {"connect.token", PK_OPT_STRING, F(connect.token), NULL, "token sent as Authorization: Bearer",
     0, NULL, 0},
    {"connect.timeout", PK_OPT_DURATION, F(connect.timeout_ms), "30s",
     "timeout connecting to the server", 0, NULL, 0},
    PK_TLS_CLIENT_OPTS("connect.tls.", F(connect.tls)),
    {"log.level", PK_OPT_STRING, F(log.level), "info", "debug, info, warn or error", 0, NULL, 0},
    {"log.subsystems", PK_OPT_STRLIST, F(log.subsystems), NULL, "subsystems logged at every level",
     0, NULL, 0},
    {"ports", PK_OPT_LIST, F(ports), NULL, "ports", 1, port_opts,
     sizeof(struct pk_forward_port_config)},
    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
};

void pk_forward_config_free_ports(struct pk_forward_config *cfg)
{
	pk_config_free_key(pk_forward_opts, cfg, "ports");
}

int pk_forward_listen_addr(const char *addr, char *out, size_t cap)
{
	struct pk_target t;
	char err[256];
	/* Same forms as an agent's TCP target: a port, or host:port. */
	if (pk_target_parse(addr, 0, &t, err, sizeof(err)) < 0)
		return -1;
	int n;
	if (strchr(t.host, ':'))
		n = snprintf(out, cap, "[%s]:%d", t.host, t.port);
	else
		n = snprintf(out, cap, "%s:%d", t.host, t.port);
	pk_target_free(&t);
	return n > 0 && (size_t)n < cap ? 0 : -1;
}

int pk_forward_config_validate(const struct pk_forward_config *cfg, char *err, size_t errlen)
{
	struct pk_server_url u;
	if (pk_server_url_parse(cfg->connect.url, &u, err, errlen) < 0)
		return -1;
	if (pk_tls_check_pair("connect tls", cfg->connect.tls.cert, cfg->connect.tls.key, err,
	                      errlen) < 0)
		return -1;
	if (cfg->connect.timeout_ms <= 0) {
		snprintf(err, errlen, "missing connect timeout");
		return -1;
	}
	if (pk_log_parse_level(cfg->log.level) < 0) {
		snprintf(err, errlen, "invalid log level: %s", cfg->log.level);
		return -1;
	}
	const struct pk_forward_port_config *ps = cfg->ports.v;
	for (size_t i = 0; i < cfg->ports.n; i++) {
		char a[300];
		if (!ps[i].endpoint_id || !*ps[i].endpoint_id || strchr(ps[i].endpoint_id, '/')) {
			snprintf(err, errlen, "port %zu: missing or invalid endpoint id", i);
			return -1;
		}
		if (!ps[i].addr || pk_forward_listen_addr(ps[i].addr, a, sizeof(a)) < 0) {
			snprintf(err, errlen, "port %zu: invalid address: %s", i,
			         ps[i].addr ? ps[i].addr : "");
			return -1;
		}
	}
	return 0;
}
