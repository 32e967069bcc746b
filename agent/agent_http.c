/*
 * Agent HTTP listener: where a request leaves the tunnel.
 *
 * Each stream the server opens carries an HTTP/1.1 request (protocol
 * reference §1.3), and, when both the request and the response keep the
 * connection alive, the requests that follow it, one at a time, as Go's
 * http.Server serves the stream in Piko's agent: our server keeps such
 * streams for the next request (dataplane/upstream_pool.h); Piko's sends
 * Connection: close, and gets our FIN after each response. Each request is
 * an exchange of its own. The head is read here, rewritten (path prefix of the
 * target URL, X-Forwarded-For gets the server's address as seen on the
 * tunnel, hop-by-hop headers dropped) and sent to the local service,
 * followed by the raw body bytes. The service's response goes back raw; it
 * is also fed to a response reader so we know its status (access log) and
 * where it ends (then the stream gets our FIN). Errors are Piko's agent
 * errors: 502 `upstream unreachable` when the service cannot be reached, 504
 * `upstream timeout` when it has not answered within the listener timeout.
 *
 * Connections to the service are kept alive and reused, as Go's transport
 * does in Piko's agent (at most 100 idle per listener, closed after 90 s
 * idle): a new TCP connection per request would cost a handshake each and
 * leave a TIME_WAIT socket behind, which at a few thousand requests a second
 * exhausts the ephemeral ports. A request whose reused connection turns out
 * to be closed by the service before any response byte is retried once on a
 * fresh connection, when it had no body (so nothing is lost).
 *
 * Service connections are core/sock.c connections (plain, or TLS for an
 * https:// service with the listener's tls settings): lws 4.1's raw client
 * cannot start TLS (warmcat/libwebsockets#2916, fixed after 4.1).
 *
 * Ownership: an exchange belongs to its stream until the stream is gone and
 * to its service connection until that is released; whichever lets go last
 * frees it. A service connection belongs to its pk_sock (freed in on_close).
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "access_log.h"
#include "agent.h"
#include "backoff.h"
#include "buf.h"
#include "http1.h"
#include "log.h"
#include "runloop.h"
#include "sock.h"

#define SUBSYS "proxy.http"
#define MAX_HEAD (1024 * 1024)
/* Response bytes the stream could not take yet; the service is paused above
 * this, so the queue holds at most one read beyond it. */
#define FROM_SVC_HWM (64 * 1024)
#define POOL_MAX_IDLE 100
#define POOL_IDLE_MS (90 * 1000)
/* What a service connection queues in the kernel's direction; the exchange's
 * to_svc holds the rest (credited to the stream as it moves here). */
#define SVC_SEND_CAP (64 * 1024)
/* How long a kept-alive stream without a request stays open once its
 * tunnel is leaving (the agent's RETIRE_LINGER_MS: a round trip's bound). */
#define IDLE_LEAVING_MS 1000

struct agent_exchange;

/* A TCP connection to the local service, attached to one exchange at a time
 * or idle in its listener's pool. */
struct svc_conn {
	struct pk_sock *sock; /* NULL once closed */
	struct pk_agent_listener *l;
	struct agent_exchange *ex; /* NULL while idle */
	int connected;
	int closing; /* close once everything queued is written */
	int reused;  /* has carried an exchange before */
	uint64_t idle_since_ms;
	struct svc_conn *prev, *next; /* idle list */
};

