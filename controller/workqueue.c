/*
 * The rate-limited work queue. See workqueue.h.
 *
 * Every key the queue knows is one item in a chained hash table (FNV-1a;
 * keys are object names, which only users with create rights choose, so
 * flooding one chain is not a concern worth a keyed hash). An item is
 * tracked while it is queued, in flight, or has failures to remember; it is
 * freed as soon as it is none of these, so `cap` bounds the table.
 *
 * Queued items, ready or not, sit in one binary min-heap ordered by
 * (deadline, seq): a key added now has deadline = now, so "FIFO among ready
 * keys" and "delayed keys in deadline order" are the same ordering, and
 * add/get/done are O(log n). seq, taken afresh whenever an item is (re)placed,
 * breaks ties in queueing order.
 *
 * In-flight items are never in the heap, so pk_wq_get cannot hand a key out
 * twice; an add meanwhile only records dirty_deadline, applied at
 * pk_wq_done.
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "workqueue.h"

#define WQ_DEFAULT_BASE_MS 5
#define WQ_DEFAULT_MAX_MS 1000000
#define WQ_DEFAULT_QPS 10.0
#define WQ_DEFAULT_BURST 100
#define WQ_DEFAULT_CAP 100000
#define WQ_MIN_BUCKETS 64

#define NOT_IN_HEAP SIZE_MAX

struct wq_item {
	struct wq_item *chain; /* next in the hash bucket */
	uint64_t hash;
	uint64_t deadline;       /* when in the heap: ready at or after this */
	uint64_t seq;            /* when in the heap: tie-break, queueing order */
	uint64_t dirty_deadline; /* when in flight and dirty: requeue at this */
	size_t heap_idx;         /* NOT_IN_HEAP unless queued */
	unsigned failures;
	unsigned char in_flight;
	unsigned char dirty;
	char key[]; /* owned copy, NUL-terminated */
};

struct pk_wq {
	struct pk_wq_opts o;
	struct wq_item **buckets; /* owned; nbuckets is a power of two */
	size_t nbuckets;
	size_t nitems;
	struct wq_item **heap; /* owned array; the items belong to the table */
	size_t nheap, heapcap;
	uint64_t seq;
	/* Token bucket (golang.org/x/time/rate semantics: tokens may go
	 * negative, which is the debt later reservations wait out). */
	double tokens;
	uint64_t bucket_ms;
	int bucket_started;
	uint64_t adds, retries;
};

static uint64_t hash_key(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ull;
	}
	return h;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

struct pk_wq *pk_wq_new(const struct pk_wq_opts *o)
{
	struct pk_wq *q = pk_xcalloc(1, sizeof(*q));
	if (o)
		q->o = *o;
	if (!q->o.base_delay_ms)
		q->o.base_delay_ms = WQ_DEFAULT_BASE_MS;
	if (!q->o.max_delay_ms)
		q->o.max_delay_ms = WQ_DEFAULT_MAX_MS;
	/* !(qps > 0) also catches NaN. */
	if (!(q->o.qps > 0))
		q->o.qps = WQ_DEFAULT_QPS;
	if (!q->o.burst)
		q->o.burst = WQ_DEFAULT_BURST;
	if (!q->o.cap)
		q->o.cap = WQ_DEFAULT_CAP;
	q->nbuckets = WQ_MIN_BUCKETS;
	q->buckets = pk_xcalloc(q->nbuckets, sizeof(*q->buckets));
	return q;
}

void pk_wq_free(struct pk_wq *q)
{
	if (!q)
		return;
	for (size_t i = 0; i < q->nbuckets; i++) {
		struct wq_item *it = q->buckets[i];
		while (it) {
			struct wq_item *next = it->chain;
			free(it);
			it = next;
		}
	}
	free(q->buckets);
	q->buckets = NULL;
	free(q->heap);
	q->heap = NULL;
	free(q);
}

/* ---- the key table ---- */

static struct wq_item *lookup(const struct pk_wq *q, const char *key, uint64_t h)
{
	for (struct wq_item *it = q->buckets[h & (q->nbuckets - 1)]; it; it = it->chain)
		if (it->hash == h && strcmp(it->key, key) == 0)
			return it;
	return NULL;
}

