/*
 * Proxy port: where a client's HTTP request enters.
 *
 * lws 4.1 cannot list arbitrary request headers, so the port is a raw-socket
 * vhost and HTTP/1.1 is read with http-parser (core/http1.c). Each request
 * becomes an exchange: the endpoint is derived (route.c), an upstream picked
 * round-robin (registry.c), a yamux stream opened on its tunnel, the rewritten
 * request head and then the raw body bytes written to the stream; the
 * response comes back the same way, its head rewritten for the client and its
 * body spliced through unchanged. The client connection stays open across
 * exchanges (keep-alive, pipelining: one exchange at a time, later requests
 * wait in the input queue).
 *
 * Backpressure: client input waits in a capped queue while the stream's send
 * queue is full, and client reads stop (lws rx flow control) above its
 * high-water mark; response bytes are credited back to the stream's yamux
 * window only once written to the client socket, so a slow client throttles
 * its own stream and never the shared tunnel.
 */
#include <assert.h>
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "access_log.h"
#include "backoff.h"
#include "buf.h"
#include "http1.h"
#include "link.h"
#include "log.h"
#include "lwsio.h"
#include "proxy_tcp.h"
#include "route.h"
#include "runloop.h"
#include "server.h"
#include "upstream.h"
#include "ws_upgrade.h"

#define SUBSYS "proxy"
#define IN_CAP (256 * 1024)
#define IN_HWM (128 * 1024)
/* out holds response bytes not yet written to the client: at most the
 * stream's window (we credit only what was written; stream.max_window_size)
 * plus heads and errors, which is why those writes ignore this cap. */
#define OUT_CAP (512 * 1024)
/* Above this, client input is not processed (see process()). */
#define OUT_HWM (128 * 1024)
/* Exchanges that may wait, node-wide, for an upstream whose 256 opens all
 * wait for ACKs (a burst, or a slow agent); beyond this, 502 at once. */
#define MAX_WAITING 4096
/* How long a TCP-route exchange may wait (HTTP ones wait within
 * proxy.timeout); Go's yamux gives up on an open after 75 s. */
#define TCP_OPEN_WAIT_MS 30000

struct pk_proxy_exchange;

struct pk_proxy_conn {
	struct pk_server *srv;
	struct lws *wsi;
	struct pk_pass_work write_work; /* a write at the loop pass's end */
	char client_ip[64];
	struct pk_http1_reader req;
	struct pk_bufq in;  /* client bytes not yet handed on */
	struct pk_bufq out; /* bytes for the client */
	struct pk_proxy_exchange *ex;
	int rx_paused;
	int in_process; /* process() is running: see drain_in() */
	int fin_sent;   /* closing: our FIN is out, waiting for the client's */
	int close_after_write;
	int counted;            /* a socket of the proxy port (srv->n_proxy_sockets) */
	uint64_t idle_since_ms; /* keep-alive idle start; 0 while busy */
	uint64_t head_start_ms; /* first byte of the current head; 0 when none */
	/* A request forwarded by another node arrives as a stream on a node
	 * link instead of a socket (link.c): the same connection logic, with
	 * the stream as transport. wsi is NULL then. */
	struct pk_stream_handler sh;
	struct pk_yamux_stream *link_stream;
	size_t in_owed;  /* link bytes received but not credited (reading paused) */
	int link_closed; /* our FIN is queued on the link stream */
	struct pk_proxy_conn *prev, *next;
};

struct pk_proxy_exchange {
	struct pk_stream_handler h;     /* first: the stream's user pointer */
	struct pk_proxy_conn *conn;     /* NULL once detached from the client */
	struct pk_yamux_stream *stream; /* NULL once the stream is gone */
	char *head;                     /* rewritten request head still to be written */
	size_t head_len, head_off;
	int req_done;
	int resp_started;
	int upgraded;
	int ws;            /* the TCP route: the client side speaks WebSocket frames */
	int client_closed; /* ... and has sent its close frame (our FIN is sent) */
	int upstream_done; /* ... the upstream sent FIN */
	int close_sent;    /* ... our close frame is queued */
	struct pk_ws_reader wsr;
	int keep_alive;
	int close;
	int is_head_req;
	int http10;       /* the request was HTTP/1.0: no chunked body, no 1xx */
	int dechunk;      /* ... and the response is chunked: its payload only */
	size_t sunk;      /* payload bytes the reader's sink wrote in this feed */
	size_t body_sent; /* request body bytes written to the stream */
	size_t owed;      /* received from the stream, queued in out, not yet credited */
	uint64_t start_ms, deadline_ms;
	char method[16];
	char *host, *path;
	char *upgrade; /* the request's Upgrade header, or NULL */
	/* Until a stream is open: where to, and (TCP route) the 101 to send. */
	char *endpoint;
	int tcp;
	char *ws_resp;
	size_t ws_len;
	int waiting; /* on srv's waiting list */
	struct pk_proxy_exchange *wprev, *wnext;
	struct pk_server *srv;
	int status;
	size_t req_size, resp_size;
	/* The access log's (only while it would write this request): the
	 * request's headers, the response's as a JSON object, the protocol
	 * and a precise start. forwarded: a tunnel was chosen, and Piko then
	 * sets X-Piko-Forward: true on the request it logs. */
	int log_on;
	struct pk_access_hdrs log_req;
	char *log_resp;
	int http_minor;
	int forwarded;
	/* Came over a link from another worker of this server (--workers):
	 * the worker it entered counts and logs it, so one request is one
	 * line and one count (workers.h). */
	int from_worker;
	uint64_t start_ns;
	/* The local tunnel the stream was opened on (NULL: a node link), and
	 * how many times it was sent to another (see retry_elsewhere()). */
	struct pk_upstream *up;
	int retries;
	/* Keep-alive over the tunnel (upstream_pool.h): the stream came from
	 * the tunnel's pool; the response lets the stream carry another
	 * request (keep-alive, with its end known from its own bytes); the
	 * agent sent FIN; a retry after a reused stream failed opens a new
	 * one. */
	int reused;
	uint64_t kept_ms; /* how long the reused stream waited in the pool */
	int stream_reusable;
	int stream_fin;
	int no_pool;
	/* Last: only this is not zeroed at allocation (pk_http1_reader_init
	 * sets it up without clearing its 4 KiB header array). */
	struct pk_http1_reader resp;
};

static int process(struct pk_proxy_conn *c, uint8_t *p, size_t n);
static void drain_in(struct pk_proxy_conn *c);
static int flush_head(struct pk_proxy_exchange *ex);
static struct pk_upstream *next_upstream(struct pk_server *srv, const char *endpoint);
static void exchange_open(struct pk_proxy_exchange *ex, struct pk_upstream *up);
static void exchange_open_remote(struct pk_proxy_exchange *ex, struct pk_link *link);
static void conn_flush_link(struct pk_proxy_conn *c);
static void conn_closed(struct pk_proxy_conn *c);
static int retry_elsewhere(struct pk_proxy_exchange *ex, int closing);

/* ---- output to the client --------------------------------------------- */

static int conn_writeable(struct pk_proxy_conn *c);

/* A socket's write at the end of the loop pass, as the tunnel's (see
 * core/tunnel.c: pass_write): no WRITEABLE round trip through lws per
 * response, and what the pass's events queued leaves in one send(). */
static void conn_pass_write(struct pk_pass_work *w)
{
	struct pk_proxy_conn *c = lws_container_of(w, struct pk_proxy_conn, write_work);
	if (!c->wsi)
		return;
	if (lws_partial_buffered(c->wsi)) {
		lws_callback_on_writable(c->wsi);
		return;
	}
	if (conn_writeable(c) < 0)
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
}

