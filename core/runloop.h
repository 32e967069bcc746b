/*
 * What every piko process does around its lws service loop: SIGTERM/SIGINT
 * wake the loop and ask for a graceful shutdown; lws's own log lines become
 * our JSON log records (subsystem "lws").
 */
#ifndef PK_RUNLOOP_H
#define PK_RUNLOOP_H

#include <libwebsockets.h>

struct ev_loop;

/* An lws context for a process whose sockets are all core/sock.c ones
 * (`piko forward`, `piko test cluster`): no listener of lws's own, one
 * protocol carrying pk_sock events, pk_sock_init() done on its vhost.
 * NULL (logged) when lws cannot create it. Owner: the caller
 * (lws_context_destroy). */
struct lws_context *pk_runloop_sock_context(void);

/* The loop under a context: lws's own poll() loop, or libev on epoll.
 * poll() hands the kernel every descriptor on every pass, so a server
 * holding n idle tunnels paid O(n) per wakeup (at 18,000 tunnels poll was
 * the top of the profile, and opening each further tunnel got slower);
 * epoll costs O(ready). lws 4.1 reaches libev through a plugin
 * (libwebsockets-evlib_ev.so, Debian's libwebsockets-evlib-ev), given our
 * own loop as a "foreign" one so that we run it one pass at a time, as
 * lws_service() does. The environment variable PK_EVENT_LOOP=poll chooses
 * lws's poll() loop. */
struct pk_runloop {
	struct ev_loop *ev; /* NULL: lws's poll() loop */
	void *foreign[1];
};

/* Ask for epoll in info (before lws_create_context): owner of the libev
 * loop is rl, freed by pk_runloop_free after the context is destroyed. */
void pk_runloop_epoll(struct pk_runloop *rl, struct lws_context_creation_info *info);

/* lws_create_context(info), falling back (with a warning) to lws's poll()
 * loop when the libev plugin cannot be loaded. */
struct lws_context *pk_runloop_create(struct pk_runloop *rl,
                                      struct lws_context_creation_info *info);

/* One pass of the loop: wait for events or a timer, serve them. -1 when
 * lws reports the context is gone. */
int pk_runloop_once(struct pk_runloop *rl, struct lws_context *ctx);

/* After lws_context_destroy. */
void pk_runloop_free(struct pk_runloop *rl);

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