static void grow_table(struct pk_wq *q)
{
	size_t n = q->nbuckets * 2;
	struct wq_item **b = pk_xcalloc(n, sizeof(*b));
	for (size_t i = 0; i < q->nbuckets; i++) {
		struct wq_item *it = q->buckets[i];
		while (it) {
			struct wq_item *next = it->chain;
			it->chain = b[it->hash & (n - 1)];
			b[it->hash & (n - 1)] = it;
			it = next;
		}
	}
	free(q->buckets);
	q->buckets = b;
	q->nbuckets = n;
}

/* The item for key, created if needed; NULL when the cap refuses it. */
static struct wq_item *track(struct pk_wq *q, const char *key)
{
	uint64_t h = hash_key(key);
	struct wq_item *it = lookup(q, key, h);
	if (it)
		return it;
	if (q->nitems >= q->o.cap)
		return NULL;
	/* Load factor at most 1: chains stay short. */
	if (q->nitems >= q->nbuckets)
		grow_table(q);
	size_t klen = strlen(key);
	it = pk_xcalloc(1, sizeof(*it) + klen + 1);
	memcpy(it->key, key, klen + 1);
	it->hash = h;
	it->heap_idx = NOT_IN_HEAP;
	it->chain = q->buckets[h & (q->nbuckets - 1)];
	q->buckets[h & (q->nbuckets - 1)] = it;
	q->nitems++;
	return it;
}

/* Free an item that is neither queued nor in flight. */
static void untrack(struct pk_wq *q, struct wq_item *it)
{
	struct wq_item **pp = &q->buckets[it->hash & (q->nbuckets - 1)];
	while (*pp != it)
		pp = &(*pp)->chain;
	*pp = it->chain;
	q->nitems--;
	free(it);
}

/* Drop an item that no longer needs tracking. */
static void maybe_untrack(struct pk_wq *q, struct wq_item *it)
{
	if (it->heap_idx == NOT_IN_HEAP && !it->in_flight && it->failures == 0)
		untrack(q, it);
}

/* ---- the heap ---- */

static int before(const struct wq_item *a, const struct wq_item *b)
{
	return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static void heap_set(struct pk_wq *q, size_t i, struct wq_item *it)
{
	q->heap[i] = it;
	it->heap_idx = i;
}

static void sift_up(struct pk_wq *q, size_t i)
{
	struct wq_item *it = q->heap[i];
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (!before(it, q->heap[parent]))
			break;
		heap_set(q, i, q->heap[parent]);
		i = parent;
	}
	heap_set(q, i, it);
}

static void sift_down(struct pk_wq *q, size_t i)
{
	struct wq_item *it = q->heap[i];
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= q->nheap)
			break;
		if (c + 1 < q->nheap && before(q->heap[c + 1], q->heap[c]))
			c++;
		if (!before(q->heap[c], it))
			break;
		heap_set(q, i, q->heap[c]);
		i = c;
	}
	heap_set(q, i, it);
}

static void heap_push(struct pk_wq *q, struct wq_item *it, uint64_t deadline)
{
	/* The heap never holds more than the table, which cap bounds. */
	if (q->nheap == q->heapcap) {
		q->heapcap = q->heapcap ? q->heapcap * 2 : 64;
		q->heap = pk_xrealloc(q->heap, q->heapcap * sizeof(*q->heap));
	}
	it->deadline = deadline;
	it->seq = ++q->seq;
	q->heap[q->nheap] = it;
	it->heap_idx = q->nheap++;
	sift_up(q, it->heap_idx);
}

static struct wq_item *heap_pop(struct pk_wq *q)
{
	struct wq_item *top = q->heap[0];
	top->heap_idx = NOT_IN_HEAP;
	if (--q->nheap > 0) {
		heap_set(q, 0, q->heap[q->nheap]);
		sift_down(q, 0);
	}
	return top;
}

/* ---- the queue ---- */

static void enqueue(struct pk_wq *q, struct wq_item *it, uint64_t delay_ms, uint64_t now_ms)
{
	uint64_t deadline = sat_add(now_ms, delay_ms);
	if (it->in_flight) {
		if (!it->dirty || deadline < it->dirty_deadline)
			it->dirty_deadline = deadline;
		it->dirty = 1;
	} else if (it->heap_idx != NOT_IN_HEAP) {
		/* Earlier wins. A key already ready has deadline <= now, so it
		 * keeps its place. */
		if (deadline < it->deadline) {
			it->deadline = deadline;
			it->seq = ++q->seq;
			sift_up(q, it->heap_idx);
		}
	} else {
		heap_push(q, it, deadline);
	}
	q->adds++;
}

