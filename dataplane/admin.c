/*
 * Admin port: GET /health, GET /ready (503 while starting and from the start
 * of shutdown), GET /metrics (Prometheus text), the status API (protocol
 * reference §7.2: /status/upstream/endpoints, /status/cluster/nodes[/id])
 * and the controller's member-set push (PUT /piko/v1/cluster/members,
 * docs/controller.md). Same raw-socket HTTP/1.1 reading as the proxy port;
 * request bodies (the push) are read whole up to ADMIN_MAX_BODY, responses
 * are small and built whole. Slow clients are closed as on the proxy port
 * (admin.http.read_header_timeout, admin.http.idle_timeout; pk_admin_tick).
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <openssl/crypto.h>

#include "admin_forward.h"
#include "admin_gather.h"
#include "backoff.h"
#include "buf.h"
#include "http1.h"
#include "link.h"
#include "lwsio.h"
#include "server.h"

#define ADMIN_MAX_HEAD (64 * 1024)
#define PK_METRICS_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define ADMIN_OUT_CAP (4 * 1024 * 1024)
/* Reading stops while this much unparsed input waits. */
#define ADMIN_IN_HWM (64 * 1024)
/* The largest body a route takes (a member set of 1024 is ~100 KiB). */
#define ADMIN_MAX_BODY (1024 * 1024)

struct admin_conn {
	struct pk_server *srv;
	struct pk_http1_reader req;
	struct pk_admin_fwd *fwd; /* a ?forward= request in progress */
	/* worker 0 asking the other workers (--workers): admin_gather.h */
	struct pk_admin_gather *gather;
	int gather_close;        /* that request's Connection: close */
	const char *gather_type; /* its answer's Content-Type */
	struct lws *wsi;
	char *body; /* the current request's body, while it is read */
	size_t body_len;
	int reading_body;
	struct pk_bufq in; /* pipelined requests waiting for out to drain */
	struct pk_bufq out;
	int close_after_write;
	int rx_paused;
	unsigned resp_flags; /* PK_HTTP1_RESP_HTTP10 for an HTTP/1.0 request */
	/* Timers (pk_admin_tick): since when a request is awaited in full
	 * (accept, or its first byte; 0 once it is read), and since when the
	 * connection is idle (its last response written; 0 when not). */
	uint64_t head_start_ms;
	uint64_t idle_since_ms;
	struct admin_conn *prev, *next; /* srv->admin_conns */
};

static void queue_response(struct lws *wsi, struct admin_conn *c, int status, const char *ctype,
                           const char *body, size_t body_len, int close, int head_only)
{
	size_t len;
	char *resp =
	    pk_http1_simple_response(status, ctype, body, head_only ? 0 : body_len,
	                             (close ? PK_HTTP1_RESP_CLOSE : 0) | c->resp_flags, &len);
	pk_bufq_append_force(&c->out, resp, len);
	free(resp);
	if (close)
		c->close_after_write = 1;
	lws_callback_on_writable(wsi);
}

static void add_endpoint(void *arg, const char *endpoint, size_t count)
{
	json_object_object_add(arg, endpoint, json_object_new_int64((int64_t)count));
}

#define JSON_TYPE "application/json; charset=utf-8"

/* {"error":"msg"} with status, as Piko's JSON errors. */
static void json_error(struct lws *wsi, struct admin_conn *c, int status, const char *msg,
                       int close)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "error", json_object_new_string(msg));
	const char *body = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	queue_response(wsi, c, status, JSON_TYPE, body, strlen(body), close, 0);
	json_object_put(o);
}

static void gather_done(void *arg, char *body, size_t len, const char *failed)
{
	struct admin_conn *c = arg;
	c->gather = NULL;
	if (body) {
		queue_response(c->wsi, c, 200, c->gather_type, body, len, c->gather_close, 0);
		free(body);
	} else {
		char msg[128];
		snprintf(msg, sizeof(msg), "worker at %s did not answer", failed);
		json_error(c->wsi, c, 502, msg, c->gather_close);
	}
}

static int query_param(const char *url, const char *name, char *out, size_t cap);

/* On worker 0 of several, a GET of a route that answers for the whole
 * server: own (owned by the callee) is combined with the other workers'
 * answers by merge, and gather_done answers. 0 when this is not the case
 * (own is then the caller's still). */
