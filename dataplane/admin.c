/*
 * Admin port: GET /health, GET /ready (503 while starting and from the start
 * of shutdown) and GET /metrics (Prometheus text). Same raw-socket HTTP/1.1
 * reading as the proxy port; responses are small and built whole.
 */
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "http1.h"
#include "lwsio.h"
#include "server.h"

#define ADMIN_MAX_HEAD (64 * 1024)
#define ADMIN_OUT_CAP (4 * 1024 * 1024)
/* Reading stops while this much unparsed input waits. */
#define ADMIN_IN_HWM (64 * 1024)

struct admin_conn {
	struct pk_http1_reader req;
	struct pk_bufq in; /* pipelined requests waiting for out to drain */
	struct pk_bufq out;
	int close_after_write;
	int rx_paused;
};

static void respond(struct lws *wsi, struct admin_conn *c, const struct pk_http1_head *h)
{
	struct pk_server *srv = pk_server_from_wsi(wsi);
	int status = 404;
	const char *ctype = PK_HTTP1_ROUTER_404_TYPE;
	const char *body = PK_HTTP1_ROUTER_404_BODY;
	size_t body_len = strlen(body);
	char *owned = NULL;

	/* Admin auth guards every route, /health and /ready included, as in
	 * Piko (protocol reference §10.3 item 4). */
	struct pk_access_headers ah = {
	    .x_piko_authorization = pk_http1_header_get(h, "x-piko-authorization"),
	    .authorization = pk_http1_header_get(h, "Authorization"),
	};
	const char *denied = pk_access_check(srv->access.admin, &ah, pk_auth_now(), NULL);
	size_t len;
	if (denied) {
		char *resp = pk_access_error_response(denied, &len);
		pk_bufq_append_force(&c->out, resp, len);
		free(resp);
		c->close_after_write = 1;
		lws_callback_on_writable(wsi);
		return;
	}

	/* Route on the path alone, as Go's router does (query ignored). */
	size_t plen = strcspn(h->url, "?");
	int get = !strcmp(h->method, "GET") || !strcmp(h->method, "HEAD");
	if (get && plen == 7 && !strncmp(h->url, "/health", plen)) {
		status = 200;
		body = "";
		body_len = 0;
	} else if (get && plen == 6 && !strncmp(h->url, "/ready", plen)) {
		status = srv->ready && !srv->shutting_down ? 200 : 503;
		body = "";
		body_len = 0;
	} else if (get && plen == 8 && !strncmp(h->url, "/metrics", plen)) {
		status = 200;
		ctype = "text/plain; version=0.0.4; charset=utf-8";
		/* Gauges that are cheaper to read than to track. */
		pk_metric_set(srv->m.open_streams, NULL, (double)pk_upstream_open_streams(srv));
		owned = pk_metrics_render(srv->metrics, &body_len);
		body = owned;
	}
	int close = !h->keep_alive || h->chunked || h->content_length > 0;
	char *resp = pk_http1_simple_response(
	    status, ctype, body, strcmp(h->method, "HEAD") ? body_len : 0, close, &len);
	pk_bufq_append_force(&c->out, resp, len);
	free(resp);
	free(owned);
	if (close)
		c->close_after_write = 1;
	lws_callback_on_writable(wsi);
}

/* Parse requests from the front of in, one response at a time: a client
 * that pipelines requests without reading the answers gets no more than
 * one response queued (admin responses can be large: /metrics). */
static void admin_pump(struct lws *wsi, struct admin_conn *c)
{
	while (c->in.len && !c->out.len && !c->close_after_write) {
		size_t n, used = 0;
		const char *p = (const char *)pk_bufq_peek(&c->in, &n);
		enum pk_http1_event ev = pk_http1_reader_feed(&c->req, p, n, &used);
		if (ev == PK_HTTP1_ERROR) {
			int status;
			const char *why = pk_http1_reader_error(&c->req, &status);
			size_t len;
			char *resp = pk_http1_simple_response(status, "text/plain; charset=utf-8",
			                                      why, strlen(why), 1, &len);
			pk_bufq_append_force(&c->out, resp, len);
			free(resp);
			c->close_after_write = 1;
			break;
		}
		pk_bufq_consume(&c->in, used);
		if (ev == PK_HTTP1_HEAD)
			respond(wsi, c, pk_http1_reader_head(&c->req));
	}
	if (c->out.len || c->close_after_write)
		lws_callback_on_writable(wsi);
	int full = c->in.len >= ADMIN_IN_HWM;
	if (full != c->rx_paused) {
		c->rx_paused = full;
		lws_rx_flow_control(wsi, !full);
	}
}

static int callback_admin(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                          size_t len)
{
	if (reason == LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION)
		return pk_server_client_cert_verdict(len); /* user is not ours here */
	struct admin_conn **slot = user;
	struct admin_conn *c = slot ? *slot : NULL;

	switch (reason) {
	case LWS_CALLBACK_RAW_ADOPT:
		/* Owner: the lws connection's slot; freed on RAW_CLOSE. */
		c = pk_xcalloc(1, sizeof(*c));
		pk_http1_reader_init(&c->req, PK_HTTP1_REQUEST, ADMIN_MAX_HEAD);
		pk_bufq_init(&c->in, ADMIN_IN_HWM * 2);
		pk_bufq_init(&c->out, ADMIN_OUT_CAP);
		*slot = c;
		return 0;
	case LWS_CALLBACK_RAW_RX:
		if (c && !c->close_after_write) {
			pk_bufq_append_force(&c->in, in, len);
			admin_pump(wsi, c);
		}
		return 0;
	case LWS_CALLBACK_RAW_WRITEABLE:
		if (!c)
			return -1;
		if (c->out.len == 0)
			return c->close_after_write ? -1 : 0;
		if (pk_lwsio_write_bufq(wsi, &c->out, LWS_WRITE_RAW) < 0)
			return -1;
		if (c->out.len || c->close_after_write)
			lws_callback_on_writable(wsi);
		else
			admin_pump(wsi, c); /* the next pipelined request, if any */
		return 0;
	case LWS_CALLBACK_RAW_CLOSE:
		if (c) {
			*slot = NULL;
			pk_http1_reader_free(&c->req);
			pk_bufq_clear(&c->in);
			pk_bufq_clear(&c->out);
			free(c);
		}
		return 0;
	default:
		return 0;
	}
}

const struct lws_protocols pk_admin_protocols[] = {
    {
        .name = "piko-admin",
        .callback = callback_admin,
        .per_session_data_size = sizeof(struct admin_conn *),
        .rx_buffer_size = 16 * 1024,
    },
    {NULL, NULL, 0, 0, 0, NULL, 0}, /* terminator */
};