/* Bytes wait in c->out: a socket writes them at the pass's end (or when
 * lws says it can, after a partial write); a link stream takes what fits
 * now (yamux never calls back from inside a write), the rest when its
 * window opens. */
static void conn_want_write(struct pk_proxy_conn *c)
{
	if (c->link_stream)
		conn_flush_link(c);
	else if (c->wsi)
		pk_runloop_at_pass_end(&c->write_work, conn_pass_write);
}

/* Stop (0) or resume (1) reading the client. */
static void conn_rx_flow(struct pk_proxy_conn *c, int on)
{
	if (c->wsi) {
		lws_rx_flow_control(c->wsi, on);
		return;
	}
	/* A link stream: what it sent while paused is credited only now, so
	 * its window, not our queue, holds the rest back. */
	if (on && c->link_stream && c->in_owed) {
		pk_yamux_stream_consumed(c->link_stream, c->in_owed);
		c->in_owed = 0;
	}
}

static void conn_write(struct pk_proxy_conn *c, const void *data, size_t len)
{
	pk_bufq_append_force(&c->out, data, len);
	conn_want_write(c);
}

static void conn_close_after_write(struct pk_proxy_conn *c)
{
	c->close_after_write = 1;
	conn_want_write(c);
}

/* How a response of this exchange is framed for its client. */
static unsigned resp_flags(const struct pk_proxy_exchange *ex, int close)
{
	return (close ? PK_HTTP1_RESP_CLOSE : 0) | (ex->http10 ? PK_HTTP1_RESP_HTTP10 : 0);
}

/* ---- metrics and access log ------------------------------------------- */

static void flight_gauge(struct pk_server *srv)
{
	pk_metric_set(srv->m.requests_in_flight, NULL,
	              (double)(srv->in_flight - srv->in_flight_from_workers));
}

static void flight_done(struct pk_server *srv, const struct pk_proxy_exchange *ex)
{
	srv->in_flight--;
	if (ex->from_worker)
		srv->in_flight_from_workers--;
	flight_gauge(srv);
}

/* The access log's record of a finished exchange (Piko's shape, see
 * access_log.h). */
static void access_log(struct pk_proxy_exchange *ex)
{
	if (!ex->log_on)
		return;
	/* Piko's proxy sets X-Piko-Forward on the request it hands to its
	 * reverse proxy, which is the request the access log then prints. */
	struct pk_http1_header hs[PK_HTTP1_MAX_HEADERS + 1];
	size_t n = 0;
	for (size_t i = 0; i < ex->log_req.n; i++)
		if (!ex->forwarded || strcasecmp(ex->log_req.v[i].name, "x-piko-forward") != 0)
			hs[n++] = ex->log_req.v[i];
	if (ex->forwarded)
		hs[n++] = (struct pk_http1_header){"X-Piko-Forward", "true"};
	struct pk_access_record r = {
	    .http_minor = ex->http_minor,
	    .method = ex->method,
	    .host = ex->host,
	    .target = ex->path,
	    .req_hdrs = hs,
	    .n_req_hdrs = n,
	    .resp_hdr = ex->log_resp,
	    .status = ex->status,
	    .duration_ns = pk_now_ns() - ex->start_ns,
	};
	pk_access_log_write(&ex->srv->cfg->proxy.access_log, "proxy.access", &r);
}

/* Metrics and the access log, once per exchange. */
static void record(struct pk_server *srv, struct pk_proxy_exchange *ex)
{
	if (ex->from_worker) {
		flight_done(srv, ex);
		return;
	}
	char st[12];
	if (ex->status >= 100)
		pk_http1_status_digits(ex->status, st); /* "%d" for every 3-digit code */
	else
		snprintf(st, sizeof(st), "%d", ex->status);
	const char *labels[2] = {st, ex->method};
	double secs = (double)(pk_now_ms() - ex->start_ms) / 1000.0;
	pk_metric_add(srv->m.requests_total, labels, 1);
	pk_metric_observe(srv->m.request_latency, labels, secs);
	pk_metric_observe(srv->m.request_size, NULL, (double)ex->req_size);
	pk_metric_observe(srv->m.response_size, NULL, (double)ex->resp_size);
	flight_done(srv, ex);
	access_log(ex);
}

/* The response headers of a response this node wrote itself (an error),
 * for the access log: those a Go handler sets, not the framing Go's server
 * adds. */
static void log_own_response(struct pk_proxy_exchange *ex, const char *resp, size_t len)
{
	if (!ex->log_on)
		return;
	free(ex->log_resp);
	ex->log_resp =
	    pk_access_log_written_json(&ex->srv->cfg->proxy.access_log.response_headers, resp, len);
}

/* ---- exchanges ---------------------------------------------------------- */

static void wait_remove(struct pk_proxy_exchange *ex)
{
	if (!ex->waiting)
		return;
	struct pk_server *srv = ex->srv;
	if (ex->wprev)
		ex->wprev->wnext = ex->wnext;
	else
		srv->waiting_head = ex->wnext;
	if (ex->wnext)
		ex->wnext->wprev = ex->wprev;
	else
		srv->waiting_tail = ex->wprev;
	ex->wprev = ex->wnext = NULL;
	ex->waiting = 0;
	srv->n_waiting--;
}

/* Park an exchange until its upstream can take another open. 0 when the
 * node-wide list is full. */
static int wait_add(struct pk_proxy_exchange *ex)
{
	struct pk_server *srv = ex->srv;
	if (ex->waiting)
		return 1;
	if (srv->n_waiting >= MAX_WAITING)
		return 0;
	ex->waiting = 1;
	ex->wprev = srv->waiting_tail;
	ex->wnext = NULL;
	if (srv->waiting_tail)
		srv->waiting_tail->wnext = ex;
	else
		srv->waiting_head = ex;
	srv->waiting_tail = ex;
	srv->n_waiting++;
	return 1;
}

static void exchange_free(struct pk_proxy_exchange *ex)
{
	wait_remove(ex);
	free(ex->endpoint);
	free(ex->ws_resp);
	pk_http1_reader_free(&ex->resp);
	free(ex->head);
	free(ex->host);
	free(ex->path);
	free(ex->upgrade);
	pk_access_hdrs_free(&ex->log_req);
	free(ex->log_resp);
	free(ex);
}

/* Detach the exchange from its client connection; it lives on until its
 * stream is gone. */
static void exchange_detach(struct pk_proxy_exchange *ex)
{
	struct pk_proxy_conn *c = ex->conn;
	if (c)
		c->ex = NULL;
	ex->conn = NULL;
	if (ex->stream && ex->owed) {
		pk_yamux_stream_consumed(ex->stream, ex->owed);
		ex->owed = 0;
	}
	if (!ex->stream)
		exchange_free(ex);
}

