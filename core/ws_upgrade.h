/*
 * Both sides of a WebSocket upgrade (RFC 6455 §4). Transport-free: bytes
 * in, a verdict out.
 *
 * The client's: the request, and reading the server's answer: a 101 with
 * the right Sec-WebSocket-Accept, or a refusal whose body is read to its end
 * (and de-chunked), since Piko's servers say why in it (`{"error": "invalid
 * token"}`). Used by our WebSocket clients: the tunnels' (core/wsconn.c) and
 * `piko forward`'s (core/tcpws.c).
 *
 * The server's: checking a request's upgrade headers as gorilla/websocket
 * does, and the 101. Used by every port that accepts WebSockets: the
 * upstream port's tunnels, the proxy port's TCP route and the node links.
 */
#ifndef PK_WS_UPGRADE_H
#define PK_WS_UPGRADE_H

#include <stddef.h>
#include <stdint.h>

#include "http1.h"

/* A refusal's body beyond this is not kept (the error is near its start). */
#define PK_WS_UPGRADE_BODY_MAX 4096

struct pk_ws_upgrade {
	char accept[29]; /* the Sec-WebSocket-Accept we expect */
	struct pk_http1_reader resp;
	int status;                            /* the answer's, once its head is in */
	char body[PK_WS_UPGRADE_BODY_MAX + 1]; /* a refusal's, de-chunked, NUL-terminated */
	size_t body_len;
};

enum pk_ws_upgrade_result {
	PK_WS_UPGRADE_MORE = 0, /* all input used, no verdict yet */
	PK_WS_UPGRADE_OPEN,     /* 101 accepted: the bytes after *used are frames */
	PK_WS_UPGRADE_REFUSED,  /* another status, body read: pk_ws_upgrade_error() */
	PK_WS_UPGRADE_BAD,      /* not an acceptable answer (bad head, wrong accept) */
};

/* Start: u is initialised and the request returned (owner: the caller,
 * free()). host is a name or an IP literal (an IPv6 one goes in brackets in
 * Host); headers are extra lines each ending in "\r\n" (NULL: none). */
char *pk_ws_upgrade_start(struct pk_ws_upgrade *u, const char *host, int port, const char *path,
                          const char *headers);

/* Feed the server's bytes. *used is what was consumed; after OPEN the rest
 * belongs to the WebSocket. */
enum pk_ws_upgrade_result pk_ws_upgrade_feed(struct pk_ws_upgrade *u, const uint8_t *data,
                                             size_t len, size_t *used);

/* The server closed its side before a verdict: REFUSED when that ends a
 * refusal whose body ran to the close, else BAD. */
enum pk_ws_upgrade_result pk_ws_upgrade_eof(struct pk_ws_upgrade *u);

/* After REFUSED: the `error` string of the server's JSON body, or "" when
 * there is none. */
void pk_ws_upgrade_error(const struct pk_ws_upgrade *u, char *out, size_t cap);

void pk_ws_upgrade_free(struct pk_ws_upgrade *u);

/* The server's side: check a request's upgrade headers (gorilla/websocket's
 * checks, and its texts). Returns 0 and the 101 response, or -1 and a 400
 * response saying what is wrong; either way the response is the caller's
 * (free). */
int pk_ws_upgrade_answer(const struct pk_http1_head *h, char **resp, size_t *len);

#endif
