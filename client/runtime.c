/*
 * The loop thread of libpiko-client: one lws context per process, shared
 * by every listener and forwarder, started by the first and stopped by the
 * last (see client_internal.h for why one thread).
 *
 * Other threads hand it work through a list of pkc_call (each in its
 * caller's stack frame, the caller waiting: at most one per thread) and
 * wake it with lws_cancel_service(), the one lws call meant for other
 * threads; the loop runs the list from LWS_CALLBACK_EVENT_WAIT_CANCELLED.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "buf.h"
#include "client_internal.h"
#include "log.h"
#include "runloop.h"
#include "sock.h"

#define TICK_US (250 * LWS_US_PER_MS)

struct pkc_rt {
	struct lws_context *ctx;
	pthread_t thread;
	struct pkc_call *calls; /* under g_mu */
	int stop;               /* under g_mu */
	unsigned refs;          /* under g_mu */
	lws_sorted_usec_list_t tick_sul;
};

/* The process's runtime: created and destroyed under g_mu, which also
 * guards its call list. g_done signals finished calls. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_done = PTHREAD_COND_INITIALIZER;
static struct pkc_rt *g_rt;

int pkc_error(struct piko_error *err, int code, const char *fmt, ...)
{
	if (!err)
		return code;
	err->code = code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return code;
}

void pkc_cond_init(pthread_cond_t *c)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
}

void pkc_deadline(struct timespec *ts, int timeout_ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += timeout_ms / 1000;
	ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

struct lws_context *pkc_rt_context(void)
{
	return g_rt->ctx; /* the loop thread's own: set before it started */
}

static void run_calls(void)
{
	pthread_mutex_lock(&g_mu);
	while (g_rt->calls) {
		struct pkc_call *c = g_rt->calls;
		g_rt->calls = c->next;
		pthread_mutex_unlock(&g_mu);
		c->fn(c->arg);
		pthread_mutex_lock(&g_mu);
		c->done = 1;
	}
	pthread_cond_broadcast(&g_done);
	pthread_mutex_unlock(&g_mu);
}

void pkc_rt_call(void (*fn)(void *arg), void *arg)
{
	struct pkc_call c = {fn, arg, 0, NULL};
	pthread_mutex_lock(&g_mu);
	/* Appended, so calls run in the order they were made. */
	struct pkc_call **p = &g_rt->calls;
	while (*p)
		p = &(*p)->next;
	*p = &c;
	lws_cancel_service(g_rt->ctx);
	while (!c.done)
		pthread_cond_wait(&g_done, &g_mu);
	pthread_mutex_unlock(&g_mu);
}

static int rt_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len)
{
	(void)wsi, (void)user, (void)in, (void)len;
	if (reason == LWS_CALLBACK_EVENT_WAIT_CANCELLED)
		run_calls();
	return 0;
}

static void tick(lws_sorted_usec_list_t *sul)
{
	pk_sock_tick(pk_now_ms());
	lws_sul_schedule(g_rt->ctx, 0, sul, tick, TICK_US);
}

static void *loop(void *arg)
{
	struct pkc_rt *rt = arg;
	lws_sul_schedule(rt->ctx, 0, &rt->tick_sul, tick, TICK_US);
	for (;;) {
		pthread_mutex_lock(&g_mu);
		int stop = rt->stop;
		pthread_mutex_unlock(&g_mu);
		if (stop || lws_service(rt->ctx, 0) < 0)
			break;
		pk_runloop_pass_end(rt->ctx);
	}
	/* Destroyed here, on the thread that owns every connection: their
	 * close callbacks run on it, and the buffers they free go to its
	 * freelist, released last. */
	lws_context_destroy(rt->ctx);
	pk_buf_freelist_release();
	return NULL;
}