struct agent_exchange {
	struct pk_stream_handler h; /* first: the stream's user pointer */
	struct pk_agent_listener *l;
	struct pk_yamux_stream *stream; /* NULL once gone */
	struct svc_conn *svc;           /* NULL when not attached */
	int svc_paused;
	struct pk_bufq to_svc;   /* bytes for the service */
	struct pk_bufq from_svc; /* response bytes waiting for stream space */
	size_t owed;             /* stream bytes in to_svc not yet credited */
	char *head;              /* the request head sent, kept for one retry */
	size_t head_len;
	int retried;
	int head_done;
	int req_done; /* the whole request went into to_svc */
	int resp_bytes;
	int resp_started;
	int resp_done;
	int resp_keep_alive;
	int fin_sent;
	int upgraded;
	int req_keep_alive;       /* the request lets the stream carry another */
	int peer_fin;             /* the server closed its side */
	int begun;                /* a request byte arrived */
	uint64_t leaving_seen_ms; /* no request yet, and its tunnel is leaving */
	/* A kept-alive stream's next request, sent before this response was
	 * through: held, not credited, for the exchange that follows. */
	struct pk_bufq next_req;
	struct pk_pass_work free_work; /* see recycle() */
	int status;
	int logged;
	int in_flight;    /* counted in piko_agent_requests_in_flight */
	size_t req_size;  /* Piko's approximation, from the head */
	size_t resp_size; /* response bytes after the head (body, framing) */
	uint64_t start_ms, deadline_ms;
	char method[16];
	char *path;
	/* The access log's (only while it would write this request): the
	 * request's Host and headers, the response's headers as a JSON
	 * object, the protocol and a precise start. */
	int log_on;
	char *host;
	struct pk_access_hdrs log_req;
	char *log_resp;
	int http_minor;
	uint64_t start_ns;
	struct agent_exchange *prev, *next;
	/* Last: not zeroed at allocation (pk_http1_reader_init sets them up
	 * without clearing their 4 KiB header arrays). */
	struct pk_http1_reader req;
	struct pk_http1_reader resp;
};

static struct agent_exchange *exchanges; /* every live exchange, for timeouts */
static struct svc_conn *idle_conns;      /* every idle service connection */
static size_t idle_count;

/* ---- service connections --------------------------------------------- */

static void pool_remove(struct svc_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else if (idle_conns == c)
		idle_conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	idle_count--;
}

static void svc_pump(struct svc_conn *c);

/* Close a connection once what is queued for it is written. */
static void conn_close(struct svc_conn *c)
{
	c->closing = 1;
	if (!c->sock)
		return;
	if (!c->connected)
		pk_sock_close(c->sock, 0); /* still connecting: just stop */
	else
		svc_pump(c); /* closes once the exchange's bytes are handed on */
}

static struct svc_conn *pool_take(struct pk_agent_listener *l)
{
	for (struct svc_conn *c = idle_conns; c; c = c->next) {
		if (c->l == l && c->sock && !c->closing) {
			pool_remove(c);
			return c;
		}
	}
	return NULL;
}

static void pool_put(struct svc_conn *c)
{
	if (idle_count >= POOL_MAX_IDLE * c->l->agent->nlisteners) {
		conn_close(c);
		return;
	}
	c->ex = NULL;
	c->reused = 1;
	c->idle_since_ms = pk_now_ms();
	c->prev = NULL;
	c->next = idle_conns;
	if (idle_conns)
		idle_conns->prev = c;
	idle_conns = c;
	idle_count++;
}

static const struct pk_sock_ops svc_ops;

static struct svc_conn *conn_new(struct pk_agent_listener *l)
{
	/* Owner: its pk_sock (user pointer); freed in on_close. */
	struct svc_conn *c = pk_xcalloc(1, sizeof(*c));
	c->l = l;
	c->sock = pk_sock_connect(l->target.host, l->target.port, (uint64_t)l->cfg->timeout_ms,
	                          &svc_ops, c, SVC_SEND_CAP);
	if (!c->sock) {
		free(c);
		return NULL;
	}
	if (l->target.tls)
		pk_sock_use_tls(c->sock, l->svc_tls, l->target.host,
		                !l->cfg->tls.insecure_skip_verify);
	return c;
}

/* ---- exchanges ---------------------------------------------------------- */

/* Piko's agent metrics, once per request (as its middleware does when the
 * handler returns): from the access log's moment, or when the exchange is
 * freed without one (an upgraded connection that ended). */
static void record(struct agent_exchange *ex)
{
	if (!ex->in_flight)
		return;
	ex->in_flight = 0;
	struct pk_agent_metrics *m = &ex->l->agent->m;
	char st[12];
	if (ex->status >= 100)
		pk_http1_status_digits(ex->status, st); /* "%d" for every 3-digit code */
	else
		snprintf(st, sizeof(st), "%d", ex->status);
	const char *ep[] = {ex->l->cfg->endpoint_id};
	const char *ems[] = {ex->l->cfg->endpoint_id, ex->method, st};
	pk_metric_add(m->in_flight, ep, -1);
	pk_metric_add(m->requests_total, ems, 1);
	pk_metric_observe(m->latency, ems, (double)(pk_now_ms() - ex->start_ms) / 1000.0);
	pk_metric_observe(m->request_size, ep, (double)ex->req_size);
	pk_metric_observe(m->response_size, ep, (double)ex->resp_size);
}

