#include "bench_config.h"

#include <stdio.h>
#include <string.h>

#include "agent_config.h"
#include "log.h"

#define B(f) offsetof(struct pk_bench_config, f)

/* The two tables differ only in the connection block's prefix. (Kept out
 * of clang-format: it lays a macro's initializers out one field a line.) */
/* clang-format off */
#define BENCH_COUNTS \
	{"requests", PK_OPT_INT, B(requests), "100000", "number of requests to send", 0, NULL, 0}, \
	{"clients", PK_OPT_INT, B(clients), "100", "number of clients to connect", 0, NULL, 0}, \
	{"endpoints", PK_OPT_INT, B(endpoints), "100", "number of endpoints to register", 0, NULL, \
	 0}, \
	{"upstreams", PK_OPT_INT, B(upstreams), "100", "number of upstream listeners to register", \
	 0, NULL, 0}, \
	{"size", PK_OPT_INT, B(size), "1024", "request payload size in bytes", 0, NULL, 0}, \
	{"log.level", PK_OPT_STRING, B(log.level), "info", "debug, info, warn or error", 0, NULL, \
	 0}, \
	{"log.subsystems", PK_OPT_STRLIST, B(log.subsystems), NULL, \
	 "subsystems logged at every level", 0, NULL, 0}

#define BENCH_CONNECT(P) \
	{P "proxy_url", PK_OPT_STRING, B(connect.proxy_url), "http://localhost:8000", \
	 "Piko server proxy URL", 0, NULL, 0}, \
	{P "upstream_url", PK_OPT_STRING, B(connect.upstream_url), "http://localhost:8001", \
	 "Piko server upstream URL", 0, NULL, 0}, \
	{P "timeout", PK_OPT_DURATION, B(connect.timeout_ms), "5s", \
	 "timeout registering the upstreams, and of each request", 0, NULL, 0}
/* clang-format on */

const struct pk_opt pk_bench_flag_opts[] = {
    BENCH_COUNTS,
    BENCH_CONNECT("connect."),
    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
};

const struct pk_opt pk_bench_yaml_opts[] = {
    BENCH_COUNTS,
    BENCH_CONNECT("server."),
    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
};

static int check_count(const char *name, int64_t v, int64_t max, char *err, size_t errlen)
{
	if (v == 0) {
		snprintf(err, errlen, "missing %s", name); /* Piko's text */
		return -1;
	}
	if (v < 0 || v > max) {
		snprintf(err, errlen, "invalid %s: %lld (want 1 to %lld)", name, (long long)v,
		         (long long)max);
		return -1;
	}
	return 0;
}

int pk_bench_config_validate(const struct pk_bench_config *cfg, char *err, size_t errlen)
{
	if (check_count("requests", cfg->requests, INT32_MAX, err, errlen) < 0 ||
	    check_count("clients", cfg->clients, PK_BENCH_MAX_CLIENTS, err, errlen) < 0 ||
	    check_count("endpoints", cfg->endpoints, PK_BENCH_MAX_UPSTREAMS, err, errlen) < 0 ||
	    check_count("upstreams", cfg->upstreams, PK_BENCH_MAX_UPSTREAMS, err, errlen) < 0 ||
	    check_count("size", cfg->size, PK_BENCH_MAX_SIZE, err, errlen) < 0)
		return -1;
	if (cfg->endpoints > cfg->upstreams) {
		snprintf(
		    err, errlen,
		    "endpoints (%lld) exceed upstreams (%lld): an endpoint without an upstream "
		    "fails every request sent to it",
		    (long long)cfg->endpoints, (long long)cfg->upstreams);
		return -1;
	}
	struct pk_server_url u;
	char why[300];
	if (!cfg->connect.proxy_url || !*cfg->connect.proxy_url) {
		snprintf(err, errlen, "server: missing proxy url");
		return -1;
	}
	if (pk_server_url_parse(cfg->connect.proxy_url, &u, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "server: invalid proxy url: %s", cfg->connect.proxy_url);
		return -1;
	}
	if (!cfg->connect.upstream_url || !*cfg->connect.upstream_url) {
		snprintf(err, errlen, "server: missing upstream url");
		return -1;
	}
	if (pk_server_url_parse(cfg->connect.upstream_url, &u, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "server: invalid upstream url: %s",
		         cfg->connect.upstream_url);
		return -1;
	}
	if (cfg->connect.timeout_ms <= 0) {
		snprintf(err, errlen, "server: missing timeout");
		return -1;
	}
	if (pk_log_parse_level(cfg->log.level) < 0) {
		snprintf(err, errlen, "log: invalid level: %s",
		         cfg->log.level ? cfg->log.level : "");
		return -1;
	}
	return 0;
}

int64_t pk_bench_requests_for_client(int64_t requests, int64_t clients, int64_t i)
{
	return requests / clients + (i < requests % clients ? 1 : 0);
}
