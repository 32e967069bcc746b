#include "lwsio.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char scratch[LWS_PRE + PK_LWSIO_WRITE_MAX];

int pk_lwsio_write_bufq(struct lws *wsi, struct pk_bufq *q, enum lws_write_protocol proto)
{
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