static void maybe_free(struct agent_exchange *ex)
{
	if (ex->stream || ex->svc)
		return;
	pk_runloop_pass_cancel(&ex->free_work);
	record(ex);
	if (ex->prev)
		ex->prev->next = ex->next;
	else
		exchanges = ex->next;
	if (ex->next)
		ex->next->prev = ex->prev;
	ex->l->streams--;
	if (!ex->begun)
		ex->l->idle_streams--;
	pk_http1_reader_free(&ex->req);
	pk_http1_reader_free(&ex->resp);
	pk_bufq_clear(&ex->to_svc);
	pk_bufq_clear(&ex->from_svc);
	pk_bufq_clear(&ex->next_req);
	free(ex->head);
	free(ex->path);
	free(ex->host);
	pk_access_hdrs_free(&ex->log_req);
	free(ex->log_resp);
	free(ex);
}

static void access_log(struct agent_exchange *ex)
{
	const struct pk_listener_config *cfg = ex->l->cfg;
	if (ex->logged || !ex->path)
		return;
	ex->logged = 1;
	record(ex);
	if (!ex->log_on)
		return;
	struct pk_access_record r = {
	    .http_minor = ex->http_minor,
	    .method = ex->method,
	    .host = ex->host,
	    .target = ex->path,
	    .req_hdrs = ex->log_req.v,
	    .n_req_hdrs = ex->log_req.n,
	    .resp_hdr = ex->log_resp,
	    /* 499 (the server gave up first) is the metrics' word for it;
	     * Go's reverse proxy answers, and logs, 502 then. */
	    .status = ex->status == 499 ? 502 : ex->status,
	    .duration_ns = pk_now_ns() - ex->start_ns,
	};
	pk_access_log_write(&cfg->access_log, "proxy.http.access", &r);
}

/* Let go of the service connection: back to the pool when it can carry
 * another request, closed otherwise. */
static void release_svc(struct agent_exchange *ex, int reusable)
{
	struct svc_conn *c = ex->svc;
	if (!c)
		return;
	ex->svc = NULL;
	c->ex = NULL;
	if (ex->svc_paused && c->sock)
		pk_sock_pause(c->sock, 0);
	ex->svc_paused = 0;
	if (reusable && c->sock && c->connected && !c->closing)
		pool_put(c);
	else
		conn_close(c);
}

/* Both directions finished: the connection may serve the next request. */
static void maybe_release(struct agent_exchange *ex)
{
	if (ex->svc && ex->resp_done && ex->req_done && !ex->to_svc.len && !ex->upgraded) {
		release_svc(ex, ex->resp_keep_alive);
		maybe_free(ex); /* the stream may be gone already */
	}
}

/* The stream may carry the next request once this response is through:
 * keep-alive on both sides (the server reads the same response head and
 * keeps the stream by the same rule), everything handed on, neither side
 * closing, this agent not leaving. */
static int recyclable(const struct agent_exchange *ex)
{
	return ex->req_done && ex->req_keep_alive && ex->resp_keep_alive && !ex->upgraded &&
	       !ex->peer_fin && !ex->to_svc.len && !ex->owed && !ex->l->agent->shutting_down &&
	       !pk_yamux_stream_session_leaving(ex->stream);
}

static void deferred_free(struct pk_pass_work *w)
{
	maybe_free(lws_container_of(w, struct agent_exchange, free_work));
}

/* Hand the stream to a fresh exchange for the next request. This one keeps
 * its service connection until released, and is freed then, or at the end
 * of the loop pass (not now: the caller may still use it). */
static void recycle(struct agent_exchange *ex)
{
	struct pk_yamux_stream *s = ex->stream;
	ex->stream = NULL;
	pk_agent_http_accept(ex->l, s);
	struct pk_stream_handler *next = pk_yamux_stream_get_user(s);
	while (ex->next_req.len) {
		size_t n;
		const uint8_t *p = pk_bufq_peek(&ex->next_req, &n);
		next->ops->on_data(next, p, n);
		pk_bufq_consume(&ex->next_req, n);
	}
	pk_runloop_at_pass_end(&ex->free_work, deferred_free);
}

