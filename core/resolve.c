/*
 * One worker thread takes queries off a FIFO, runs getaddrinfo() with the
 * mutex released, and appends the result to a done FIFO; the owner's
 * pk_resolver_dispatch() pops them. A single thread is enough: lookups are
 * rare (upstream and peer addresses, not per request), and it keeps the
 * worst case at one thread blocked in libc, which pk_resolver_free() waits
 * for.
 */
#include "resolve.h"

#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "buf.h"

struct query {
	struct query *next; /* in the pending or done list */
	uint64_t id;
	void (*cb)(void *user, const struct pk_resolve_result *res, const char *err);
	void *user;
	int cancelled; /* set by cancel while the worker holds it */
	int failed;    /* err holds the message */
	struct pk_resolve_result res;
	char err[160];
	char host[]; /* brackets stripped, allocated with the query */
};

struct list {
	struct query *head, *tail;
	size_t n;
};

struct pk_resolver {
	pthread_mutex_t mu; /* guards everything below but the thread and wake */
	pthread_cond_t cv;  /* signalled when pending grows or stop is set */
	pthread_t thread;
	void (*wake)(void *arg);
	void *wake_arg;
	struct list pending;   /* waiting for the worker */
	struct query *running; /* owned by the worker while it resolves */
	struct list done;      /* resolved, waiting for dispatch */
	size_t outstanding;    /* pending + running + done, capped */
	uint64_t next_id;
	int stop;
};

static void list_push(struct list *l, struct query *q)
{
	q->next = NULL;
	if (l->tail)
		l->tail->next = q;
	else
		l->head = q;
	l->tail = q;
	l->n++;
}

static struct query *list_pop(struct list *l)
{
	struct query *q = l->head;
	if (!q)
		return NULL;
	l->head = q->next;
	if (!l->head)
		l->tail = NULL;
	q->next = NULL;
	l->n--;
	return q;
}

/* Unlink query id from l; returns it, or NULL when it is not there. */
static struct query *list_remove(struct list *l, uint64_t id)
{
	struct query *prev = NULL;
	for (struct query *q = l->head; q; prev = q, q = q->next) {
		if (q->id != id)
			continue;
		if (prev)
			prev->next = q->next;
		else
			l->head = q->next;
		if (l->tail == q)
			l->tail = prev;
		q->next = NULL;
		l->n--;
		return q;
	}
	return NULL;
}

static void query_free(struct query *q)
{
	if (!q)
		return;
	free(q->res.addrs);
	q->res.addrs = NULL;
	free(q);
}

static void list_free(struct list *l)
{
	struct query *q;
	while ((q = list_pop(l)))
		query_free(q);
}

/* Fill q->res or q->err. Runs on the worker thread without the mutex: q is
 * the worker's alone until it is put on the done list. */
static void resolve(struct query *q)
{
	struct addrinfo hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	/* One socktype, or every address comes back once per socktype. No
	 * AI_ADDRCONFIG: it hides ::1 on hosts without a global IPv6 address,
	 * and callers asking for a literal want that literal. */
	hints.ai_socktype = SOCK_STREAM;
	struct addrinfo *ai = NULL;
	int rc = getaddrinfo(q->host, NULL, &hints, &ai);
	if (rc != 0) {
		q->failed = 1;
		if (rc == EAI_SYSTEM) {
			char eb[96];
			/* GNU strerror_r: returns the message, not always in eb. */
			const char *es = strerror_r(errno, eb, sizeof(eb));
			snprintf(q->err, sizeof(q->err), "%s: %s", gai_strerror(rc), es);
		} else {
			snprintf(q->err, sizeof(q->err), "%s", gai_strerror(rc));
		}
		return;
	}
	size_t cap = 0;
	for (const struct addrinfo *p = ai; p && cap < PK_RESOLVE_MAX_ADDRS; p = p->ai_next)
		cap++;
	/* Owner: q (query_free). */
	q->res.addrs = cap ? pk_xcalloc(cap, sizeof(*q->res.addrs)) : NULL;
	for (const struct addrinfo *p = ai; p && q->res.n < cap; p = p->ai_next) {
		char *dst = q->res.addrs[q->res.n];
		if (getnameinfo(p->ai_addr, p->ai_addrlen, dst, sizeof(q->res.addrs[0]), NULL, 0,
		                NI_NUMERICHOST) != 0)
			continue;
		int dup = 0;
		for (size_t i = 0; i < q->res.n && !dup; i++)
			dup = strcmp(q->res.addrs[i], dst) == 0;
		if (!dup)
			q->res.n++;
	}
	freeaddrinfo(ai);
}