static int gather_route(struct admin_conn *c, const struct pk_http1_head *h, char *own,
                        size_t own_len, pk_admin_gather_merge_fn merge, const char *ctype)
{
	struct pk_server *srv = c->srv;
	char fwd[8];
	/* ?forward=<worker 0's id> asks worker 0 alone, as it asks any
	 * other worker alone. */
	if (!srv->cfg->worker.admins.n || strcmp(h->method, "GET") ||
	    query_param(h->url, "forward", fwd, sizeof(fwd)) == 0)
		return 0;
	c->gather_close = !h->keep_alive || h->chunked;
	c->gather_type = ctype;
	c->gather = pk_admin_gather(srv->ctx, &srv->cfg->worker.admins, srv->cfg->worker.secret, h,
	                            own, own_len, merge, gather_done, c);
	return 1;
}

/* The status API and the cluster routes; 0 when path is none of them. */
static int cluster_route(struct lws *wsi, struct admin_conn *c, const struct pk_http1_head *h,
                         const char *path, size_t plen, int close)
{
	struct pk_server *srv = pk_server_from_wsi(wsi);
	struct pk_cluster *cl = &srv->cluster;
	int get = !strcmp(h->method, "GET") || !strcmp(h->method, "HEAD");
	int head_only = !strcmp(h->method, "HEAD");
	char *json = NULL;
	static const char nodes[] = "/status/cluster/nodes";
	static const char members[] = "/piko/v1/cluster/members";
	if (plen == 26 && !strncmp(path, "/status/upstream/endpoints", plen) && get) {
		struct json_object *o = json_object_new_object();
		pk_registry_foreach(srv->registry, add_endpoint, o);
		json = pk_xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
		json_object_put(o);
		if (gather_route(c, h, json, strlen(json), pk_admin_gather_endpoints, JSON_TYPE))
			return 1;
	} else if (plen == sizeof(nodes) - 1 && !strncmp(path, nodes, plen) && get) {
		json = pk_cluster_nodes_json(cl);
	} else if (plen > sizeof(nodes) && !strncmp(path, nodes, sizeof(nodes) - 1) &&
	           path[sizeof(nodes) - 1] == '/' && get) {
		char id[512];
		size_t il = plen - sizeof(nodes);
		if (il == 0 || il >= sizeof(id) || memchr(path + sizeof(nodes), '/', il)) {
			queue_response(wsi, c, 404, "text/plain", "", 0, close, head_only);
			return 1;
		}
		memcpy(id, path + sizeof(nodes), il);
		id[il] = '\0';
		json = pk_cluster_node_json(cl, id);
		if (!json) {
			/* Piko: an unknown node is a 404 with no body. */
			queue_response(wsi, c, 404, "text/plain", "", 0, close, head_only);
			return 1;
		}
	} else if (plen == 23 && !strncmp(path, "/status/cluster/members", plen) && get) {
		json = pk_cluster_members_json(cl);
	} else if (plen == sizeof(members) - 1 && !strncmp(path, members, plen)) {
		/* The push proves the cluster key, as node links do. */
		const char *denied =
		    pk_cluster_check_proof(cl, pk_http1_header_get(h, "Authorization"));
		if (denied) {
			json_error(wsi, c, 401, denied, close);
			return 1;
		}
		if (get) {
			json = pk_cluster_push_json(cl);
		} else if (!strcmp(h->method, "PUT") && srv->cfg->workers > 1) {
			/* The workers' own loopback cluster is the whole member
			 * set (workers.c); one pod of workers as a node of a
			 * larger cluster is not built yet. */
			json_error(
			    wsi, c, 409,
			    "this server runs several workers (--workers), which cannot join "
			    "other nodes yet",
			    close);
			return 1;
		} else if (!strcmp(h->method, "PUT")) {
			char err[256];
			int st = pk_cluster_push(cl, c->body ? c->body : "", c->body_len, err,
			                         sizeof(err));
			if (st) {
				json_error(wsi, c, st, err, close);
				return 1;
			}
			json = pk_cluster_push_json(cl);
		} else {
			queue_response(wsi, c, 405, "text/plain", "405 method not allowed", 22,
			               close, 0);
			return 1;
		}
	} else {
		return 0;
	}
	queue_response(wsi, c, 200, JSON_TYPE, json, strlen(json), close, head_only);
	free(json);
	return 1;
}

/* The value of query parameter name in url, percent-decoded, into out;
 * 0 when present. */
