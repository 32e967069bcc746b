/*
 * The agent's HTTP server. See agent_admin.h.
 *
 * A connection reads one request head; the response is queued whole
 * (Connection: close), then our side is shut down and whatever else the
 * client sends is read and dropped until it closes too, so that unread
 * bytes cannot turn our close into a RST that destroys the response in
 * flight. A request body is never read: the answer does not depend on it.
 */
#include "agent_admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "buf.h"
#include "http1.h"
#include "log.h"
#include "sock.h"

#define SUBSYS "server"
#define ADMIN_MAX_CONNS 64
#define ADMIN_MAX_HEAD (16 * 1024)
/* A connection's whole life: request, response and the client's close. */
#define ADMIN_CONN_MS 10000
/* The socket's send queue; a longer response waits in the connection for
 * on_drain. */
#define ADMIN_SEND_CAP (64 * 1024)

struct admin_conn {
	struct pk_agent_admin *ad;
	struct pk_sock *sock;
	char *out; /* the response, owned; NULL before it is built */
	size_t out_len, out_off;
	int answered;
	int shut; /* our side is shut down (everything was written) */
	uint64_t deadline_ms;
	struct admin_conn *prev, *next;
	struct pk_http1_reader req; /* last: large */
};

struct pk_agent_admin {
	struct pk_agent *a;
	struct pk_sock_listener *ln;
	struct admin_conn *conns;
	size_t nconns;
};

void pk_agent_metrics_init(struct pk_agent_metrics *m)
{
	/* Label names in the order Go's client renders them (sorted). */
	static const char *const ep[] = {"endpoint"};
	static const char *const ep_method_status[] = {"endpoint", "method", "status"};
	memset(m, 0, sizeof(*m));
	m->reg = pk_metrics_new();
	m->in_flight = pk_metrics_register(m->reg, PK_METRIC_GAUGE, "piko_agent_requests_in_flight",
	                                   "Number of requests currently handled by this agent.",
	                                   ep, 1, NULL, 0);
	m->requests_total =
	    pk_metrics_register(m->reg, PK_METRIC_COUNTER, "piko_agent_requests_total",
	                        "Total requests.", ep_method_status, 3, NULL, 0);
	m->latency = pk_metrics_register(m->reg, PK_METRIC_HISTOGRAM,
	                                 "piko_agent_request_latency_seconds", "Request latency.",
	                                 ep_method_status, 3, pk_metrics_default_buckets, 11);
	m->request_size =
	    pk_metrics_register(m->reg, PK_METRIC_HISTOGRAM, "piko_agent_request_size_bytes",
	                        "Request size", ep, 1, pk_metrics_size_buckets, 8);
	m->response_size =
	    pk_metrics_register(m->reg, PK_METRIC_HISTOGRAM, "piko_agent_response_size_bytes",
	                        "Response size", ep, 1, pk_metrics_size_buckets, 8);
	m->connected = pk_metrics_register(m->reg, PK_METRIC_GAUGE, "piko_agent_listener_connected",
	                                   "Whether the listener has a tunnel up (1) or not (0).",
	                                   ep, 1, NULL, 0);
	m->open_streams = pk_metrics_register(
	    m->reg, PK_METRIC_GAUGE, "piko_agent_open_streams",
	    "Number of streams (HTTP exchanges, TCP connections) in progress.", ep, 1, NULL, 0);
	m->connects_total =
	    pk_metrics_register(m->reg, PK_METRIC_COUNTER, "piko_agent_tunnel_connects_total",
	                        "Tunnels established to the server.", ep, 1, NULL, 0);
	m->tcp_conns_total =
	    pk_metrics_register(m->reg, PK_METRIC_COUNTER, "piko_agent_tcp_connections_total",
	                        "Connections piped to TCP services.", ep, 1, NULL, 0);
	pk_process_metrics_register(&m->process, m->reg);
}

