/*
 * `piko bench http` configuration (protocol reference §4.6): how many
 * requests, clients, endpoints and upstreams, the body size, and where the
 * server's proxy and upstream ports are.
 *
 * As in Piko, the flags say `connect.*` while the YAML section is `server`
 * (`--connect.proxy-url` is `server.proxy_url` in the file): two option
 * tables over the same struct.
 */
#ifndef PK_BENCH_CONFIG_H
#define PK_BENCH_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Bounds we add where Piko has none (it accepts any positive value): each
 * client holds a connection and a body of `size` bytes, each upstream a
 * tunnel, so these keep a typo from exhausting the machine. */
#define PK_BENCH_MAX_CLIENTS 10000
#define PK_BENCH_MAX_UPSTREAMS 10000
#define PK_BENCH_MAX_SIZE (64 * 1024 * 1024)

struct pk_bench_config {
	int64_t requests;
	int64_t clients;
	int64_t endpoints;
	int64_t upstreams;
	int64_t size;
	struct {
		char *proxy_url;
		char *upstream_url;
		int64_t timeout_ms;
	} connect;
	struct {
		char *level;
		struct pk_strlist subsystems;
	} log;
};

/* Flags of `bench http` (--connect.proxy-url, ...). */
extern const struct pk_opt pk_bench_flag_opts[];
/* Its YAML keys (server.proxy_url, ...). */
extern const struct pk_opt pk_bench_yaml_opts[];

/* Piko's checks ("missing requests" for 0, "server: missing proxy url", ...)
 * plus ours: no negative counts, the bounds above, and no more endpoints
 * than upstreams (an endpoint without an upstream would fail every request
 * sent to it). Returns 0, or -1 with err set. */
int pk_bench_config_validate(const struct pk_bench_config *cfg, char *err, size_t errlen);

/* Piko's split of the requests among the clients: requests / clients each,
 * the first requests % clients one more. Returns the share of client i. */
int64_t pk_bench_requests_for_client(int64_t requests, int64_t clients, int64_t i);

#endif
