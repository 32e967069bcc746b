/*
 * Agent HTTP listener: where a request leaves the tunnel.
 *
 * Each stream the server opens carries one HTTP/1.1 request (protocol
 * reference §1.3). The head is read here, rewritten (path prefix of the
 * target URL, X-Forwarded-For gets the server's address as seen on the
 * tunnel, hop-by-hop headers dropped, Connection: close) and sent to the
 * local service over a new lws raw client connection, followed by the raw
 * body bytes. The service's response goes back raw; it is also fed to a
 * response reader so we know its status (access log) and where it ends (then
 * the stream gets our FIN). Errors are Piko's agent errors: 502
 * `upstream unreachable` when the service cannot be reached, 504
 * `upstream timeout` when it has not answered within the listener timeout.
 *
 * Ownership: an exchange is shared by its stream and its service connection
 * and is freed by whichever of the two goes last.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "buf.h"
#include "http1.h"
#include "log.h"
#include "lwsio.h"

#define SUBSYS "proxy.http"
#define MAX_HEAD (1024 * 1024)
/* Response bytes the stream could not take yet; the service is paused above
 * this, so the queue holds at most one read beyond it. */
#define FROM_SVC_HWM (64 * 1024)

struct agent_exchange {
	struct pk_stream_handler h; /* first: the stream's user pointer */
	struct pk_agent_listener *l;
	struct pk_yamux_stream *stream; /* NULL once gone */
	struct lws *svc;                /* NULL before connect and once gone */
	int svc_started;                /* a connection was attempted */
	int svc_connected;              /* ... and it succeeded */
	int svc_close;                  /* close the service once to_svc drained */
	int svc_paused;
	struct pk_http1_reader req;
	struct pk_http1_reader resp;
	struct pk_bufq to_svc;   /* bytes for the service */
	struct pk_bufq from_svc; /* response bytes waiting for stream space */
	size_t owed;             /* stream bytes in to_svc not yet credited */
	int head_done;
	int resp_started;
	int resp_done;
	int fin_sent;
	int upgraded;
	int is_head_req;
	int status;
	uint64_t start_ms, deadline_ms;
	char method[16];
	char *path;
	struct agent_exchange *prev, *next;
};

static struct agent_exchange *exchanges; /* all live exchanges, for timeouts */

static void maybe_free(struct agent_exchange *ex)
{
	if (ex->stream || ex->svc)
		return;
	if (ex->prev)
		ex->prev->next = ex->next;
	else
		exchanges = ex->next;
	if (ex->next)
		ex->next->prev = ex->prev;
	ex->l->streams--;
	pk_http1_reader_free(&ex->req);
	pk_http1_reader_free(&ex->resp);
	pk_bufq_clear(&ex->to_svc);
	pk_bufq_clear(&ex->from_svc);
	free(ex->path);
	free(ex);
}

static void access_log(struct agent_exchange *ex)
{
	const struct pk_listener_config *cfg = ex->l->cfg;
	if (cfg->access_log.disable || !ex->path)
		return;
	int level = pk_log_parse_level(cfg->access_log.level);
	if (ex->status >= 500 && level < PK_LOG_WARN)
		level = PK_LOG_WARN;
	char st[8], dur[32];
	snprintf(st, sizeof(st), "%d", ex->status);
	snprintf(dur, sizeof(dur), "%.3fms", (double)(pk_now_ms() - ex->start_ms));
	pk_log(level, "proxy.http.access", "request", "endpoint-id", cfg->endpoint_id, "method",
	       ex->method, "path", ex->path, "status", st, "duration", dur, NULL);
}

