#include "proxy_tcp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX "/_piko/v1/tcp/"

int pk_proxy_tcp_match(const struct pk_http1_head *h, char *out, size_t cap)
{
	if (strcmp(h->method, "GET") != 0 || strncmp(h->url, PREFIX, strlen(PREFIX)) != 0)
		return 0;
	const char *seg = h->url + strlen(PREFIX);
	size_t n = strcspn(seg, "?");
	/* One non-empty path segment, as Go's router matches :endpointID. */
	if (n == 0 || memchr(seg, '/', n) || n >= cap)
		return 0;
	memcpy(out, seg, n);
	out[n] = '\0';
	return 1;
}

static void frame(struct pk_bufq *out, int opcode, const uint8_t *data, size_t len)
{
	uint8_t hdr[PK_WS_MAX_HDR];
	size_t hl = pk_ws_frame_header(hdr, opcode, 1, len, NULL);
	pk_bufq_append_force(out, hdr, hl);
	if (len)
		pk_bufq_append_force(out, data, len);
}

void pk_proxy_tcp_output(struct pk_bufq *out, const uint8_t *data, size_t len)
{
	frame(out, PK_WS_BINARY, data, len);
}

void pk_proxy_tcp_close(struct pk_bufq *out, uint16_t code, const char *reason)
{
	uint8_t payload[PK_WS_MAX_CONTROL];
	size_t n = pk_ws_close_payload(payload, code, reason);
	frame(out, PK_WS_CLOSE, payload, n);
}

enum pk_proxy_tcp_action pk_proxy_tcp_input(struct pk_ws_reader *r, uint8_t *p, size_t n,
                                            size_t *used, struct pk_yamux_stream *s,
                                            struct pk_bufq *out)
{
	size_t total = 0;
	enum pk_proxy_tcp_action act = PK_PROXY_TCP_CONTINUE;
	while (total < n) {
		/* Never read more than the stream can take: a data frame's
		 * payload is at most the bytes fed. */
		size_t space = s ? pk_yamux_stream_write_space(s) : n - total;
		if (space == 0)
			break;
		size_t feed = n - total < space ? n - total : space;
		size_t u = 0;
		uint8_t *payload = NULL;
		size_t plen = 0;
		enum pk_ws_event ev = pk_ws_reader_feed(r, p + total, feed, &u, &payload, &plen);
		total += u;
		if (ev == PK_WS_ERROR) {
			uint16_t code;
			const char *why = pk_ws_reader_error(r, &code);
			pk_proxy_tcp_close(out, code, why);
			act = PK_PROXY_TCP_ERROR;
			break;
		}
		if (ev == PK_WS_DATA) {
			/* Piko's TCP route carries binary messages only. */
			if (pk_ws_reader_data_opcode(r) != PK_WS_BINARY) {
				pk_proxy_tcp_close(out, 1003, "binary messages only");
				act = PK_PROXY_TCP_ERROR;
				break;
			}
			if (s && plen)
				pk_yamux_stream_write(s, payload, plen);
		} else if (ev == PK_WS_CONTROL) {
			const uint8_t *cp;
			size_t cl;
			int op = pk_ws_reader_control(r, &cp, &cl);
			if (op == PK_WS_PING) {
				frame(out, PK_WS_PONG, cp, cl);
			} else if (op == PK_WS_CLOSE) {
				/* The client is done sending. Our own close frame
				 * waits until the upstream is done too: RFC 6455 lets
				 * the side that sent close keep receiving, which is
				 * how `piko forward` half-closes. */
				act = PK_PROXY_TCP_CLOSE;
				break;
			}
		} else if (u == 0) {
			break; /* NEED_MORE with nothing consumed */
		}
	}
	*used = total;
	return act;
}