static int query_param(const char *url, const char *name, char *out, size_t cap)
{
	const char *q = strchr(url, '?');
	size_t nl = strlen(name);
	while (q && *q) {
		q++;
		size_t len = strcspn(q, "&");
		if (len > nl && q[nl] == '=' && !strncmp(q, name, nl)) {
			const char *v = q + nl + 1;
			size_t vl = len - nl - 1, o = 0;
			for (size_t i = 0; i < vl && o + 1 < cap; i++) {
				unsigned x;
				if (v[i] == '%' && i + 2 < vl + 1 &&
				    sscanf(v + i + 1, "%2x", &x) == 1) {
					out[o++] = (char)x;
					i += 2;
				} else {
					out[o++] = v[i] == '+' ? ' ' : v[i];
				}
			}
			out[o] = '\0';
			return 0;
		}
		q = strchr(q, '&');
	}
	return -1;
}

static void forward_done(void *arg, char *resp, size_t len)
{
	struct admin_conn *c = arg;
	c->fwd = NULL;
	pk_bufq_append_force(&c->out, resp, len);
	free(resp);
	c->close_after_write = 1;
	lws_callback_on_writable(c->wsi);
}

/* ?forward=<id> for another node: replay the request there (Piko's
 * interceptor). 1 when handled here. */
static int forward_route(struct lws *wsi, struct admin_conn *c, const struct pk_http1_head *h)
{
	struct pk_server *srv = pk_server_from_wsi(wsi);
	char id[512];
	if (query_param(h->url, "forward", id, sizeof(id)) < 0 || !id[0] ||
	    !strcmp(id, srv->cluster.node_id))
		return 0;
	const char *addr = NULL;
	for (struct pk_link *l = srv->cluster.links; l; l = l->next)
		if (l->state == PK_LINK_ESTABLISHED && !strcmp(l->peer_id, id))
			addr = l->admin_addr;
	/* Under --workers every node is a worker, whose admin port takes
	 * only requests with the workers' secret. */
	char extra[160] = "";
	if (srv->cfg->worker.on)
		pk_admin_worker_header(srv->cfg->worker.secret, extra, sizeof(extra));
	if (addr)
		c->fwd = pk_admin_forward(srv->ctx, addr, h, c->body, c->body_len,
		                          extra[0] ? extra : NULL, 0, forward_done, c);
	if (!c->fwd) {
		if (addr)
			json_error(wsi, c, 502, "upstream unreachable", 1);
		else
			queue_response(wsi, c, 404, "text/plain", "", 0, 1, 0);
		return 1;
	}
	return 1;
}

/* Whether this is worker 1 or up of --workers, whose admin port serves
 * worker 0 alone. */
static int inner_worker(const struct pk_server *srv)
{
	return srv->cfg->worker.on && srv->cfg->worker.index > 0;
}

/* On such a worker, a request without the workers' secret (compared in
 * constant time) is refused. */
