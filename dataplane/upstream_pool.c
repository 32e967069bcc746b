#include "upstream_pool.h"

#include <stdlib.h>

#include "backoff.h"
#include "buf.h"

struct pk_pooled {
	struct pk_stream_handler h; /* first: the stream's user pointer */
	struct pk_stream_pool *pool;
	struct pk_yamux_stream *s;
	struct pk_pass_work settle;
	int ready; /* may be taken (listed since the end of its loop pass) */
	uint64_t since_ms;
	struct pk_pooled *prev, *next;
};

static void unlink_entry(struct pk_pooled *e)
{
	struct pk_stream_pool *p = e->pool;
	if (e->prev)
		e->prev->next = e->next;
	else
		p->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		p->tail = e->prev;
	p->n--;
	if (!e->ready)
		p->settling--;
	pk_runloop_pass_cancel(&e->settle);
}

/* Forget the entry; the stream lives on without a user (what still arrives
 * on it is dropped and credited, core/tunnel.c). */
static void drop(struct pk_pooled *e)
{
	unlink_entry(e);
	pk_yamux_stream_set_user(e->s, NULL);
	free(e);
}

/* The agent sent on a stream with no request on it: nothing it says can be
 * trusted to start the next response. */
static void idle_on_data(struct pk_stream_handler *h, const uint8_t *data, size_t len)
{
	(void)data;
	struct pk_pooled *e = (struct pk_pooled *)h;
	struct pk_yamux_stream *s = e->s;
	drop(e);
	pk_yamux_stream_consumed(s, len);
	pk_yamux_stream_reset(s);
}

/* The agent closed its side (it keeps no idle stream, or it is leaving):
 * close ours, and the stream ends. */
static void idle_on_fin(struct pk_stream_handler *h)
{
	struct pk_pooled *e = (struct pk_pooled *)h;
	struct pk_yamux_stream *s = e->s;
	uint64_t now = pk_now_ms();
	pk_stream_pool_ended_early(e->pool, now - e->since_ms);
	drop(e);
	pk_yamux_stream_close(s, now);
}

static void idle_on_writable(struct pk_stream_handler *h)
{
	(void)h;
}

static void idle_on_close(struct pk_stream_handler *h, int reset)
{
	(void)reset;
	drop((struct pk_pooled *)h);
}

static const struct pk_stream_ops idle_ops = {
    .on_data = idle_on_data,
    .on_fin = idle_on_fin,
    .on_writable = idle_on_writable,
    .on_close = idle_on_close,
};

static void on_settled(struct pk_pass_work *w)
{
	struct pk_pooled *e = lws_container_of(w, struct pk_pooled, settle);
	e->ready = 1;
	e->pool->settling--;
}

struct pk_yamux_stream *pk_stream_pool_take(struct pk_stream_pool *p, uint64_t *kept_ms)
{
	for (struct pk_pooled *e = p->head; e; e = e->next) {
		if (!e->ready)
			continue;
		struct pk_yamux_stream *s = e->s;
		*kept_ms = pk_now_ms() - e->since_ms;
		drop(e);
		return s;
	}
	return NULL;
}

void pk_stream_pool_ended_early(struct pk_stream_pool *p, uint64_t kept_ms)
{
	if (kept_ms < PK_POOL_LEARN_MS)
		p->agent_closes = 1;
}

size_t pk_stream_pool_idle(const struct pk_stream_pool *p)
{
	return p->n - p->settling;
}

int pk_stream_pool_put(struct pk_stream_pool *p, struct pk_yamux_stream *s, uint64_t now_ms)
{
	if (p->n >= PK_POOL_MAX_IDLE || p->agent_closes) {
		pk_yamux_stream_set_user(s, NULL);
		pk_yamux_stream_close(s, now_ms);
		return 0;
	}
	/* Owner: the pool while listed, then whoever drop()s it (see the
	 * header). */
	struct pk_pooled *e = pk_xcalloc(1, sizeof(*e));
	e->h.ops = &idle_ops;
	e->pool = p;
	e->s = s;
	e->since_ms = now_ms;
	e->next = p->head;
	if (p->head)
		p->head->prev = e;
	else
		p->tail = e;
	p->head = e;
	p->n++;
	p->settling++;
	pk_yamux_stream_set_user(s, &e->h);
	pk_runloop_at_pass_end(&e->settle, on_settled);
	return 1;
}

static void close_entry(struct pk_pooled *e, uint64_t now_ms)
{
	struct pk_yamux_stream *s = e->s;
	drop(e);
	pk_yamux_stream_close(s, now_ms);
}

/* Closing a stream calls none of its callbacks at once (they come from the
 * session's next feed, fill or tick), so the neighbours stay listed. */
void pk_stream_pool_clear(struct pk_stream_pool *p)
{
	uint64_t now = pk_now_ms();
	for (struct pk_pooled *e = p->head, *next; e; e = next) {
		next = e->next;
		close_entry(e, now);
	}
}

void pk_stream_pool_expire(struct pk_stream_pool *p, uint64_t now_ms)
{
	/* Oldest at the tail: a stream is put back at the head. */
	for (struct pk_pooled *e = p->tail, *prev; e && now_ms - e->since_ms > PK_POOL_IDLE_MS;
	     e = prev) {
		prev = e->prev;
		close_entry(e, now_ms);
	}
}