static void *worker(void *arg)
{
	struct pk_resolver *r = arg;
	pthread_mutex_lock(&r->mu);
	for (;;) {
		while (!r->stop && !r->pending.head)
			pthread_cond_wait(&r->cv, &r->mu);
		if (r->stop)
			break;
		struct query *q = list_pop(&r->pending);
		r->running = q;
		pthread_mutex_unlock(&r->mu);

		resolve(q);

		pthread_mutex_lock(&r->mu);
		r->running = NULL;
		if (q->cancelled || r->stop) {
			/* Nobody wants it any more (free drops it anyway). */
			r->outstanding--;
			query_free(q);
			continue;
		}
		list_push(&r->done, q);
		pthread_mutex_unlock(&r->mu);
		/* Outside the lock: wake may take its own locks (lws does). */
		if (r->wake)
			r->wake(r->wake_arg);
		pthread_mutex_lock(&r->mu);
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

struct pk_resolver *pk_resolver_new(void (*wake)(void *arg), void *wake_arg)
{
	/* Owner: the caller (pk_resolver_free). */
	struct pk_resolver *r = pk_xcalloc(1, sizeof(*r));
	r->wake = wake;
	r->wake_arg = wake_arg;
	r->next_id = 1;
	if (pthread_mutex_init(&r->mu, NULL) != 0)
		goto err_free;
	if (pthread_cond_init(&r->cv, NULL) != 0)
		goto err_mutex;
	/* Block every signal in the worker (it inherits the mask), so that
	 * SIGINT, SIGTERM and friends go to the threads that handle them. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(&r->thread, NULL, worker, r);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		goto err_cond;
	return r;

err_cond:
	pthread_cond_destroy(&r->cv);
err_mutex:
	pthread_mutex_destroy(&r->mu);
err_free:
	free(r);
	return NULL;
}

void pk_resolver_free(struct pk_resolver *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stop = 1;
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->thread, NULL);
	/* The worker is gone (it freed the query it was running): the lists
	 * are ours alone. */
	assert(!r->running);
	list_free(&r->pending);
	list_free(&r->done);
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

uint64_t pk_resolver_query(struct pk_resolver *r, const char *host,
                           void (*cb)(void *user, const struct pk_resolve_result *res,
                                      const char *err),
                           void *user)
{
	assert(host && cb);
	size_t len = strlen(host);
	if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
		host++;
		len -= 2;
	}
	/* Allocated before taking the lock, so the worker never waits on
	 * malloc; dropped again when the queue is full. */
	struct query *q = pk_xcalloc(1, sizeof(*q) + len + 1);
	memcpy(q->host, host, len);
	q->host[len] = '\0';
	q->cb = cb;
	q->user = user;

	pthread_mutex_lock(&r->mu);
	if (r->outstanding >= PK_RESOLVE_MAX_QUERIES) {
		pthread_mutex_unlock(&r->mu);
		free(q);
		return 0;
	}
	q->id = r->next_id++;
	r->outstanding++;
	list_push(&r->pending, q);
	pthread_cond_signal(&r->cv);
	uint64_t id = q->id;
	pthread_mutex_unlock(&r->mu);
	return id;
}

void pk_resolver_cancel(struct pk_resolver *r, uint64_t id)
{
	if (id == 0)
		return;
	pthread_mutex_lock(&r->mu);
	struct query *q = list_remove(&r->pending, id);
	if (!q)
		q = list_remove(&r->done, id);
	if (q) {
		r->outstanding--;
	} else if (r->running && r->running->id == id) {
		/* The worker owns it until getaddrinfo returns; it frees it
		 * then instead of queueing it. */
		r->running->cancelled = 1;
	}
	pthread_mutex_unlock(&r->mu);
	query_free(q);
}

size_t pk_resolver_dispatch(struct pk_resolver *r)
{
	size_t ran = 0;
	pthread_mutex_lock(&r->mu);
	/* Only what is done now: a steady stream of results must not keep the
	 * loop here. */
	size_t budget = r->done.n;
	while (ran < budget) {
		/* One at a time, with the query off every list while its
		 * callback runs: a callback may cancel a later query, and that
		 * must still find it on the done list. */
		struct query *q = list_pop(&r->done);
		if (!q)
			break; /* a callback cancelled the rest */
		r->outstanding--;
		pthread_mutex_unlock(&r->mu);
		if (q->failed)
			q->cb(q->user, NULL, q->err);
		else
			q->cb(q->user, &q->res, NULL);
		query_free(q);
		ran++;
		pthread_mutex_lock(&r->mu);
	}
	pthread_mutex_unlock(&r->mu);
	return ran;
}
