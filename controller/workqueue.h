/*
 * pk_wq: client-go's rate-limited work queue, single-threaded.
 *
 * Keys are strings ("namespace/name"). The queue
 *   - de-duplicates: a key waiting to be processed is held once;
 *   - never hands out a key that is being processed (between pk_wq_get and
 *     pk_wq_done): an add meanwhile marks it dirty, and pk_wq_done queues
 *     it again;
 *   - delays keys (pk_wq_add_after, RequeueAfter) and rate-limits retries
 *     (pk_wq_add_rate_limited): the max of a per-key exponential backoff and
 *     an overall token bucket, as client-go's DefaultControllerRateLimiter.
 *
 * Time is the caller's: every call that needs it takes a monotonic now in
 * ms, and nothing reads a clock, so tests drive time by hand and the event
 * loop sleeps pk_wq_next_ms().
 *
 * One difference from client-go: a key has at most one pending deadline,
 * and an earlier one replaces a later one (client-go keeps the later
 * delayed add too and processes the key again when it fires). Reconcile is
 * level-triggered and asks again for RequeueAfter if it still needs it, so
 * the extra run would only repeat work.
 *
 * Ownership: pk_wq_new() returns a queue the caller owns and frees with
 * pk_wq_free(); the queue owns copies of its keys. OOM aborts (pk_xmalloc).
 */
#ifndef PK_WORKQUEUE_H
#define PK_WORKQUEUE_H

#include <stddef.h>
#include <stdint.h>

struct pk_wq_opts {
	uint64_t base_delay_ms; /* 5: first retry delay, doubled per failure */
	uint64_t max_delay_ms;  /* 1000000: cap on the per-key backoff */
	double qps;             /* 10: token bucket refill rate, per second */
	unsigned burst;         /* 100: token bucket size */
	size_t cap;             /* 100000: max distinct keys tracked */
};

struct pk_wq;

/* A new queue. NULL opts, or a zero field, takes the default shown above.
 * Never NULL. */
struct pk_wq *pk_wq_new(const struct pk_wq_opts *o);

/* Queue key now. A key already waiting stays once (and keeps its place if
 * already ready; a later deadline is brought forward to now); a key being
 * processed is marked dirty and queued again at pk_wq_done. Returns 0, or -1
 * when cap distinct keys are already tracked and key is not one of them (the
 * caller logs; the periodic resync recovers). */
int pk_wq_add(struct pk_wq *q, const char *key, uint64_t now_ms);

/* Queue key once delay_ms has passed (0: as pk_wq_add). If the key already
 * has a pending deadline, the earlier of the two wins. Returns as pk_wq_add. */
int pk_wq_add_after(struct pk_wq *q, const char *key, uint64_t delay_ms, uint64_t now_ms);

/* Queue key after max(per-key backoff base * 2^failures capped at max, the
 * token bucket's delay), then count a failure for the key and a retry for
 * the queue. The retry is counted even when the cap refuses the key (-1). */
int pk_wq_add_rate_limited(struct pk_wq *q, const char *key, uint64_t now_ms);

/* Reset the key's failure count (after a successful reconcile). */
void pk_wq_forget(struct pk_wq *q, const char *key);

/* The key's failure count (0 for an unknown key). */
unsigned pk_wq_failures(const struct pk_wq *q, const char *key);

/* The next key ready at now_ms, marked in flight, or NULL if none is ready.
 * Among ready keys the one ready first comes first; ties go in the order
 * they were queued. The string is owned by the queue and valid until
 * pk_wq_done() for it. */
const char *pk_wq_get(struct pk_wq *q, uint64_t now_ms);

/* Processing of key is over. If it was re-added meanwhile, it is queued
 * again (behind keys already ready, or at its requested later deadline).
 * A key that is not in flight is ignored. key may be the pointer
 * pk_wq_get() returned. */
void pk_wq_done(struct pk_wq *q, const char *key, uint64_t now_ms);

/* ms until the earliest queued key becomes ready: 0 if one is ready now,
 * UINT64_MAX if none is queued. Keys in flight do not count. */
uint64_t pk_wq_next_ms(const struct pk_wq *q, uint64_t now_ms);

/* Keys ready or waiting, not in flight (the workqueue_depth metric). */
size_t pk_wq_depth(const struct pk_wq *q);

/* Add calls accepted (returned 0), de-duplicated ones included
 * (workqueue_adds_total). */
uint64_t pk_wq_adds(const struct pk_wq *q);

/* pk_wq_add_rate_limited calls (workqueue_retries_total). */
uint64_t pk_wq_retries(const struct pk_wq *q);

/* Free the queue and its keys (NULL is fine). Strings from pk_wq_get die
 * with it. */
void pk_wq_free(struct pk_wq *q);

#endif
