#include "lwsio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char scratch[LWS_PRE + PK_LWSIO_WRITE_MAX];
/* Bytes one direct write offers: 16 chunks. */
#define SEND_DIRECT_MAX (16 * PK_BUF_CHUNK)

/* A plain raw socket with nothing held back by lws: one sendmsg() from the
 * queue's chunks in place, without the copy into the scratch buffer that
 * lws_write() needs (every byte leaving the proxy port took it). What the
 * kernel does not take stays queued; the caller asks for WRITEABLE while
 * the queue holds bytes. */
static int send_direct(struct lws *wsi, struct pk_bufq *q)
{
	size_t offered;
	ssize_t w = pk_bufq_sendmsg(q, lws_get_socket_fd(wsi), SEND_DIRECT_MAX, &offered);
	if (w < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
	pk_bufq_consume(q, (size_t)w);
	return (int)w;
}

int pk_lwsio_write_bufq(struct lws *wsi, struct pk_bufq *q, enum lws_write_protocol proto)
{
	if (q->len == 0)
		return 0;
	if (proto == LWS_WRITE_RAW && !lws_is_ssl(wsi) && !lws_partial_buffered(wsi))
		return send_direct(wsi, q);
	size_t n = pk_bufq_copy(q, scratch + LWS_PRE, PK_LWSIO_WRITE_MAX);
	/* lws_write() either takes everything (buffering what the kernel did
	 * not accept, and holding back WRITEABLE until that drained) or fails. */
	if (lws_write(wsi, scratch + LWS_PRE, n, proto) < 0)
		return -1;
	pk_bufq_consume(q, n);
	return (int)n;
}

void pk_lwsio_peer_ip(struct lws *wsi, char *out, size_t len)
{
	char buf[128];
	if (!lws_get_peer_simple(wsi, buf, sizeof(buf))) {
		snprintf(out, len, "unknown");
		return;
	}
	const char *p = buf;
	if (strncmp(p, "::ffff:", 7) == 0 && strchr(p + 7, '.'))
		p += 7;
	snprintf(out, len, "%s", p);
}
