#include "lwsio.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char scratch[LWS_PRE + PK_LWSIO_WRITE_MAX];

unsigned char *pk_lwsio_scratch(void)
{
	return scratch + LWS_PRE;
}

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

int pk_lwsio_split_bind(const char *addr, char *iface, size_t iface_len, int *port)
{
	const char *colon;
	iface[0] = '\0';
	if (!addr)
		return -1;
	if (addr[0] == '[') {
		const char *end = strchr(addr, ']');
		if (!end || end[1] != ':')
			return -1;
		size_t n = (size_t)(end - addr - 1);
		if (n + 1 > iface_len)
			return -1;
		memcpy(iface, addr + 1, n);
		iface[n] = '\0';
		colon = end + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon)
			return -1;
		size_t n = (size_t)(colon - addr);
		if (n + 1 > iface_len)
			return -1;
		memcpy(iface, addr, n);
		iface[n] = '\0';
	}
	char *end;
	long p = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || p <= 0 || p > 65535)
		return -1;
	*port = (int)p;
	/* "0.0.0.0" and "::" mean every interface, as an empty host does. */
	if (!strcmp(iface, "0.0.0.0") || !strcmp(iface, "::"))
		iface[0] = '\0';
	return 0;
}
