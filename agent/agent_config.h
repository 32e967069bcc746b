/*
 * `piko agent` configuration (protocol reference §4.4): the connection to the
 * server, the agent's own HTTP server, logging, grace period and the
 * listeners, each an endpoint served by a local service.
 */
#ifndef PK_AGENT_CONFIG_H
#define PK_AGENT_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "access_log.h"
#include "config.h"
#include "tls_config.h"

struct pk_listener_config {
	char *endpoint_id;
	char *addr;
	char *protocol; /* "http" (default) or "tcp" */
	int64_t timeout_ms;
	struct pk_access_log_config access_log;
	struct pk_tls_client_config tls; /* to an https:// service */
};

struct pk_agent_config {
	struct {
		char *url;
		char *token;
		char *tenant_id;
		int64_t timeout_ms;
		struct pk_tls_client_config tls;
	} connect;
	/* The yamux streams of its tunnels (Piko's stream.*): the receive
	 * window per stream, in bytes (262144 to 4294967295). */
	struct {
		int64_t max_window_size;
	} stream;
	/* The agent's own HTTP server: /metrics, /health, /ready
	 * (agent_admin.h). */
	struct {
		int enabled;
		char *bind_addr;
	} server;
	struct {
		char *level;
		struct pk_strlist subsystems;
	} log;
	int64_t grace_period_ms;
	struct pk_list listeners; /* of struct pk_listener_config */
};

/* `agent http|tcp <endpoint> <addr>`: the agent options plus the flags of the
 * one listener given on the command line. agent must stay the first member:
 * the agent table's offsets are used for both structs. */
struct pk_agent_cmd_config {
	struct pk_agent_config agent;
	struct pk_listener_config listener;
};

/* YAML keys and persistent flags. */
extern const struct pk_opt pk_agent_opts[];
/* Flags of `agent http` / `agent tcp` (agent options + listener flags). */
extern const struct pk_opt pk_agent_http_opts[];

/* A listener target: http://host:port[/prefix] (http) or host:port (tcp),
 * from Piko's address forms: "3000", "host:3000", "http://host:3000/p". */
struct pk_target {
	char host[256];
	int port;
	int tls;
	char *path_prefix; /* NULL or "/p" without a trailing slash */
};

/* Parse a listener address. Returns 0, or -1 with err set. */
int pk_target_parse(const char *addr, int http, struct pk_target *t, char *err, size_t errlen);
void pk_target_free(struct pk_target *t);

/* The server URL: scheme (http/https/ws/wss), host, port and base path. */
struct pk_server_url {
	char host[256];
	int port;
	int tls;
	char path[512]; /* base path, "" when none */
};

int pk_server_url_parse(const char *url, struct pk_server_url *u, char *err, size_t errlen);

/* Free the listeners list (from YAML) and empty it. */
void pk_agent_config_free_listeners(struct pk_agent_config *cfg);

int pk_agent_config_validate(const struct pk_agent_config *cfg, char *err, size_t errlen);

#endif
