/*
 * `piko forward`: local TCP ports whose connections reach an endpoint.
 *
 * Each accepted local connection dials the server's proxy port and opens a
 * WebSocket to GET <url>/_piko/v1/tcp/<endpoint> (protocol reference §1.4);
 * once upgraded, binary messages carry the raw bytes both ways.
 *
 * The relay is core/tcpws.c (shared with libpiko-client's piko_dial); this
 * file listens, and logs why a dial failed (`502: no available upstreams`).
 */
#include "forward.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "buf.h"
#include "log.h"
#include "runloop.h"
#include "sock.h"
#include "tcpws.h"
#include "tls.h"

#define SUBSYS "forwarder"
#define TICK_US (250 * LWS_US_PER_MS)

struct fwd_port {
	struct pk_forward *f;
	const struct pk_forward_port_config *cfg;
	struct pk_sock_listener *ln;
	char listen[300];
	struct pk_tcpws_target target;
};

static void dial_failed(void *user, const char *why)
{
	struct fwd_port *port = user;
	pk_log(PK_LOG_ERROR, SUBSYS, "failed to dial endpoint", "endpoint-id",
	       port->cfg->endpoint_id, "error", why, NULL);
}

static const struct pk_tcpws_hooks fwd_hooks = {.on_fail = dial_failed};
static void on_accept(void *user, int fd)
{
	struct fwd_port *port = user;
	pk_tcpws_start(fd, &port->target, &fwd_hooks, port);
}

static void tick(lws_sorted_usec_list_t *sul)
{
	struct pk_forward *f = lws_container_of(sul, struct pk_forward, tick_sul);
	pk_sock_tick(pk_now_ms());
	lws_sul_schedule(f->ctx, 0, &f->tick_sul, tick, TICK_US);
}

int pk_forward_run(const struct pk_forward_config *cfg)
{
	struct pk_forward f;
	char err[256];
	memset(&f, 0, sizeof(f));
	f.cfg = cfg;
	if (pk_server_url_parse(cfg->connect.url, &f.url, err, sizeof(err)) < 0) {
		fprintf(stderr, "config: %s\n", err);
		return 1;
	}
	/* Owner: this function (SSL_CTX_free at the end); connections hold
	 * their own references. */
	if (f.url.tls && !(f.tls = pk_tls_client_ctx(&cfg->connect.tls, err, sizeof(err)))) {
		fprintf(stderr, "config: %s\n", err);
		return 1;
	}
	pk_runloop_lws_logs(0);

	struct pk_runloop loop;
	f.ctx = pk_runloop_sock_context(&loop);
	if (!f.ctx) {
		pk_runloop_free(&loop);
		SSL_CTX_free(f.tls);
		return 1;
	}

	int rc = 0;
	f.nports = cfg->ports.n;
	/* Owner: this function; freed before it returns. */
	f.ports = pk_xcalloc(f.nports, sizeof(*f.ports));
	const struct pk_forward_port_config *pc = cfg->ports.v;
	for (size_t i = 0; i < f.nports; i++) {
		struct fwd_port *p = &f.ports[i];
		p->f = &f;
		p->cfg = &pc[i];
		pk_forward_listen_addr(pc[i].addr, p->listen, sizeof(p->listen)); /* validated */
		p->target.host = f.url.host;
		p->target.port = f.url.port;
		p->target.base_path = f.url.path;
		p->target.endpoint = pc[i].endpoint_id;
		p->target.token = cfg->connect.token;
		p->target.tls = f.tls;
		p->target.verify_name = !cfg->connect.tls.insecure_skip_verify;
		p->target.timeout_ms = (uint64_t)cfg->connect.timeout_ms;
		p->ln = pk_sock_listen(p->listen, on_accept, p, err, sizeof(err));
		if (!p->ln) {
			pk_log(PK_LOG_ERROR, SUBSYS, "failed to listen", "addr", p->listen, "error",
			       err, NULL);
			rc = 1;
			goto out;
		}
		pk_log(PK_LOG_INFO, SUBSYS, "forwarding", "addr", p->listen, "endpoint-id",
		       p->cfg->endpoint_id, NULL);
	}

	pk_runloop_signals(f.ctx);
	lws_sul_schedule(f.ctx, 0, &f.tick_sul, tick, TICK_US);
	while (!pk_runloop_stop_requested()) {
		if (pk_runloop_once(&loop, f.ctx) < 0)
			break;
	}
	pk_log(PK_LOG_INFO, SUBSYS, "shutting down", NULL);
out:
	pk_runloop_signals_done();
	for (size_t i = 0; i < f.nports; i++)
		if (f.ports[i].ln)
			pk_sock_listener_close(f.ports[i].ln);
	lws_context_destroy(f.ctx);
	pk_runloop_free(&loop);
	/* Connections whose sockets lws tore down without our callbacks. */
	for (size_t i = 0; i < f.nports; i++)
		pk_tcpws_reap(&f.ports[i].target);
	free(f.ports);
	SSL_CTX_free(f.tls);
	pk_buf_freelist_release();
	return rc;
}
