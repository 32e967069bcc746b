#include "runloop.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "log.h"
#include "sock.h"

static volatile sig_atomic_t got_signal;
static struct lws_context *volatile signal_ctx;

static void on_signal(int sig)
{
	(void)sig;
	got_signal = 1;
	struct lws_context *ctx = signal_ctx;
	if (ctx)
		lws_cancel_service(ctx);
}

static void lws_log_emit(int level, const char *line)
{
	char msg[512];
	snprintf(msg, sizeof(msg), "%s", line);
	size_t n = strlen(msg);
	while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	pk_log(level == LLL_ERR ? PK_LOG_ERROR : PK_LOG_WARN, "lws", msg, NULL);
}

void pk_runloop_lws_logs(int warnings)
{
	lws_set_log_level(getenv("PK_LWS_DEBUG") ? 0xff
	                  : warnings             ? LLL_ERR | LLL_WARN
	                                         : LLL_ERR,
	                  lws_log_emit);
}

void pk_runloop_signals(struct lws_context *ctx)
{
	signal_ctx = ctx;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* A server's workers start with them blocked (dataplane/workers.c),
	 * so that one sent while they start waits for these handlers. */
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigprocmask(SIG_UNBLOCK, &stop, NULL);
}

int pk_runloop_stop_requested(void)
{
	return got_signal;
}

void pk_runloop_signals_done(void)
{
	signal_ctx = NULL;
}

struct lws_context *pk_runloop_sock_context(struct pk_runloop *rl)
{
	struct lws_protocols protocols[2];
	memset(protocols, 0, sizeof(protocols));
	protocols[0] = pk_sock_protocols[0];
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	if (rl)
		pk_runloop_epoll(rl, &info);
	struct lws_context *ctx = rl ? pk_runloop_create(rl, &info) : lws_create_context(&info);
	if (!ctx) {
		pk_log(PK_LOG_ERROR, "main", "failed to create the event loop", NULL);
		return NULL;
	}
	pk_sock_init(lws_get_vhost_by_name(ctx, "default"));
	return ctx;
}

void pk_runloop_epoll(struct pk_runloop *rl, struct lws_context_creation_info *info)
{
	memset(rl, 0, sizeof(*rl));
	/* PK_EVENT_LOOP=poll keeps lws's own loop: a way to tell a fault of
	 * the libev glue from one of ours. */
	const char *want = getenv("PK_EVENT_LOOP");
	if (want && !strcmp(want, "poll"))
		return;
	/* EVBACKEND_EPOLL, not EVFLAG_AUTO: the point is epoll, and AUTO may
	 * pick another backend where epoll is unusable. */
	rl->ev = ev_loop_new(EVBACKEND_EPOLL);
	if (!rl->ev) {
		pk_log(PK_LOG_WARN, "main", "epoll unavailable; using poll()", NULL);
		return;
	}
	rl->foreign[0] = rl->ev;
	info->options |= LWS_SERVER_OPTION_LIBEV;
	info->foreign_loops = rl->foreign;
}

struct lws_context *pk_runloop_create(struct pk_runloop *rl, struct lws_context_creation_info *info)
{
	struct lws_context *ctx = lws_create_context(info);
	if (ctx || !rl->ev)
		return ctx;
	/* Most likely the plugin is not installed: still serve, slower with
	 * many connections. */
	pk_log(PK_LOG_WARN, "main",
	       "cannot use libev (is libwebsockets-evlib-ev installed?); using poll()", NULL);
	ev_loop_destroy(rl->ev);
	rl->ev = NULL;
	info->options &= ~(uint64_t)LWS_SERVER_OPTION_LIBEV;
	info->foreign_loops = NULL;
	return lws_create_context(info);
}

/* One loop thread per process: one list. */
static struct lws_dll2_owner pass_end;

void pk_runloop_at_pass_end(struct pk_pass_work *w, void (*fn)(struct pk_pass_work *w))
{
	if (w->link.owner)
		return;
	w->fn = fn;
	lws_dll2_add_tail(&w->link, &pass_end);
}

void pk_runloop_pass_cancel(struct pk_pass_work *w)
{
	if (w->link.owner)
		lws_dll2_remove(&w->link);
}

/* Run what was queued, and what that queues in turn, up to a bound (work
 * that keeps queuing itself must not hold the loop); what is still queued
 * then makes the next wait return at once. */
void pk_runloop_pass_end(struct lws_context *ctx)
{
	size_t budget = (size_t)pass_end.count * 4 + 64;
	while (pass_end.head && budget--) {
		struct pk_pass_work *w = lws_container_of(pass_end.head, struct pk_pass_work, link);
		lws_dll2_remove(&w->link);
		w->fn(w);
	}
	if (pass_end.count)
		lws_cancel_service(ctx);
}

int pk_runloop_once(struct pk_runloop *rl, struct lws_context *ctx)
{
	if (!rl->ev) {
		if (lws_service(ctx, 0) < 0)
			return -1;
		pk_runloop_pass_end(ctx);
		return 0;
	}
	/* lws's libev glue serves events and timers from libev's callbacks;
	 * lws_cancel_service() (signals, wake-ups) is an ev_io on lws's pipe,
	 * so a pass ends for those too. */
	ev_run(rl->ev, EVRUN_ONCE);
	pk_runloop_pass_end(ctx);
	return 0;
}

void pk_runloop_free(struct pk_runloop *rl)
{
	if (rl->ev)
		ev_loop_destroy(rl->ev);
	rl->ev = NULL;
}
