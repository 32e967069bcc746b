#include "agent_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "yamux.h"

#define A(f) offsetof(struct pk_agent_config, f)
#define L(f) offsetof(struct pk_listener_config, f)
#define C(f) offsetof(struct pk_agent_cmd_config, f)

static const struct pk_opt listener_opts[] = {
    {"endpoint_id", PK_OPT_STRING, L(endpoint_id), NULL, "endpoint to register", 0, NULL, 0},
    {"addr", PK_OPT_STRING, L(addr), NULL, "local service address", 0, NULL, 0},
    {"protocol", PK_OPT_STRING, L(protocol), "http", "http or tcp", 0, NULL, 0},
    {"timeout", PK_OPT_DURATION, L(timeout_ms), NULL,
     "request timeout (http) or dial timeout (tcp)", 0, NULL, 0},
    PK_ACCESS_LOG_OPTS("access_log.", L(access_log)),
    PK_TLS_CLIENT_OPTS("tls.", L(tls)),
    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
};

#define AGENT_OPTS(OFF)                                                                            \
	{"connect.url",                                                                            \
	 PK_OPT_STRING,                                                                            \
	 OFF(connect.url),                                                                         \
	 "http://localhost:8001",                                                                  \
	 "Piko server upstream URL",                                                               \
	 0,                                                                                        \
	 NULL,                                                                                     \
	 0},                                                                                       \
	    {"connect.token",                                                                      \
	     PK_OPT_STRING,                                                                        \
	     OFF(connect.token),                                                                   \
	     NULL,                                                                                 \
	     "token sent as Authorization: Bearer",                                                \
	     0,                                                                                    \
	     NULL,                                                                                 \
	     0},                                                                                   \
	    {"connect.tenant_id",                                                                  \
	     PK_OPT_STRING,                                                                        \
	     OFF(connect.tenant_id),                                                               \
	     NULL,                                                                                 \
	     "tenant sent as x-piko-tenant-id",                                                    \
	     0,                                                                                    \
	     NULL,                                                                                 \
	     0},                                                                                   \
	    {"connect.timeout",                                                                    \
	     PK_OPT_DURATION,                                                                      \
	     OFF(connect.timeout_ms),                                                              \
	     "30s",                                                                                \
	     "how long to keep trying the first connection",                                       \
	     0,                                                                                    \
	     NULL,                                                                                 \
	     0},                                                                                   \
	    {"stream.max_window_size",                                                             \
	     PK_OPT_INT,                                                                           \
	     OFF(stream.max_window_size),                                                          \
	     "262144",                                                                             \
	     "receive window per stream, in bytes (at least 262144): a larger one lets a stream "  \
	     "carry more from the server per round trip, and may buffer as much",                  \
	     0,                                                                                    \
	     NULL,                                                                                 \
	     0},                                                                                   \
	    {"log.level",                                                                          \
	     PK_OPT_STRING,                                                                        \
	     OFF(log.level),                                                                       \
	     "info",                                                                               \
	     "debug, info, warn or error",                                                         \
	     0,                                                                                    \
	     NULL,                                                                                 \
	     0},                                                                                   \
	    {"log.subsystems",                                                                     \
	     PK_OPT_STRLIST,                                                                       \
	     OFF(log.subsystems),                                                                  \
	     NULL,                                                                                 \
	     "subsystems logged at every level",                                                   \
	     0,                                                                                    \
	     NULL,                                                                                 \
	     0},                                                                                   \
	{                                                                                          \
		"grace_period", PK_OPT_DURATION, OFF(grace_period_ms), "1m",                       \
		    "how long a graceful shutdown may take", 0, NULL, 0                            \
	}

/* Piko's `server.*` of the agent: off by default, :5000. */
#define AGENT_SERVER_OPTS(OFF)                                                                     \
	{"server.enabled",                                                                         \
	 PK_OPT_BOOL,                                                                              \
	 OFF(server.enabled),                                                                      \
	 "false",                                                                                  \
	 "serve /metrics, /health and /ready on server.bind_addr",                                 \
	 0,                                                                                        \
	 NULL,                                                                                     \
	 0},                                                                                       \
	{                                                                                          \
		"server.bind_addr", PK_OPT_STRING, OFF(server.bind_addr), ":5000",                 \
		    "address of the agent's HTTP server", 0, NULL, 0                               \
	}