/* The exchange completed (response fully relayed). */
static void exchange_finish(struct pk_proxy_exchange *ex)
{
	struct pk_proxy_conn *c = ex->conn;
	record(c->srv, ex);
	/* A stream whose request and response both completed, kept alive by
	 * the response and not closed by the agent, goes back to its tunnel's
	 * pool for the next request (upstream_pool.h). Otherwise our FIN ends
	 * it (the agent closes its side after such a response), or, when the
	 * request body was not fully sent, a reset. */
	if (ex->stream && !ex->client_closed) {
		if (ex->req_done && ex->up && ex->stream_reusable && !ex->stream_fin &&
		    ex->head_off == ex->head_len) {
			struct pk_yamux_stream *s = ex->stream;
			if (ex->owed)
				pk_yamux_stream_consumed(s, ex->owed);
			ex->owed = 0;
			ex->stream = NULL;
			pk_upstream_put_stream(ex->up, s);
		} else if (ex->req_done) {
			pk_yamux_stream_close(ex->stream, pk_now_ms());
		} else {
			pk_yamux_stream_reset(ex->stream);
		}
	}
	int close = ex->close || !ex->req_done;
	exchange_detach(ex);
	if (close) {
		conn_close_after_write(c);
		return;
	}
	c->idle_since_ms = pk_now_ms();
	/* A pipelined request may already be waiting. */
	drain_in(c);
}

/* The exchange failed before any response reached the client: answer with
 * Piko's JSON error and drop the stream. */
static void exchange_fail(struct pk_proxy_exchange *ex, int status, const char *msg)
{
	struct pk_proxy_conn *c = ex->conn;
	int close = !ex->keep_alive || !ex->req_done;
	size_t len;
	char *resp = pk_http1_error_response(status, msg, resp_flags(ex, close), &len);
	log_own_response(ex, resp, len);
	conn_write(c, resp, len);
	free(resp);
	ex->status = status;
	ex->resp_size = len;
	record(c->srv, ex);
	if (ex->stream)
		pk_yamux_stream_reset(ex->stream);
	exchange_detach(ex);
	if (close)
		conn_close_after_write(c);
	else {
		c->idle_since_ms = pk_now_ms();
		drain_in(c);
	}
}

/* The exchange failed before any response: answer with a prepared
 * response (owned by the callee) and close. */
static void exchange_reply(struct pk_proxy_exchange *ex, int status, char *resp, size_t len)
{
	struct pk_proxy_conn *c = ex->conn;
	log_own_response(ex, resp, len);
	conn_write(c, resp, len);
	free(resp);
	ex->status = status;
	ex->resp_size = len;
	record(c->srv, ex);
	exchange_detach(ex);
	conn_close_after_write(c);
}

/* Auth refused the request: Piko's 401. A bad token is refused by its auth
 * middleware, before the access log and metrics; a token without the
 * endpoint is refused by the route, so that one is logged and counted. */
static void exchange_deny(struct pk_proxy_exchange *ex, const char *reason)
{
	struct pk_proxy_conn *c = ex->conn;
	size_t len;
	char *resp = pk_access_error_response(reason, ex->http10, &len);
	if (!strcmp(reason, PK_AUTH_NOT_PERMITTED)) {
		exchange_reply(ex, 401, resp, len);
		return;
	}
	conn_write(c, resp, len);
	free(resp);
	ex->status = 401;
	flight_done(c->srv, ex);
	exchange_detach(ex);
	conn_close_after_write(c);
}

/* The response broke after its head went out: all the client can be told is
 * a closed connection. */
static void exchange_abort(struct pk_proxy_exchange *ex)
{
	ex->close = 1;
	ex->req_done = 0; /* forces a reset rather than a FIN */
	exchange_finish(ex);
}

/* The request body broke its framing (a malformed chunked body) after the
 * exchange started. The stream is reset either way, so the service sees an
 * aborted request, never a cut body taken for a whole one, and the
 * connection closes (its next bytes cannot be trusted to start a request).
 * What the client is told depends on how far the exchange got:
 *  - no body byte was forwarded yet: the client's fault, seen before any
 *    of it went on: 400 "400 Bad Request", as Go's server answers a request
 *    it cannot read;
 *  - part of the body was forwarded, no response yet: 502
 *    {"error":"upstream unreachable"}, what Piko answers (Go's reverse proxy
 *    fails the round trip when reading the body fails);
 *  - the response has started: it is cut (the connection closes), as Go's
 *    reverse proxy aborts it. */
static void exchange_body_error(struct pk_proxy_exchange *ex)
{
	struct pk_proxy_conn *c = ex->conn;
	int status;
	const char *why = pk_http1_reader_error(&c->req, &status);
	pk_log(PK_LOG_DEBUG, SUBSYS, "bad request body", "client-ip", c->client_ip, "error", why,
	       NULL);
	if (ex->resp_started) {
		exchange_abort(ex);
	} else if (ex->body_sent) {
		exchange_fail(ex, 502, "upstream unreachable");
	} else {
		size_t len;
		char *resp = pk_http1_unreadable_response(status, resp_flags(ex, 1), &len);
		if (ex->stream)
			pk_yamux_stream_reset(ex->stream);
		exchange_reply(ex, status, resp, len);
	}
}

/* The response reader's sink (HTTP/1.0 client, chunked response): only the
 * payload reaches the client; relay_body() credits the framing. */
static void dechunk_sink(void *arg, const char *data, size_t len)
{
	struct pk_proxy_exchange *ex = arg;
	ex->sunk += len;
	ex->owed += len;
	ex->resp_size += len;
	conn_write(ex->conn, data, len);
}

/* used raw response body bytes were parsed: on to the client. */
static void relay_body(struct pk_proxy_exchange *ex, const uint8_t *data, size_t used)
{
	if (ex->dechunk) {
		/* The sink has written the payload among them; the framing is
		 * never written, so it is credited now. */
		size_t framing = used > ex->sunk ? used - ex->sunk : 0;
		ex->sunk = 0;
		if (framing)
			pk_yamux_stream_consumed(ex->stream, framing);
		return;
	}
	conn_write(ex->conn, data, used);
	ex->owed += used;
	ex->resp_size += used;
}

/* A 101 must switch to the protocol the request asked for. */
static int upgrade_matches(const struct pk_proxy_exchange *ex, const struct pk_http1_head *r)
{
	const char *got = pk_http1_header_get(r, "Upgrade");
	return ex->upgrade && got && strcasecmp(ex->upgrade, got) == 0;
}