/* Ask for the service connection to close (after to_svc drained). */
static void svc_close(struct agent_exchange *ex)
{
	ex->svc_close = 1;
	if (!ex->svc)
		return;
	if (!ex->svc_connected) /* still connecting: no WRITEABLE will come */
		lws_set_timeout(ex->svc, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
	else
		lws_callback_on_writable(ex->svc);
}

/* Send FIN once every response byte went to the stream. */
static void maybe_fin(struct agent_exchange *ex)
{
	if (!ex->stream || ex->fin_sent || ex->from_svc.len)
		return;
	if (ex->resp_done || (!ex->svc && ex->svc_started)) {
		ex->fin_sent = 1;
		pk_yamux_stream_close(ex->stream, pk_now_ms());
	}
}

/* Answer the stream with a JSON error (nothing reached it yet). */
static void fail(struct agent_exchange *ex, int status, const char *msg)
{
	ex->status = status;
	access_log(ex);
	if (ex->stream && !ex->resp_started) {
		size_t len;
		char *resp = pk_http1_error_response(status, msg, 1, &len);
		pk_bufq_append_force(&ex->from_svc, resp, len);
		free(resp);
		ex->resp_started = 1;
		ex->resp_done = 1;
	}
	svc_close(ex);
	/* Push the error out now; the rest follows on_writable. */
	while (ex->stream && ex->from_svc.len) {
		size_t n;
		const uint8_t *p = pk_bufq_peek(&ex->from_svc, &n);
		size_t w = pk_yamux_stream_write(ex->stream, p, n);
		if (!w)
			break;
		pk_bufq_consume(&ex->from_svc, w);
	}
	maybe_fin(ex);
}

/* Move queued response bytes into the stream; resume the service below the
 * high-water mark. */
static void pump_to_stream(struct agent_exchange *ex)
{
	while (ex->stream && ex->from_svc.len) {
		size_t n;
		const uint8_t *p = pk_bufq_peek(&ex->from_svc, &n);
		size_t w = pk_yamux_stream_write(ex->stream, p, n);
		if (!w)
			break;
		pk_bufq_consume(&ex->from_svc, w);
	}
	if (ex->svc_paused && ex->from_svc.len < FROM_SVC_HWM && ex->svc) {
		ex->svc_paused = 0;
		lws_rx_flow_control(ex->svc, 1);
	}
	maybe_fin(ex);
}

static void svc_connect(struct agent_exchange *ex)
{
	struct pk_agent_listener *l = ex->l;
	struct lws_client_connect_info i;
	memset(&i, 0, sizeof(i));
	i.context = l->agent->ctx;
	i.address = l->target.host;
	i.port = l->target.port;
	i.host = l->target.host;
	i.method = "RAW";
	i.local_protocol_name = pk_agent_service_protocols[0].name;
	i.userdata = ex;
	i.pwsi = &ex->svc;
	ex->svc_started = 1;
	if (!lws_client_connect_via_info(&i)) {
		ex->svc = NULL;
		fail(ex, 502, "upstream unreachable");
	}
}

static void on_request_head(struct agent_exchange *ex)
{
	const struct pk_http1_head *h = pk_http1_reader_head(&ex->req);
	snprintf(ex->method, sizeof(ex->method), "%s", h->method);
	ex->path = pk_xstrdup(h->url);
	ex->is_head_req = !strcmp(h->method, "HEAD");
	pk_http1_reader_set_head_request(&ex->resp, ex->is_head_req);
	const char *upgrade = pk_http1_header_get(h, "Upgrade");
	if (!(upgrade && !strcmp(upgrade, "websocket")))
		ex->deadline_ms = ex->start_ms + (uint64_t)ex->l->cfg->timeout_ms;
	size_t len;
	char *head =
	    pk_http1_build_request(h, ex->l->target.path_prefix, ex->l->server_ip, 0, &len);
	pk_bufq_append_force(&ex->to_svc, head, len);
	free(head);
	ex->head_done = 1;
	svc_connect(ex);
}

static void ex_on_data(struct pk_stream_handler *hd, const uint8_t *data, size_t len)
{
	struct agent_exchange *ex = (struct agent_exchange *)hd;
	if (ex->svc_close) {
		pk_yamux_stream_consumed(ex->stream, len); /* nobody to give it to */
		return;
	}
	if (!ex->head_done) {
		size_t used = 0;
		enum pk_http1_event ev =
		    pk_http1_reader_feed(&ex->req, (const char *)data, len, &used);
		if (ev == PK_HTTP1_ERROR) {
			pk_yamux_stream_consumed(ex->stream, len);
			fail(ex, 400, "bad request");
			return;
		}
		pk_yamux_stream_consumed(ex->stream, used);
		data += used;
		len -= used;
		if (ev != PK_HTTP1_HEAD)
			return;
		on_request_head(ex);
		if (ex->svc_close) {
			pk_yamux_stream_consumed(ex->stream, len);
			return;
		}
	}
	/* One request per stream: everything after the head is its body (or,
	 * after a 101, the upgraded byte stream), passed on raw. */
	if (len) {
		pk_bufq_append_force(&ex->to_svc, data, len);
		ex->owed += len;
		if (ex->svc)
			lws_callback_on_writable(ex->svc);
	}
}

static void ex_on_fin(struct pk_stream_handler *hd)
{
	struct agent_exchange *ex = (struct agent_exchange *)hd;
	/* The server finished sending. For an upgraded connection that is the
	 * end of the client's side. */
	if (ex->upgraded)
		svc_close(ex);
}

static void ex_on_writable(struct pk_stream_handler *hd)
{
	pump_to_stream((struct agent_exchange *)hd);
}

static void ex_on_close(struct pk_stream_handler *hd, int reset)
{
	struct agent_exchange *ex = (struct agent_exchange *)hd;
	(void)reset;
	ex->stream = NULL;
	ex->owed = 0;
	if (!ex->resp_done && ex->status == 0)
		ex->status = 499; /* the server side gave up first */
	if (ex->svc)
		svc_close(ex);
	maybe_free(ex);
}

static const struct pk_stream_ops agent_exchange_ops = {
    .on_data = ex_on_data,
    .on_fin = ex_on_fin,
    .on_writable = ex_on_writable,
    .on_close = ex_on_close,
};

int pk_agent_http_accept(struct pk_agent_listener *l, struct pk_yamux_stream *s)
{
	/* Owner: shared by the stream (user pointer) and the service
	 * connection; freed by maybe_free() when both are gone. */
	struct agent_exchange *ex = pk_xcalloc(1, sizeof(*ex));
	ex->h.ops = &agent_exchange_ops;
	ex->l = l;
	ex->stream = s;
	ex->start_ms = pk_now_ms();
	pk_http1_reader_init(&ex->req, PK_HTTP1_REQUEST, MAX_HEAD);
	pk_http1_reader_init(&ex->resp, PK_HTTP1_RESPONSE, MAX_HEAD);
	/* to_svc is bounded by the yamux window (credited only once written);
	 * the cap is a backstop. */
	pk_bufq_init(&ex->to_svc, 2 * PK_YAMUX_INITIAL_WINDOW + MAX_HEAD);
	pk_bufq_init(&ex->from_svc, FROM_SVC_HWM * 2);
	ex->next = exchanges;
	if (exchanges)
		exchanges->prev = ex;
	exchanges = ex;
	l->streams++;
	pk_yamux_stream_set_user(s, &ex->h);
	return 0;
}

/* Response bytes from the service. */
static void svc_rx(struct agent_exchange *ex, const uint8_t *data, size_t len)
{
	if (!ex->stream) {
		svc_close(ex);
		return;
	}
	const uint8_t *p = data;
	size_t n = len;
	while (n > 0 && !ex->upgraded && !ex->resp_done) {
		size_t used = 0;
		enum pk_http1_event ev = pk_http1_reader_feed(&ex->resp, (const char *)p, n, &used);
		if (ev == PK_HTTP1_ERROR) {
			if (!ex->resp_started) {
				fail(ex, 502, "upstream unreachable");
				return;
			}
			ex->resp_done = 1; /* pass on what came; the client sees it end */
			break;
		}
		if (ev == PK_HTTP1_HEAD) {
			const struct pk_http1_head *r = pk_http1_reader_head(&ex->resp);
			if (r->status >= 200 || r->status == 101) {
				ex->status = r->status;
				ex->resp_started = 1;
			}
		} else if (ev == PK_HTTP1_DONE && ex->resp_started) {
			if (ex->status == 101) {
				ex->upgraded = 1;
				ex->deadline_ms = 0;
			} else {
				ex->resp_done = 1;
				access_log(ex);
			}
		}
		p += used;
		n -= used;
		if (used == 0 && ev != PK_HTTP1_DONE)
			break;
	}
	/* Bytes past the end of a finished response are dropped. */
	size_t fwd = ex->resp_done && !ex->upgraded ? (size_t)(p - data) : len;
	pk_bufq_append_force(&ex->from_svc, data, fwd);
	pump_to_stream(ex);
	if (ex->from_svc.len >= FROM_SVC_HWM && !ex->svc_paused && ex->svc) {
		ex->svc_paused = 1;
		lws_rx_flow_control(ex->svc, 0);
	}
	if (ex->resp_done && !ex->upgraded)
		svc_close(ex);
}

/* The service connection is gone (closed, or never connected). */
static void svc_gone(struct agent_exchange *ex)
{
	ex->svc = NULL;
	if (!ex->stream) {
		maybe_free(ex); /* the server side gave up first; nothing to answer */
		return;
	}
	if (!ex->resp_started) {
		fail(ex, 502, "upstream unreachable");
	} else if (!ex->resp_done && !ex->upgraded) {
		if (pk_http1_reader_eof(&ex->resp))
			access_log(ex);
		ex->resp_done = 1;
	}
	maybe_fin(ex);
	maybe_free(ex);
}

static int callback_service(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                            size_t len)
{
	struct agent_exchange *ex = user;
	switch (reason) {
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		if (ex && ex->svc == wsi) {
			pk_log(PK_LOG_DEBUG, SUBSYS, "service connect failed", "error",
			       in ? (const char *)in : "unknown", NULL);
			svc_gone(ex);
		}
		return 0;
	case LWS_CALLBACK_RAW_CONNECTED:
		if (ex)
			ex->svc_connected = 1;
		if (ex && (ex->to_svc.len || ex->svc_close))
			lws_callback_on_writable(wsi);
		return 0;
	case LWS_CALLBACK_RAW_RX:
		if (ex)
			svc_rx(ex, in, len);
		return 0;
	case LWS_CALLBACK_RAW_WRITEABLE: {
		if (!ex)
			return -1;
		if (ex->to_svc.len) {
			int w = pk_lwsio_write_bufq(wsi, &ex->to_svc, LWS_WRITE_RAW);
			if (w < 0)
				return -1;
			if (ex->stream && ex->owed) {
				size_t credit = ex->owed < (size_t)w ? ex->owed : (size_t)w;
				ex->owed -= credit;
				pk_yamux_stream_consumed(ex->stream, credit);
			}
			if (ex->to_svc.len || ex->svc_close)
				lws_callback_on_writable(wsi);
			return 0;
		}
		return ex->svc_close ? -1 : 0;
	}
	case LWS_CALLBACK_RAW_CLOSE:
		if (ex && ex->svc == wsi)
			svc_gone(ex);
		return 0;
	default:
		return 0;
	}
}

void pk_agent_http_tick(struct pk_agent *a, uint64_t now)
{
	(void)a;
	struct agent_exchange *next;
	for (struct agent_exchange *ex = exchanges; ex; ex = next) {
		next = ex->next;
		if (!ex->deadline_ms || now < ex->deadline_ms || ex->resp_done || ex->upgraded)
			continue;
		ex->deadline_ms = 0;
		if (!ex->resp_started) {
			fail(ex, 504, "upstream timeout");
		} else if (ex->stream) {
			/* Cut mid-body: the client sees the connection end. */
			ex->status = 504;
			access_log(ex);
			pk_yamux_stream_reset(ex->stream);
			svc_close(ex);
		}
	}
}

const struct lws_protocols pk_agent_service_protocols[] = {
    {
        .name = "piko-agent-service",
        .callback = callback_service,
        .per_session_data_size = 0,
        .rx_buffer_size = 64 * 1024,
    },
    {NULL, NULL, 0, 0, 0, NULL, 0}, /* terminator */
};