static const struct lws_protocols rt_protocols[] = {
    {"piko-client-rt", rt_callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}, /* pk_sock_protocols[0], at start */
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* Shared by every vhost of the context (they must outlive it). */
static struct lws_protocols g_protocols[3];

int pkc_rt_get(struct piko_error *err)
{
	pthread_mutex_lock(&g_mu);
	/* One context at a time (pk_sock's state is the process's): a
	 * runtime still stopping is waited for. */
	while (g_rt && g_rt->stop)
		pthread_cond_wait(&g_done, &g_mu);
	if (g_rt) {
		g_rt->refs++;
		pthread_mutex_unlock(&g_mu);
		return 0;
	}
	/* A library must not die of a peer that went away: write() reports
	 * it (pk_sock uses MSG_NOSIGNAL; lws's TLS writes may not). */
	signal(SIGPIPE, SIG_IGN);
	if (!getenv("PIKO_CLIENT_LOG"))
		pk_log_set_level(PK_LOG_ERROR);
	else
		pk_log_set_level(pk_log_parse_level(getenv("PIKO_CLIENT_LOG")));
	pk_runloop_lws_logs(0);
	memcpy(g_protocols, rt_protocols, sizeof(g_protocols));
	g_protocols[1] = pk_sock_protocols[0];
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = g_protocols;
	info.pt_serv_buf_size = 64 * 1024;
	/* Every connection is a core/sock.c one (TLS through OpenSSL
	 * directly, core/tls.c's contexts). */
	info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
	/* Owner: the runtime (freed by pkc_rt_put). */
	struct pkc_rt *rt = pk_xcalloc(1, sizeof(*rt));
	rt->ctx = lws_create_context(&info);
	if (rt->ctx) {
		info.vhost_name = "default";
		if (!lws_create_vhost(rt->ctx, &info)) {
			lws_context_destroy(rt->ctx);
			rt->ctx = NULL;
		}
	}
	if (!rt->ctx) {
		free(rt);
		pthread_mutex_unlock(&g_mu);
		return pkc_error(err, PIKO_ESYSTEM, "cannot create the event loop");
	}
	pk_sock_init(lws_get_vhost_by_name(rt->ctx, "default"));
	rt->refs = 1;
	g_rt = rt;
	int e = pthread_create(&rt->thread, NULL, loop, rt);
	if (e) {
		g_rt = NULL;
		lws_context_destroy(rt->ctx);
		free(rt);
		pthread_mutex_unlock(&g_mu);
		return pkc_error(err, PIKO_ESYSTEM, "pthread_create: %s", strerror(e));
	}
	pthread_mutex_unlock(&g_mu);
	return 0;
}

void pkc_rt_put(void)
{
	pthread_mutex_lock(&g_mu);
	if (--g_rt->refs > 0) {
		pthread_mutex_unlock(&g_mu);
		return;
	}
	struct pkc_rt *rt = g_rt;
	rt->stop = 1;
	lws_cancel_service(rt->ctx);
	pthread_mutex_unlock(&g_mu);
	pthread_join(rt->thread, NULL);
	pthread_mutex_lock(&g_mu);
	g_rt = NULL;
	pthread_cond_broadcast(&g_done);
	pthread_mutex_unlock(&g_mu);
	free(rt);
}

/* The loop cannot join itself: the last reference dropped here leaves the
 * thread idle (reachable from g_rt, so no leak checker minds it at exit)
 * until a program thread stops it (the next object's last put, or
 * piko_client_cleanup). Stopping it from here would race the program's
 * exit with the context's teardown. */
void pkc_rt_put_from_loop(void)
{
	pthread_mutex_lock(&g_mu);
	g_rt->refs--;
	pthread_cond_broadcast(&g_done);
	pthread_mutex_unlock(&g_mu);
}

void piko_client_cleanup(void)
{
	pthread_mutex_lock(&g_mu);
	while (g_rt && !g_rt->stop && g_rt->refs > 0)
		pthread_cond_wait(&g_done, &g_mu);
	if (!g_rt || g_rt->stop) {
		pthread_mutex_unlock(&g_mu);
		return;
	}
	g_rt->refs = 1; /* as if an object held it: pkc_rt_put stops it */
	pthread_mutex_unlock(&g_mu);
	pkc_rt_put();
}

const char *piko_client_version(void)
{
	return PIKO_CLIENT_VERSION;
}

const char *piko_strerror(int code)
{
	switch (code) {
	case PIKO_OK:
		return "success";
	case PIKO_EINVAL:
		return "invalid argument";
	case PIKO_ETIMEDOUT:
		return "timed out";
	case PIKO_ECLOSED:
		return "closed";
	case PIKO_EREFUSED:
		return "refused by the server";
	case PIKO_ESYSTEM:
		return "system error";
	case PIKO_ECONNECT:
		return "connection failed";
	default:
		return "unknown error";
	}
}

void piko_options_init(struct piko_options *o)
{
	memset(o, 0, sizeof(*o));
	o->url = "http://localhost:8001";
	o->proxy_url = "http://localhost:8000";
	o->min_reconnect_backoff_ms = 100;
	o->max_reconnect_backoff_ms = 15000;
	o->connect_timeout_ms = 30000;
}
