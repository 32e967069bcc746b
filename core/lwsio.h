/*
 * Writing queued bytes to an lws connection.
 *
 * lws_write() wants LWS_PRE bytes of headroom before the data. Rather than
 * keep that headroom in every queue, a single scratch buffer is shared: the
 * data plane has one lws service thread, and lws copies whatever the kernel
 * did not take into the wsi's own buffer before lws_write() returns, so the
 * scratch buffer is free again as soon as the call is over.
 */
#ifndef PK_LWSIO_H
#define PK_LWSIO_H

#include <stddef.h>

#include <libwebsockets.h>

#include "buf.h"

/* Bytes handed to lws per WRITEABLE callback. Big enough to amortise the
 * syscall, small enough that lws's own partial-send buffer stays small. */
#define PK_LWSIO_WRITE_MAX (64 * 1024)

/* Write from the front of q with the given protocol (LWS_WRITE_RAW,
 * LWS_WRITE_BINARY...): on a plain raw socket that lws holds nothing of,
 * one sendmsg() from q's chunks (up to 256 KiB; what the kernel does not
 * take stays in q); else up to PK_LWSIO_WRITE_MAX bytes in one lws_write()
 * (lws keeps what the kernel does not take). Consumes what was written and
 * returns the count, or -1 when the write failed (the connection should be
 * closed). */
int pk_lwsio_write_bufq(struct lws *wsi, struct pk_bufq *q, enum lws_write_protocol proto);

/* The peer's IP as text ("127.0.0.1", "::1"), IPv4-mapped IPv6 addresses
 * shown as IPv4. */
void pk_lwsio_peer_ip(struct lws *wsi, char *out, size_t len);

#endif