static void send_fin(struct agent_exchange *ex)
{
	ex->fin_sent = 1;
	pk_yamux_stream_close(ex->stream, pk_now_ms());
}

/* Once every response byte went to the stream: the next request's
 * exchange, or our FIN. */
static void maybe_fin(struct agent_exchange *ex)
{
	if (!ex->stream || ex->fin_sent || ex->from_svc.len || !ex->resp_done)
		return;
	if (recyclable(ex))
		recycle(ex);
	else
		send_fin(ex);
}

/* Stream bytes after a complete keep-alive request are the next request's:
 * held in next_req. */
static int holds_next_request(const struct agent_exchange *ex)
{
	return ex->req_done && ex->req_keep_alive && !ex->upgraded;
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
	if (ex->svc_paused && ex->from_svc.len < FROM_SVC_HWM && ex->svc && ex->svc->sock) {
		ex->svc_paused = 0;
		pk_sock_pause(ex->svc->sock, 0);
	}
	maybe_fin(ex);
}

/* Answer the stream with a JSON error (nothing reached it yet). */
static void fail(struct agent_exchange *ex, int status, const char *msg)
{
	ex->status = status;
	ex->resp_keep_alive = 0; /* ours says Connection: close */
	access_log(ex);
	if (!ex->resp_started) {
		size_t len;
		char *resp = pk_http1_error_response(status, msg, 1, &len);
		if (ex->log_on) {
			free(ex->log_resp);
			ex->log_resp = pk_access_log_written_json(
			    &ex->l->cfg->access_log.response_headers, resp, len);
		}
		/* {"error":"<msg>"} and a newline */
		ex->resp_size = strlen(msg) + 13;
		pk_bufq_append_force(&ex->from_svc, resp, len);
		free(resp);
		ex->resp_started = 1;
	}
	ex->resp_done = 1;
	release_svc(ex, 0);
	pump_to_stream(ex);
}

static void attach(struct agent_exchange *ex, struct svc_conn *c)
{
	ex->svc = c;
	c->ex = ex;
	if (c->connected)
		svc_pump(c);
}

static void start_service(struct agent_exchange *ex, int allow_pool)
{
	struct svc_conn *c = allow_pool ? pool_take(ex->l) : NULL;
	if (!c)
		c = conn_new(ex->l);
	if (!c) {
		fail(ex, 502, "upstream unreachable");
		return;
	}
	attach(ex, c);
}

static void on_request_head(struct agent_exchange *ex)
{
	const struct pk_http1_head *h = pk_http1_reader_head(&ex->req);
	size_t mlen = strnlen(h->method, sizeof(ex->method) - 1); /* cut as snprintf would */
	memcpy(ex->method, h->method, mlen);
	ex->method[mlen] = '\0';
	ex->path = pk_xstrdup(h->url);
	ex->http_minor = h->http_minor;
	ex->log_on = pk_access_log_on(&ex->l->cfg->access_log, "proxy.http.access", h->url);
	if (ex->log_on) {
		const char *host = pk_http1_header_get(h, "Host");
		ex->host = pk_xstrdup(host ? host : "");
		pk_access_hdrs_copy(&ex->log_req, h->headers, h->nheaders);
	}
	ex->req_size = pk_http1_approx_request_size(h);
	ex->req_keep_alive = h->keep_alive && !h->upgrade;
	ex->in_flight = 1;
	const char *ep[] = {ex->l->cfg->endpoint_id};
	pk_metric_add(ex->l->agent->m.in_flight, ep, 1);
	pk_http1_reader_set_head_request(&ex->resp, !strcmp(h->method, "HEAD"));
	const char *upgrade = pk_http1_header_get(h, "Upgrade");
	if (!(upgrade && !strcmp(upgrade, "websocket")))
		ex->deadline_ms = ex->start_ms + (uint64_t)ex->l->cfg->timeout_ms;
	ex->head = pk_http1_build_request(h, ex->l->target.path_prefix, ex->l->server_ip,
	                                  PK_HTTP1_KEEP_ALIVE, &ex->head_len);
	pk_bufq_append_force(&ex->to_svc, ex->head, ex->head_len);
	ex->head_done = 1;
	start_service(ex, 1);
}

