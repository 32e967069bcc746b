/*
 * What every piko process does around its lws service loop: SIGTERM/SIGINT
 * wake the loop and ask for a graceful shutdown; lws's own log lines become
 * our JSON log records (subsystem "lws").
 */
#ifndef PK_RUNLOOP_H
#define PK_RUNLOOP_H

#include <libwebsockets.h>

/* An lws context for a process whose sockets are all core/sock.c ones
 * (`piko forward`, `piko test cluster`): no listener of lws's own, one
 * protocol carrying pk_sock events, pk_sock_init() done on its vhost.
 * NULL (logged) when lws cannot create it. Owner: the caller
 * (lws_context_destroy). */
struct lws_context *pk_runloop_sock_context(void);

/* Route lws's errors (and, if warnings, its warnings) into pk_log. */
void pk_runloop_lws_logs(int warnings);

/* Install SIGTERM/SIGINT handlers that record the signal and wake ctx's
 * service loop (lws_cancel_service only writes to a pipe, which is safe in a
 * signal handler). Also ignores SIGPIPE: a peer that went away is reported
 * by write(), not by a signal. */
void pk_runloop_signals(struct lws_context *ctx);

/* 1 once SIGTERM or SIGINT arrived. */
int pk_runloop_stop_requested(void);

/* Stop waking ctx (before it is destroyed). */
void pk_runloop_signals_done(void);

#endif