void pk_agent_metrics_free(struct pk_agent_metrics *m)
{
	pk_metrics_free(m->reg);
	memset(m, 0, sizeof(*m));
}

/* Gauges that are cheaper to read than to track. Several listeners may
 * share an endpoint: their values add up. */
static void refresh_gauges(struct pk_agent *a)
{
	struct pk_agent_metrics *m = &a->m;
	for (size_t i = 0; i < a->nlisteners; i++) {
		const char *ep[] = {a->listeners[i].cfg->endpoint_id};
		pk_metric_set(m->connected, ep, 0);
		pk_metric_set(m->open_streams, ep, 0);
	}
	for (size_t i = 0; i < a->nlisteners; i++) {
		const struct pk_agent_listener *l = &a->listeners[i];
		const char *ep[] = {l->cfg->endpoint_id};
		int up =
		    (l->tun[0].up && !l->tun[0].closing) || (l->tun[1].up && !l->tun[1].closing);
		pk_metric_add(m->connected, ep, up);
		pk_metric_add(m->open_streams, ep, (double)(l->streams - l->idle_streams));
	}
	pk_process_metrics_update(&m->process);
}

static void conn_flush(struct admin_conn *c)
{
	while (c->out_off < c->out_len) {
		size_t w = pk_sock_write(c->sock, (const uint8_t *)c->out + c->out_off,
		                         c->out_len - c->out_off);
		if (!w)
			return; /* on_drain brings us back */
		c->out_off += w;
	}
	if (!c->shut) {
		c->shut = 1;
		pk_sock_shutdown_write(c->sock);
	}
}

static void respond(struct admin_conn *c, int status, const char *ctype, const char *body,
                    size_t body_len, int head_only)
{
	c->answered = 1;
	c->out =
	    pk_http1_simple_response(status, ctype, body, head_only ? 0 : body_len, 1, &c->out_len);
	conn_flush(c);
}

static void route(struct admin_conn *c, const struct pk_http1_head *h)
{
	struct pk_agent *a = c->ad->a;
	int get = !strcmp(h->method, "GET"), head = !strcmp(h->method, "HEAD");
	/* On the path alone, as Go's router (the query is ignored). */
	size_t plen = strcspn(h->url, "?");
	if ((get || head) && plen == 7 && !strncmp(h->url, "/health", plen)) {
		respond(c, 200, "text/plain; charset=utf-8", "", 0, head);
	} else if ((get || head) && plen == 6 && !strncmp(h->url, "/ready", plen)) {
		char why[512], body[560];
		if (pk_agent_ready(a, why, sizeof(why))) {
			respond(c, 200, "text/plain; charset=utf-8", "", 0, head);
		} else {
			int n = snprintf(body, sizeof(body), "not ready: %s\n", why);
			respond(c, 503, "text/plain; charset=utf-8", body,
			        n < (int)sizeof(body) ? (size_t)n : sizeof(body) - 1, head);
		}
	} else if ((get || head) && plen == 8 && !strncmp(h->url, "/metrics", plen)) {
		size_t len;
		refresh_gauges(a);
		char *text = pk_metrics_render(a->m.reg, &len);
		respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, head);
		free(text);
	} else {
		respond(c, 404, PK_HTTP1_ROUTER_404_TYPE, PK_HTTP1_ROUTER_404_BODY,
		        strlen(PK_HTTP1_ROUTER_404_BODY), head);
	}
}

static void conn_on_data(struct pk_sock *s, const uint8_t *data, size_t len)
{
	struct admin_conn *c = pk_sock_user(s);
	while (!c->answered && len > 0) {
		size_t used = 0;
		enum pk_http1_event ev =
		    pk_http1_reader_feed(&c->req, (const char *)data, len, &used);
		if (ev == PK_HTTP1_ERROR) {
			int status;
			const char *why = pk_http1_reader_error(&c->req, &status);
			respond(c, status, "text/plain; charset=utf-8", why, strlen(why), 0);
		} else if (ev == PK_HTTP1_HEAD) {
			route(c, pk_http1_reader_head(&c->req));
		}
		data += used;
		len -= used;
	}
	/* Anything after the request is dropped (see the file comment). */
}