const struct pk_opt pk_agent_opts[] = {
    AGENT_OPTS(A),
    AGENT_SERVER_OPTS(A),
    PK_TLS_CLIENT_OPTS("connect.tls.", A(connect.tls)),
    {"listeners", PK_OPT_LIST, A(listeners), NULL, "listeners", 1, listener_opts,
     sizeof(struct pk_listener_config)},
    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
};

#define AGENT_CMD(f) C(agent.f)

const struct pk_opt pk_agent_http_opts[] = {
    AGENT_OPTS(AGENT_CMD),
    AGENT_SERVER_OPTS(AGENT_CMD),
    PK_TLS_CLIENT_OPTS("connect.tls.", C(agent.connect.tls)),
    {"timeout", PK_OPT_DURATION, C(listener.timeout_ms), "10s",
     "request timeout (http) or dial timeout (tcp)", 0, NULL, 0},
    PK_ACCESS_LOG_OPTS("access_log.", C(listener.access_log)),
    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
};

static int parse_port(const char *s, int *port)
{
	char *end;
	long p = strtol(s, &end, 10);
	if (!*s || *end || p <= 0 || p > 65535)
		return -1;
	*port = (int)p;
	return 0;
}

/* host:port (host may be [v6]); default_port used when there is no port. */
static int split_host_port(const char *s, size_t n, char *host, size_t hostlen, int *port,
                           int default_port)
{
	char buf[512];
	if (n == 0 || n >= sizeof(buf))
		return -1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	char *h = buf, *colon;
	if (buf[0] == '[') {
		char *end = strchr(buf, ']');
		if (!end)
			return -1;
		*end = '\0';
		h = buf + 1;
		colon = end[1] == ':' ? end + 1 : NULL;
		if (!colon && end[1])
			return -1;
	} else {
		colon = strrchr(buf, ':');
		if (colon)
			*colon = '\0';
	}
	if (colon) {
		if (parse_port(colon + 1, port) < 0)
			return -1;
	} else {
		if (!default_port)
			return -1;
		*port = default_port;
	}
	size_t hl = strlen(h);
	if (!hl || hl >= hostlen)
		return -1;
	memcpy(host, h, hl + 1); /* fits: checked above (snprintf made GCC warn at -Os) */
	return 0;
}

/* "scheme://host[:port][/path]": the scheme must be one of the plain
 * (tls 0) or TLS (tls 1) names given; the port defaults to 80 or 443.
 * *path points into url (NULL when there is none). */
static int split_url(const char *url, const char *const plain[], const char *const secure[],
                     int *tls, char *host, size_t hostlen, int *port, const char **path)
{
	const char *sep = url ? strstr(url, "://") : NULL;
	if (!sep)
		return -1;
	size_t slen = (size_t)(sep - url);
	int which = -1;
	for (int k = 0; k < 2 && which < 0; k++) {
		const char *const *names = k ? secure : plain;
		for (size_t i = 0; names[i]; i++)
			if (strlen(names[i]) == slen && !strncmp(url, names[i], slen))
				which = k;
	}
	if (which < 0)
		return -1;
	*tls = which;
	const char *hp = sep + 3;
	*path = strchr(hp, '/');
	size_t hlen = *path ? (size_t)(*path - hp) : strlen(hp);
	return split_host_port(hp, hlen, host, hostlen, port, which ? 443 : 80);
}

int pk_target_parse(const char *addr, int http, struct pk_target *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	if (!addr || !*addr) {
		snprintf(err, errlen, "missing address");
		return -1;
	}
	int port;
	if (parse_port(addr, &port) == 0) {
		snprintf(t->host, sizeof(t->host), "localhost");
		t->port = port;
		return 0;
	}
	if (!strstr(addr, "://")) {
		if (split_host_port(addr, strlen(addr), t->host, sizeof(t->host), &t->port, 0) < 0)
			goto bad;
		return 0;
	}
	static const char *const plain[] = {"http", NULL}, *const secure[] = {"https", NULL};
	const char *path;
	if (!http ||
	    split_url(addr, plain, secure, &t->tls, t->host, sizeof(t->host), &t->port, &path) < 0)
		goto bad;
	if (path) {
		size_t plen = strlen(path);
		while (plen > 0 && path[plen - 1] == '/')
			plen--;
		if (plen > 0)
			t->path_prefix = pk_xstrndup(path, plen);
	}
	return 0;
bad:
	snprintf(err, errlen, "invalid address: %s", addr);
	return -1;
}

