/*
 * The agent's own HTTP server (Piko's `--server.enabled`, bound to
 * `--server.bind-addr`, default `:5000`), on the agent's lws loop:
 *
 *   GET /metrics  Prometheus text: Piko's agent registry (protocol reference
 *                 §7.3: piko_agent_requests_in_flight{endpoint},
 *                 piko_agent_requests_total{endpoint,method,status},
 *                 piko_agent_request_latency_seconds{endpoint,method,status},
 *                 piko_agent_request_size_bytes{endpoint},
 *                 piko_agent_response_size_bytes{endpoint}; HTTP listeners)
 *                 and ours: piko_agent_listener_connected{endpoint},
 *                 piko_agent_open_streams{endpoint},
 *                 piko_agent_tunnel_connects_total{endpoint},
 *                 piko_agent_tcp_connections_total{endpoint}.
 *   GET /health   200 while the process runs.
 *   GET /ready    200 while every listener has a tunnel up (see
 *                 pk_agent_ready), else 503 naming the listener that has
 *                 none: the readiness probe of a Kubernetes Deployment.
 *   anything else 404 (Piko's router 404).
 *
 * HEAD is answered like GET without the body. One request per connection
 * (every response says Connection: close), at most ADMIN_MAX_CONNS at a
 * time, each given ADMIN_CONN_MS to finish; the connection is served by
 * core/sock.c and read by core/http1.c's request reader.
 *
 * The metrics are kept whether or not the server is enabled (a few counter
 * updates per request).
 */
#ifndef PK_AGENT_ADMIN_H
#define PK_AGENT_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "metrics.h"
#include "process_metrics.h"

struct pk_agent;
struct pk_agent_admin;

struct pk_agent_metrics {
	struct pk_metrics *reg;
	/* Piko's agent registry */
	struct pk_metric *in_flight;      /* gauge {endpoint} */
	struct pk_metric *requests_total; /* counter {endpoint,method,status} */
	struct pk_metric *latency;        /* histogram {endpoint,method,status} */
	struct pk_metric *request_size;   /* histogram {endpoint} */
	struct pk_metric *response_size;  /* histogram {endpoint} */
	/* ours */
	struct pk_metric *connected;       /* gauge {endpoint}, set when rendered */
	struct pk_metric *open_streams;    /* gauge {endpoint}, set when rendered */
	struct pk_metric *connects_total;  /* counter {endpoint} */
	struct pk_metric *tcp_conns_total; /* counter {endpoint} */
	struct pk_process_metrics process; /* process_* (no go_*: process_metrics.h) */
};

/* Register every metric. Owner: the caller (pk_agent_metrics_free). */
void pk_agent_metrics_init(struct pk_agent_metrics *m);
void pk_agent_metrics_free(struct pk_agent_metrics *m);

/* Start the server when a->cfg->server.enabled (else nothing to do);
 * pk_sock_init() must have run. Returns 0, or -1 with err set when it
 * cannot listen. */
int pk_agent_admin_start(struct pk_agent *a, char *err, size_t errlen);

/* Expire connections past their time; call from the agent's tick. */
void pk_agent_admin_tick(struct pk_agent *a, uint64_t now_ms);

/* Stop listening; call before the lws context is destroyed (its
 * connections end with the context). */
void pk_agent_admin_stop(struct pk_agent *a);
/* Free the server; call after the lws context is destroyed. */
void pk_agent_admin_free(struct pk_agent *a);

#endif
