/*
 * What every piko process does around its lws service loop: SIGTERM/SIGINT
 * wake the loop and ask for a graceful shutdown; lws's own log lines become
 * our JSON log records (subsystem "lws").
 */
#ifndef PK_RUNLOOP_H
#define PK_RUNLOOP_H

#include <libwebsockets.h>

struct ev_loop;

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

/* One pass of the loop: wait for events or a timer, serve them, then run
 * the work queued for the pass's end. -1 when lws reports the context is
 * gone. */
int pk_runloop_once(struct pk_runloop *rl, struct lws_context *ctx);

/* Work for the end of the current pass: after the events a pass serves,
 * before the loop waits again (only loops served by pk_runloop_once run
 * it). For writes that gather what several events produced into one
 * syscall: a zero-delay lws_sul timer does the same, at the cost of one
 * more wakeup of the loop per use. Embed it in its owner, zeroed. */
struct pk_pass_work {
	struct lws_dll2 link;
	void (*fn)(struct pk_pass_work *w);
};

/* Queue w (once: queuing it again before it ran does nothing). fn runs on
 * the loop thread with w already unqueued, so it may queue w again (for
 * the next pass's end). */
void pk_runloop_at_pass_end(struct pk_pass_work *w, void (*fn)(struct pk_pass_work *w));

/* Unqueue w if queued (before freeing its owner). */
void pk_runloop_pass_cancel(struct pk_pass_work *w);

/* Run the work queued for the pass's end: for a loop that calls
 * lws_service() itself (libpiko-client's), after each call. */
void pk_runloop_pass_end(struct lws_context *ctx);

/* After lws_context_destroy. */
void pk_runloop_free(struct pk_runloop *rl);

/* An lws context for a process whose sockets are all core/sock.c ones
 * (`piko forward`, `piko test cluster`): no listener of lws's own, one
 * protocol carrying pk_sock events, pk_sock_init() done on its vhost, on
 * epoll when rl is given (see pk_runloop_epoll; serve it with
 * pk_runloop_once and free rl after the context), else on poll(). NULL
 * (logged) when lws cannot create it. Owner: the caller
 * (lws_context_destroy). */
struct lws_context *pk_runloop_sock_context(struct pk_runloop *rl);

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
