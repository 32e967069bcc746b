/*
 * The upstream port: agents (and Piko's Go agents and SDK) connect with a
 * WebSocket to GET /piko/v1/upstream/<endpoint>; the connection then carries
 * a yamux session in which this server is the yamux server and opens one
 * stream per proxied exchange.
 */
#ifndef PK_UPSTREAM_H
#define PK_UPSTREAM_H

#include "server.h"
#include "tunnel.h"
#include "upstream_pool.h"

/* The longest upgrade request head taken (431 beyond): room for large
 * tokens, bounded memory per handshake. */
#define PK_UPSTREAM_MAX_HEAD (64 * 1024)

struct pk_upstream {
	struct pk_tunnel tunnel;
	struct pk_server *srv;
	char *endpoint;
	char client_ip[64];
	int registered;             /* in the registry (removal is idempotent, §10.3 item 2) */
	int64_t token_exp;          /* seconds since the epoch; 0: none to enforce */
	uint64_t shed_deadline_ms;  /* rebalancing asked it to move; closed then */
	struct pk_stream_pool pool; /* idle streams for the next request */
	struct pk_upstream *prev, *next;
};

/* A connection accepted on the upstream port (the port's listener hands
 * over fd). */
void pk_upstream_accept(struct pk_server *srv, int fd);

/* Open a stream to this upstream for one exchange. Returns NULL when the
 * upstream cannot take one (Go Away received, session closing): the upstream
 * is then taken out of rotation. */
struct pk_yamux_stream *pk_upstream_open_stream(struct pk_upstream *up);

/* A stream for the next request: an idle one from the pool, or a new one
 * (pk_upstream_open_stream()). *reused says which; *kept_ms how long a
 * reused one waited in the pool. */
struct pk_yamux_stream *pk_upstream_take_stream(struct pk_upstream *up, int *reused,
                                                uint64_t *kept_ms);
/* Hand back a stream whose exchange completed with both sides open, for the
 * next request (closed when the tunnel is leaving or its pool is full). */
void pk_upstream_put_stream(struct pk_upstream *up, struct pk_yamux_stream *s);
/* 1 when an open failed only because 256 opens already wait for the agent's
 * ACK (Go's yamux blocks the opener then): worth waiting for, not a 502. */
int pk_upstream_opens_full(const struct pk_upstream *up);
/* 1 when upstream.max_streams_per_connection streams are open on it. */
int pk_upstream_streams_full(const struct pk_upstream *up);

#endif