static void ex_on_data(struct pk_stream_handler *h, const uint8_t *data, size_t len)
{
	struct pk_proxy_exchange *ex = (struct pk_proxy_exchange *)h;
	struct pk_proxy_conn *c = ex->conn;
	if (!c) {
		pk_yamux_stream_consumed(ex->stream, len);
		return;
	}
	if (ex->upgraded) {
		if (ex->ws) {
			pk_proxy_tcp_output(&c->out, data, len);
			conn_want_write(c);
		} else {
			conn_write(c, data, len);
		}
		ex->owed += len;
		ex->resp_size += len;
		return;
	}
	/* After a HEAD the reader is called once more even with no bytes
	 * left: a response without a body reports its DONE then. */
	int again = 0;
	while (ex->conn && (len > 0 || again)) {
		size_t used = 0;
		again = 0;
		enum pk_http1_event ev =
		    pk_http1_reader_feed(&ex->resp, (const char *)data, len, &used);
		const struct pk_http1_head *r = pk_http1_reader_head(&ex->resp);
		switch (ev) {
		case PK_HTTP1_NEED_MORE:
			pk_yamux_stream_consumed(ex->stream, used);
			break;
		case PK_HTTP1_HEAD: {
			pk_yamux_stream_consumed(ex->stream, used);
			ex->status = r->status;
			if (r->status == 101 && !upgrade_matches(ex, r)) {
				/* As Go's reverse proxy: a switch the client did not
				 * ask for is a broken upstream. */
				pk_yamux_stream_consumed(ex->stream, len - used);
				exchange_fail(ex, 502, "upstream unreachable");
				return;
			}
			int interim = r->status >= 100 && r->status < 200 && r->status != 101;
			int body_allowed = !ex->is_head_req && r->status != 204 &&
			                   r->status != 304 && !interim && r->status != 101;
			if (interim && ex->http10) {
				/* No 1xx to an HTTP/1.0 client (RFC 9110 15.2). */
				again = 1;
				break;
			}
			if (!interim && body_allowed && !r->chunked && r->content_length < 0)
				ex->close = 1; /* body runs to the stream's end */
			/* The agent keeps a stream by the same rule: keep-alive,
			 * no Upgrade asked (ours declines with FIN), an end known
			 * from the response's own bytes. */
			if (!interim)
				ex->stream_reusable =
				    r->keep_alive && r->status != 101 && !ex->upgrade &&
				    (!body_allowed || r->chunked || r->content_length >= 0);
			if (body_allowed && r->chunked && ex->http10) {
				/* HTTP/1.0 has no chunked coding: the payload alone,
				 * ended by closing, as Go's server does. */
				ex->close = 1;
				ex->dechunk = 1;
				pk_http1_reader_set_body_sink(&ex->resp, dechunk_sink, ex);
			}
			if (!interim && ex->log_on) {
				free(ex->log_resp);
				ex->log_resp = pk_access_log_response_json(
				    &ex->srv->cfg->proxy.access_log.response_headers, r);
			}
			size_t hl;
			char *head = pk_http1_build_response(
			    r, resp_flags(ex, interim ? 0 : ex->close), &hl);
			conn_write(c, head, hl);
			free(head);
			ex->resp_size += hl;
			if (!interim)
				ex->resp_started = 1;
			again = 1;
			break;
		}
		case PK_HTTP1_BODY:
			relay_body(ex, data, used);
			break;
		case PK_HTTP1_DONE:
			if (used)
				relay_body(ex, data, used);
			if (!ex->resp_started)
				break; /* an interim 1xx: the final response follows */
			if (ex->status == 101) {
				/* WebSocket passthrough: raw bytes both ways from now on. */
				ex->upgraded = 1;
				ex->deadline_ms = 0;
				data += used;
				len -= used;
				if (len) {
					conn_write(c, data, len);
					ex->owed += len;
					ex->resp_size += len;
				}
				drain_in(c);
				return;
			}
			len -= used;
			if (len) {
				pk_yamux_stream_consumed(ex->stream, len); /* trailing junk */
				ex->stream_reusable = 0;
			}
			exchange_finish(ex);
			return;
		case PK_HTTP1_ERROR:
			pk_yamux_stream_consumed(ex->stream, len);
			if (!ex->resp_started)
				exchange_fail(ex, 502, "upstream unreachable");
			else
				exchange_abort(ex);
			return;
		}
		data += used;
		len -= used;
	}
}

/* The stream ended (FIN or gone) while the client still waits. */
/* The TCP route's end: our close frame, then the connection closes once it
 * is written. */
static void tcp_route_end(struct pk_proxy_exchange *ex, uint16_t code)
{
	if (!ex->close_sent)
		pk_proxy_tcp_close(&ex->conn->out, code, "");
	ex->close_sent = 1;
	ex->close = 1;
	ex->req_done = 1;
	exchange_finish(ex);
}

static void ex_stream_ended(struct pk_proxy_exchange *ex)
{
	struct pk_proxy_conn *c = ex->conn;
	if (!c)
		return;
	if (ex->ws) {
		/* The stream is gone (reset, or both sides finished). */
		tcp_route_end(ex, ex->upstream_done ? 1000 : 1011);
	} else if (ex->upgraded) {
		ex->status = 101;
		exchange_abort(ex);
	} else if (!ex->resp_started) {
		exchange_fail(ex, 502, "upstream unreachable");
	} else if (pk_http1_reader_eof(&ex->resp)) {
		exchange_finish(ex); /* close-delimited body complete */
	} else {
		exchange_abort(ex); /* response cut short */
	}
}

static void ex_on_fin(struct pk_stream_handler *h)
{
	struct pk_proxy_exchange *ex = (struct pk_proxy_exchange *)h;
	ex->stream_fin = 1;
	if (ex->ws && ex->conn) {
		/* The upstream is done sending: our close frame says so, and,
		 * as RFC 6455 lets the side that sent close keep receiving,
		 * the client may still send until its own close. */
		ex->upstream_done = 1;
		if (ex->client_closed) {
			tcp_route_end(ex, 1000);
		} else if (!ex->close_sent) {
			pk_proxy_tcp_close(&ex->conn->out, 1000, "");
			ex->close_sent = 1;
			conn_want_write(ex->conn);
		}
		return;
	}
	if (retry_elsewhere(ex, 0))
		return;
	ex_stream_ended(ex);
}

static void ex_on_writable(struct pk_stream_handler *h)
{
	struct pk_proxy_exchange *ex = (struct pk_proxy_exchange *)h;
	if (ex->conn)
		drain_in(ex->conn);
}

/* Go's reverse proxy, Go's transport and nginx all retry a request whose
 * connection failed before any of the response, when that is safe; so does
 * this node, on another tunnel of the endpoint:
 *  - a stream the tunnel never took (pk_yamux_stream_refused()): Go's yamux
 *    answers RST to a stream that crosses its own Go Away, so an agent that
 *    is leaving (a Piko agent on SIGTERM, a rolling deploy) refuses the
 *    requests sent just before it read that Go Away; nothing was acted on;
 *  - a stream that ended before any response byte, for a request without a
 *    body whose method is idempotent (GET, HEAD, OPTIONS, TRACE, as Go's
 *    transport replays): a Piko agent closes its tunnel on SIGTERM without
 *    waiting for every request it took.
 * Only while nothing is lost: no body byte was written (the head is kept)
 * and no response byte came. Bounded: MAX_RETRIES tunnels, never the one
 * that failed, except after a stream kept alive from an earlier request:
 * the agent may have closed it as the request went out (as Go's transport
 * retries on a reused connection), so a new stream on the same tunnel.
 * 1 when the request was sent on; the old stream is let go (reset when it
 * still exists). */
#define MAX_RETRIES 3
static int idempotent(const char *method)
{
	return !strcmp(method, "GET") || !strcmp(method, "HEAD") || !strcmp(method, "OPTIONS") ||
	       !strcmp(method, "TRACE");
}

/* A tunnel of the endpoint other than not, or NULL: the failing one may
 * still be registered (its Go Away not read yet), and round-robin may offer
 * it again. */
static struct pk_upstream *other_upstream(struct pk_server *srv, const char *endpoint,
                                          const struct pk_upstream * not )
{
	struct pk_upstream *up = NULL;
	size_t n = pk_registry_upstreams(srv->registry, endpoint);
	for (size_t i = 0; i < n && (!up || up == not ); i++)
		up = next_upstream(srv, endpoint);
	return up && up != not ? up : NULL;
}

