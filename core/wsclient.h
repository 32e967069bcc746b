/*
 * A WebSocket client connection of our own (core/ws.c's codec over
 * core/sock.c, plain or TLS), for the agent's tunnels.
 *
 * Why not lws's WebSocket client: lws 4.1 parses what a server sends one
 * byte at a time (its client role has no payload fast path), and `perf`
 * put 88 % of an agent's CPU there while a bulk upload held it at a full
 * core (docs/benchmarks.md). Here a received data frame's payload is handed
 * on in place, a whole read at a time, and frames we send are built in one
 * buffer and masked a word at a time. It also reads a refused handshake's
 * body, which lws's client cannot, so the server's reason ("401: invalid
 * token") comes without a second request.
 *
 * Writing is pulled: pk_wsclient_want_write() schedules a flush at the end
 * of the loop pass (the loop must be served by pk_runloop_once), which asks
 * ops->fill for bytes while the socket's send queue has room (each fill
 * becomes one binary message) and resumes when it drains.
 *
 * Lifetime: ops->on_close runs exactly once, from the event loop (never from
 * inside a pk_wsclient_*() call), and the connection is freed right after it
 * returns. Owner: the connection itself.
 */
#ifndef PK_WSCLIENT_H
#define PK_WSCLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <libwebsockets.h>
#include <openssl/ssl.h>

struct pk_wsclient;

/* The connect and handshake timeouts of Piko's clients (the agent and the
 * Go SDK give a WebSocket handshake 60 s), which ours use too. */
#define PK_WSCLIENT_PIKO_TIMEOUT_MS 60000

/* Where to connect; read during pk_wsclient_connect() only (copied). */
struct pk_wsclient_target {
	const char *host; /* name (resolved off the loop) or IP literal */
	int port;
	const char *path;              /* request-target */
	const char *headers;           /* extra header lines, each ending in "\r\n"; NULL none */
	SSL_CTX *tls;                  /* NULL: plain TCP */
	int verify_name;               /* check the certificate's name (TLS) */
	uint64_t connect_timeout_ms;   /* TCP and TLS; 0 none */
	uint64_t handshake_timeout_ms; /* request sent → 101; 0 none */
};

struct pk_wsclient_ops {
	/* The server answered 101: messages flow from now on. */
	void (*on_open)(void *user);
	/* The server answered another status. error is the `error` field of
	 * its JSON body (Piko's error shape), or NULL. on_close follows. */
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
char *pk_wsclient_piko_headers(const char *token, const char *tenant);

/* Start connecting. NULL when no socket could be created (no callback
 * runs then). */
struct pk_wsclient *pk_wsclient_connect(struct lws_context *ctx, const struct pk_wsclient_target *t,
                                        const struct pk_wsclient_ops *ops, void *user);

/* ops->fill has bytes: flush from the loop soon. */
void pk_wsclient_want_write(struct pk_wsclient *c);

/* Close gracefully: what fill still gives is sent, then a close frame and
 * FIN; after timeout_ms the connection is reset whatever is left. Calling
 * it again sets the timeout anew. No on_open, on_message or fill
 * callback runs once the handshake failed or after the close was sent. */
void pk_wsclient_close(struct pk_wsclient *c, uint64_t timeout_ms);

/* Reset at once (on_close still follows from the loop). */
void pk_wsclient_abort(struct pk_wsclient *c, const char *why);

/* Reset at once and call back no more, not even on_close: for an owner
 * that goes away now. */
void pk_wsclient_disown(struct pk_wsclient *c);

/* The server's IP address (no port), "" before connected. */
const char *pk_wsclient_peer_ip(const struct pk_wsclient *c);

#endif
