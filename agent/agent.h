/*
 * `piko agent`: for each listener, one WebSocket tunnel to the server's
 * upstream port (GET <url>/piko/v1/upstream/<endpoint>) carrying a yamux
 * session in which the agent is the yamux client; every stream the server
 * opens is one exchange handed to the listener's service (agent_http.c for
 * HTTP listeners, agent_tcp.c for TCP ones).
 *
 * A tunnel that drops for any reason but our own shutdown is re-dialled with
 * backoff (100 ms .. 15 s, jitter) — including a clean close by the server,
 * which Piko's agent gets wrong (protocol reference §10.3 item 1).
 *
 * A Go Away from the server (it is shutting down) moves the listener without
 * a gap: a fresh tunnel is dialled at once while the old one keeps serving;
 * once the fresh one is up the old one is retired (our Go Away, streams that
 * still arrive are served, closed when drained or after grace_period).
 */
#ifndef PK_AGENT_H
#define PK_AGENT_H

#include <stdint.h>

#include <libwebsockets.h>

#include "agent_admin.h"
#include "agent_config.h"
#include "backoff.h"
#include "tunnel.h"

struct pk_agent;

struct pk_agent_listener;

/* One WebSocket tunnel of a listener: the owner of its pk_tunnel (dialled
 * with pk_tunnel_dial; tunnel.wsc is NULL while the slot is free), so events
 * find their slot directly. */
struct pk_agent_tunnel {
	struct pk_agent_listener *l;
	struct pk_tunnel tunnel;
	int up;                /* established: tunnel is initialised */
	int superseded;        /* the server sent Go Away: being replaced */
	int retiring;          /* the replacement is up: our Go Away is sent */
	int closing;           /* we closed it (drained or grace over) */
	uint64_t goaway_ms;    /* when our Go Away was queued (retiring) */
	uint64_t retire_at_ms; /* the replacement is up: retire from then on */
};

struct pk_agent_listener {
	struct pk_agent *agent;
	const struct pk_listener_config *cfg;
	struct pk_target target;
	/* Two slots: tun[cur] is the current tunnel (where dials go), the other
	 * one is free or an old tunnel being retired after the server's Go
	 * Away. They swap roles on each move, so a pk_tunnel never moves in
	 * memory (its yamux session points at it). */
	struct pk_agent_tunnel tun[2];
	unsigned cur;
	int move_pending; /* server's Go Away while the other slot was busy */
	int ever_up;
	char server_ip[64]; /* the server as seen on the tunnel (X-Forwarded-For) */
	struct pk_backoff backoff;
	lws_sorted_usec_list_t retry_sul;
	size_t streams;       /* exchanges in progress (both tunnels) */
	size_t idle_streams;  /* ... of which kept-alive streams awaiting a request */
	char last_error[256]; /* why the last attempt failed (for the boot timeout) */
	SSL_CTX *svc_tls;     /* https:// service: the listener's tls settings */
};

/* What a program that embeds the agent (`piko bench http`) plugs into its
 * loop. Every member may be NULL. */
struct pk_agent_hooks {
	/* Take a stream instead of the listener's service: as
	 * pk_agent_http_accept. The hook keeps l->streams counted while it
	 * holds the stream (shutdown waits for it). */
	int (*accept)(void *arg, struct pk_agent_listener *l, struct pk_yamux_stream *s);
	/* Every agent tick (about 250 ms), after the agent's own timers
	 * (pk_agent_ready() tells whether every tunnel is up). */
	void (*tick)(void *arg, struct pk_agent *a, uint64_t now_ms);
	void *arg;
};

struct pk_agent {
	const struct pk_agent_config *cfg;
	const struct pk_agent_hooks *hooks; /* NULL for `piko agent` */
	struct pk_server_url url;
	struct lws_context *ctx;
	struct pk_agent_listener *listeners;
	size_t nlisteners;
	int shutting_down;
	uint64_t shutdown_deadline_ms;
	uint64_t shutdown_started_ms; /* when our Go Away went out */
	uint64_t boot_deadline_ms;
	int exit_now;
	int exit_code;
	lws_sorted_usec_list_t tick_sul;
	SSL_CTX *tls;  /* https:// server URL: connect.tls's client context */
	char *headers; /* the upgrade's Authorization and tenant lines */
	struct pk_agent_metrics m;
	struct pk_agent_admin *admin; /* NULL unless server.enabled */
};

/* Run until SIGTERM/SIGINT (graceful) or a fatal error. Returns the exit
 * status (1 when a tunnel hit a non-retryable error). */
int pk_agent_run(const struct pk_agent_config *cfg);

/* The same, with hooks (not copied: they must outlive the call). The
 * listeners' addr may be NULL when hooks->accept serves every stream. */
int pk_agent_run_hooked(const struct pk_agent_config *cfg, const struct pk_agent_hooks *hooks);

/* Leave the loop at once with this exit status (no Go Away, no drain): for
 * an embedding program that is done. pk_agent_run_hooked() then tears
 * everything down and returns code. */
void pk_agent_exit(struct pk_agent *a, int code);

/* 1 when the agent is ready: not shutting down, and every listener has a
 * tunnel up (handshake done, yamux running; during a Go Away move either of
 * its two tunnels counts). Else 0, with why set to a short reason naming
 * the first listener without one ("endpoint my-endpoint disconnected"). */
int pk_agent_ready(const struct pk_agent *a, char *why, size_t cap);

/* agent_http.c: take a stream the server opened on l's tunnel. Returns 0 or
 * -1 (refuse: the stream is reset). */
int pk_agent_http_accept(struct pk_agent_listener *l, struct pk_yamux_stream *s);
/* agent_tcp.c: the same for a TCP listener (the stream is piped raw). */
int pk_agent_tcp_accept(struct pk_agent_listener *l, struct pk_yamux_stream *s);
void pk_agent_http_tick(struct pk_agent *a, uint64_t now_ms);

#endif
