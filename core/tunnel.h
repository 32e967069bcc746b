/*
 * A tunnel: one yamux session carried by one WebSocket connection, as a
 * byte stream over binary messages (protocol reference §1.1). The server's
 * upstream port and the agent both use it; they differ in which side is the
 * yamux client, and in what they do with streams. The WebSocket under it is
 * ours (core/wsconn.c) on both sides: accepted on the upstream port, dialled
 * by the agent.
 *
 * Stream events are dispatched to a pk_stream_handler stored as the yamux
 * stream's user pointer, so whatever sits at the end of a stream (a proxied
 * client connection, a local service connection) only implements the four
 * handler functions.
 */
#ifndef PK_TUNNEL_H
#define PK_TUNNEL_H

#include <stdint.h>

#include <libwebsockets.h>

#include "http1.h"
#include "yamux.h"

struct pk_stream_handler;

struct pk_stream_ops {
	/* Payload from the peer; call pk_yamux_stream_consumed() once delivered. */
	void (*on_data)(struct pk_stream_handler *h, const uint8_t *data, size_t len);
	/* The peer half-closed. */
	void (*on_fin)(struct pk_stream_handler *h);
	/* The stream accepts writes again (or, if we opened it, was ACKed). */
	void (*on_writable)(struct pk_stream_handler *h);
	/* The stream is gone (freed after this returns). */
	void (*on_close)(struct pk_stream_handler *h, int reset);
};

/* Embed as the first member of whatever owns a stream's far end. */
struct pk_stream_handler {
	const struct pk_stream_ops *ops;
};

/* yamux stream callbacks that hand each event to the pk_stream_handler in
 * the stream's user pointer (a stream without one has its data dropped and
 * its window kept open). For any session whose streams follow that
 * convention: tunnels, and the cluster's node links. */
void pk_stream_dispatch_data(void *user, struct pk_yamux_stream *s, const uint8_t *data,
                             size_t len);
void pk_stream_dispatch_fin(void *user, struct pk_yamux_stream *s);
void pk_stream_dispatch_writable(void *user, struct pk_yamux_stream *s);
void pk_stream_dispatch_close(void *user, struct pk_yamux_stream *s, int reset);

struct pk_tunnel;

struct pk_tunnel_ops {
	/* The peer opened a stream (only the agent side expects this). Return
	 * 0 after setting a handler with pk_yamux_stream_set_user(), or -1 to
	 * refuse it. */
	int (*on_stream)(struct pk_tunnel *t, struct pk_yamux_stream *s);
	/* The peer sent a normal Go Away. */
	void (*on_go_away)(struct pk_tunnel *t);
	/* The yamux session died; the transport will be closed. */
	void (*on_dead)(struct pk_tunnel *t, int reason);
	/* The peer's bytes were fed to the session (e.g. ACKs that may make
	 * room for streams waiting to open); optional. */
	void (*on_input)(struct pk_tunnel *t);
};

struct pk_wsconn;
struct pk_wsconn_target;
struct pk_wsconn_accept_opts;
struct pk_tunnel_hooks;

struct pk_tunnel {
	struct pk_wsconn *wsc; /* the WebSocket; NULL once it is gone */
	struct pk_yamux_session *sess;
	const struct pk_tunnel_ops *ops;
	void *owner;
	int closing; /* flush what yamux still has (e.g. Go Away), then close */
	int is_client;
	const struct pk_tunnel_hooks *hooks;
	int refused_status;      /* dialled: the server refused the upgrade with this */
	char refused_error[256]; /* and this error (its JSON body's), or "" */
	/* Receive window per stream the session grants (Piko's
	 * stream.max_window_size); 0: the protocol's 256 KiB. Set by the owner
	 * before dialling or accepting. */
	uint32_t window;
};

/* The WebSocket's events, for the tunnel's owner. */
struct pk_tunnel_hooks {
	/* Accepted tunnels: the upgrade request, as for
	 * pk_wsconn_ops.on_request (1 and the 101 to take it, 0 and an answer
	 * to refuse; *resp is handed over either way). */
	int (*on_request)(struct pk_tunnel *t, const struct pk_http1_head *h, char **resp,
	                  size_t *len);
	/* The upgrade is done: t->sess exists. */
	void (*on_up)(struct pk_tunnel *t);
	/* The connection is gone; a dialled t may be dialled again from here.
	 * was_up 0: the handshake failed; for a dialled tunnel status is the
	 * server's refusal (0: none) and error the `error` of its JSON body
	 * ("" when none). was_up 1: the session was freed (every stream got
	 * its on_close). why: the connection's reason ("connection refused",
	 * "closed by the server", ...). */
	void (*on_down)(struct pk_tunnel *t, int was_up, int status, const char *error,
	                const char *why);
};

/* The agent's side (and libpiko-client's): dial the server and run the
 * tunnel over it as the yamux client. 0, or -1 when no socket could be made
 * (no hook runs then). The target is copied; hooks and ops must outlive the
 * tunnel. Owner of t: the caller. */
int pk_tunnel_dial(struct pk_tunnel *t, struct lws_context *ctx,
                   const struct pk_wsconn_target *target, const struct pk_tunnel_ops *ops,
                   const struct pk_tunnel_hooks *hooks, void *owner);

/* The server's side: serve an accepted socket (t owns fd from here) as the
 * yamux server once hooks->on_request took its upgrade. 0, or -1 with fd
 * closed (no hook runs then). */
int pk_tunnel_accept(struct pk_tunnel *t, struct lws_context *ctx, int fd,
                     const struct pk_wsconn_accept_opts *o, const struct pk_tunnel_ops *ops,
                     const struct pk_tunnel_hooks *hooks, void *owner);

/* Piko's classification of a refused tunnel (protocol reference §1.1): no
 * response (0), or 408, 429, 500, 502, 503, 504, is worth retrying; any
 * other status is not. */
int pk_tunnel_retryable(int status);

/* The tunnel's owner goes away now: the connection is reset, the session
 * freed, and no hook runs any more. */
void pk_tunnel_abandon(struct pk_tunnel *t);

/* Timers (keepalive, open and close timeouts). Returns -1 if the session
 * died (the tunnel is then closing). */
int pk_tunnel_tick(struct pk_tunnel *t, uint64_t now_ms);

/* Ask for a graceful close: flush pending frames, then close the socket. */
void pk_tunnel_close(struct pk_tunnel *t);

#endif