static int retry_elsewhere(struct pk_proxy_exchange *ex, int closing)
{
	struct pk_yamux_stream *old = ex->stream;
	if (!ex->conn || !old || !ex->up || ex->resp_started || ex->body_sent || ex->tcp ||
	    ex->upgraded || ex->retries >= MAX_RETRIES || pk_http1_reader_in_message(&ex->resp))
		return 0;
	/* A kept stream the agent ended (FIN) right after keeping it: the
	 * agent ends every stream after its response, so the tunnel keeps
	 * none from now on. */
	if (ex->reused && !closing)
		pk_stream_pool_ended_early(&ex->up->pool, ex->kept_ms);
	int refused = closing && pk_yamux_stream_refused(old);
	if (!refused && !(ex->req_done && idempotent(ex->method)))
		return 0;
	struct pk_upstream *up =
	    ex->reused ? ex->up : other_upstream(ex->srv, ex->endpoint, ex->up);
	if (!up)
		return 0;
	ex->no_pool = ex->reused;
	ex->reused = 0;
	ex->stream_fin = 0;
	ex->retries++;
	pk_log(PK_LOG_DEBUG, SUBSYS,
	       "tunnel failed the request before answering; retrying on another", "endpoint-id",
	       ex->endpoint, "why", refused ? "refused" : "ended", NULL);
	pk_yamux_stream_set_user(old, NULL);
	if (!closing)
		pk_yamux_stream_reset(old);
	ex->stream = NULL;
	ex->owed = 0;
	ex->head_off = 0;
	exchange_open(ex, up);
	return 1;
}

static void ex_on_close(struct pk_stream_handler *h, int reset)
{
	struct pk_proxy_exchange *ex = (struct pk_proxy_exchange *)h;
	if (reset && retry_elsewhere(ex, 1))
		return;
	ex->stream = NULL;
	ex->owed = 0;
	if (ex->conn)
		ex_stream_ended(ex); /* detaches, and so frees, the exchange */
	else
		exchange_free(ex);
}

static const struct pk_stream_ops exchange_ops = {
    .on_data = ex_on_data,
    .on_fin = ex_on_fin,
    .on_writable = ex_on_writable,
    .on_close = ex_on_close,
};

/* A request head is complete and no exchange is running: route it, or
 * queue an error response. */
static void start_exchange(struct pk_proxy_conn *c)
{
	struct pk_server *srv = c->srv;
	const struct pk_http1_head *h = pk_http1_reader_head(&c->req);
	uint64_t now = pk_now_ms();

	c->idle_since_ms = 0;
	c->head_start_ms = 0;
	/* Came over a link from another worker of this server (--workers):
	 * the worker it entered counts and logs it (workers.h). */
	int from_worker = c->link_stream && srv->cfg->worker.on;
	srv->in_flight++;
	srv->in_flight_from_workers += from_worker;

	/* Owner: the client connection while attached (c->ex), then the stream
	 * (its user pointer) until on_close; see exchange_detach(). */
	struct pk_proxy_exchange *ex = pk_xmalloc(sizeof(*ex));
	memset(ex, 0, offsetof(struct pk_proxy_exchange, resp));
	ex->h.ops = &exchange_ops;
	ex->conn = c;
	c->ex = ex;
	ex->start_ms = now;
	size_t mlen = strnlen(h->method, sizeof(ex->method) - 1); /* cut as snprintf would */
	memcpy(ex->method, h->method, mlen);
	ex->method[mlen] = '\0';
	ex->is_head_req = strcmp(h->method, "HEAD") == 0;
	ex->http10 = h->http_major == 1 && h->http_minor == 0;
	const char *host = pk_http1_header_get(h, "Host");
	ex->host = pk_xstrdup(host ? host : "");
	ex->path = pk_xstrdup(h->url);
	ex->srv = srv;
	ex->http_minor = h->http_minor;
	ex->start_ns = pk_now_ns();
	ex->from_worker = from_worker;
	flight_gauge(srv);
	ex->log_on = !ex->from_worker &&
	             pk_access_log_on(&srv->cfg->proxy.access_log, "proxy.access", h->url);
	if (ex->log_on)
		pk_access_hdrs_copy(&ex->log_req, h->headers, h->nheaders);
	ex->keep_alive = h->keep_alive && !srv->shutting_down;
	/* The client asked to close (or is HTTP/1.0 without keep-alive, or we
	 * are shutting down): the response says Connection: close and the
	 * connection ends after it. */
	ex->close = !ex->keep_alive;
	ex->req_size = pk_http1_approx_request_size(h);
	/* A request without a body (and an upgrade request) is complete with
	 * its head. The reader reports its DONE (zero bytes) on the next feed,
	 * which process() ignores when no exchange is running. */
	ex->req_done = h->upgrade || (!h->chunked && h->content_length <= 0);
	pk_http1_reader_init(&ex->resp, PK_HTTP1_RESPONSE,
	                     (size_t)srv->cfg->proxy.http.max_header_bytes);
	pk_http1_reader_set_head_request(&ex->resp, ex->is_head_req);

	char endpoint[512];
	char *ws_resp = NULL;
	size_t ws_len = 0;
	int tcp = pk_proxy_tcp_match(h, endpoint, sizeof(endpoint));
	struct pk_access_headers ah = {
	    .x_piko_authorization = pk_http1_header_get(h, "x-piko-authorization"),
	    .authorization = pk_http1_header_get(h, "Authorization"),
	};
	struct pk_token tok;
	const char *denied = pk_access_check(srv->access.proxy, &ah, pk_auth_now(), &tok);
	if (denied) {
		exchange_deny(ex, denied);
		return;
	}
	if (!tcp && pk_route_endpoint_id(pk_http1_header_get(h, "x-piko-endpoint"), host, endpoint,
	                                 sizeof(endpoint)) < 0) {
		pk_token_clear(&tok);
		exchange_fail(ex, 400, "missing endpoint id");
		return;
	}
	/* The token's endpoint list, once the endpoint is known. */
	int permitted = pk_token_permits(&tok, endpoint);
	pk_token_clear(&tok);
	if (!permitted) {
		exchange_deny(ex, PK_AUTH_NOT_PERMITTED);
		return;
	}
	/* Local tunnels first (Piko's rule). Another node's only for a request
	 * that has not crossed a node already: x-piko-forward: true, or a
	 * stream from a node link, means one hop was made (or the client
	 * asked for this node only). */
	struct pk_upstream *up = next_upstream(srv, endpoint);
	struct pk_link *remote = NULL;
	const char *fwd = pk_http1_header_get(h, "x-piko-forward");
	if (!up && !c->link_stream && !(fwd && !strcmp(fwd, "true")))
		remote = pk_cluster_pick(&srv->cluster, endpoint);
	if (!up && !remote) {
		pk_log(PK_LOG_WARN, SUBSYS, "no available upstreams", "endpoint-id", endpoint,
		       NULL);
		exchange_fail(ex, 502, "no available upstreams");
		return;
	}
	/* The TCP route to another node is passed on as the upgrade it is:
	 * that node answers the handshake and frames the bytes, this one
	 * relays them (as Piko forwards it). */
	if (remote)
		tcp = 0;
	/* Piko checks the upgrade headers only once it has an upstream, so
	 * "no available upstreams" wins over a bad handshake. */
	if (tcp && pk_ws_upgrade_answer(h, &ws_resp, &ws_len) < 0) {
		exchange_reply(ex, 400, ws_resp, ws_len);
		return;
	}
	ex->srv = srv;
	ex->endpoint = pk_xstrdup(endpoint);
	ex->tcp = tcp;
	ex->ws_resp = ws_resp; /* owned by ex from here */
	ex->ws_len = ws_len;
	if (tcp) {
		ex->deadline_ms = now + TCP_OPEN_WAIT_MS; /* only while it waits */
	} else {
		/* An HTTP/1.0 request without Host gets the endpoint as its
		 * Host, as Piko's (its director's URL host). */
		ex->head = pk_http1_build_request_host(h, NULL, c->client_ip,
		                                       PK_HTTP1_PIKO_FORWARD | PK_HTTP1_KEEP_ALIVE,
		                                       endpoint, &ex->head_len);
		const char *upgrade = pk_http1_header_get(h, "Upgrade");
		if (h->upgrade && upgrade)
			ex->upgrade = pk_xstrdup(upgrade);
		/* No timeout for WebSocket upgrades (protocol reference §2.4);
		 * the timeout includes any wait for the stream. */
		if (srv->cfg->proxy.timeout_ms > 0 &&
		    !(upgrade && strcmp(upgrade, "websocket") == 0))
			ex->deadline_ms = now + (uint64_t)srv->cfg->proxy.timeout_ms;
	}
	if (remote)
		exchange_open_remote(ex, remote);
	else
		exchange_open(ex, up);
}