/* Request bytes from the stream. */
static void ex_on_data(struct pk_stream_handler *hd, const uint8_t *data, size_t len)
{
	struct agent_exchange *ex = (struct agent_exchange *)hd;
	if (!ex->begun && ex->fin_sent) {
		/* A request on a kept-alive stream we already closed: it cannot
		 * be answered, so it is not run; the reset tells the server
		 * nothing was (it sends it again when that is safe). */
		pk_yamux_stream_consumed(ex->stream, len);
		pk_yamux_stream_reset(ex->stream);
		return;
	}
	if (!ex->begun) {
		/* A kept-alive stream's exchange starts with its request. */
		ex->begun = 1;
		ex->l->idle_streams--;
		ex->start_ms = pk_now_ms();
		ex->start_ns = pk_now_ns();
	}
	if (holds_next_request(ex)) {
		pk_bufq_append_force(&ex->next_req, data, len);
		return;
	}
	if (ex->resp_done && !ex->svc) {
		pk_yamux_stream_consumed(ex->stream, len); /* nobody to give it to */
		return;
	}
	while (len > 0 && !ex->upgraded && !ex->req_done) {
		size_t used = 0;
		enum pk_http1_event ev =
		    pk_http1_reader_feed(&ex->req, (const char *)data, len, &used);
		if (ev == PK_HTTP1_ERROR) {
			pk_yamux_stream_consumed(ex->stream, len);
			fail(ex, 400, "bad request");
			return;
		}
		if (!ex->head_done) {
			/* Head bytes are not forwarded as such: credit them now. */
			pk_yamux_stream_consumed(ex->stream, used);
			if (ev == PK_HTTP1_HEAD) {
				on_request_head(ex);
				const struct pk_http1_head *h = pk_http1_reader_head(&ex->req);
				if (h->upgrade || (!h->chunked && h->content_length <= 0)) {
					/* No body: the reader's DONE is pending. */
					size_t none;
					pk_http1_reader_feed(&ex->req, NULL, 0, &none);
					ex->req_done = 1;
				}
			}
		} else if (used) {
			pk_bufq_append_force(&ex->to_svc, data, used);
			ex->owed += used;
		}
		if (ev == PK_HTTP1_DONE)
			ex->req_done = 1;
		data += used;
		len -= used;
		if (holds_next_request(ex)) {
			pk_bufq_append_force(&ex->next_req, data, len);
			len = 0;
		}
		if (ex->resp_done && !ex->svc) {
			pk_yamux_stream_consumed(ex->stream, len);
			return;
		}
	}
	/* After an upgrade request (or after a complete request that closes
	 * the stream) the rest is passed on raw. */
	if (len) {
		pk_bufq_append_force(&ex->to_svc, data, len);
		ex->owed += len;
	}
	if (ex->svc && ex->svc->connected && ex->to_svc.len)
		svc_pump(ex->svc);
}

static void ex_on_fin(struct pk_stream_handler *hd)
{
	struct agent_exchange *ex = (struct agent_exchange *)hd;
	ex->peer_fin = 1;
	/* A kept-alive stream the server let go before another request: ours
	 * closes it too. */
	if (!ex->begun && !ex->fin_sent) {
		send_fin(ex);
		return;
	}
	/* The server finished sending. For an upgraded connection that is the
	 * end of the client's side: the exchange ends (Piko's server sends FIN
	 * when an upgraded connection ends). */
	if (ex->upgraded) {
		ex->resp_done = 1;
		release_svc(ex, 0);
		pump_to_stream(ex); /* FIN once what the service sent is through */
	}
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
	if (!ex->resp_done) {
		/* The server side gave up first. */
		ex->status = ex->status ? ex->status : 499;
		access_log(ex);
	}
	/* The service connection is reusable only after a complete exchange;
	 * a request cut short (e.g. answered early, then reset) is not. */
	if (!ex->resp_done || !ex->req_done || ex->to_svc.len)
		release_svc(ex, 0);
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
	/* Owner: see the file comment; freed by maybe_free(). */
	struct agent_exchange *ex = pk_xmalloc(sizeof(*ex));
	memset(ex, 0, offsetof(struct agent_exchange, req));
	ex->h.ops = &agent_exchange_ops;
	ex->l = l;
	ex->stream = s;
	ex->start_ms = pk_now_ms();
	ex->start_ns = pk_now_ns();
	pk_http1_reader_init(&ex->req, PK_HTTP1_REQUEST, MAX_HEAD);
	pk_http1_reader_init(&ex->resp, PK_HTTP1_RESPONSE, MAX_HEAD);
	/* to_svc is bounded by the stream's window (credited only once
	 * written) plus the head: its appends ignore the cap, which says so. */
	pk_bufq_init(&ex->to_svc, 2 * (size_t)pk_yamux_stream_window(s) + MAX_HEAD);
	pk_bufq_init(&ex->from_svc, FROM_SVC_HWM * 2);
	pk_bufq_init(&ex->next_req, (size_t)pk_yamux_stream_window(s) + MAX_HEAD);
	ex->next = exchanges;
	if (exchanges)
		exchanges->prev = ex;
	exchanges = ex;
	l->streams++;
	l->idle_streams++; /* until its first byte */
	pk_yamux_stream_set_user(s, &ex->h);
	return 0;
}