static void conn_on_eof(struct pk_sock *s)
{
	struct admin_conn *c = pk_sock_user(s);
	/* A request cut short gets no answer; an answered one closes once our
	 * side is shut down too. */
	if (!c->answered)
		pk_sock_close(s, 0);
}

static void conn_on_drain(struct pk_sock *s)
{
	struct admin_conn *c = pk_sock_user(s);
	if (c->answered)
		conn_flush(c);
}

static void conn_on_close(struct pk_sock *s, int reset, const char *why)
{
	struct admin_conn *c = pk_sock_user(s);
	struct pk_agent_admin *ad = c->ad;
	(void)reset;
	(void)why;
	if (c->prev)
		c->prev->next = c->next;
	else
		ad->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	ad->nconns--;
	pk_http1_reader_free(&c->req);
	free(c->out);
	free(c);
}

static const struct pk_sock_ops conn_ops = {
    .on_data = conn_on_data,
    .on_eof = conn_on_eof,
    .on_drain = conn_on_drain,
    .on_close = conn_on_close,
};

static void on_accept(void *user, int fd)
{
	struct pk_agent_admin *ad = user;
	if (ad->nconns >= ADMIN_MAX_CONNS) {
		close(fd); /* accepted and closed, so the backlog cannot fill */
		return;
	}
	/* Owner: its pk_sock; freed in conn_on_close. The reader's header
	 * array is left to pk_http1_reader_init. */
	struct admin_conn *c = pk_xmalloc(sizeof(*c));
	memset(c, 0, offsetof(struct admin_conn, req));
	c->ad = ad;
	c->deadline_ms = pk_now_ms() + ADMIN_CONN_MS;
	pk_http1_reader_init(&c->req, PK_HTTP1_REQUEST, ADMIN_MAX_HEAD);
	c->sock = pk_sock_adopt(fd, &conn_ops, c, ADMIN_SEND_CAP);
	if (!c->sock) {
		pk_http1_reader_free(&c->req);
		free(c);
		return;
	}
	c->next = ad->conns;
	if (ad->conns)
		ad->conns->prev = c;
	ad->conns = c;
	ad->nconns++;
}

int pk_agent_admin_start(struct pk_agent *a, char *err, size_t errlen)
{
	const char *bind = a->cfg->server.bind_addr;
	if (!a->cfg->server.enabled)
		return 0;
	/* Owner: a (pk_agent_admin_free). */
	struct pk_agent_admin *ad = pk_xcalloc(1, sizeof(*ad));
	ad->a = a;
	ad->ln = pk_sock_listen(bind, on_accept, ad, err, errlen);
	if (!ad->ln) {
		free(ad);
		return -1;
	}
	a->admin = ad;
	char port[16];
	snprintf(port, sizeof(port), "%d", pk_sock_listener_port(ad->ln));
	pk_log(PK_LOG_INFO, SUBSYS, "listening", "addr", bind, "port", port, NULL);
	return 0;
}

void pk_agent_admin_tick(struct pk_agent *a, uint64_t now_ms)
{
	if (!a->admin)
		return;
	for (struct admin_conn *c = a->admin->conns; c; c = c->next)
		if (now_ms >= c->deadline_ms) {
			c->deadline_ms = UINT64_MAX; /* once: on_close follows */
			pk_sock_close(c->sock, 1);
		}
}

void pk_agent_admin_stop(struct pk_agent *a)
{
	if (!a->admin || !a->admin->ln)
		return;
	pk_sock_listener_close(a->admin->ln);
	a->admin->ln = NULL;
}

void pk_agent_admin_free(struct pk_agent *a)
{
	free(a->admin);
	a->admin = NULL;
}
