/*
 * The proxy port's TCP route (protocol reference §1.4): `piko forward` and
 * the Go SDK's Dialer open a WebSocket to GET /_piko/v1/tcp/<endpoint>; once
 * the stream to the upstream is open, the server answers 101 and the
 * WebSocket's binary messages carry the raw TCP byte stream both ways.
 *
 * proxy.c owns the connection and the stream; this file knows the
 * WebSocket side: matching the route, the handshake, and turning frames into
 * stream bytes and stream bytes into frames.
 */
#ifndef PK_PROXY_TCP_H
#define PK_PROXY_TCP_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "http1.h"
#include "ws.h"
#include "yamux.h"

/* 1 when the request is GET /_piko/v1/tcp/<endpoint> (query ignored); the
 * endpoint is written to out. */
int pk_proxy_tcp_match(const struct pk_http1_head *h, char *out, size_t cap);

/* What the client's bytes asked for, besides stream data. */
enum pk_proxy_tcp_action {
	PK_PROXY_TCP_CONTINUE = 0,
	PK_PROXY_TCP_CLOSE, /* client sent close: reply queued, end the stream */
	PK_PROXY_TCP_ERROR, /* protocol error: close frame queued, reset the stream */
};

/* Client bytes (modified in place: unmasked). Payload goes to the stream,
 * never more than it can take: at most as many input bytes are read as the
 * stream has space for, so nothing needs buffering here. Pongs and close
 * replies go to out. *used gets the input consumed. */
enum pk_proxy_tcp_action pk_proxy_tcp_input(struct pk_ws_reader *r, uint8_t *p, size_t n,
                                            size_t *used, struct pk_yamux_stream *s,
                                            struct pk_bufq *out);

/* Stream bytes for the client: one binary frame into out. */
void pk_proxy_tcp_output(struct pk_bufq *out, const uint8_t *data, size_t len);

/* A close frame with code and reason into out. */
void pk_proxy_tcp_close(struct pk_bufq *out, uint16_t code, const char *reason);

#endif
