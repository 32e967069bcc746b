/*
 * Idle tunnel streams, kept for the next request: HTTP keep-alive over the
 * tunnel. A stream that carried one complete request and response, with
 * neither side closing, carries the next request to the same tunnel, as
 * nginx's upstream keepalive reuses its connections: no SYN, ACK and FIN
 * per request, and so no extra wake-up of the agent and of this node for
 * them (docs/benchmarks.md, fourth round).
 *
 * Piko's agent and Go SDK serve a yamux stream with Go's http.Server, which
 * keeps the connection for the next request; our agent does the same
 * (agent/agent_http.c). Piko's server sends Connection: close and so one
 * request per stream, which our agent also serves.
 */
#ifndef PK_UPSTREAM_POOL_H
#define PK_UPSTREAM_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "runloop.h"
#include "tunnel.h"
#include "yamux.h"

/* Idle streams kept per tunnel: as many as requests were in flight at once
 * recently, up to this; beyond it a finished stream is closed. */
#define PK_POOL_MAX_IDLE 128
/* An idle stream is closed after this long unused (nginx's upstream
 * keepalive_timeout). */
#define PK_POOL_IDLE_MS (60 * 1000)

struct pk_pooled;

/* One tunnel's idle streams, most recently used first. Owner: the tunnel's
 * pk_upstream; each entry is owned by the pool while listed and by its
 * stream's user pointer (freed when the stream goes) otherwise. */
struct pk_stream_pool {
	struct pk_pooled *head, *tail;
	size_t n;
	size_t settling; /* handed back in this loop pass, listed at its end */
	/* The agent ended a stream right after it was kept (within
	 * PK_POOL_LEARN_MS): it closes each stream after its response,
	 * whatever the response says (ours before keep-alive), so a kept
	 * stream could be taken before its FIN arrives; none is kept again. */
	int agent_closes;
};

#define PK_POOL_LEARN_MS 1000

/* A stream from the pool, its user pointer cleared (the caller sets its
 * own), or NULL when none is idle; *kept_ms: how long it waited. */
struct pk_yamux_stream *pk_stream_pool_take(struct pk_stream_pool *p, uint64_t *kept_ms);

/* A stream taken after kept_ms in the pool ended (FIN) before any of its
 * response: when that was soon after it was kept, the agent closes its
 * streams after each response (see agent_closes). */
void pk_stream_pool_ended_early(struct pk_stream_pool *p, uint64_t kept_ms);

/* Hand back s after a complete exchange: kept (1) or, when the pool is
 * full or the agent ends its streams itself, closed with our FIN (0). The stream becomes available
 * at the end of this loop pass: a FIN the agent sent right behind its response is still in the
 * buffer being read, and must close the stream before any request takes it. */
int pk_stream_pool_put(struct pk_stream_pool *p, struct pk_yamux_stream *s, uint64_t now_ms);

/* How many streams pk_stream_pool_take() may hand out now. */
size_t pk_stream_pool_idle(const struct pk_stream_pool *p);

/* Close (FIN) every idle stream: the tunnel leaves the rotation. */
void pk_stream_pool_clear(struct pk_stream_pool *p);

/* Close the streams idle for longer than PK_POOL_IDLE_MS. */
void pk_stream_pool_expire(struct pk_stream_pool *p, uint64_t now_ms);

#endif
