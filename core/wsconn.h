/*
 * A WebSocket connection of our own (core/ws.c's codec over core/sock.c,
 * plain or TLS), in either role: dialled (the agent's and libpiko-client's
 * tunnels) or accepted (the server's upstream port).
 *
 * Why not lws's WebSocket roles: lws 4.1's client parses what a server
 * sends one byte at a time (its client role has no payload fast path), and
 * `perf` put 88 % of an agent's CPU there while a bulk upload held it at a
 * full core; its server unmasks a client's payload one byte at a time, 31 %
 * of the server's CPU in a bulk download (docs/benchmarks.md). Here a
 * received data frame's payload is unmasked a word at a time and handed on in
 * place, a whole read at a time, and frames we send are built in one buffer
 * (a client's masked a word at a time) and copied once. The client also
 * reads a refused handshake's body, which lws's client cannot, so the
 * server's reason ("401: invalid token") comes without a second request.
 *
 * Writing is pulled: pk_wsconn_want_write() schedules a flush at the end
 * of the loop pass (the loop must be served by pk_runloop_once), which asks
 * ops->fill for bytes while the socket's send queue has room (each fill
 * becomes one binary message) and resumes when it drains.
 *
 * Lifetime: ops->on_close runs exactly once, from the event loop (never from
 * inside a pk_wsconn_*() call), and the connection is freed right after it
 * returns. Owner: the connection itself.
 */
#ifndef PK_WSCONN_H
#define PK_WSCONN_H

#include <stddef.h>
#include <stdint.h>

#include <libwebsockets.h>
#include <openssl/ssl.h>

#include "http1.h"

struct pk_wsconn;

/* The connect and handshake timeouts of Piko's clients (the agent and the
 * Go SDK give a WebSocket handshake 60 s), which ours use too. */
#define PK_WSCONN_PIKO_TIMEOUT_MS 60000

/* Where to connect; read during pk_wsconn_connect() only (copied). */
struct pk_wsconn_target {
	const char *host; /* name (resolved off the loop) or IP literal */
	int port;
	const char *path;              /* request-target */
	const char *headers;           /* extra header lines, each ending in "\r\n"; NULL none */
	SSL_CTX *tls;                  /* NULL: plain TCP */
	int verify_name;               /* check the certificate's name (TLS) */
	uint64_t connect_timeout_ms;   /* TCP and TLS; 0 none */
	uint64_t handshake_timeout_ms; /* request sent → 101; 0 none */
};

/* How to accept: read during pk_wsconn_accept() only. */
struct pk_wsconn_accept_opts {
	SSL_CTX *tls;                  /* NULL: plain TCP */
	size_t max_head;               /* the request head's bytes at most (431 beyond) */
	uint64_t handshake_timeout_ms; /* accepted → request head read (TLS included); 0 none */
};

struct pk_wsconn_ops {
	/* Accepted connections: the client's request head arrived. Return 1
	 * to take it, with *resp the 101 (pk_ws_upgrade_answer's), or 0 to
	 * refuse, with *resp the answer; either way *resp is handed over (the
	 * connection frees it). A refused connection is closed once its
	 * answer is sent (reset if that is still not done when the handshake
	 * timeout strikes); on_close follows. */
	int (*on_request)(void *user, const struct pk_http1_head *h, char **resp, size_t *len);
	/* The handshake is done (the server answered 101, or we did):
	 * messages flow from now on. */
	void (*on_open)(void *user);
	/* Dialled connections: the server answered another status. error is
	 * the `error` field of its JSON body (Piko's error shape), or NULL.
	 * on_close follows. */
	void (*on_refused)(void *user, int status, const char *error);
	/* Payload bytes of a data message, in order, in pieces (a piece never
	 * spans two messages); opcode is the message's (PK_WS_BINARY or
	 * PK_WS_TEXT). */
	void (*on_message)(void *user, int opcode, const uint8_t *data, size_t len);
	/* Bytes to send: write at most cap into buf and return the count (0:
	 * nothing now). Each call's bytes go out as one binary message. */
	size_t (*fill)(void *user, uint8_t *buf, size_t cap);
	/* The connection is gone (why: "closed", "connection refused", "tls:
	 * ...", "handshake timeout", "bad handshake", ...). */
	void (*on_close)(void *user, const char *why);
};

/* The extra headers of Piko's clients' upgrade: "Authorization: Bearer
 * <token>" and "x-piko-tenant-id: <tenant>", each when set (NULL or ""
 * omits it). Owner: the caller (free). */
char *pk_wsconn_piko_headers(const char *token, const char *tenant);

/* The path Piko's clients dial for an endpoint: base (the server URL's
 * path, "" or "/p", appended to without normalising, as Go does), then
 * /piko/v1/upstream/ and the endpoint ID escaped for a path segment (RFC
 * 3986's unreserved bytes kept). Into out (cap bytes; cut to fit). */
void pk_wsconn_piko_upstream_path(const char *base, const char *endpoint, char *out, size_t cap);

/* Start connecting. NULL when no socket could be created (no callback
 * runs then). */
struct pk_wsconn *pk_wsconn_connect(struct lws_context *ctx, const struct pk_wsconn_target *t,
                                    const struct pk_wsconn_ops *ops, void *user);

/* Serve an accepted socket (the connection owns fd from here): its request
 * goes to ops->on_request. NULL, with fd closed, when lws cannot take
 * another descriptor (no callback runs then). */
struct pk_wsconn *pk_wsconn_accept(struct lws_context *ctx, int fd,
                                   const struct pk_wsconn_accept_opts *o,
                                   const struct pk_wsconn_ops *ops, void *user);

/* ops->fill has bytes: flush from the loop soon. */
void pk_wsconn_want_write(struct pk_wsconn *c);

/* Close gracefully: what fill still gives is sent, then a close frame and
 * FIN; after timeout_ms the connection is reset whatever is left. Calling
 * it again sets the timeout anew. No on_open, on_message or fill
 * callback runs once the handshake failed or after the close was sent. */
void pk_wsconn_close(struct pk_wsconn *c, uint64_t timeout_ms);

/* Reset at once (on_close still follows from the loop). */
void pk_wsconn_abort(struct pk_wsconn *c, const char *why);

/* Reset at once and call back no more, not even on_close: for an owner
 * that goes away now. */
void pk_wsconn_disown(struct pk_wsconn *c);

/* The peer's IP address (no port); a dialled connection's is "" before it
 * is connected. */
const char *pk_wsconn_peer_ip(const struct pk_wsconn *c);

#endif
