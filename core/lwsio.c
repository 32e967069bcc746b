#include "lwsio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static unsigned char scratch[LWS_PRE + PK_LWSIO_WRITE_MAX];

/* Chunks handed to one sendmsg(): 16 x 16 KiB. */
#define SEND_IOV 16

/* A plain raw socket with nothing held back by lws: one sendmsg() from the
 * queue's chunks in place, without the copy into the scratch buffer that
 * lws_write() needs (every byte leaving the proxy port took it). What the
 * kernel does not take stays queued; the caller asks for WRITEABLE while
 * the queue holds bytes. */
static int send_direct(struct lws *wsi, struct pk_bufq *q)
{
	struct iovec iov[SEND_IOV];
	struct msghdr mh;
	size_t offered;
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	mh.msg_iovlen = (size_t)pk_bufq_iov(q, iov, SEND_IOV, SEND_IOV * PK_BUF_CHUNK, &offered);
	ssize_t w = sendmsg(lws_get_socket_fd(wsi), &mh, MSG_NOSIGNAL);
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
	if (n == 0)
		return 0;
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