void pk_target_free(struct pk_target *t)
{
	free(t->path_prefix);
	t->path_prefix = NULL;
}

int pk_server_url_parse(const char *url, struct pk_server_url *u, char *err, size_t errlen)
{
	static const char *const plain[] = {"http", "ws", NULL}, *const secure[] = {"https", "wss",
	                                                                            NULL};
	const char *path;
	memset(u, 0, sizeof(*u));
	if (split_url(url, plain, secure, &u->tls, u->host, sizeof(u->host), &u->port, &path) < 0)
		goto bad;
	/* Piko appends its path to whatever the URL has, without normalising. */
	if (path && strlen(path) >= sizeof(u->path))
		goto bad;
	snprintf(u->path, sizeof(u->path), "%s", path ? path : "");
	return 0;
bad:
	snprintf(err, errlen, "invalid url: %s", url ? url : "");
	return -1;
}

void pk_agent_config_free_listeners(struct pk_agent_config *cfg)
{
	pk_config_free_key(pk_agent_opts, cfg, "listeners");
}

int pk_agent_config_validate(const struct pk_agent_config *cfg, char *err, size_t errlen)
{
	struct pk_server_url u;
	if (pk_server_url_parse(cfg->connect.url, &u, err, errlen) < 0)
		return -1;
	if (cfg->connect.timeout_ms <= 0) {
		snprintf(err, errlen, "missing connect timeout");
		return -1;
	}
	if (pk_tls_check_pair("connect tls", cfg->connect.tls.cert, cfg->connect.tls.key, err,
	                      errlen) < 0)
		return -1;
	if (pk_yamux_window_check(cfg->stream.max_window_size, err, errlen) < 0)
		return -1;
	if (pk_log_parse_level(cfg->log.level) < 0) {
		snprintf(err, errlen, "invalid log level: %s", cfg->log.level);
		return -1;
	}
	if (cfg->grace_period_ms <= 0) {
		snprintf(err, errlen, "missing grace period");
		return -1;
	}
	if (cfg->server.enabled && (!cfg->server.bind_addr || !*cfg->server.bind_addr)) {
		snprintf(err, errlen, "missing server bind address");
		return -1;
	}
	const struct pk_listener_config *ls = cfg->listeners.v;
	for (size_t i = 0; i < cfg->listeners.n; i++) {
		const struct pk_listener_config *l = &ls[i];
		struct pk_target t;
		if (!l->endpoint_id || !*l->endpoint_id) {
			snprintf(err, errlen, "listener %zu: missing endpoint id", i);
			return -1;
		}
		if (strchr(l->endpoint_id, '/')) {
			snprintf(err, errlen, "listener %zu: invalid endpoint id: %s", i,
			         l->endpoint_id);
			return -1;
		}
		if (!l->protocol || (strcmp(l->protocol, "http") && strcmp(l->protocol, "tcp"))) {
			snprintf(err, errlen, "listener %zu: unsupported protocol: %s", i,
			         l->protocol ? l->protocol : "");
			return -1;
		}
		if (l->timeout_ms <= 0) {
			snprintf(err, errlen, "listener %zu: missing timeout", i);
			return -1;
		}
		char terr[256];
		if (pk_target_parse(l->addr, strcmp(l->protocol, "tcp") != 0, &t, terr,
		                    sizeof(terr)) < 0) {
			snprintf(err, errlen, "listener %zu: %s", i, terr);
			return -1;
		}
		pk_target_free(&t);
		char what[64];
		snprintf(what, sizeof(what), "listener %zu: tls", i);
		if (pk_tls_check_pair(what, l->tls.cert, l->tls.key, err, errlen) < 0)
			return -1;
		char aerr[200];
		if (pk_access_log_validate(&l->access_log, aerr, sizeof(aerr)) < 0) {
			snprintf(err, errlen, "listener %zu: %s", i, aerr);
			return -1;
		}
	}
	return 0;
}