/* Response bytes from the service. */
static void svc_rx(struct agent_exchange *ex, const uint8_t *data, size_t len)
{
	const uint8_t *p = data;
	size_t n = len;
	ex->resp_bytes = 1;
	/* After a HEAD the reader is called once more even with no bytes
	 * left: a response without a body reports its DONE then. */
	int again = 0;
	while ((n > 0 || again) && !ex->upgraded && !ex->resp_done) {
		size_t used = 0;
		again = 0;
		enum pk_http1_event ev = pk_http1_reader_feed(&ex->resp, (const char *)p, n, &used);
		if (ev == PK_HTTP1_ERROR) {
			if (!ex->resp_started) {
				fail(ex, 502, "upstream unreachable");
				return;
			}
			/* Pass on what came; the connection cannot be reused. */
			ex->resp_keep_alive = 0;
			ex->resp_done = 1;
			used = n;
		} else if (ev == PK_HTTP1_HEAD) {
			again = 1;
			const struct pk_http1_head *r = pk_http1_reader_head(&ex->resp);
			if (r->status >= 200 || r->status == 101) {
				ex->status = r->status;
				if (ex->log_on) {
					free(ex->log_resp);
					ex->log_resp = pk_access_log_response_json(
					    &ex->l->cfg->access_log.response_headers, r);
				}
				ex->resp_started = 1;
				ex->resp_keep_alive = r->keep_alive;
			}
		} else if (ev == PK_HTTP1_BODY && ex->resp_started) {
			ex->resp_size += used;
		} else if (ev == PK_HTTP1_DONE && ex->resp_started) {
			ex->resp_size += used;
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
	}
	/* Bytes past the end of a finished response are not ours to pass on
	 * (and make the connection unusable). */
	size_t fwd = ex->resp_done && !ex->upgraded ? (size_t)(p - data) : len;
	if (fwd < len)
		ex->resp_keep_alive = 0;
	if (ex->stream) {
		pk_bufq_append_force(&ex->from_svc, data, fwd);
		pump_to_stream(ex);
		if (ex->from_svc.len >= FROM_SVC_HWM && !ex->svc_paused && ex->svc &&
		    ex->svc->sock) {
			ex->svc_paused = 1;
			pk_sock_pause(ex->svc->sock, 1);
		}
	}
	maybe_release(ex);
}

/* The service connection closed under the exchange. */
static void svc_gone(struct agent_exchange *ex)
{
	struct svc_conn *c = ex->svc;
	ex->svc = NULL;
	ex->svc_paused = 0;
	/* Whatever came, the stream carries no other request: a response cut
	 * short must end with our FIN, so the server ends it too. */
	ex->resp_keep_alive = 0;
	if (!ex->stream) {
		maybe_free(ex);
		return;
	}
	if (!ex->resp_bytes && c->reused && !ex->retried && ex->req_done && ex->to_svc.len == 0 &&
	    !ex->owed && ex->head) {
		/* A kept-alive connection the service had closed: resend the
		 * bodyless request on a fresh one. */
		ex->retried = 1;
		pk_bufq_clear(&ex->to_svc);
		pk_bufq_append_force(&ex->to_svc, ex->head, ex->head_len);
		start_service(ex, 0);
		return;
	}
	if (!ex->resp_started) {
		fail(ex, 502, "upstream unreachable");
	} else if (!ex->resp_done && !ex->upgraded) {
		pk_http1_reader_eof(&ex->resp); /* a close-delimited body ends here */
		ex->resp_done = 1;
		access_log(ex);
	} else if (ex->upgraded) {
		ex->resp_done = 1;
	}
	pump_to_stream(ex);
	maybe_free(ex);
}

/* Bytes written to the service: credit the stream window. */
/* Hand the exchange's bytes to the connection as its queue takes them,
 * crediting the stream for what moved; a closing connection closes once
 * nothing is left. */
static void svc_pump(struct svc_conn *c)
{
	struct agent_exchange *ex = c->ex;
	if (!c->sock || !c->connected)
		return;
	while (ex && ex->to_svc.len) {
		size_t n;
		const uint8_t *p = pk_bufq_peek(&ex->to_svc, &n);
		size_t w = pk_sock_write(c->sock, p, n);
		if (!w)
			break; /* on_drain brings us back */
		pk_bufq_consume(&ex->to_svc, w);
		if (ex->stream && ex->owed) {
			size_t credit = ex->owed < w ? ex->owed : w;
			ex->owed -= credit;
			pk_yamux_stream_consumed(ex->stream, credit);
		}
	}
	if (c->closing && (!ex || !ex->to_svc.len)) {
		pk_sock_close(c->sock, 0);
		return;
	}
	if (ex)
		maybe_release(ex);
}

/* The connection is gone (closed, or never connected). */
static void conn_gone(struct svc_conn *c)
{
	c->sock = NULL;
	if (c->ex)
		svc_gone(c->ex);
	else if (c->prev || c->next || idle_conns == c)
		pool_remove(c);
	free(c);
}

static void svc_on_connected(struct pk_sock *s)
{
	struct svc_conn *c = pk_sock_user(s);
	c->connected = 1;
	svc_pump(c);
}

static void svc_on_data(struct pk_sock *s, const uint8_t *data, size_t len)
{
	struct svc_conn *c = pk_sock_user(s);
	if (c->ex)
		svc_rx(c->ex, data, len);
	else
		conn_close(c); /* an idle connection has nothing to say */
}

/* The service finished sending: as Go's transport, the connection is done
 * (a response read to EOF ends here, when the connection closes). */
static void svc_on_eof(struct pk_sock *s)
{
	struct svc_conn *c = pk_sock_user(s);
	conn_close(c);
}

static void svc_on_drain(struct pk_sock *s)
{
	svc_pump(pk_sock_user(s));
}

static void svc_on_close(struct pk_sock *s, int reset, const char *why)
{
	struct svc_conn *c = pk_sock_user(s);
	if (!c->connected)
		pk_log(PK_LOG_DEBUG, SUBSYS, "service connect failed", "error", why, NULL);
	(void)reset;
	conn_gone(c);
}

static const struct pk_sock_ops svc_ops = {
    .on_connected = svc_on_connected,
    .on_data = svc_on_data,
    .on_eof = svc_on_eof,
    .on_drain = svc_on_drain,
    .on_close = svc_on_close,
};

void pk_agent_http_tick(struct pk_agent *a, uint64_t now)
{
	struct agent_exchange *next;
	for (struct agent_exchange *ex = exchanges; ex; ex = next) {
		next = ex->next;
		/* A kept-alive stream without a request, on a tunnel that is
		 * leaving: the server closes its idle streams once it reads the
		 * Go Away (ours or its own); a request it sent on one before is
		 * still served. Closed here a second later, should the server
		 * not, so the tunnel drains. */
		if (ex->stream && !ex->begun && !ex->fin_sent &&
		    (a->shutting_down || pk_yamux_stream_session_leaving(ex->stream))) {
			if (!ex->leaving_seen_ms)
				ex->leaving_seen_ms = now;
			if (now - ex->leaving_seen_ms >= IDLE_LEAVING_MS)
				send_fin(ex);
			continue;
		}
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
			release_svc(ex, 0);
		}
	}
	/* Idle connections: expire them, and all of them on shutdown. */
	for (struct svc_conn *c = idle_conns, *cn; c; c = cn) {
		cn = c->next;
		if (!c->closing && (a->shutting_down || now - c->idle_since_ms > POOL_IDLE_MS))
			conn_close(c);
	}
}
