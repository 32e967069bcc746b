/* A yamux stream piped to a pk_sock (see pipe.h). */
#include "pipe.h"

#include <stdlib.h>

#include "backoff.h"
#include "buf.h"
#include "sock.h"

#define PENDING_CAP (128 * 1024)

struct pk_pipe {
	struct pk_stream_handler h; /* first: the stream's user pointer */
	const struct pk_pipe_hooks *hooks;
	void *user;
	struct pk_yamux_stream *stream;
	struct pk_sock *sock;
	/* Socket bytes waiting for stream space; the socket is paused while
	 * any wait, so this holds at most one read. */
	struct pk_bufq pending;
	size_t given;    /* stream bytes handed to the socket */
	size_t credited; /* ... of which credited to the window */
	int sock_eof;    /* the socket's peer shut down its writing side */
	int fin_sent;
	int opened;
};

static void maybe_free(struct pk_pipe *p)
{
	if (p->stream || p->sock)
		return;
	if (p->hooks->on_free)
		p->hooks->on_free(p->user);
	pk_bufq_clear(&p->pending);
	free(p);
}

/* Credit the window with what the socket has written to the kernel. */
static void credit(struct pk_pipe *p)
{
	if (!p->stream || !p->sock)
		return;
	size_t written = p->given - pk_sock_queued(p->sock);
	if (written > p->credited) {
		pk_yamux_stream_consumed(p->stream, written - p->credited);
		p->credited = written;
	}
}

/* FIN the stream once the socket's EOF and every byte before it went in. */
static void maybe_fin(struct pk_pipe *p)
{
	if (p->sock_eof && !p->pending.len && p->stream && !p->fin_sent) {
		p->fin_sent = 1;
		pk_yamux_stream_close(p->stream, pk_now_ms());
	}
}

static void pump(struct pk_pipe *p)
{
	while (p->stream && p->pending.len) {
		size_t n;
		const uint8_t *d = pk_bufq_peek(&p->pending, &n);
		size_t w = pk_yamux_stream_write(p->stream, d, n);
		if (!w)
			break;
		pk_bufq_consume(&p->pending, w);
	}
	if (p->sock && !p->pending.len && !p->sock_eof)
		pk_sock_pause(p->sock, 0);
	maybe_fin(p);
}

/* ---- the socket ----------------------------------------------------------- */

static void sock_connected(struct pk_sock *s)
{
	struct pk_pipe *p = pk_sock_user(s);
	p->opened = 1;
	if (p->hooks->on_open)
		p->hooks->on_open(p->user);
}

static void sock_data(struct pk_sock *s, const uint8_t *data, size_t len)
{
	struct pk_pipe *p = pk_sock_user(s);
	if (!p->stream)
		return;
	size_t w = p->pending.len ? 0 : pk_yamux_stream_write(p->stream, data, len);
	if (w < len) {
		pk_bufq_append_force(&p->pending, data + w, len - w);
		pk_sock_pause(s, 1); /* resumed by pump() once the stream took it */
	}
}

static void sock_eof(struct pk_sock *s)
{
	struct pk_pipe *p = pk_sock_user(s);
	p->sock_eof = 1;
	maybe_fin(p);
}

static void sock_drain(struct pk_sock *s)
{
	credit(pk_sock_user(s));
}

static void sock_close(struct pk_sock *s, int reset, const char *why)
{
	struct pk_pipe *p = pk_sock_user(s);
	p->sock = NULL;
	if (p->hooks->on_sock_close)
		p->hooks->on_sock_close(p->user, p->opened, reset, why);
	if (!p->opened || reset) {
		/* A failed dial or a reset: the stream is reset too. */
		if (p->stream)
			pk_yamux_stream_reset(p->stream);
	} else if (p->stream) {
		p->sock_eof = 1;
		pump(p);
	}
	maybe_free(p);
}

static const struct pk_sock_ops pipe_sock_ops = {
    .on_connected = sock_connected,
    .on_data = sock_data,
    .on_eof = sock_eof,
    .on_drain = sock_drain,
    .on_close = sock_close,
};

/* ---- the stream ----------------------------------------------------------- */

static void st_data(struct pk_stream_handler *h, const uint8_t *data, size_t len)
{
	struct pk_pipe *p = (struct pk_pipe *)h;
	if (!p->sock) {
		pk_yamux_stream_consumed(p->stream, len);
		return;
	}
	/* Always fits: the stream's window bounds what is uncredited, and
	 * the socket's queue holds a window (sock_cap). */
	size_t w = pk_sock_write(p->sock, data, len);
	p->given += w;
	if (w < len) {
		/* Only after the socket was shut down or closed: drop. */
		p->given += len - w;
		p->credited += len - w;
		pk_yamux_stream_consumed(p->stream, len - w);
	}
	credit(p);
}

static void st_fin(struct pk_stream_handler *h)
{
	struct pk_pipe *p = (struct pk_pipe *)h;
	if (p->sock)
		pk_sock_shutdown_write(p->sock);
}

static void st_writable(struct pk_stream_handler *h)
{
	pump((struct pk_pipe *)h);
}

static void st_close(struct pk_stream_handler *h, int reset)
{
	struct pk_pipe *p = (struct pk_pipe *)h;
	p->stream = NULL;
	if (p->sock) {
		if (reset)
			pk_sock_close(p->sock, 1);
		else
			pk_sock_shutdown_write(p->sock);
	}
	maybe_free(p);
}

static const struct pk_stream_ops pipe_stream_ops = {
    .on_data = st_data,
    .on_fin = st_fin,
    .on_writable = st_writable,
    .on_close = st_close,
};

static struct pk_pipe *pipe_new(struct pk_yamux_stream *s, const struct pk_pipe_hooks *hooks,
                                void *user)
{
	/* Owner: shared by the stream and the socket; see maybe_free(). */
	struct pk_pipe *p = pk_xcalloc(1, sizeof(*p));
	p->h.ops = &pipe_stream_ops;
	p->hooks = hooks;
	p->user = user;
	p->stream = s;
	pk_bufq_init(&p->pending, PENDING_CAP);
	return p;
}

/* The socket's send queue holds one window of the stream: all it can be
 * given before the credit it earns comes back. */
static size_t sock_cap(const struct pk_yamux_stream *s)
{
	return pk_yamux_stream_window(s);
}

int pk_pipe_connect(struct pk_yamux_stream *s, const char *host, int port, uint64_t timeout_ms,
                    const struct pk_pipe_hooks *hooks, void *user)
{
	struct pk_pipe *p = pipe_new(s, hooks, user);
	p->sock = pk_sock_connect(host, port, timeout_ms, &pipe_sock_ops, p, sock_cap(s));
	if (!p->sock) {
		free(p);
		return -1;
	}
	pk_yamux_stream_set_user(s, &p->h);
	return 0;
}

int pk_pipe_adopt(struct pk_yamux_stream *s, int fd, const struct pk_pipe_hooks *hooks, void *user)
{
	struct pk_pipe *p = pipe_new(s, hooks, user);
	p->opened = 1;
	p->sock = pk_sock_adopt(fd, &pipe_sock_ops, p, sock_cap(s));
	if (!p->sock) {
		free(p);
		return -1;
	}
	pk_yamux_stream_set_user(s, &p->h);
	return 0;
}
