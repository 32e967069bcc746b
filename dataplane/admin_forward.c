/*
 * Admin request forwarding over a plain TCP connection (core/sock.c): the
 * request is rebuilt with Connection: close, the answer read whole (capped)
 * with the HTTP/1.1 reader and handed back.
 */
#include "admin_forward.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "sock.h"

#define RESP_MAX (8 * 1024 * 1024)

struct pk_admin_fwd {
	struct pk_sock *sock;
	void (*done)(void *arg, char *resp, size_t len);
	void *arg; /* NULL once cancelled */
	struct pk_http1_reader rd;
	struct pk_bufq resp;
	int finished;
	lws_sorted_usec_list_t timeout_sul;
};

static void finish(struct pk_admin_fwd *f, int status, const char *msg)
{
	if (f->finished)
		return;
	f->finished = 1;
	lws_sul_cancel(&f->timeout_sul);
	if (f->arg) {
		size_t len;
		char *out;
		if (status) {
			out = pk_http1_error_response(status, msg, 1, &len);
		} else {
			len = f->resp.len;
			out = pk_xmalloc(len ? len : 1);
			pk_bufq_copy(&f->resp, out, len);
		}
		f->done(f->arg, out, len);
	}
	if (f->sock)
		pk_sock_close(f->sock, status != 0);
}

static void on_timeout(lws_sorted_usec_list_t *sul)
{
	struct pk_admin_fwd *f = lws_container_of(sul, struct pk_admin_fwd, timeout_sul);
	finish(f, 504, "upstream timeout");
}

static void on_connected(struct pk_sock *s)
{
	(void)s;
}

static void on_data(struct pk_sock *s, const uint8_t *data, size_t len)
{
	struct pk_admin_fwd *f = pk_sock_user(s);
	if (f->finished)
		return;
	if (pk_bufq_append(&f->resp, data, len) < len) {
		finish(f, 502, "upstream unreachable");
		return;
	}
	/* Find where the response ends (it may also end at EOF). */
	while (len) {
		size_t used = 0;
		enum pk_http1_event ev =
		    pk_http1_reader_feed(&f->rd, (const char *)data, len, &used);
		if (ev == PK_HTTP1_ERROR) {
			finish(f, 502, "upstream unreachable");
			return;
		}
		if (ev == PK_HTTP1_DONE) {
			finish(f, 0, NULL);
			return;
		}
		data += used;
		len -= used;
		if (ev == PK_HTTP1_HEAD)
			continue;
		if (used == 0)
			break;
	}
	/* A head without a body reports its DONE on the next feed. */
	size_t used = 0;
	if (pk_http1_reader_head(&f->rd)->status &&
	    pk_http1_reader_feed(&f->rd, "", 0, &used) == PK_HTTP1_DONE)
		finish(f, 0, NULL);
}

static void on_eof(struct pk_sock *s)
{
	struct pk_admin_fwd *f = pk_sock_user(s);
	if (pk_http1_reader_eof(&f->rd))
		finish(f, 0, NULL);
	else
		finish(f, 502, "upstream unreachable");
}

static void on_drain(struct pk_sock *s)
{
	(void)s;
}

static void on_close(struct pk_sock *s, int reset, const char *why)
{
	(void)reset;
	(void)why;
	struct pk_admin_fwd *f = pk_sock_user(s);
	f->sock = NULL;
	finish(f, 502, "upstream unreachable");
	pk_http1_reader_free(&f->rd);
	pk_bufq_clear(&f->resp);
	free(f);
}

static const struct pk_sock_ops fwd_ops = {
    .on_connected = on_connected,
    .on_data = on_data,
    .on_eof = on_eof,
    .on_drain = on_drain,
    .on_close = on_close,
};

struct pk_admin_fwd *pk_admin_forward(struct lws_context *ctx, const char *addr,
                                      const struct pk_http1_head *h, const char *body,
                                      size_t body_len, const char *extra, uint64_t timeout_ms,
                                      void (*done)(void *arg, char *resp, size_t len), void *arg)
{
	if (!timeout_ms)
		timeout_ms = PK_ADMIN_FORWARD_TIMEOUT_MS;
	char host[256];
	const char *colon = strrchr(addr, ':');
	if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof(host))
		return NULL;
	size_t hl = (size_t)(colon - addr);
	const char *hp = addr;
	if (hp[0] == '[' && hl >= 2 && hp[hl - 1] == ']') {
		hp++;
		hl -= 2;
	}
	memcpy(host, hp, hl);
	host[hl] = '\0';
	int port = atoi(colon + 1);
	unsigned char ip[16];
	/* An IP only: pk_sock_connect would resolve a name on the loop. */
	if (port <= 0 || port > 65535 ||
	    (inet_pton(AF_INET, host, ip) != 1 && inet_pton(AF_INET6, host, ip) != 1))
		return NULL;
	/* Owner: the socket (its user pointer); freed in on_close. */
	struct pk_admin_fwd *f = pk_xcalloc(1, sizeof(*f));
	f->done = done;
	f->arg = arg;
	pk_http1_reader_init(&f->rd, PK_HTTP1_RESPONSE, 64 * 1024);
	pk_http1_reader_set_head_request(&f->rd, !strcmp(h->method, "HEAD"));
	pk_bufq_init(&f->resp, RESP_MAX);
	f->sock = pk_sock_connect(host, port, timeout_ms, &fwd_ops, f,
	                          256 * 1024 + body_len); /* the head is at most 64 KiB */
	if (!f->sock) {
		pk_http1_reader_free(&f->rd);
		free(f);
		return NULL;
	}
	/* The request as it came, minus hop-by-hop headers: the target node
	 * sees forward=<itself> and serves it. */
	char line[128];
	pk_sock_write(f->sock, (const uint8_t *)h->method, strlen(h->method));
	pk_sock_write(f->sock, (const uint8_t *)" ", 1);
	pk_sock_write(f->sock, (const uint8_t *)h->url, strlen(h->url));
	pk_sock_write(f->sock, (const uint8_t *)" HTTP/1.1\r\n", 11);
	int n;
	for (size_t i = 0; i < h->nheaders; i++) {
		const char *name = h->headers[i].name, *value = h->headers[i].value;
		if (pk_http1_is_hop_by_hop(h, name) || !strcasecmp(name, "Content-Length") ||
		    !strcasecmp(name, PK_ADMIN_WORKER_HEADER))
			continue;
		/* Written in pieces: a header (a long token) has no size limit
		 * here beyond the head's own. */
		pk_sock_write(f->sock, (const uint8_t *)name, strlen(name));
		pk_sock_write(f->sock, (const uint8_t *)": ", 2);
		pk_sock_write(f->sock, (const uint8_t *)value, strlen(value));
		pk_sock_write(f->sock, (const uint8_t *)"\r\n", 2);
	}
	if (extra)
		pk_sock_write(f->sock, (const uint8_t *)extra, strlen(extra));
	n = snprintf(line, sizeof(line), "Content-Length: %zu\r\nConnection: close\r\n\r\n",
	             body_len);
	pk_sock_write(f->sock, (const uint8_t *)line, (size_t)n);
	if (body_len)
		pk_sock_write(f->sock, (const uint8_t *)body, body_len);
	lws_sul_schedule(ctx, 0, &f->timeout_sul, on_timeout,
	                 (lws_usec_t)timeout_ms * LWS_US_PER_MS);
	return f;
}

void pk_admin_forward_cancel(struct pk_admin_fwd *f)
{
	f->arg = NULL;
	finish(f, 502, "cancelled");
}