static int inner_refused(const struct pk_server *srv, const struct pk_http1_head *h)
{
	if (!inner_worker(srv))
		return 0;
	const char *got = pk_http1_header_get(h, PK_ADMIN_WORKER_HEADER);
	const char *want = srv->cfg->worker.secret;
	size_t n = want ? strlen(want) : 0;
	return !(got && n && strlen(got) == n && CRYPTO_memcmp(got, want, n) == 0);
}

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
	/* Workers 1 and up of --workers serve their admin port on loopback
	 * to worker 0 alone, which answers for the server and sends their
	 * secret (admin_gather.h): anything else is refused, and what comes
	 * is answered here, never forwarded again. */
	if (inner_refused(srv, h)) {
		json_error(wsi, c, 403, "this port answers the server's other workers only", 1);
		return;
	}
	const char *denied = pk_access_check(srv->access.admin, &ah, pk_auth_now(), NULL);
	size_t len;
	if (denied) {
		char *resp = pk_access_error_response(denied, c->resp_flags != 0, &len);
		pk_bufq_append_force(&c->out, resp, len);
		free(resp);
		c->close_after_write = 1;
		lws_callback_on_writable(wsi);
		return;
	}

	if (!inner_worker(srv) && forward_route(wsi, c, h))
		return;
	/* Route on the path alone, as Go's router does (query ignored). */
	size_t plen = strcspn(h->url, "?");
	int get = !strcmp(h->method, "GET") || !strcmp(h->method, "HEAD");
	if (cluster_route(wsi, c, h, h->url, plen, !h->keep_alive))
		return;
	if (get && plen == 7 && !strncmp(h->url, "/health", plen)) {
		status = 200;
		body = "";
		body_len = 0;
	} else if (get && plen == 6 && !strncmp(h->url, "/ready", plen)) {
		status = srv->ready && !srv->shutting_down && pk_cluster_ready(&srv->cluster) ? 200
		                                                                              : 503;
		body = "";
		body_len = 0;
	} else if (get && plen == 8 && !strncmp(h->url, "/metrics", plen)) {
		status = 200;
		ctype = PK_METRICS_TYPE;
		/* Gauges that are cheaper to read than to track. */
		pk_metric_set(srv->m.open_streams, NULL, (double)pk_upstream_open_streams(srv));
		pk_link_metrics_collect(&srv->cluster);
		pk_process_metrics_update(&srv->m.process);
		owned = pk_metrics_render(srv->metrics, &body_len);
		body = owned;
		if (gather_route(c, h, owned, body_len, pk_admin_gather_metrics, PK_METRICS_TYPE))
			return;
	}
	int close = !h->keep_alive || h->chunked;
	char *resp =
	    pk_http1_simple_response(status, ctype, body, strcmp(h->method, "HEAD") ? body_len : 0,
	                             (close ? PK_HTTP1_RESP_CLOSE : 0) | c->resp_flags, &len);
	pk_bufq_append_force(&c->out, resp, len);
	free(resp);
	free(owned);
	if (close)
		c->close_after_write = 1;
	lws_callback_on_writable(wsi);
}

/* Whether a request with a body would be refused by auth anyway (admin
 * auth, or the cluster proof of the member push): checked on its head, so
 * nobody unauthenticated makes us buffer a body. */
static int body_denied(struct lws *wsi, const struct pk_http1_head *h)
{
	struct pk_server *srv = pk_server_from_wsi(wsi);
	if (inner_refused(srv, h))
		return 1;
	struct pk_access_headers ah = {
	    .x_piko_authorization = pk_http1_header_get(h, "x-piko-authorization"),
	    .authorization = pk_http1_header_get(h, "Authorization"),
	};
	if (pk_access_check(srv->access.admin, &ah, pk_auth_now(), NULL))
		return 1;
	static const char members[] = "/piko/v1/cluster/members";
	size_t plen = strcspn(h->url, "?");
	return plen == sizeof(members) - 1 && !strncmp(h->url, members, plen) &&
	       pk_cluster_check_proof(&srv->cluster, pk_http1_header_get(h, "Authorization"));
}

/* A whole request was read: its header timer stops; bytes already queued
 * behind it start the next one's. */
static void request_read(struct admin_conn *c)
{
	c->head_start_ms = c->in.len ? pk_now_ms() : 0;
}

/* Parse requests from the front of in, one response at a time: a client
 * that pipelines requests without reading the answers gets no more than
 * one response queued (admin responses can be large: /metrics). */