int pk_wq_add_after(struct pk_wq *q, const char *key, uint64_t delay_ms, uint64_t now_ms)
{
	struct wq_item *it = track(q, key);
	if (!it)
		return -1;
	enqueue(q, it, delay_ms, now_ms);
	return 0;
}

int pk_wq_add(struct pk_wq *q, const char *key, uint64_t now_ms)
{
	return pk_wq_add_after(q, key, 0, now_ms);
}

/* client-go's ItemExponentialFailureRateLimiter: base * 2^failures, capped
 * (and saturating rather than overflowing). */
static uint64_t backoff_ms(const struct pk_wq *q, unsigned failures)
{
	uint64_t base = q->o.base_delay_ms, max = q->o.max_delay_ms;
	if (failures >= 64 || base > (UINT64_MAX >> failures))
		return max;
	uint64_t d = base << failures;
	return d > max ? max : d;
}

/* client-go's BucketRateLimiter: Reserve().Delay() on a token bucket that
 * starts full. Every call takes a token, even when it must wait, so N calls
 * past the burst at one instant wait 1/qps, 2/qps, ... N/qps. */
static uint64_t bucket_delay_ms(struct pk_wq *q, uint64_t now_ms)
{
	if (!q->bucket_started) {
		q->tokens = q->o.burst;
		q->bucket_ms = now_ms;
		q->bucket_started = 1;
	}
	if (now_ms > q->bucket_ms) {
		q->tokens += (double)(now_ms - q->bucket_ms) * q->o.qps / 1000.0;
		if (q->tokens > q->o.burst)
			q->tokens = q->o.burst;
		q->bucket_ms = now_ms;
	}
	q->tokens -= 1.0;
	if (q->tokens >= 0)
		return 0;
	/* The small slack keeps float noise from turning 100 ms into 101. */
	double ms = ceil(-q->tokens * 1000.0 / q->o.qps - 1e-6);
	return ms >= 1.8e19 ? UINT64_MAX : (uint64_t)ms;
}

int pk_wq_add_rate_limited(struct pk_wq *q, const char *key, uint64_t now_ms)
{
	q->retries++;
	struct wq_item *it = track(q, key);
	if (!it)
		return -1;
	uint64_t delay = backoff_ms(q, it->failures);
	if (it->failures < UINT_MAX)
		it->failures++;
	uint64_t bucket = bucket_delay_ms(q, now_ms);
	enqueue(q, it, delay > bucket ? delay : bucket, now_ms);
	return 0;
}

void pk_wq_forget(struct pk_wq *q, const char *key)
{
	struct wq_item *it = lookup(q, key, hash_key(key));
	if (!it)
		return;
	it->failures = 0;
	maybe_untrack(q, it);
}

unsigned pk_wq_failures(const struct pk_wq *q, const char *key)
{
	const struct wq_item *it = lookup(q, key, hash_key(key));
	return it ? it->failures : 0;
}

const char *pk_wq_get(struct pk_wq *q, uint64_t now_ms)
{
	if (q->nheap == 0 || q->heap[0]->deadline > now_ms)
		return NULL;
	struct wq_item *it = heap_pop(q);
	it->in_flight = 1;
	return it->key;
}

void pk_wq_done(struct pk_wq *q, const char *key, uint64_t now_ms)
{
	struct wq_item *it = lookup(q, key, hash_key(key));
	if (!it || !it->in_flight)
		return;
	/* key may be it->key: not used past this point. */
	it->in_flight = 0;
	if (it->dirty) {
		it->dirty = 0;
		/* Behind keys already ready (as client-go appends at Done), or
		 * later if a delayed add asked for later. */
		heap_push(q, it, it->dirty_deadline > now_ms ? it->dirty_deadline : now_ms);
		return;
	}
	maybe_untrack(q, it);
}

uint64_t pk_wq_next_ms(const struct pk_wq *q, uint64_t now_ms)
{
	if (q->nheap == 0)
		return UINT64_MAX;
	uint64_t d = q->heap[0]->deadline;
	return d <= now_ms ? 0 : d - now_ms;
}

size_t pk_wq_depth(const struct pk_wq *q)
{
	return q->nheap;
}

uint64_t pk_wq_adds(const struct pk_wq *q)
{
	return q->adds;
}

uint64_t pk_wq_retries(const struct pk_wq *q)
{
	return q->retries;
}
