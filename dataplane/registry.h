/*
 * The local endpoint registry: for each endpoint ID, the listener sessions
 * (upstreams) connected to this node, picked round-robin (protocol reference
 * §2.3). Upstreams are opaque pointers owned by the caller; the registry only
 * stores them.
 *
 * Keyed by a hash table (many endpoints are expected, 10k and more) whose hash
 * is seeded at creation, because endpoint IDs come from peers. Single-threaded
 * like the rest of the data plane.
 */
#ifndef PK_REGISTRY_H
#define PK_REGISTRY_H

#include <stddef.h>

struct pk_registry;

/* Owner: the caller; pk_registry_free() frees every entry (not the
 * upstreams). */
struct pk_registry *pk_registry_new(void);
void pk_registry_free(struct pk_registry *reg);

/* Append upstream to endpoint's list (creating the endpoint). Returns 0, or -1
 * when that upstream is already registered for that endpoint (nothing
 * changes). The endpoint string is copied. */
int pk_registry_add(struct pk_registry *reg, const char *endpoint, void *upstream);

/* Remove upstream from endpoint's list; the round-robin index is then taken
 * modulo the new length, and the endpoint disappears with its last upstream.
 * Idempotent: returns 0 when removed, -1 (and changes nothing) when absent. */
int pk_registry_remove(struct pk_registry *reg, const char *endpoint, void *upstream);

/* The next upstream for endpoint, round-robin (the index advances after each
 * pick), or NULL when it has none. */
void *pk_registry_next(struct pk_registry *reg, const char *endpoint);

/* Upstreams connected for endpoint (0 when unknown). */
size_t pk_registry_upstreams(const struct pk_registry *reg, const char *endpoint);

/* Endpoints with at least one upstream, and upstreams over all endpoints. */
size_t pk_registry_num_endpoints(const struct pk_registry *reg);
size_t pk_registry_num_upstreams(const struct pk_registry *reg);

/* Call fn for every endpoint with its upstream count, in no particular order.
 * fn must not modify the registry. */
void pk_registry_foreach(const struct pk_registry *reg,
                         void (*fn)(void *arg, const char *endpoint, size_t count), void *arg);

#endif