static void admin_pump(struct lws *wsi, struct admin_conn *c)
{
	while (c->in.len && !c->out.len && !c->close_after_write && !c->fwd && !c->gather) {
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
		/* Body bytes are copied before they are consumed (p points into
		 * the queue's chunk). */
		if (c->reading_body && (ev == PK_HTTP1_BODY || ev == PK_HTTP1_DONE)) {
			memcpy(c->body + c->body_len, p, used);
			c->body_len += used;
		}
		pk_bufq_consume(&c->in, used);
		if (ev == PK_HTTP1_HEAD) {
			const struct pk_http1_head *h = pk_http1_reader_head(&c->req);
			c->resp_flags =
			    h->http_major == 1 && h->http_minor == 0 ? PK_HTTP1_RESP_HTTP10 : 0;
			if (h->content_length <= 0 || h->chunked)
				request_read(c);
			if (h->chunked) {
				queue_response(wsi, c, 411, "text/plain", "411 length required", 19,
				               1, 0);
				break;
			}
			if (h->content_length > ADMIN_MAX_BODY) {
				queue_response(wsi, c, 413, "text/plain", "413 request too large",
				               21, 1, 0);
				break;
			}
			if (h->content_length > 0 && body_denied(wsi, h)) {
				/* Refused before its body is read: answered (401)
				 * and closed, nothing buffered for it. */
				respond(wsi, c, h);
				c->close_after_write = 1;
				break;
			}
			if (h->content_length > 0) {
				/* Owner: c, until the response is built. */
				c->body = pk_xmalloc((size_t)h->content_length + 1);
				c->body_len = 0;
				c->reading_body = 1;
				continue;
			}
			respond(wsi, c, h);
		} else if (ev == PK_HTTP1_DONE && c->reading_body) {
			c->body[c->body_len] = '\0';
			c->reading_body = 0;
			request_read(c);
			respond(wsi, c, pk_http1_reader_head(&c->req));
			free(c->body);
			c->body = NULL;
		}
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
		/* Owner: the lws connection's slot; freed on RAW_CLOSE. lws
		 * allocates the slot (per_session_data_size) before the adopt. */
		assert(slot);
		c = pk_xcalloc(1, sizeof(*c));
		pk_http1_reader_init(&c->req, PK_HTTP1_REQUEST, ADMIN_MAX_HEAD);
		pk_bufq_init(&c->in, ADMIN_IN_HWM * 2);
		pk_bufq_init(&c->out, ADMIN_OUT_CAP);
		c->wsi = wsi;
		c->srv = pk_server_from_wsi(wsi);
		/* As on the proxy port (Go's ReadHeaderTimeout): the timer
		 * runs from the accept, a client that sends nothing is not
		 * kept. */
		c->head_start_ms = pk_now_ms();
		c->next = c->srv->admin_conns;
		if (c->next)
			c->next->prev = c;
		c->srv->admin_conns = c;
		*slot = c;
		/* admin.max_connections: beyond it, 503 at once and close. */
		if (++c->srv->n_admin_sockets > (size_t)c->srv->cfg->admin.max_connections &&
		    c->srv->cfg->admin.max_connections > 0) {
			size_t len;
			char *resp = pk_http1_error_response(503, "too many connections",
			                                     PK_HTTP1_RESP_CLOSE, &len);
			pk_bufq_append_force(&c->out, resp, len);
			free(resp);
			c->close_after_write = 1;
			lws_callback_on_writable(wsi);
			char ip[64];
			pk_lwsio_peer_ip(wsi, ip, sizeof(ip));
			pk_server_cap_refused(
			    c->srv, "admin_connections",
			    "admin connection refused: admin.max_connections reached", "client-ip",
			    ip);
		}
		return 0;
	case LWS_CALLBACK_RAW_RX:
		if (c && !c->close_after_write) {
			c->idle_since_ms = 0;
			if (!c->head_start_ms)
				c->head_start_ms = pk_now_ms();
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
		if (!c->out.len && !c->head_start_ms && !c->fwd && !c->gather &&
		    !c->close_after_write)
			c->idle_since_ms = pk_now_ms();
		return 0;
	case LWS_CALLBACK_RAW_CLOSE:
		if (c) {
			*slot = NULL;
			c->srv->n_admin_sockets--;
			if (c->prev)
				c->prev->next = c->next;
			else
				c->srv->admin_conns = c->next;
			if (c->next)
				c->next->prev = c->prev;
			if (c->fwd)
				pk_admin_forward_cancel(c->fwd);
			if (c->gather)
				pk_admin_gather_cancel(c->gather);
			free(c->body);
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

/* A client that has not sent a whole request within read_header_timeout
 * (counted from the accept or the request's first byte, while it is not
 * waiting for us), or a keep-alive connection idle for idle_timeout, is
 * closed without a response, as Go's server closes them. */
void pk_admin_tick(struct pk_server *srv, uint64_t now)
{
	const struct pk_server_config *cfg = srv->cfg;
	int64_t rht = cfg->admin.http.read_header_timeout_ms;
	int64_t idle = cfg->admin.http.idle_timeout_ms;
	for (struct admin_conn *c = srv->admin_conns; c; c = c->next) {
		if (c->close_after_write || c->out.len || c->fwd || c->gather)
			continue;
		int late = c->head_start_ms && rht > 0 && now - c->head_start_ms > (uint64_t)rht;
		int idled = !c->head_start_ms && c->idle_since_ms && idle > 0 &&
		            now - c->idle_since_ms > (uint64_t)idle;
		if (late || idled) {
			/* Closed from WRITEABLE (nothing is queued), never here. */
			c->close_after_write = 1;
			lws_callback_on_writable(c->wsi);
		}
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
