/*
 * pk_bufq and the abort-on-OOM allocators. See buf.h.
 *
 * Invariant kept by every function here: a queue never holds an empty chunk
 * (a chunk is returned to the freelist as soon as its last byte is consumed),
 * so head == NULL exactly when len == 0 and peek() never returns an empty run.
 */
#include "buf.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Process-wide freelist. Not locked: the data plane is single-threaded (see
 * buf.h); a multi-threaded user would have to add a lock here. */
static struct pk_buf_chunk *freelist;
static size_t freelist_len;

static void oom(size_t n)
{
	fprintf(stderr, "piko: out of memory allocating %zu bytes\n", n);
	abort();
}

void *pk_xmalloc(size_t n)
{
	/* malloc(0) may legally return NULL; ask for one byte so NULL always
	 * means OOM. */
	void *p = malloc(n ? n : 1);
	if (!p)
		oom(n);
	return p;
}

void *pk_xcalloc(size_t n, size_t size)
{
	if (n == 0 || size == 0)
		n = size = 1;
	void *p = calloc(n, size); /* calloc checks n * size for overflow */
	if (!p)
		oom(n * size);
	return p;
}

void *pk_xrealloc(void *p, size_t n)
{
	/* realloc(p, 0) may free p and return NULL; keep one byte instead. */
	void *q = realloc(p, n ? n : 1);
	if (!q)
		oom(n);
	return q;
}

char *pk_xstrdup(const char *s)
{
	return pk_xstrndup(s, strlen(s));
}

char *pk_xstrndup(const char *s, size_t n)
{
	size_t len = strnlen(s, n);
	char *p = pk_xmalloc(len + 1);
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

/* Owner of the returned chunk: the caller (a queue) until chunk_put(). */
static struct pk_buf_chunk *chunk_get(void)
{
	struct pk_buf_chunk *c = freelist;
	if (c) {
		freelist = c->next;
		freelist_len--;
	} else {
		c = pk_xmalloc(sizeof(*c));
	}
	c->next = NULL;
	c->pos = 0;
	c->last = 0;
	return c;
}

static void chunk_put(struct pk_buf_chunk *c)
{
	if (freelist_len >= PK_BUF_FREELIST_MAX) {
		free(c);
		return;
	}
	c->next = freelist;
	freelist = c;
	freelist_len++;
}

void pk_buf_freelist_release(void)
{
	while (freelist) {
		struct pk_buf_chunk *c = freelist;
		freelist = c->next;
		free(c);
	}
	freelist_len = 0;
}

void pk_bufq_init(struct pk_bufq *q, size_t cap)
{
	q->head = NULL;
	q->tail = NULL;
	q->len = 0;
	q->cap = cap;
}

void pk_bufq_clear(struct pk_bufq *q)
{
	struct pk_buf_chunk *c = q->head;
	while (c) {
		struct pk_buf_chunk *next = c->next;
		chunk_put(c);
		c = next;
	}
	q->head = NULL;
	q->tail = NULL;
	q->len = 0;
}

static void append_raw(struct pk_bufq *q, const uint8_t *p, size_t len)
{
	while (len > 0) {
		struct pk_buf_chunk *t = q->tail;
		if (!t || t->last == PK_BUF_CHUNK) {
			t = chunk_get();
			if (q->tail)
				q->tail->next = t;
			else
				q->head = t;
			q->tail = t;
		}
		size_t n = PK_BUF_CHUNK - t->last;
		if (n > len)
			n = len;
		memcpy(t->mem + PK_BUF_HEADROOM + t->last, p, n);
		t->last += n;
		q->len += n;
		p += n;
		len -= n;
	}
}

size_t pk_bufq_append(struct pk_bufq *q, const void *data, size_t len)
{
	size_t space = pk_bufq_space(q);
	if (len > space)
		len = space;
	append_raw(q, data, len);
	return len;
}

void pk_bufq_append_force(struct pk_bufq *q, const void *data, size_t len)
{
	append_raw(q, data, len);
}

const uint8_t *pk_bufq_peek(const struct pk_bufq *q, size_t *len)
{
	const struct pk_buf_chunk *h = q->head;
	if (!h) {
		*len = 0;
		return NULL;
	}
	*len = h->last - h->pos;
	return h->mem + PK_BUF_HEADROOM + h->pos;
}

size_t pk_bufq_copy(const struct pk_bufq *q, void *out, size_t len)
{
	uint8_t *o = out;
	size_t done = 0;
	for (const struct pk_buf_chunk *c = q->head; c && done < len; c = c->next) {
		size_t n = c->last - c->pos;
		if (n > len - done)
			n = len - done;
		memcpy(o + done, c->mem + PK_BUF_HEADROOM + c->pos, n);
		done += n;
	}
	return done;
}

/* Chunks handed to one sendmsg(): 64 x 16 KiB, a 1 MiB write. */
#define SEND_IOV 64

ssize_t pk_bufq_sendmsg(const struct pk_bufq *q, int fd, size_t max_bytes, size_t *offered)
{
	struct iovec iov[SEND_IOV];
	int k = 0;
	size_t done = 0;
	for (const struct pk_buf_chunk *c = q->head; c && k < SEND_IOV && done < max_bytes;
	     c = c->next) {
		size_t n = c->last - c->pos;
		if (n == 0)
			continue;
		if (n > max_bytes - done)
			n = max_bytes - done;
		iov[k].iov_base = (void *)(c->mem + PK_BUF_HEADROOM + c->pos);
		iov[k].iov_len = n;
		k++;
		done += n;
	}
	*offered = done;
	struct msghdr mh;
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	mh.msg_iovlen = (size_t)k;
	return sendmsg(fd, &mh, MSG_NOSIGNAL);
}

void pk_bufq_consume(struct pk_bufq *q, size_t n)
{
	/* n > len is a caller bug; clamp rather than walk off the list. */
	if (n > q->len)
		n = q->len;
	q->len -= n;
	while (n > 0) {
		struct pk_buf_chunk *h = q->head;
		assert(h); /* q->len counts the bytes in the chunks: n <= q->len left one */
		size_t avail = h->last - h->pos;
		if (n < avail) {
			h->pos += n;
			return;
		}
		n -= avail;
		q->head = h->next;
		if (!q->head)
			q->tail = NULL;
		chunk_put(h);
	}
}
