/*
 * pk_strmap: a map from strings to int64 values, for counters keyed by names
 * that peers choose (endpoint IDs, node names). A key is present exactly when
 * its value is non-zero, so "set to 0" and "add down to 0" remove it and the
 * map never accumulates dead keys.
 *
 * A chained hash table keyed by SipHash with a random key per map (no hash
 * flooding by chosen names), doubled when the load factor passes 1. Keys are
 * copied into the map; the map owns them. Not thread-safe: one owner thread,
 * like the rest of the data plane. Allocation failure aborts (pk_xmalloc).
 *
 * Values and the running sum wrap modulo 2^64 on overflow instead of being
 * undefined behaviour; callers counting real things never get near that.
 */
#ifndef PK_STRMAP_H
#define PK_STRMAP_H

#include <stddef.h>
#include <stdint.h>

struct pk_strmap;

/* An empty map. Owner: the caller, who frees it with pk_strmap_free(). */
struct pk_strmap *pk_strmap_new(void);

/* Free m with every key it holds. NULL is accepted and ignored. */
void pk_strmap_free(struct pk_strmap *m);

/* Set key (non-NULL, NUL-terminated, any length) to value; value 0 removes the
 * key. Returns the previous value (0 when absent). The key is copied. */
int64_t pk_strmap_set(struct pk_strmap *m, const char *key, int64_t value);

/* Add delta to key's value (absent counts as 0); the key is removed when the
 * result is 0. Returns the new value. The key is copied when inserted. */
int64_t pk_strmap_add(struct pk_strmap *m, const char *key, int64_t delta);

/* key's value, 0 when absent. key must not be NULL. */
int64_t pk_strmap_get(const struct pk_strmap *m, const char *key);

/* Keys present (those with a non-zero value). */
size_t pk_strmap_count(const struct pk_strmap *m);

/* Sum of all values, maintained on every change so this is O(1). */
int64_t pk_strmap_sum(const struct pk_strmap *m);

/* Call fn(arg, key, value) once for every key, in no particular order. key is
 * owned by the map and valid only during the call. fn must not modify the
 * map. */
void pk_strmap_foreach(const struct pk_strmap *m,
                       void (*fn)(void *arg, const char *key, int64_t value), void *arg);

/* Remove every key (the map stays usable, and keeps its hash key). */
void pk_strmap_clear(struct pk_strmap *m);

#endif
