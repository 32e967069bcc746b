/*
 * pk_balancer: a TCP load balancer on core/sock.c. Each accepted connection
 * is piped raw to a backend that a callback picks, so anything TCP crosses
 * it (HTTP, WebSocket upgrades, agents' tunnels) and a half-close travels
 * end to end (pk_sock keeps half-closed connections alive).
 *
 * Nothing is read from the client until the backend connection is up, so a
 * refused or timed-out dial can be retried on another backend without losing
 * bytes: up to PK_BALANCER_MAX_ATTEMPTS backends per connection, each picked
 * with the set of those already tried.
 *
 * Backpressure: each side stops reading while the other side's send queue
 * holds half its cap or more, and resumes on its drain. Memory per
 * connection is therefore at most two capped send queues; connections per
 * balancer are capped too (PK_BALANCER_MAX_CONNS, beyond which new ones are
 * closed at once).
 *
 * Single-threaded, on the loop of the lws context given to pk_sock_init().
 */
#ifndef PK_BALANCER_H
#define PK_BALANCER_H

#include <stddef.h>
#include <stdint.h>

#define PK_BALANCER_MAX_ATTEMPTS 3
#define PK_BALANCER_MAX_CONNS 4096

struct pk_balancer;

/* Picks the backend of a new connection. tried has bit i set for each
 * backend index already tried for this connection. Returns a backend index
 * (0..63) with host (NUL-terminated, at most hostlen bytes) and *port set,
 * or -1 when there is none left to try. */
typedef int (*pk_balancer_pick_fn)(void *user, uint64_t tried, char *host, size_t hostlen,
                                   int *port);

/* Listen on addr (as pk_sock_listen: "host:port", ":port", port 0 picks
 * one). name labels its log records. Returns NULL with err set when it
 * cannot listen. Owner: the caller, through pk_balancer_stop() then
 * pk_balancer_free(). */
struct pk_balancer *pk_balancer_listen(const char *name, const char *addr, pk_balancer_pick_fn pick,
                                       void *user, char *err, size_t errlen);

/* The port bound. */
int pk_balancer_port(const struct pk_balancer *b);

/* Connections open now (for tests and logs). */
size_t pk_balancer_conns(const struct pk_balancer *b);

/* Before the lws context is destroyed: stop listening and abort every
 * connection (their on_close comes from the loop or from the context's
 * destruction, and frees them). */
void pk_balancer_stop(struct pk_balancer *b);

/* After the lws context is gone: free what is left, and b. NULL is a no-op. */
void pk_balancer_free(struct pk_balancer *b);

#endif