/* Open the exchange's stream on up. The stream is opened before the client
 * is answered, so a failure is still a 502 (protocol reference §1.4). When
 * up already has 256 opens waiting for their ACK, Go's yamux would block the
 * opener: the exchange waits on the node's list instead (retried as ACKs
 * arrive, bounded by its deadline) and its client's bytes stay queued. */
static void exchange_attach(struct pk_proxy_exchange *ex, struct pk_yamux_stream *s)
{
	struct pk_proxy_conn *c = ex->conn;
	int was_waiting = ex->waiting;
	wait_remove(ex);
	ex->stream = s;
	pk_yamux_stream_set_user(s, &ex->h);
	if (ex->tcp) {
		/* From here on the client speaks WebSocket frames whose
		 * payload is the raw byte stream; no proxy timeout applies. */
		conn_write(c, ex->ws_resp, ex->ws_len);
		free(ex->ws_resp);
		ex->ws_resp = NULL;
		ex->ws = 1;
		ex->upgraded = 1;
		ex->resp_started = 1;
		ex->req_done = 1;
		ex->status = 101;
		ex->deadline_ms = 0;
		pk_ws_reader_init(&ex->wsr, 1);
	} else {
		flush_head(ex);
	}
	/* Bytes that arrived while it waited (a body, WebSocket frames). */
	if (was_waiting && c->in.len)
		drain_in(c);
}

/* The endpoint's next local tunnel, round-robin, passing over tunnels at
 * upstream.max_streams_per_connection while another has room (each is
 * tried once). When every one is full, the first picked: its open fails
 * with the cap's 503. NULL when the endpoint has no local tunnel. */
static struct pk_upstream *next_upstream(struct pk_server *srv, const char *endpoint)
{
	size_t n = pk_registry_upstreams(srv->registry, endpoint);
	struct pk_upstream *first = pk_registry_next(srv->registry, endpoint);
	struct pk_upstream *up = first;
	for (size_t i = 1; up && i < n && pk_upstream_streams_full(up); i++)
		up = pk_registry_next(srv->registry, endpoint);
	return up && !pk_upstream_streams_full(up) ? up : first;
}

static void exchange_open(struct pk_proxy_exchange *ex, struct pk_upstream *up)
{
	ex->forwarded = 1;
	ex->up = up;
	struct pk_yamux_stream *s = NULL;
	if (ex->no_pool)
		s = pk_upstream_open_stream(up);
	/* A retry after a kept stream failed wants a new one; at the
	 * tunnel's stream cap, another kept one will do. */
	if (!s)
		s = pk_upstream_take_stream(up, &ex->reused, &ex->kept_ms);
	ex->no_pool = 0;
	if (!s) {
		if (pk_upstream_opens_full(up) && wait_add(ex))
			return;
		wait_remove(ex);
		if (pk_upstream_streams_full(up)) {
			pk_server_cap_refused(
			    ex->conn->srv, "streams_per_connection",
			    "request refused: upstream.max_streams_per_connection "
			    "reached",
			    "endpoint-id", ex->endpoint);
			exchange_fail(ex, 503, "too many streams on the upstream connection");
			return;
		}
		/* This tunnel is going (its session closing or gone, not yet
		 * unregistered): nothing was sent, so another of the endpoint. */
		struct pk_upstream *other =
		    ex->retries < MAX_RETRIES ? other_upstream(ex->srv, ex->endpoint, up) : NULL;
		if (other) {
			ex->retries++;
			exchange_open(ex, other);
			return;
		}
		exchange_fail(ex, 502, "upstream unreachable");
		return;
	}
	exchange_attach(ex, s);
}

/* The endpoint's tunnel is on another node: the exchange crosses the node
 * link as one stream, and that node answers (its 502 included). */
static void exchange_open_remote(struct pk_proxy_exchange *ex, struct pk_link *link)
{
	ex->forwarded = 1;
	ex->up = NULL;
	struct pk_yamux_stream *s = pk_link_open_stream(link);
	if (!s) {
		exchange_fail(ex, 502, "upstream unreachable");
		return;
	}
	exchange_attach(ex, s);
}

void pk_proxy_retry_waiting(struct pk_server *srv)
{
	struct pk_proxy_exchange *next;
	for (struct pk_proxy_exchange *ex = srv->waiting_head; ex; ex = next) {
		next = ex->wnext;
		struct pk_upstream *up = next_upstream(srv, ex->endpoint);
		if (!up) {
			wait_remove(ex);
			exchange_fail(ex, 502, "no available upstreams");
		} else if (!pk_upstream_opens_full(up)) {
			exchange_open(ex, up);
		}
	}
}

/* Move as much as possible of the request towards the stream. */
static int flush_head(struct pk_proxy_exchange *ex)
{
	while (ex->head_off < ex->head_len) {
		size_t w =
		    pk_yamux_stream_write(ex->stream, (const uint8_t *)ex->head + ex->head_off,
		                          ex->head_len - ex->head_off);
		if (w == 0)
			return -1;
		ex->head_off += w;
	}
	return 0;
}

/* Consume client bytes; returns how many were used (the rest must wait). */
static int process(struct pk_proxy_conn *c, uint8_t *p, size_t n)
{
	size_t total = 0;
	while (n > 0 && !c->close_after_write) {
		struct pk_proxy_exchange *ex = c->ex;
		size_t used = 0;
		/* A client that does not read its responses (or pongs) gets
		 * nothing more processed until it does: out stays bounded,
		 * and once in is full its reading stops too. */
		if (c->out.len >= OUT_HWM)
			break;
		if (!ex) {
			if (!pk_http1_reader_in_message(&c->req) && !c->head_start_ms)
				c->head_start_ms = pk_now_ms();
			enum pk_http1_event ev =
			    pk_http1_reader_feed(&c->req, (const char *)p, n, &used);
			if (ev == PK_HTTP1_ERROR) {
				/* As Go's server: the body is "<code> <text>" and
				 * the reason stays in our log. */
				int status;
				const char *why = pk_http1_reader_error(&c->req, &status);
				pk_log(PK_LOG_DEBUG, SUBSYS, "bad request", "client-ip",
				       c->client_ip, "error", why, NULL);
				size_t len;
				char *resp = pk_http1_unreadable_response(status, 0, &len);
				conn_write(c, resp, len);
				free(resp);
				conn_close_after_write(c);
				return (int)(total + n);
			}
			if (ev == PK_HTTP1_HEAD)
				start_exchange(c);
			/* DONE without an exchange: the request failed at its
			 * head and had no body; nothing to forward. */
		} else if (ex->ws && ex->client_closed) {
			used = n; /* nothing may follow a close frame */
		} else if (ex->ws) {
			enum pk_proxy_tcp_action act =
			    pk_proxy_tcp_input(&ex->wsr, p, n, &used, ex->stream, &c->out);
			if (c->out.len)
				conn_want_write(c);
			if (act == PK_PROXY_TCP_CLOSE) {
				/* Half-close towards the upstream; the exchange
				 * ends when the stream does (ex_stream_ended). */
				if (ex->stream)
					pk_yamux_stream_close(ex->stream, pk_now_ms());
				ex->client_closed = 1;
				if (ex->upstream_done)
					tcp_route_end(ex, 1000);
				return (int)(total + n);
			}
			if (act == PK_PROXY_TCP_ERROR) {
				exchange_abort(ex);
				return (int)(total + n);
			}
			if (used == 0)
				break;
		} else if (ex->upgraded) {
			used = pk_yamux_stream_write(ex->stream, p, n);
			if (used == 0)
				break;
		} else if (ex->req_done || !ex->stream) {
			if (ex->stream)
				flush_head(ex);
			break; /* pipelined: wait for the current exchange */
		} else {
			if (flush_head(ex) < 0)
				break;
			size_t space = pk_yamux_stream_write_space(ex->stream);
			if (space == 0)
				break;
			enum pk_http1_event ev = pk_http1_reader_feed(&c->req, (const char *)p,
			                                              n < space ? n : space, &used);
			if (ev == PK_HTTP1_ERROR) {
				exchange_body_error(ex);
				return (int)(total + n);
			}
			if (used) {
				pk_yamux_stream_write(ex->stream, p, used);
				ex->body_sent += used;
			}
			if (ev == PK_HTTP1_DONE)
				ex->req_done = 1;
		}
		p += used;
		n -= used;
		total += used;
	}
	return (int)total;
}

