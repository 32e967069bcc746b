/*
 * Agent TCP listener: each stream the server opens is piped, raw, to a new
 * TCP connection to the service (protocol reference §4.4) by core/pipe.c,
 * which carries FIN and resets both ways and the backpressure; this file
 * keeps the listener's count, metrics and access log.
 *
 * Ownership: the pipe's context (below) lives as long as the pipe and is
 * freed by its on_free hook.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "buf.h"
#include "log.h"
#include "pipe.h"

#define SUBSYS "proxy.tcp.access"

struct tcp_conn {
	struct pk_agent_listener *l;
	uint64_t start_ms;
};

static void access_log(struct tcp_conn *c, const char *msg, const char *why)
{
	const struct pk_listener_config *cfg = c->l->cfg;
	int level =
	    cfg->access_log.disable ? PK_LOG_DEBUG : pk_log_parse_level(cfg->access_log.level);
	char dur[32];
	snprintf(dur, sizeof(dur), "%llums", (unsigned long long)(pk_now_ms() - c->start_ms));
	pk_log(level, SUBSYS, msg, "endpoint-id", cfg->endpoint_id, "addr", cfg->addr, "duration",
	       dur, why ? "reason" : NULL, why, NULL);
}

static void on_open(void *user)
{
	access_log(user, "connection opened", NULL);
}

static void on_sock_close(void *user, int opened, int reset, const char *why)
{
	struct tcp_conn *c = user;
	(void)reset;
	if (!opened) /* Piko's agent just closes the stream */
		pk_log(PK_LOG_WARN, SUBSYS, "dial failed", "endpoint-id", c->l->cfg->endpoint_id,
		       "addr", c->l->cfg->addr, "reason", why, NULL);
	else
		access_log(c, "connection closed", why);
}

static void on_free(void *user)
{
	struct tcp_conn *c = user;
	c->l->streams--;
	free(c);
}

static const struct pk_pipe_hooks tcp_hooks = {
    .on_open = on_open,
    .on_sock_close = on_sock_close,
    .on_free = on_free,
};

int pk_agent_tcp_accept(struct pk_agent_listener *l, struct pk_yamux_stream *s)
{
	/* Owner: the pipe (freed by on_free). */
	struct tcp_conn *c = pk_xcalloc(1, sizeof(*c));
	c->l = l;
	c->start_ms = pk_now_ms();
	if (pk_pipe_connect(s, l->target.host, l->target.port, (uint64_t)l->cfg->timeout_ms,
	                    &tcp_hooks, c) < 0) {
		free(c);
		return -1;
	}
	l->streams++;
	const char *ep[] = {l->cfg->endpoint_id};
	pk_metric_add(l->agent->m.tcp_conns_total, ep, 1);
	return 0;
}
