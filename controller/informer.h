/*
 * An informer: list+watch of one kind into an in-memory cache, as client-go
 * does it (reference kubernetes.md §1.3 item 6).
 *
 *   LIST (pages of 500) -> cache replaced, deletes synthesized for keys gone
 *   WATCH from the list's resourceVersion, with bookmarks -> cache updated
 *   watch ended by the server (timeoutSeconds)  -> re-watch from the last RV
 *   connection lost                              -> re-watch after a backoff
 *   410 Gone (HTTP status or ERROR event)        -> relist
 *   any other failure or malformed stream        -> relist after a backoff
 *
 * The cache maps "namespace/name" to the object as last seen, stripped of
 * what the controller does not read and, for most kinds, serialized
 * (cache_strip.h: both chosen by the kind's name); resource versions are
 * opaque strings, compared only for equality. Events reach the owner through
 * one callback, after the cache is updated; the objects it is handed are
 * stripped as the cache holds them.
 */
#ifndef PK_INFORMER_H
#define PK_INFORMER_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "kube.h"
#include "watch.h"

struct pk_informer;

/* old is the cached object before the event (NULL when it is new), obj the
 * object after (for DELETED: the last state). Both are borrowed for the
 * call. */
typedef void (*pk_informer_fn)(void *ud, struct pk_informer *inf, enum pk_watch_type type,
                               struct json_object *old, struct json_object *obj);

struct pk_informer_opts {
	const char *kind;           /* for logs: "PikoCluster" */
	const char *path;           /* collection: "/apis/apps/v1/statefulsets" */
	const char *label_selector; /* or NULL */
	uint32_t watch_timeout_s;   /* asked of the server, jittered by up to +25% */
};

/* Owner: the caller (pk_informer_free). Starts listing at once. */
struct pk_informer *pk_informer_new(struct pk_kube *k, const struct pk_informer_opts *o,
                                    pk_informer_fn fn, void *ud);
void pk_informer_free(struct pk_informer *inf);

/* Run timers (backoffs). Returns ms until it next needs a tick. */
uint64_t pk_informer_tick(struct pk_informer *inf, uint64_t now_ms);

/* True once the first LIST has filled the cache. */
bool pk_informer_synced(const struct pk_informer *inf);
/* Cached object or NULL: borrowed, valid until the next event and, for an
 * informer of the compact form (cache_strip.h), until the next
 * pk_informer_get on the same informer (take a reference with
 * json_object_get to keep it longer). What is cached is what cache_strip.h
 * keeps of the object, not all of it. */
struct json_object *pk_informer_get(struct pk_informer *inf, const char *ns, const char *name);
/* The cache itself: a json object keyed by "ns/name" (borrowed; iterate with
 * json_object_object_foreach, never modify). Its values are the objects for
 * an informer of the tree form; for the compact form, json strings (the
 * objects serialized): iterate such a cache for its keys only, and read an
 * object with pk_informer_get. */
struct json_object *pk_informer_cache(const struct pk_informer *inf);
const char *pk_informer_kind(const struct pk_informer *inf);

/* Counters for logs, tests and metrics; objects is how many the cache holds
 * now, packed_bytes the length of their serialized forms (compact form; 0
 * for a tree). pk_informer_stats walks the cache for these two. */
struct pk_informer_stats {
	uint64_t lists, watches, events, bookmarks, gone, errors;
	uint64_t objects, packed_bytes;
};
void pk_informer_stats(const struct pk_informer *inf, struct pk_informer_stats *out);

/* "ns/name" of an object into buf; 0, or -1 when metadata.name is missing. */
int pk_object_key(struct json_object *obj, char *buf, size_t len);
/* Shorthands for metadata fields (NULL when absent). */
const char *pk_object_str(struct json_object *obj, const char *path);

#endif