static void drain_in(struct pk_proxy_conn *c)
{
	/* Called from inside process() (an exchange that ends at once, e.g. a
	 * pipelined request failing at its head): the running loop goes on
	 * with the next bytes itself. Recursing here would parse the same
	 * unconsumed bytes again, without end. */
	if (c->in_process)
		return;
	c->in_process = 1;
	while (c->in.len > 0 && !c->close_after_write) {
		size_t n;
		/* The queue's memory is ours: the TCP route unmasks in place. */
		uint8_t *p = (uint8_t *)pk_bufq_peek(&c->in, &n);
		int k = process(c, p, n);
		if (k <= 0)
			break;
		pk_bufq_consume(&c->in, (size_t)k);
	}
	c->in_process = 0;
	/* The head may still be waiting for stream space. */
	if (c->ex && c->ex->stream && !c->ex->upgraded)
		flush_head(c->ex);
	if (c->rx_paused && c->in.len < IN_HWM / 2 && !c->close_after_write) {
		c->rx_paused = 0;
		conn_rx_flow(c, 1);
	}
}

static void conn_rx(struct pk_proxy_conn *c, uint8_t *data, size_t len)
{
	if (c->close_after_write)
		return; /* everything after a fatal error is ignored */
	if (c->in.len == 0) {
		c->in_process = 1;
		int k = process(c, data, len);
		c->in_process = 0;
		data += k;
		len -= (size_t)k;
	}
	if (len) {
		pk_bufq_append_force(&c->in, data, len);
		drain_in(c);
	}
	if (!c->rx_paused && c->in.len >= IN_HWM) {
		c->rx_paused = 1;
		conn_rx_flow(c, 0);
	}
}

/* Everything is written and the connection should end. Closing a socket
 * whose peer still has bytes in flight to us makes the kernel answer with a
 * reset, which can destroy the tail of what we sent before the client read
 * it. So, as Go's server does (closeWriteAndWait), send FIN first, keep
 * reading (and dropping) until the client closes, and give up after a few
 * seconds. */
static int conn_finish_close(struct pk_proxy_conn *c)
{
	if (c->fin_sent)
		return 0;
	c->fin_sent = 1;
	/* Over TLS, the end of our data is a close_notify alert before the FIN
	 * (everything queued is written: the alert goes straight out). */
	SSL *ssl = lws_get_ssl(c->wsi);
	if (ssl)
		SSL_shutdown(ssl);
	if (shutdown(lws_get_socket_fd(c->wsi), SHUT_WR) == -1)
		return -1;
	if (c->rx_paused) {
		c->rx_paused = 0;
		lws_rx_flow_control(c->wsi, 1);
	}
	lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_SEND, 3);
	return 0;
}

static int conn_writeable(struct pk_proxy_conn *c)
{
	if (c->out.len == 0)
		return c->close_after_write ? conn_finish_close(c) : 0;
	int w = pk_lwsio_write_bufq(c->wsi, &c->out, LWS_WRITE_RAW);
	if (w < 0)
		return -1;
	struct pk_proxy_exchange *ex = c->ex;
	if (ex && ex->stream && ex->owed) {
		size_t credit = ex->owed < (size_t)w ? ex->owed : (size_t)w;
		ex->owed -= credit;
		pk_yamux_stream_consumed(ex->stream, credit);
	}
	if (c->out.len || c->close_after_write)
		lws_callback_on_writable(c->wsi);
	if (c->in.len && c->out.len < OUT_HWM / 2)
		drain_in(c); /* input held back while out was full */
	return 0;
}

/* ---- a request forwarded by another node: a link stream as transport ---- */

static void conn_flush_link(struct pk_proxy_conn *c)
{
	struct pk_yamux_stream *s = c->link_stream;
	size_t written = 0;
	while (c->out.len) {
		size_t n;
		const uint8_t *p = pk_bufq_peek(&c->out, &n);
		size_t w = pk_yamux_stream_write(s, p, n);
		pk_bufq_consume(&c->out, w);
		written += w;
		if (w < n)
			break;
	}
	/* As on a socket: response bytes are credited to the upstream's
	 * stream once they left for the client (here: the other node). */
	struct pk_proxy_exchange *ex = c->ex;
	if (ex && ex->stream && ex->owed && written) {
		size_t credit = ex->owed < written ? ex->owed : written;
		ex->owed -= credit;
		pk_yamux_stream_consumed(ex->stream, credit);
	}
	if (c->out.len == 0 && c->close_after_write && !c->link_closed) {
		c->link_closed = 1;
		pk_yamux_stream_close(s, pk_now_ms());
	}
}

static struct pk_proxy_conn *link_conn(struct pk_stream_handler *h)
{
	return (struct pk_proxy_conn *)((char *)h - offsetof(struct pk_proxy_conn, sh));
}

static void lc_on_data(struct pk_stream_handler *h, const uint8_t *data, size_t len)
{
	struct pk_proxy_conn *c = link_conn(h);
	if (c->close_after_write) {
		pk_yamux_stream_consumed(c->link_stream, len);
		return;
	}
	/* conn_rx may unmask WebSocket frames in place (the TCP route). The
	 * bytes are the link's own receive copy (link.c copies every read
	 * before its WebSocket reader unmasks it, and yamux hands out
	 * pointers into that copy), consumed by nobody after this call, so
	 * writing to them is safe; the const comes from the yamux API. */
	conn_rx(c, (uint8_t *)(uintptr_t)data, len);
	/* conn_rx copied what it could not use into c->in; while that is
	 * over its mark the bytes stay owed, so the sender's window stops
	 * it. */
	if (c->rx_paused)
		c->in_owed += len;
	else if (c->link_stream)
		pk_yamux_stream_consumed(c->link_stream, len);
}

