/*
 * pk_bufq: a capped FIFO of bytes, stored as a list of fixed-size chunks.
 *
 * Every queue in the project is one of these, so every queue has a hard cap
 * (the `cap` given at init). Chunks are recycled through a process-wide
 * freelist (the data plane is single-threaded: one lws service thread), so a
 * busy connection does not hit malloc per read.
 *
 * Each chunk reserves PK_BUF_HEADROOM bytes in front of its payload so that a
 * caller may build a frame header in place before the data (libwebsockets
 * needs LWS_PRE bytes of headroom before anything handed to lws_write()).
 *
 * Ownership: the queue owns its chunks; pk_bufq_clear() returns them to the
 * freelist. The struct itself is embedded in its owner (no allocation).
 */
#ifndef PK_BUF_H
#define PK_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* At least LWS_PRE (16 in lws 4.1) plus a 12-byte yamux header; kept a
 * multiple of 16 so payloads stay aligned. */
#define PK_BUF_HEADROOM 32
/* Payload bytes per chunk. */
#define PK_BUF_CHUNK 16384
/* Chunks kept on the freelist at most; beyond this they are freed. */
#define PK_BUF_FREELIST_MAX 1024

struct pk_buf_chunk {
	struct pk_buf_chunk *next;
	size_t pos;  /* first unread payload byte */
	size_t last; /* one past the last written payload byte */
	uint8_t mem[PK_BUF_HEADROOM + PK_BUF_CHUNK];
};

struct pk_bufq {
	struct pk_buf_chunk *head;
	struct pk_buf_chunk *tail;
	size_t len; /* bytes queued */
	size_t cap; /* hard cap on len */
};

/* Initialise an empty queue holding at most cap bytes. */
void pk_bufq_init(struct pk_bufq *q, size_t cap);

/* Free every chunk (to the freelist). The queue stays usable and empty. */
void pk_bufq_clear(struct pk_bufq *q);

/* Bytes that can still be appended before the cap. */
static inline size_t pk_bufq_space(const struct pk_bufq *q)
{
	return q->len >= q->cap ? 0 : q->cap - q->len;
}

/* Append up to len bytes; returns how many were appended (less than len only
 * when the cap is reached). Never fails otherwise (aborts on OOM, see
 * pk_xmalloc). */
size_t pk_bufq_append(struct pk_bufq *q, const void *data, size_t len);

/* Append all of len bytes ignoring the cap. For small control data (response
 * heads, error bodies) whose size is bounded elsewhere. */
void pk_bufq_append_force(struct pk_bufq *q, const void *data, size_t len);

/* Pointer to the first contiguous run of queued bytes and its length (0 and
 * NULL when empty). */
const uint8_t *pk_bufq_peek(const struct pk_bufq *q, size_t *len);

/* Copy up to len bytes from the front into out without consuming; returns the
 * number copied. */
size_t pk_bufq_copy(const struct pk_bufq *q, void *out, size_t len);

/* One sendmsg(fd, MSG_NOSIGNAL) of up to max_bytes from the front, every
 * chunk in place (no copy; at most 64 chunks): one system call where a
 * send() per chunk took one per 16 KiB. *offered gets the bytes offered;
 * nothing is consumed. sendmsg()'s return. */
ssize_t pk_bufq_sendmsg(const struct pk_bufq *q, int fd, size_t max_bytes, size_t *offered);

/* Drop n bytes from the front (n <= len). */
void pk_bufq_consume(struct pk_bufq *q, size_t n);

/* Free the process-wide freelist (at exit, so leak checkers stay quiet). */
void pk_buf_freelist_release(void);

/* malloc/calloc/realloc/strdup that abort with a message on OOM. The project's
 * OOM policy is h2o's: abort, never thread allocation failure through every
 * path. */
void *pk_xmalloc(size_t n);
void *pk_xcalloc(size_t n, size_t size);
void *pk_xrealloc(void *p, size_t n);
char *pk_xstrdup(const char *s);
char *pk_xstrndup(const char *s, size_t n);

#endif
