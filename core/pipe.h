/*
 * pk_pipe: a yamux stream piped raw to a pk_sock, both ways, with
 * backpressure and half-close (yamux FIN <-> TCP shutdown(SHUT_WR)); a reset
 * travels as a reset. The agent's TCP listeners pipe each stream to a fresh
 * connection to their service (pk_pipe_connect); libpiko-client pipes each
 * stream to one end of a socketpair whose other end the program holds
 * (pk_pipe_adopt).
 *
 * Backpressure: stream bytes are credited back to the yamux window only once
 * the socket wrote them to the kernel (its send queue holds one window);
 * socket bytes the stream cannot take yet wait in a small queue while the
 * socket is paused.
 *
 * Ownership: a pipe is shared by its stream and its socket and freed by
 * whichever goes last (hooks->on_free runs then).
 */
#ifndef PK_PIPE_H
#define PK_PIPE_H

#include <stdint.h>

#include "tunnel.h"

struct pk_pipe;

/* What the pipe's owner hears; any may be NULL. user is the one given to
 * pk_pipe_connect/pk_pipe_adopt. */
struct pk_pipe_hooks {
	/* The outgoing connection is up (pk_pipe_connect only). */
	void (*on_open)(void *user);
	/* The socket closed: opened says whether it was ever up (a failed
	 * dial resets the stream), why is pk_sock's reason. */
	void (*on_sock_close)(void *user, int opened, int reset, const char *why);
	/* Stream and socket are both gone; the pipe is freed after this. */
	void (*on_free)(void *user);
};

/* Pipe stream s to a new connection to host:port (timeout_ms for the
 * connect, 0 none). On success the stream's user pointer is the pipe and 0
 * is returned; -1 (nothing allocated, hooks not called) when not even a
 * socket could be created: the caller refuses the stream. */
int pk_pipe_connect(struct pk_yamux_stream *s, const char *host, int port, uint64_t timeout_ms,
                    const struct pk_pipe_hooks *hooks, void *user);

/* Pipe stream s to fd, a connected socket (the pipe owns fd from here, even
 * on failure). 0, or -1 when lws cannot take another descriptor (fd is
 * closed, hooks not called). */
int pk_pipe_adopt(struct pk_yamux_stream *s, int fd, const struct pk_pipe_hooks *hooks, void *user);

#endif