static void lc_on_fin(struct pk_stream_handler *h)
{
	struct pk_proxy_conn *c = link_conn(h);
	struct pk_proxy_exchange *ex = c->ex;
	/* The other node is done sending: an upgraded exchange passes the
	 * half-close on; otherwise there is nothing more to read. */
	if (ex && ex->upgraded && ex->stream && !ex->ws) {
		pk_yamux_stream_close(ex->stream, pk_now_ms());
		return;
	}
	if (!ex)
		conn_close_after_write(c);
}

static void lc_on_writable(struct pk_stream_handler *h)
{
	struct pk_proxy_conn *c = link_conn(h);
	conn_flush_link(c);
	if (c->in.len && c->out.len < OUT_HWM / 2)
		drain_in(c);
}

static void lc_on_close(struct pk_stream_handler *h, int reset)
{
	(void)reset;
	struct pk_proxy_conn *c = link_conn(h);
	c->link_stream = NULL;
	conn_closed(c);
}

static const struct pk_stream_ops link_conn_ops = {
    .on_data = lc_on_data,
    .on_fin = lc_on_fin,
    .on_writable = lc_on_writable,
    .on_close = lc_on_close,
};

static struct pk_proxy_conn *conn_new(struct pk_server *srv, struct lws *wsi)
{
	/* Owner: the lws connection's slot, or the link stream's user
	 * pointer; freed by conn_closed() on RAW_CLOSE / the stream's close. */
	struct pk_proxy_conn *c = pk_xcalloc(1, sizeof(*c));
	c->srv = srv;
	c->wsi = wsi;
	pk_http1_reader_init(&c->req, PK_HTTP1_REQUEST,
	                     (size_t)srv->cfg->proxy.http.max_header_bytes);
	/* A client's socket: the client's count, so that what this node adds
	 * still fits the next hop's (a request from another node over a link
	 * was built by a hop of ours and gets the full count). */
	if (wsi)
		pk_http1_reader_set_max_headers(&c->req, PK_HTTP1_CLIENT_MAX_HEADERS);
	pk_bufq_init(&c->in, IN_CAP);
	pk_bufq_init(&c->out, OUT_CAP);
	/* Go's ReadHeaderTimeout runs from the accept for the first
	 * request: a client that never sends anything is not kept. */
	c->head_start_ms = pk_now_ms();
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	return c;
}

struct pk_stream_handler *pk_proxy_adopt_stream(struct pk_server *srv, struct pk_yamux_stream *s,
                                                const char *peer_ip)
{
	struct pk_proxy_conn *c = conn_new(srv, NULL);
	c->link_stream = s;
	c->sh.ops = &link_conn_ops;
	snprintf(c->client_ip, sizeof(c->client_ip), "%s", peer_ip);
	pk_yamux_stream_set_user(s, &c->sh);
	return &c->sh;
}

static void conn_closed(struct pk_proxy_conn *c)
{
	struct pk_server *srv = c->srv;
	struct pk_proxy_exchange *ex = c->ex;
	if (ex) {
		/* The client left mid-exchange: record it (as Go does, with the
		 * status so far, or 499-like 0 when nothing came back) and reset
		 * the stream so the agent stops working on it. */
		record(srv, ex);
		if (ex->stream)
			pk_yamux_stream_reset(ex->stream);
		exchange_detach(ex);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	pk_runloop_pass_cancel(&c->write_work);
	pk_http1_reader_free(&c->req);
	pk_bufq_clear(&c->in);
	pk_bufq_clear(&c->out);
	free(c);
}

/* proxy.max_connections: beyond it a new connection is answered 503 at once
 * (before its request: it is not read) and closed once that is written. */
static void conn_check_cap(struct pk_proxy_conn *c)
{
	struct pk_server *srv = c->srv;
	int64_t cap = srv->cfg->proxy.max_connections;
	if (cap <= 0 || srv->n_proxy_sockets <= (size_t)cap)
		return;
	size_t len;
	char *resp =
	    pk_http1_error_response(503, "too many connections", PK_HTTP1_RESP_CLOSE, &len);
	conn_write(c, resp, len);
	free(resp);
	conn_close_after_write(c);
	pk_server_cap_refused(srv, "proxy_connections",
	                      "proxy connection refused: proxy.max_connections reached",
	                      "client-ip", c->client_ip);
}

static int callback_proxy(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                          size_t len)
{
	if (reason == LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION)
		return pk_server_client_cert_verdict(len); /* user is not ours here */
	struct pk_proxy_conn **slot = user;
	struct pk_proxy_conn *c = slot ? *slot : NULL;

	switch (reason) {
	case LWS_CALLBACK_RAW_ADOPT:
		/* lws allocated the per-session data before adopting (the
		 * protocol's per_session_data_size); the analyzer cannot see it. */
		assert(slot);
		c = conn_new(pk_server_from_wsi(wsi), wsi);
		*slot = c;
		pk_lwsio_peer_ip(wsi, c->client_ip, sizeof(c->client_ip));
		c->counted = 1;
		c->srv->n_proxy_sockets++;
		conn_check_cap(c);
		return 0;
	case LWS_CALLBACK_RAW_RX:
		if (c)
			conn_rx(c, in, len);
		return 0;
	case LWS_CALLBACK_RAW_WRITEABLE:
		return c ? conn_writeable(c) : -1;
	case LWS_CALLBACK_RAW_CLOSE:
		if (c) {
			*slot = NULL;
			if (c->counted)
				c->srv->n_proxy_sockets--;
			conn_closed(c);
		}
		return 0;
	default:
		return 0;
	}
}

void pk_proxy_tick(struct pk_server *srv, uint64_t now)
{
	const struct pk_server_config *cfg = srv->cfg;
	struct pk_proxy_conn *next;
	/* Upstreams that went away leave their waiters to others (or 502). */
	if (srv->n_waiting)
		pk_proxy_retry_waiting(srv);
	for (struct pk_proxy_conn *c = srv->conns; c; c = next) {
		next = c->next;
		if (c->close_after_write)
			continue;
		struct pk_proxy_exchange *ex = c->ex;
		if (ex) {
			if (ex->upgraded || !ex->deadline_ms || now < ex->deadline_ms)
				continue;
			if (ex->waiting && ex->tcp)
				exchange_fail(ex, 502, "upstream unreachable"); /* never opened */
			else if (!ex->resp_started)
				exchange_fail(ex, 504, "upstream timeout");
			else
				exchange_abort(ex); /* deadline hit mid-body */
			continue;
		}
		if (c->head_start_ms && cfg->proxy.http.read_header_timeout_ms > 0 &&
		    now - c->head_start_ms > (uint64_t)cfg->proxy.http.read_header_timeout_ms) {
			conn_close_after_write(c);
			continue;
		}
		if (c->idle_since_ms && !c->head_start_ms && c->out.len == 0 &&
		    (srv->shutting_down ||
		     (cfg->proxy.http.idle_timeout_ms > 0 &&
		      now - c->idle_since_ms > (uint64_t)cfg->proxy.http.idle_timeout_ms)))
			conn_close_after_write(c);
	}
}

void pk_proxy_close_idle(struct pk_server *srv)
{
	pk_proxy_tick(srv, pk_now_ms());
}

const struct lws_protocols pk_proxy_protocols[] = {
    {
        .name = "piko-proxy",
        .callback = callback_proxy,
        .per_session_data_size = sizeof(struct pk_proxy_conn *),
        .rx_buffer_size = 64 * 1024,
    },
    {NULL, NULL, 0, 0, 0, NULL, 0}, /* terminator */
};
