/*
 * `piko server` configuration: the struct, its option table (flags and YAML
 * keys, Piko's names, protocol reference §4.2) and validation.
 */
#ifndef PK_SERVER_CONFIG_H
#define PK_SERVER_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "access_log.h"
#include "auth.h"
#include "config.h"
#include "tls_config.h"

/* --workers' bound: more processes than this is a typo, not a machine. */
#define PK_MAX_WORKERS 64

/* upstream.tenants[]: a tenant's own keys (protocol reference §5). */
struct pk_tenant_config {
	char *id;
	struct pk_auth_config auth;
};

struct pk_server_config {
	struct {
		char *bind_addr;
		char *advertise_addr;
		int64_t timeout_ms;
		struct {
			int64_t read_timeout_ms;
			int64_t read_header_timeout_ms;
			int64_t write_timeout_ms;
			int64_t idle_timeout_ms;
			int64_t max_header_bytes;
		} http;
		/* Client connections open at once; more are answered 503 and
		 * closed. 0: no cap. */
		int64_t max_connections;
		struct pk_access_log_config access_log;
		struct pk_auth_config auth;
		struct pk_tls_server_config tls;
	} proxy;
	struct {
		char *bind_addr;
		char *advertise_addr;
		/* Upstream connections (tunnels) on this node; more are refused
		 * 503 before the upgrade. 0: no cap. */
		int64_t max_connections;
		struct pk_auth_config auth;
		struct pk_list tenants; /* of struct pk_tenant_config */
		struct pk_tls_server_config tls;
		struct {
			double threshold; /* 0: off */
			double shed_rate;
			int64_t min_conns;
		} rebalance;
		/* Upstream connections (tunnels) one endpoint may hold on this
		 * node; the next is refused 503 before the upgrade. 0: no cap. */
		int64_t max_connections_per_endpoint;
		/* Streams open at once on one upstream connection; a request
		 * beyond is answered 503. 0: no cap. */
		int64_t max_streams_per_connection;
		/* Ours: how long a connection may take to complete its upgrade
		 * request (a slow or silent client is closed). */
		struct {
			int64_t read_header_timeout_ms;
		} http;
	} upstream;
	/* The yamux streams of upstream connections (Piko's stream.*). */
	struct {
		/* Receive window per stream, in bytes (262144 to 4294967295): how
		 * much one stream may have in flight from an agent to this node
		 * before it waits for a Window Update. */
		int64_t max_window_size;
	} stream;
	struct {
		char *bind_addr;
		char *advertise_addr;
		/* Ours (Piko's admin server has no timeouts): slow clients
		 * are closed as on the proxy port. */
		struct {
			int64_t read_header_timeout_ms;
			int64_t idle_timeout_ms;
		} http;
		/* Admin connections open at once; more are answered 503 and
		 * closed. 0: no cap. */
		int64_t max_connections;
		struct pk_auth_config auth;
		struct pk_tls_server_config tls;
	} admin;
	/* The cluster (DESIGN §5): who this node is, who its members are,
	 * and the port its node links use. */
	struct {
		char *node_id;
		char *node_id_prefix;
		struct pk_strlist join;
		int64_t join_interval_ms;
		int64_t join_timeout_ms;
		int abort_if_join_fails;
		char *bind_addr;      /* NULL: gossip.bind_addr, else ":8003" */
		char *advertise_addr; /* NULL: gossip.advertise_addr, else derived */
		/* Piko's gossip keys: the two addresses are aliases, the tuning
		 * keys are accepted and ignored (there is no gossip here). */
		struct {
			char *bind_addr;
			char *advertise_addr;
			int64_t interval_ms;
			int64_t max_packet_size;
		} gossip;
		struct {
			char *key; /* the cluster key itself (e.g. through --config.expand-env) */
			char *key_file; /* or a file holding it */
		} auth;
		struct pk_tls_server_config tls;
	} cluster;
	struct {
		char *level;
		struct pk_strlist subsystems;
	} log;
	int64_t grace_period_ms;
	/* Worker processes sharing the ports (dataplane/workers.c); 1: this
	 * process serves alone. */
	int64_t workers;
	/* Set by the supervisor in a worker (dataplane/workers.c), never by
	 * options; all zero in a server that runs alone. */
	struct {
		int on;    /* this process is one of several workers */
		int index; /* 0 to workers-1 */
		/* Its listening sockets, bound by the supervisor. */
		int proxy_fd, upstream_fd, admin_fd, cluster_fd;
		/* The header value that marks the workers' requests to each
		 * other's admin ports (admin_gather.h): workers 1 and up take
		 * no other. Owner: workers.c. */
		const char *secret;
		/* Worker 0: the others' loopback admin addresses. Owner:
		 * workers.c. */
		struct pk_strlist admins;
	} worker;
};

extern const struct pk_opt pk_server_opts[];

/* Check values that parse but make no sense. Returns 0 or -1 with err set. */
int pk_server_config_validate(const struct pk_server_config *cfg, char *err, size_t errlen);

#endif
